use super::*;

fn key(topic: &str, partition: i32) -> SessionPartition {
    SessionPartition {
        topic: SessionTopic::Name(topic.into()),
        partition,
    }
}

fn params(fetch_offset: i64) -> FetchParams {
    FetchParams {
        fetch_offset,
        partition_max_bytes: 1 << 20,
        log_start_offset: -1,
        current_leader_epoch: -1,
        last_fetched_epoch: -1,
    }
}

fn outcome(record_bytes: usize, high_watermark: i64) -> PartitionOutcome {
    PartitionOutcome {
        record_bytes,
        high_watermark,
        log_start_offset: 0,
        error_code: 0,
    }
}

/// A session over partitions 0..n of `t`, each last reported at high watermark 10.
fn session(cache: &FetchSessionCache, n: i32) -> i32 {
    let partitions = (0..n).map(|p| (key("t", p), params(0), outcome(0, 10))).collect();
    let id = cache.create(false, partitions, 0);
    assert_ne!(id, INVALID_SESSION_ID);
    id
}

fn incremental(cache: &FetchSessionCache, id: i32, epoch: i32) -> FetchContext {
    cache.new_context(id, epoch, false, &[], &[], 1_000)
}

#[test]
fn epochs_run_from_one_and_wrap_to_one_never_to_the_full_fetch_epochs() {
    assert_eq!(next_epoch(INITIAL_EPOCH), 1);
    assert_eq!(next_epoch(41), 42);
    assert_eq!(next_epoch(i32::MAX), 1);
    assert_eq!(next_epoch(FINAL_EPOCH), FINAL_EPOCH);
}

#[test]
fn full_fetches_are_sessionless_or_full_and_close_the_session_they_name() {
    let cache = FetchSessionCache::new(10);
    assert_eq!(
        cache.new_context(0, FINAL_EPOCH, false, &[], &[], 0),
        FetchContext::Sessionless
    );
    assert_eq!(
        cache.new_context(0, INITIAL_EPOCH, false, &[], &[], 0),
        FetchContext::Full
    );
    // Naming a session nobody has is no error for a full fetch.
    assert_eq!(
        cache.new_context(12345, INITIAL_EPOCH, false, &[], &[], 0),
        FetchContext::Full
    );

    let id = session(&cache, 2);
    assert_eq!(
        cache.new_context(id, FINAL_EPOCH, false, &[], &[], 0),
        FetchContext::Sessionless
    );
    assert_eq!(
        incremental(&cache, id, 1),
        FetchContext::Error(FetchSessionError::NotFound),
        "(S, -1) closed the session"
    );
    let id = session(&cache, 2);
    assert_eq!(
        cache.new_context(id, INITIAL_EPOCH, false, &[], &[], 0),
        FetchContext::Full
    );
    assert_eq!(
        incremental(&cache, id, 1),
        FetchContext::Error(FetchSessionError::NotFound)
    );
}

#[test]
fn incremental_fetches_check_the_session_the_epoch_and_the_topic_naming_in_that_order() {
    let cache = FetchSessionCache::new(10);
    assert_eq!(
        incremental(&cache, 777, 1),
        FetchContext::Error(FetchSessionError::NotFound)
    );
    assert_eq!(
        incremental(&cache, 0, 1),
        FetchContext::Error(FetchSessionError::NotFound)
    );
    assert_eq!(
        incremental(&cache, -5, 3),
        FetchContext::Error(FetchSessionError::NotFound)
    );
    let id = session(&cache, 2);
    assert_eq!(
        incremental(&cache, id, 2),
        FetchContext::Error(FetchSessionError::InvalidEpoch)
    );
    assert_eq!(
        cache.new_context(id, 1, true, &[], &[], 0),
        FetchContext::Error(FetchSessionError::TopicIdMismatch)
    );
    // The errors left the session as it was: epoch 1 is still the one expected.
    let FetchContext::Incremental {
        session_id,
        partitions,
    } = incremental(&cache, id, 1)
    else {
        panic!("epoch 1 continues the session");
    };
    assert_eq!(session_id, id);
    assert_eq!(partitions.len(), 2);
    assert_eq!(
        incremental(&cache, id, 1),
        FetchContext::Error(FetchSessionError::InvalidEpoch)
    );
    assert!(matches!(
        incremental(&cache, id, 2),
        FetchContext::Incremental { .. }
    ));
}

#[test]
fn requests_update_partitions_in_place_add_new_ones_at_the_end_and_forget_after() {
    let cache = FetchSessionCache::new(10);
    let id = session(&cache, 3);
    let requested = vec![
        (key("t", 1), params(50)),
        (key("u", 0), params(7)),
        (key("u", 1), params(0)),
    ];
    let forgotten = [key("t", 0), key("u", 1)];
    let FetchContext::Incremental { partitions, .. } =
        cache.new_context(id, 1, false, &requested, &forgotten, 0)
    else {
        panic!("an incremental context");
    };
    let summary: Vec<(SessionPartition, i64)> =
        partitions.into_iter().map(|(k, p)| (k, p.fetch_offset)).collect();
    assert_eq!(
        summary,
        vec![(key("t", 1), 50), (key("t", 2), 0), (key("u", 0), 7)]
    );
}

#[test]
fn forgetting_every_partition_ends_the_session() {
    let cache = FetchSessionCache::new(10);
    let id = session(&cache, 1);
    assert_eq!(
        cache.new_context(id, 1, false, &[], &[key("t", 0)], 0),
        FetchContext::Sessionless
    );
    assert_eq!(
        incremental(&cache, id, 2),
        FetchContext::Error(FetchSessionError::NotFound)
    );
}

#[test]
fn responses_carry_partitions_with_news_and_rotate_those_that_returned_records() {
    let cache = FetchSessionCache::new(10);
    let id = session(&cache, 4);
    let FetchContext::Incremental { partitions, .. } = incremental(&cache, id, 1) else {
        panic!("an incremental context");
    };
    let outcomes = [
        outcome(0, 10),   // nothing new
        outcome(500, 12), // records
        outcome(0, 11),   // a new high watermark only
        PartitionOutcome {
            error_code: 6,
            ..outcome(0, 10)
        },
    ];
    let included = cache.complete(id, 1, &partitions, &outcomes).unwrap();
    assert_eq!(included, vec![false, true, true, true]);
    assert_eq!(
        cache.session_order(id),
        vec![key("t", 0), key("t", 2), key("t", 3), key("t", 1)],
        "the partition that returned records goes last"
    );

    // The same state again: only the errored partition (its cached high watermark was reset)
    // and one whose log start moved are news now.
    let FetchContext::Incremental { partitions, .. } = incremental(&cache, id, 2) else {
        panic!("an incremental context");
    };
    let outcomes = [
        outcome(0, 10),
        outcome(0, 11),
        outcome(0, 10),
        PartitionOutcome {
            log_start_offset: 5,
            ..outcome(0, 12)
        },
    ];
    let included = cache.complete(id, 2, &partitions, &outcomes).unwrap();
    let news: Vec<_> = partitions
        .iter()
        .zip(included)
        .filter(|(_, inc)| *inc)
        .map(|((k, _), _)| k.clone())
        .collect();
    assert_eq!(news, vec![key("t", 3), key("t", 1)]);
}

#[test]
fn a_session_advanced_meanwhile_answers_the_late_response_with_an_epoch_error() {
    let cache = FetchSessionCache::new(10);
    let id = session(&cache, 1);
    let FetchContext::Incremental { partitions, .. } = incremental(&cache, id, 1) else {
        panic!("an incremental context");
    };
    // A retry of the same request advanced nothing (epoch error), but a next one did.
    assert!(matches!(
        incremental(&cache, id, 2),
        FetchContext::Incremental { .. }
    ));
    assert_eq!(
        cache.complete(id, 1, &partitions, &[outcome(10, 11)]),
        Err(FetchSessionError::InvalidEpoch)
    );
}

#[test]
fn a_full_cache_evicts_only_as_kafka_does() {
    let cache = FetchSessionCache::new(2);
    let small = session(&cache, 1);
    let large = session(&cache, 5);
    assert!(matches!(
        cache.new_context(large, 1, false, &[], &[], 500),
        FetchContext::Incremental { .. }
    ));
    let part = |n| {
        (0..n)
            .map(|p| (key("v", p), params(0), outcome(0, 0)))
            .collect::<Vec<_>>()
    };
    // Both young: no room, the full fetch goes on without a session.
    assert_eq!(cache.create(false, part(10), 1_000), INVALID_SESSION_ID);
    // Unused for over two minutes: the least recently used goes, whatever its size (the large
    // one was used since).
    let fresh = cache.create(false, part(1), EVICTION_MS + 1);
    assert_ne!(fresh, INVALID_SESSION_ID);
    assert_eq!(
        incremental(&cache, small, 1),
        FetchContext::Error(FetchSessionError::NotFound)
    );

    // Sessions used after living two minutes may be evicted by a larger new session only.
    let cache = FetchSessionCache::new(1);
    let old = session(&cache, 3);
    assert!(matches!(
        cache.new_context(old, 1, false, &[], &[], EVICTION_MS + 10),
        FetchContext::Incremental { .. }
    ));
    let now = EVICTION_MS + 20;
    assert_eq!(
        cache.create(false, part(3), now),
        INVALID_SESSION_ID,
        "not larger"
    );
    let larger = cache.create(false, part(4), now);
    assert_ne!(larger, INVALID_SESSION_ID);
    assert_eq!(
        incremental(&cache, old, 2),
        FetchContext::Error(FetchSessionError::NotFound)
    );
}

#[test]
fn no_slots_means_no_sessions() {
    let cache = FetchSessionCache::new(0);
    assert_eq!(
        cache.create(false, vec![(key("t", 0), params(0), outcome(0, 0))], 0),
        INVALID_SESSION_ID
    );
}
