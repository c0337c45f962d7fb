//! The coordinator's rules against a real metadata store (the wire tests in protocol-tests cover
//! the APIs end to end).

use super::state::{decide_init, TxnMetadata};
use super::*;

fn settings() -> TxnSettings {
    TxnSettings {
        max_timeout_ms: 900_000,
        id_expiration_ms: 1000,
    }
}

fn ready(outcome: Result<InitOutcome, TxnError>) -> (i64, i16) {
    match outcome {
        Ok(InitOutcome::Ready(pid, epoch)) => (pid, epoch),
        other => panic!("expected a producer id, got {other:?}"),
    }
}

#[test]
fn exhausted_epochs_rotate_to_a_new_producer_id() {
    let mut m = TxnMetadata::new(7, 60_000);
    m.producer_epoch = MAX_EPOCH - 1;
    m.state = TxnState::CompleteCommit;
    let stored = |d| match d {
        Ok(Decision::Store(next, InitOutcome::Ready(pid, epoch))) => (next, pid, epoch),
        _ => panic!("expected a stored rotation"),
    };
    let (next, pid, epoch) = stored(decide_init(m.clone(), None, Some(8), 60_000, 5));
    assert_eq!((pid, epoch, next.last_producer_epoch), (8, 0, -1));
    // A KIP-360 request from the exhausted producer rotates too, remembering the old epoch.
    let (next, pid, epoch) = stored(decide_init(
        m.clone(),
        Some((7, MAX_EPOCH - 1)),
        Some(9),
        60_000,
        5,
    ));
    assert_eq!((pid, epoch, next.last_producer_epoch), (9, 0, MAX_EPOCH - 1));
}

#[test]
fn state_survives_reopen_and_prepare_states_are_reported_unfinished() {
    let dir = tempfile::tempdir().unwrap();
    let meta = MetaStore::open(dir.path()).unwrap();
    let ids = ProducerIdManager::default();
    let (txn, unfinished) = TransactionCoordinator::open(&meta, settings()).unwrap();
    assert!(unfinished.is_empty());
    let (pid, e) = ready(txn.init_producer_id(&meta, &ids, "a", 60_000, (-1, -1), 1));
    let (pid_b, e_b) = ready(txn.init_producer_id(&meta, &ids, "b", 60_000, (-1, -1), 1));
    txn.add_partitions(&meta, "a", pid, e, &[("t".into(), 0)], 2)
        .unwrap();
    txn.add_partitions(&meta, "b", pid_b, e_b, &[("t".into(), 1)], 2)
        .unwrap();
    assert!(txn.end_transaction(&meta, "a", pid, e, true, 3).unwrap());
    drop(txn);

    let (txn, unfinished) = TransactionCoordinator::open(&meta, settings()).unwrap();
    assert_eq!(
        unfinished,
        vec!["a".to_string()],
        "a crash between PrepareCommit and its markers"
    );
    let a = txn.describe("a").unwrap();
    assert_eq!(
        (a.state, a.producer_id, a.partitions.len()),
        (TxnState::PrepareCommit, pid, 1)
    );
    let b = txn.describe("b").unwrap();
    assert_eq!((b.state, b.start_timestamp), (TxnState::Ongoing, 2));
    // An EndTxn retry while the markers are pending is told to wait.
    assert!(matches!(
        txn.end_transaction(&meta, "a", pid, e, true, 4),
        Err(TxnError::ConcurrentTransactions)
    ));
}

#[test]
fn a_timed_out_transaction_is_fenced_and_prepared_for_abort() {
    let dir = tempfile::tempdir().unwrap();
    let meta = MetaStore::open(dir.path()).unwrap();
    let ids = ProducerIdManager::default();
    let (txn, _) = TransactionCoordinator::open(&meta, settings()).unwrap();
    let (pid, e) = ready(txn.init_producer_id(&meta, &ids, "slow", 1000, (-1, -1), 0));
    txn.add_partitions(&meta, "slow", pid, e, &[("t".into(), 0)], 10_000)
        .unwrap();
    assert!(txn.abort_timed_out(&meta, 10_999).is_empty(), "not yet");
    assert_eq!(txn.abort_timed_out(&meta, 11_001), vec!["slow".to_string()]);
    let d = txn.describe("slow").unwrap();
    assert_eq!((d.state, d.producer_epoch), (TxnState::PrepareAbort, e + 1));
    // The producer's own epoch is fenced.
    assert!(matches!(
        txn.verify_produce("slow", pid, e, "t", 0),
        Err(TxnError::InvalidProducerEpoch)
    ));
    // Idle ids expire once complete, not while a transaction is being ended.
    assert_eq!(txn.expire_ids(&meta, 1_000_000), 0);
}
