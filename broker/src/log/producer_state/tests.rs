use super::*;
use crate::log::testutil::BatchSpec;

/// The header of `n` records from producer `pid` at `epoch`, starting at sequence `seq`, as
/// stored at `offset`.
fn header(pid: i64, epoch: i16, seq: i32, n: usize, offset: i64) -> RecordBatchHeader {
    RecordBatchHeader::parse(
        &BatchSpec::new(n)
            .base_offset(offset)
            .producer(pid, epoch, seq)
            .build(),
    )
    .unwrap()
}

/// A log of one partition as far as producer state goes: checks, then records at the end.
struct Log {
    table: ProducerStateTable,
    end: i64,
}

impl Log {
    fn new() -> Self {
        Log {
            table: ProducerStateTable::default(),
            end: 0,
        }
    }

    fn produce(&mut self, pid: i64, epoch: i16, seq: i32, n: usize) -> Result<SequenceCheck, LogError> {
        let h = header(pid, epoch, seq, n, self.end);
        let check = self.table.check(&h, self.end)?;
        if check == SequenceCheck::Append {
            self.table.record(&h);
            self.end += n as i64;
        }
        Ok(check)
    }

    fn appended(&mut self, pid: i64, epoch: i16, seq: i32, n: usize) -> i64 {
        let at = self.end;
        assert_eq!(self.produce(pid, epoch, seq, n).unwrap(), SequenceCheck::Append);
        at
    }

    fn duplicate_offset(&mut self, pid: i64, epoch: i16, seq: i32, n: usize) -> i64 {
        match self.produce(pid, epoch, seq, n) {
            Ok(SequenceCheck::Duplicate(b)) => b.first_offset(),
            other => panic!("expected a duplicate, got {other:?}"),
        }
    }
}

fn out_of_order(r: Result<SequenceCheck, LogError>) -> bool {
    matches!(r, Err(LogError::OutOfOrderSequence(_)))
}

#[test]
fn sequences_follow_on_and_retries_get_their_original_offsets() {
    let mut log = Log::new();
    assert_eq!(log.appended(7, 0, 0, 3), 0);
    assert_eq!(log.appended(7, 0, 3, 2), 3);
    assert_eq!(log.duplicate_offset(7, 0, 0, 3), 0);
    assert_eq!(log.duplicate_offset(7, 0, 3, 2), 3);
    assert_eq!(log.end, 5, "a duplicate writes nothing");
    assert_eq!(log.table.get(7).unwrap().last_seq(), 4);
}

#[test]
fn only_the_last_five_batches_are_recognised() {
    let mut log = Log::new();
    for seq in 0..6 {
        log.appended(1, 0, seq, 1);
    }
    assert_eq!(log.duplicate_offset(1, 0, 1, 1), 1);
    assert!(out_of_order(log.produce(1, 0, 0, 1)), "seq 0 left the window");
}

#[test]
fn a_retry_with_another_record_count_is_out_of_order() {
    let mut log = Log::new();
    log.appended(1, 0, 0, 3);
    log.appended(1, 0, 3, 2);
    assert!(out_of_order(log.produce(1, 0, 3, 3)));
}

#[test]
fn gaps_and_going_back_are_out_of_order() {
    let mut log = Log::new();
    log.appended(1, 0, 0, 6);
    assert!(out_of_order(log.produce(1, 0, 8, 1)));
    assert!(out_of_order(log.produce(1, 0, 4, 2)));
    assert_eq!(log.appended(1, 0, 6, 1), 6);
}

#[test]
fn epochs_fence_older_ones_and_restart_sequences() {
    let mut log = Log::new();
    log.appended(1, 0, 0, 2);
    log.appended(1, 1, 0, 1);
    assert!(matches!(
        log.produce(1, 0, 2, 1),
        Err(LogError::InvalidProducerEpoch(_))
    ));
    assert_eq!(log.appended(1, 2, 0, 1), 3);
    assert!(out_of_order(log.produce(1, 3, 5, 1)), "a new epoch starts at 0");
    // The old epoch's batches are forgotten: its retry is no duplicate.
    assert!(matches!(
        log.produce(1, 1, 0, 1),
        Err(LogError::InvalidProducerEpoch(_))
    ));
}

#[test]
fn an_unknown_producer_may_start_anywhere() {
    let mut log = Log::new();
    log.appended(9, 4, 42, 1);
    assert!(out_of_order(log.produce(9, 4, 44, 1)));
    log.appended(9, 4, 43, 1);
}

#[test]
fn sequences_wrap_after_i32_max() {
    let mut log = Log::new();
    log.appended(1, 0, i32::MAX - 1, 2);
    log.appended(1, 0, 0, 1);
    // A batch straddling the wrap: i32::MAX, 0, 1.
    log.appended(2, 0, i32::MAX, 3);
    assert_eq!(log.table.get(2).unwrap().last_seq(), 1);
    log.appended(2, 0, 2, 1);
    assert_eq!(log.duplicate_offset(2, 0, i32::MAX, 3), 3);
}

#[test]
fn batches_without_a_producer_id_are_not_tracked() {
    let mut log = Log::new();
    log.appended(-1, -1, -1, 3);
    log.appended(-1, -1, -1, 3);
    assert!(log.table.is_empty());
}

#[test]
fn idle_producers_expire_from_their_last_batch_timestamp() {
    let mut log = Log::new();
    log.appended(1, 0, 0, 1); // maxTimestamp 1_700_000_000_000
    let last = log.table.get(1).unwrap().last_timestamp;
    assert_eq!(log.table.remove_expired(last + 999, 1000), 0);
    assert_eq!(log.table.remove_expired(last + 1000, 1000), 1);
    assert!(log.table.get(1).is_none());
    log.appended(1, 0, 17, 1);
}

#[test]
fn snapshots_round_trip_with_all_five_batches() {
    let mut log = Log::new();
    let mut seq = 0;
    for i in 0..7 {
        let n = 2 + i % 2;
        log.appended(1, 3, seq, n);
        seq += n as i32;
    }
    log.appended(2, 0, i32::MAX, 3);
    let snapshot = log.table.snapshot(log.end);
    let bytes = snapshot.encode();
    let back = ProducerSnapshot::decode(&bytes).unwrap();
    assert_eq!(back, snapshot);
    assert_eq!(back.table.get(1).unwrap().batches().count(), BATCHES_TO_RETAIN);
    assert!(ProducerSnapshot::decode(&bytes[..bytes.len() - 1]).is_none());
    assert!(ProducerSnapshot::decode(&[9]).is_none());
}
