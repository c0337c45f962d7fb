//! Transactions in the log: markers, the last stable offset, the aborted-transaction index and
//! read_committed reads, across reopening.

use super::*;
use crate::log::{OffsetSpec, TxnMarker};

const TRANSACTIONAL: i16 = 0x10;

fn txn_batch(pid: i64, seq: i32, n: usize) -> Vec<u8> {
    BatchSpec::new(n)
        .producer(pid, 0, seq)
        .attributes(TRANSACTIONAL)
        .build()
}

fn marker(pid: i64, commit: bool) -> TxnMarker {
    TxnMarker {
        producer_id: pid,
        producer_epoch: 0,
        coordinator_epoch: 0,
        commit,
    }
}

/// (base offset, is control) of the batches a read returned.
fn batches(read: &ReadResult) -> Vec<(i64, bool)> {
    headers(&read.records)
        .iter()
        .map(|h| (h.base_offset(), h.is_control()))
        .collect()
}

fn aborted(read: &ReadResult) -> Vec<(i64, i64)> {
    read.aborted_transactions
        .iter()
        .map(|a| (a.producer_id, a.first_offset))
        .collect()
}

#[test]
fn an_open_transaction_holds_the_last_stable_offset_until_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    log.append(&txn_batch(1, 0, 3), 5).unwrap();
    assert_eq!((log.high_watermark(), log.last_stable_offset()), (3, 0));
    let committed = log.read_committed(0, 1 << 20, true).unwrap();
    assert!(committed.records.is_empty() && committed.aborted_transactions.is_empty());
    assert_eq!(committed.last_stable_offset, 0);
    assert_eq!(batches(&log.read(0, 1 << 20, true).unwrap()), vec![(0, false)]);
    // ListOffsets: LATEST is the LSO for read_committed, the high watermark otherwise.
    let latest = |rc| {
        log.fetch_offset_by_timestamp(OffsetSpec::Latest, rc)
            .unwrap()
            .unwrap()
            .offset
    };
    assert_eq!((latest(true), latest(false)), (0, 3));
    let by_time = log
        .fetch_offset_by_timestamp(OffsetSpec::Timestamp(0), true)
        .unwrap();
    assert_eq!(
        by_time, None,
        "a lookup landing beyond the LSO finds nothing for read_committed"
    );

    // A plain batch of the same producer inside its transaction is refused.
    let plain = BatchSpec::new(1).producer(1, 0, 3).build();
    assert!(matches!(log.append(&plain, 5), Err(LogError::InvalidTxnState(_))));

    let info = log.append_marker(&marker(1, true), 9).unwrap();
    assert_eq!(info.base_offset, 3);
    assert_eq!(log.last_stable_offset(), 4);
    let committed = log.read_committed(0, 1 << 20, true).unwrap();
    assert_eq!(batches(&committed), vec![(0, false), (3, true)]);
    assert!(committed.aborted_transactions.is_empty());
    // The stored marker is Kafka's: a control batch of the producer, sequence -1.
    let h = headers(&committed.records)[1];
    assert_eq!(
        (h.producer_id(), h.base_sequence(), h.is_transactional()),
        (1, -1, true)
    );
}

#[test]
fn aborted_transactions_are_indexed_and_handed_to_read_committed_readers() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    log.append(&txn_batch(1, 0, 2), 5).unwrap(); // 0-1
    log.append(&txn_batch(2, 0, 2), 5).unwrap(); // 2-3
    log.append(&batch(1), 5).unwrap(); // 4
    assert_eq!(log.last_stable_offset(), 0);
    log.append_marker(&marker(1, true), 5).unwrap(); // 5
    assert_eq!(log.last_stable_offset(), 2);
    log.append_marker(&marker(2, false), 5).unwrap(); // 6
    assert_eq!(log.last_stable_offset(), 7);
    let index = std::fs::read(dir.path().join("00000000000000000000.txnindex")).unwrap();
    assert_eq!(index.len(), 34, "one aborted transaction");
    let field = |at: usize| i64::from_be_bytes(index[at..at + 8].try_into().unwrap());
    assert_eq!((field(2), field(10), field(18), field(26)), (2, 2, 6, 7));

    let all = log.read_committed(0, 1 << 20, true).unwrap();
    assert_eq!(
        all.records.len(),
        log.read(0, 1 << 20, true).unwrap().records.len()
    );
    assert_eq!(aborted(&all), vec![(2, 2)]);
    // A read that ends before the aborted transaction starts is not told of it.
    let first = log.read_committed(0, 1, true).unwrap();
    assert_eq!(batches(&first), vec![(0, false)]);
    assert!(first.aborted_transactions.is_empty());
    // One that starts after it ended is not either.
    assert!(log
        .read_committed(7, 1 << 20, true)
        .unwrap()
        .aborted_transactions
        .is_empty());
}

#[test]
fn a_marker_from_an_older_epoch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    log.append(
        &BatchSpec::new(1)
            .producer(4, 2, 0)
            .attributes(TRANSACTIONAL)
            .build(),
        5,
    )
    .unwrap();
    let stale = TxnMarker {
        producer_epoch: 1,
        ..marker(4, false)
    };
    assert!(matches!(
        log.append_marker(&stale, 5),
        Err(LogError::InvalidProducerEpoch(_))
    ));
    // A newer epoch (the coordinator fenced the producer) ends it and becomes current.
    let fenced = TxnMarker {
        producer_epoch: 3,
        ..marker(4, false)
    };
    log.append_marker(&fenced, 5).unwrap();
    assert_eq!(log.last_stable_offset(), 2);
    let late = BatchSpec::new(1)
        .producer(4, 2, 1)
        .attributes(TRANSACTIONAL)
        .build();
    assert!(matches!(
        log.append(&late, 5),
        Err(LogError::InvalidProducerEpoch(_))
    ));
}

#[test]
fn transactions_come_back_the_same_after_a_clean_reopen_and_after_a_crash() {
    for clean in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = {
            let log = open(dir.path(), small(700));
            log.append(&txn_batch(1, 0, 2), 5).unwrap();
            log.append(&txn_batch(2, 0, 2), 5).unwrap();
            log.append_marker(&marker(1, false), 5).unwrap();
            // Roll, so that the abort of 2 lands in a later segment than its data.
            while log.segment_bases().len() < 2 {
                log.append(&batch(3), 5).unwrap();
            }
            log.append_marker(&marker(2, false), 5).unwrap();
            log.append(&txn_batch(3, 0, 1), 5).unwrap(); // left open
            log.flush_until(log.log_end_offset()).unwrap();
            let before = (
                log.last_stable_offset(),
                aborted(&log.read_committed(0, 1 << 20, true).unwrap()),
            );
            assert_eq!(before.1, vec![(1, 0), (2, 2)]);
            clean.then(|| (log.producer_snapshot(), before))
        };
        let (snapshots, expected_lso) = match snapshot {
            Some((s, (lso, _))) => (vec![s], Some(lso)),
            None => (Vec::new(), None),
        };
        let log =
            PartitionLog::open_in(dir.path(), small(700), LogDirHealth::new(dir.path()), snapshots).unwrap();
        let end = log.log_end_offset();
        assert_eq!(
            log.last_stable_offset(),
            end - 1,
            "the open transaction still pins the LSO (clean: {clean})"
        );
        if let Some(lso) = expected_lso {
            assert_eq!(log.last_stable_offset(), lso);
        }
        // Reading from the first segment lists both aborted transactions, the second one's
        // marker being in the second segment.
        let mut offset = 0;
        let mut seen = Vec::new();
        while offset < log.last_stable_offset() {
            let r = log.read_committed(offset, 1 << 20, true).unwrap();
            seen.extend(aborted(&r));
            offset = headers(&r.records).last().unwrap().last_offset() + 1;
        }
        seen.dedup();
        assert_eq!(seen, vec![(1, 0), (2, 2)], "clean: {clean}");
        log.append_marker(&marker(3, true), 5).unwrap();
        assert_eq!(log.last_stable_offset(), log.log_end_offset());
    }
}
