//! KIP-848 server-side assignors: `uniform` (Kafka's UniformAssignor: balanced and sticky) and
//! `range` (Kafka's server-side RangeAssignor: contiguous ranges per topic, members in id order).
//! An assignor sees each member's subscribed topics and its current target assignment, and the
//! partition count of every subscribed topic; it returns every member's new target.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Partitions by topic id.
pub type TopicPartitions = BTreeMap<Uuid, BTreeSet<i32>>;

pub struct MemberSpec {
    /// Topic ids the member subscribes to (existing topics only).
    pub topics: BTreeSet<Uuid>,
    /// The member's current target assignment (for stickiness).
    pub current: TopicPartitions,
}

pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// Runs the assignor `name` (one of ASSIGNORS; anything else is treated as `uniform`).
pub fn assign(
    name: &str,
    members: &BTreeMap<String, MemberSpec>,
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, TopicPartitions> {
    match name {
        "range" => range(members, partitions),
        _ => uniform(members, partitions),
    }
}

/// For each topic, its subscribers in member id order split the partitions into contiguous
/// ranges; the first `partitions % members` get one more.
fn range(
    members: &BTreeMap<String, MemberSpec>,
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, TopicPartitions> {
    let mut out: BTreeMap<String, TopicPartitions> =
        members.keys().map(|m| (m.clone(), BTreeMap::new())).collect();
    for (topic, count) in partitions {
        let subscribers: Vec<&String> = members
            .iter()
            .filter(|(_, spec)| spec.topics.contains(topic))
            .map(|(id, _)| id)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        let n = subscribers.len() as i32;
        let (quota, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, member) in subscribers.into_iter().enumerate() {
            let size = quota + i32::from((i as i32) < extra);
            if size > 0 {
                let entry = out.entry(member.clone()).or_default().entry(*topic).or_default();
                entry.extend(next..next + size);
            }
            next += size;
        }
    }
    out
}

/// Balanced and sticky: a member keeps the partitions it had that it still subscribes to (up
/// to its fair share), the rest go to the least loaded eligible member, and partitions then
/// move from the most to the least loaded eligible member until no two eligible members differ
/// by more than one.
fn uniform(
    members: &BTreeMap<String, MemberSpec>,
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, TopicPartitions> {
    let ids: Vec<&String> = members.keys().collect();
    let mut load: Vec<BTreeSet<(Uuid, i32)>> = vec![BTreeSet::new(); ids.len()];
    let mut taken: BTreeSet<(Uuid, i32)> = BTreeSet::new();
    let exists = |t: &Uuid, p: i32| partitions.get(t).is_some_and(|n| p < *n);
    // Fair share when everyone subscribes to the same topics; with mixed subscriptions the
    // balancing pass below evens things out.
    let total: i32 = partitions
        .iter()
        .filter(|(t, _)| members.values().any(|m| m.topics.contains(t)))
        .map(|(_, n)| n)
        .sum();
    let ceiling = if ids.is_empty() {
        0
    } else {
        (total as usize).div_ceil(ids.len())
    };
    for (i, id) in ids.iter().enumerate() {
        let spec = &members[*id];
        for (topic, ps) in &spec.current {
            if !spec.topics.contains(topic) {
                continue;
            }
            for p in ps {
                if exists(topic, *p) && load[i].len() < ceiling && taken.insert((*topic, *p)) {
                    load[i].insert((*topic, *p));
                }
            }
        }
    }
    let eligible = |i: usize, topic: &Uuid| members[ids[i]].topics.contains(topic);
    for (topic, count) in partitions {
        for p in 0..*count {
            if taken.contains(&(*topic, p)) {
                continue;
            }
            let least = (0..ids.len())
                .filter(|i| eligible(*i, topic))
                .min_by_key(|i| (load[*i].len(), *i));
            if let Some(i) = least {
                load[i].insert((*topic, p));
                taken.insert((*topic, p));
            }
        }
    }
    // Balance: each move lowers the sum of squared loads, so this ends.
    loop {
        let mut moved = false;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|i| std::cmp::Reverse(load[*i].len()));
        'donors: for &donor in &order {
            for &receiver in order.iter().rev() {
                if load[donor].len() <= load[receiver].len() + 1 {
                    continue;
                }
                let candidate = load[donor]
                    .iter()
                    .rev()
                    .find(|(t, _)| eligible(receiver, t))
                    .copied();
                if let Some(tp) = candidate {
                    load[donor].remove(&tp);
                    load[receiver].insert(tp);
                    moved = true;
                    break 'donors;
                }
            }
        }
        if !moved {
            break;
        }
    }
    ids.into_iter()
        .zip(load)
        .map(|(id, ps)| {
            let mut assignment = TopicPartitions::new();
            for (t, p) in ps {
                assignment.entry(t).or_default().insert(p);
            }
            (id.clone(), assignment)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn spec(topics: &[Uuid], current: &[(Uuid, &[i32])]) -> MemberSpec {
        MemberSpec {
            topics: topics.iter().copied().collect(),
            current: current
                .iter()
                .map(|(t, ps)| (*t, ps.iter().copied().collect()))
                .collect(),
        }
    }

    fn count(a: &TopicPartitions) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    fn assert_disjoint_and_complete(
        out: &BTreeMap<String, TopicPartitions>,
        partitions: &BTreeMap<Uuid, i32>,
    ) {
        let mut seen = BTreeSet::new();
        for a in out.values() {
            for (t, ps) in a {
                for p in ps {
                    assert!(seen.insert((*t, *p)), "{t}/{p} assigned twice");
                }
            }
        }
        let total: i32 = partitions.values().sum();
        assert_eq!(seen.len(), total as usize);
    }

    #[test]
    fn uniform_balances_and_keeps_what_members_had() {
        let t = topic(1);
        let partitions = BTreeMap::from([(t, 6)]);
        let one = BTreeMap::from([("a".to_string(), spec(&[t], &[]))]);
        let out = assign("uniform", &one, &partitions);
        assert_eq!(count(&out["a"]), 6);
        // b joins: a keeps three of its partitions, b gets the other three.
        let two = BTreeMap::from([
            ("a".to_string(), spec(&[t], &[(t, &[0, 1, 2, 3, 4, 5])])),
            ("b".to_string(), spec(&[t], &[])),
        ]);
        let out = assign("uniform", &two, &partitions);
        assert_disjoint_and_complete(&out, &partitions);
        assert_eq!(count(&out["a"]), 3);
        assert_eq!(count(&out["b"]), 3);
        // c joins: a and b each give one up and keep the rest.
        let three = BTreeMap::from([
            (
                "a".to_string(),
                spec(&[t], &[(t, &out["a"][&t].iter().copied().collect::<Vec<_>>())]),
            ),
            (
                "b".to_string(),
                spec(&[t], &[(t, &out["b"][&t].iter().copied().collect::<Vec<_>>())]),
            ),
            ("c".to_string(), spec(&[t], &[])),
        ]);
        let next = assign("uniform", &three, &partitions);
        assert_disjoint_and_complete(&next, &partitions);
        for m in ["a", "b"] {
            assert_eq!(count(&next[m]), 2);
            assert!(next[m][&t].is_subset(&out[m][&t]), "{m} stays sticky");
        }
    }

    #[test]
    fn uniform_respects_mixed_subscriptions() {
        let (t1, t2) = (topic(1), topic(2));
        let partitions = BTreeMap::from([(t1, 4), (t2, 2)]);
        let members = BTreeMap::from([
            ("a".to_string(), spec(&[t1], &[])),
            ("b".to_string(), spec(&[t1, t2], &[])),
        ]);
        let out = assign("uniform", &members, &partitions);
        assert_disjoint_and_complete(&out, &partitions);
        assert!(!out["a"].contains_key(&t2));
        assert_eq!(count(&out["a"]), 3);
        assert_eq!(count(&out["b"]), 3);
    }

    #[test]
    fn range_gives_contiguous_ranges_per_topic() {
        let (t1, t2) = (topic(1), topic(2));
        let partitions = BTreeMap::from([(t1, 5), (t2, 2)]);
        let members = BTreeMap::from([
            ("a".to_string(), spec(&[t1, t2], &[])),
            ("b".to_string(), spec(&[t1, t2], &[])),
        ]);
        let out = assign("range", &members, &partitions);
        assert_eq!(out["a"][&t1], BTreeSet::from([0, 1, 2]));
        assert_eq!(out["b"][&t1], BTreeSet::from([3, 4]));
        assert_eq!(out["a"][&t2], BTreeSet::from([0]));
        assert_eq!(out["b"][&t2], BTreeSet::from([1]));
    }

    #[test]
    fn members_without_topics_get_nothing() {
        let partitions = BTreeMap::from([(topic(1), 3)]);
        let members = BTreeMap::from([("a".to_string(), spec(&[], &[]))]);
        for name in ASSIGNORS {
            let out = assign(name, &members, &partitions);
            assert_eq!(count(&out["a"]), 0, "{name}");
        }
    }
}
