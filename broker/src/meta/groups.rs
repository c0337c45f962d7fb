//! The `offsets` and `groups` column families: committed offsets (written before a commit is
//! acknowledged) and classic group metadata (generation, protocol, members, assignments).

use bytes::Bytes;
use rocksdb::{IteratorMode, WriteBatch};

use super::codec::{Reader, Writer};
use super::{MetaError, MetaStore, CF_GROUPS, CF_OFFSETS};

/// A committed offset as OffsetCommit delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// A classic group's durable state: what a restarted broker needs so that members that keep
/// heartbeating with the same generation carry on without a rebalance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupRecord {
    pub group_id: String,
    pub protocol_type: String,
    pub protocol_name: String,
    pub generation: i32,
    pub leader: String,
    pub members: Vec<MemberRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberRecord {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// The member's metadata for the group's chosen protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

const VERSION: u8 = 1;
/// The version byte of a KIP-848 consumer group's record. Both kinds of group share the
/// `groups` column family, keyed by group id: a group id names one group of one type.
const CONSUMER_GROUP_VERSION: u8 = 16;

/// Partitions by topic id, as a KIP-848 assignment names them.
pub type TopicIdPartitions = Vec<(uuid::Uuid, Vec<i32>)>;

/// A KIP-848 consumer group's durable state: epochs, subscriptions and assignments, so that
/// members that heartbeat with their member epoch after a restart carry on where they were.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerGroupRecord {
    pub group_id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    /// (name, id, partition count) of the subscribed topics at the last epoch bump.
    pub subscribed_topics: Vec<(String, uuid::Uuid, i32)>,
    pub members: Vec<ConsumerMemberRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerMemberRecord {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    /// MemberState's code.
    pub state: u8,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub assigned: TopicIdPartitions,
    pub pending_revocation: TopicIdPartitions,
    pub target: TopicIdPartitions,
}

fn put_opt(w: &mut Writer, s: &Option<String>) {
    match s {
        Some(s) => w.i32(1).bytes(s.as_bytes()),
        None => w.i32(0),
    };
}

fn get_opt(r: &mut Reader<'_>) -> Option<Option<String>> {
    match r.i32()? {
        0 => Some(None),
        _ => Some(Some(r.string()?)),
    }
}

fn put_partitions(w: &mut Writer, a: &TopicIdPartitions) {
    w.i32(a.len() as i32);
    for (t, ps) in a {
        w.bytes(t.as_bytes()).i32(ps.len() as i32);
        for p in ps {
            w.i32(*p);
        }
    }
}

fn get_partitions(r: &mut Reader<'_>) -> Option<TopicIdPartitions> {
    let mut out = Vec::new();
    for _ in 0..r.i32()? {
        let id = uuid::Uuid::from_slice(r.bytes()?).ok()?;
        let mut ps = Vec::new();
        for _ in 0..r.i32()? {
            ps.push(r.i32()?);
        }
        out.push((id, ps));
    }
    Some(out)
}

impl ConsumerGroupRecord {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(CONSUMER_GROUP_VERSION);
        w.i32(self.group_epoch)
            .i32(self.assignment_epoch)
            .i32(self.subscribed_topics.len() as i32);
        for (name, id, partitions) in &self.subscribed_topics {
            w.bytes(name.as_bytes()).bytes(id.as_bytes()).i32(*partitions);
        }
        w.i32(self.members.len() as i32);
        for m in &self.members {
            w.bytes(m.member_id.as_bytes());
            put_opt(&mut w, &m.instance_id);
            put_opt(&mut w, &m.rack_id);
            w.bytes(m.client_id.as_bytes())
                .bytes(m.client_host.as_bytes())
                .i32(m.member_epoch)
                .i32(m.previous_member_epoch)
                .i32(i32::from(m.state))
                .i32(m.rebalance_timeout_ms)
                .i32(m.subscribed_topic_names.len() as i32);
            for t in &m.subscribed_topic_names {
                w.bytes(t.as_bytes());
            }
            put_opt(&mut w, &m.subscribed_topic_regex);
            put_opt(&mut w, &m.server_assignor);
            put_partitions(&mut w, &m.assigned);
            put_partitions(&mut w, &m.pending_revocation);
            put_partitions(&mut w, &m.target);
        }
        w.finish()
    }

    fn decode(group_id: &str, buf: &[u8]) -> Option<ConsumerGroupRecord> {
        let (mut r, version) = Reader::new(buf)?;
        (version == CONSUMER_GROUP_VERSION).then_some(())?;
        let mut g = ConsumerGroupRecord {
            group_id: group_id.to_string(),
            group_epoch: r.i32()?,
            assignment_epoch: r.i32()?,
            ..Default::default()
        };
        for _ in 0..r.i32()? {
            let name = r.string()?;
            let id = uuid::Uuid::from_slice(r.bytes()?).ok()?;
            g.subscribed_topics.push((name, id, r.i32()?));
        }
        for _ in 0..r.i32()? {
            let mut m = ConsumerMemberRecord {
                member_id: r.string()?,
                instance_id: get_opt(&mut r)?,
                rack_id: get_opt(&mut r)?,
                client_id: r.string()?,
                client_host: r.string()?,
                member_epoch: r.i32()?,
                previous_member_epoch: r.i32()?,
                state: u8::try_from(r.i32()?).ok()?,
                rebalance_timeout_ms: r.i32()?,
                ..Default::default()
            };
            for _ in 0..r.i32()? {
                m.subscribed_topic_names.push(r.string()?);
            }
            m.subscribed_topic_regex = get_opt(&mut r)?;
            m.server_assignor = get_opt(&mut r)?;
            m.assigned = get_partitions(&mut r)?;
            m.pending_revocation = get_partitions(&mut r)?;
            m.target = get_partitions(&mut r)?;
            g.members.push(m);
        }
        Some(g)
    }
}

/// `group \0 topic \0 partition`: a group's offsets are one contiguous key range.
fn offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(group.len() + topic.len() + 6);
    k.extend_from_slice(group.as_bytes());
    k.push(0);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

fn group_prefix(group: &str) -> Vec<u8> {
    let mut k = group.as_bytes().to_vec();
    k.push(0);
    k
}

/// The first key after every key starting with a group's prefix (which ends in a 0 byte).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

fn parse_offset_key(key: &[u8]) -> Option<(String, String, i32)> {
    let first = key.iter().position(|b| *b == 0)?;
    let rest = &key[first + 1..];
    let (topic, partition) = rest.split_at(rest.len().checked_sub(5)?);
    if partition[0] != 0 {
        return None;
    }
    Some((
        String::from_utf8(key[..first].to_vec()).ok()?,
        String::from_utf8(topic.to_vec()).ok()?,
        i32::from_be_bytes(partition[1..].try_into().ok()?),
    ))
}

impl CommittedOffset {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(VERSION);
        w.i64(self.offset)
            .i32(self.leader_epoch)
            .bytes(self.metadata.as_bytes())
            .i64(self.commit_timestamp_ms);
        w.finish()
    }

    fn decode(buf: &[u8]) -> Option<CommittedOffset> {
        let (mut r, version) = Reader::new(buf)?;
        (version == VERSION).then_some(())?;
        Some(CommittedOffset {
            offset: r.i64()?,
            leader_epoch: r.i32()?,
            metadata: r.string()?,
            commit_timestamp_ms: r.i64()?,
        })
    }
}

impl GroupRecord {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(VERSION);
        w.bytes(self.protocol_type.as_bytes())
            .bytes(self.protocol_name.as_bytes())
            .i32(self.generation)
            .bytes(self.leader.as_bytes())
            .i32(self.members.len() as i32);
        for m in &self.members {
            w.bytes(m.member_id.as_bytes())
                .bytes(m.instance_id.as_deref().unwrap_or("").as_bytes())
                .bytes(m.client_id.as_bytes())
                .bytes(m.client_host.as_bytes())
                .i32(m.session_timeout_ms)
                .i32(m.rebalance_timeout_ms)
                .bytes(&m.subscription)
                .bytes(&m.assignment);
        }
        w.finish()
    }

    fn decode(group_id: &str, buf: &[u8]) -> Option<GroupRecord> {
        let (mut r, version) = Reader::new(buf)?;
        (version == VERSION).then_some(())?;
        let mut g = GroupRecord {
            group_id: group_id.to_string(),
            protocol_type: r.string()?,
            protocol_name: r.string()?,
            generation: r.i32()?,
            leader: r.string()?,
            members: Vec::new(),
        };
        for _ in 0..r.i32()? {
            let member_id = r.string()?;
            let instance = r.string()?;
            g.members.push(MemberRecord {
                member_id,
                instance_id: (!instance.is_empty()).then_some(instance),
                client_id: r.string()?,
                client_host: r.string()?,
                session_timeout_ms: r.i32()?,
                rebalance_timeout_ms: r.i32()?,
                subscription: Bytes::copy_from_slice(r.bytes()?),
                assignment: Bytes::copy_from_slice(r.bytes()?),
            });
        }
        Some(g)
    }
}

/// One change of the group coordinator's state, as `write_group_changes` stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupWrite {
    /// A group's committed offsets: (topic, partition, offset).
    CommitOffsets {
        group: String,
        offsets: Vec<(String, i32, CommittedOffset)>,
    },
    /// Removes some of a group's committed offsets: (topic, partition).
    DeleteOffsets {
        group: String,
        partitions: Vec<(String, i32)>,
    },
    /// A classic group's record (members and assignments).
    PutGroup(GroupRecord),
    /// A consumer group's record (replacing a classic group of the same id).
    PutConsumerGroup(ConsumerGroupRecord),
    /// A group's record and all its offsets.
    DeleteGroup(String),
}

impl MetaStore {
    /// Stores changes of group state in order, as one synced, atomic write batch: the group
    /// coordinator's group commit (many changes, one fsync of the WAL).
    pub fn write_group_changes(&self, writes: &[GroupWrite]) -> Result<(), MetaError> {
        let mut batch = WriteBatch::default();
        for write in writes {
            match write {
                GroupWrite::CommitOffsets { group, offsets } => {
                    for (topic, partition, o) in offsets {
                        batch.put_cf(
                            self.cf(CF_OFFSETS),
                            offset_key(group, topic, *partition),
                            o.encode(),
                        );
                    }
                }
                GroupWrite::DeleteOffsets { group, partitions } => {
                    for (topic, partition) in partitions {
                        batch.delete_cf(self.cf(CF_OFFSETS), offset_key(group, topic, *partition));
                    }
                }
                GroupWrite::PutGroup(g) => {
                    batch.put_cf(self.cf(CF_GROUPS), g.group_id.as_bytes(), g.encode())
                }
                GroupWrite::PutConsumerGroup(g) => {
                    batch.put_cf(self.cf(CF_GROUPS), g.group_id.as_bytes(), g.encode())
                }
                GroupWrite::DeleteGroup(group) => {
                    // Offset keys of a group share its prefix: one range deletion covers them,
                    // and keys written earlier in this same batch too.
                    let prefix = group_prefix(group);
                    batch.delete_range_cf(self.cf(CF_OFFSETS), &prefix, &prefix_end(&prefix));
                    batch.delete_cf(self.cf(CF_GROUPS), group.as_bytes());
                }
            }
        }
        self.writable()?;
        self.db.write_opt(batch, &Self::durable())?;
        Ok(())
    }

    /// Every committed offset: (group, topic, partition, offset).
    pub fn all_offsets(&self) -> Result<Vec<(String, String, i32, CommittedOffset)>, MetaError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_OFFSETS), IteratorMode::Start) {
            let (key, value) = item?;
            let corrupt = || MetaError::Corrupt {
                what: "offset",
                key: String::from_utf8_lossy(&key).into_owned(),
            };
            let (group, topic, partition) = parse_offset_key(&key).ok_or_else(corrupt)?;
            out.push((
                group,
                topic,
                partition,
                CommittedOffset::decode(&value).ok_or_else(corrupt)?,
            ));
        }
        Ok(out)
    }

    pub fn consumer_groups(&self) -> Result<Vec<ConsumerGroupRecord>, MetaError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_GROUPS), IteratorMode::Start) {
            let (key, value) = item?;
            if value.first() != Some(&CONSUMER_GROUP_VERSION) {
                continue;
            }
            let id = String::from_utf8_lossy(&key).into_owned();
            out.push(
                ConsumerGroupRecord::decode(&id, &value).ok_or(MetaError::Corrupt {
                    what: "consumer group",
                    key: id,
                })?,
            );
        }
        Ok(out)
    }

    /// The classic groups' records.
    pub fn groups(&self) -> Result<Vec<GroupRecord>, MetaError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_GROUPS), IteratorMode::Start) {
            let (key, value) = item?;
            if value.first() == Some(&CONSUMER_GROUP_VERSION) {
                continue;
            }
            let id = String::from_utf8_lossy(&key).into_owned();
            out.push(GroupRecord::decode(&id, &value).ok_or(MetaError::Corrupt {
                what: "group",
                key: id,
            })?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_groups_round_trip_and_delete_by_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(dir.path()).unwrap();
        let o = |offset| CommittedOffset {
            offset,
            leader_epoch: 0,
            metadata: "m".into(),
            commit_timestamp_ms: 9,
        };
        let commit = |group: &str, offsets: Vec<(String, i32, CommittedOffset)>| GroupWrite::CommitOffsets {
            group: group.into(),
            offsets,
        };
        store
            .write_group_changes(&[
                commit("g", vec![("t".into(), 0, o(5)), ("t".into(), 1, o(7))]),
                commit("g2", vec![("t".into(), 0, o(1))]),
                commit("gone", vec![("t".into(), 0, o(1))]),
                // A deletion removes what the same batch wrote before it.
                GroupWrite::DeleteGroup("gone".into()),
            ])
            .unwrap();
        let group = GroupRecord {
            group_id: "g".into(),
            protocol_type: "consumer".into(),
            protocol_name: "range".into(),
            generation: 3,
            leader: "m1".into(),
            members: vec![MemberRecord {
                member_id: "m1".into(),
                instance_id: Some("i".into()),
                assignment: Bytes::from_static(b"a"),
                ..Default::default()
            }],
        };
        store
            .write_group_changes(&[GroupWrite::PutGroup(group.clone())])
            .unwrap();
        assert_eq!(store.groups().unwrap(), vec![group]);
        let consumer = ConsumerGroupRecord {
            group_id: "cg".into(),
            group_epoch: 4,
            assignment_epoch: 4,
            subscribed_topics: vec![("t".into(), uuid::Uuid::from_bytes([3; 16]), 6)],
            members: vec![ConsumerMemberRecord {
                member_id: "m".into(),
                instance_id: Some("i".into()),
                member_epoch: 4,
                state: 1,
                subscribed_topic_names: vec!["t".into()],
                subscribed_topic_regex: Some("t.*".into()),
                assigned: vec![(uuid::Uuid::from_bytes([3; 16]), vec![0, 1])],
                target: vec![(uuid::Uuid::from_bytes([3; 16]), vec![1])],
                ..Default::default()
            }],
        };
        store
            .write_group_changes(&[GroupWrite::PutConsumerGroup(consumer.clone())])
            .unwrap();
        assert_eq!(store.consumer_groups().unwrap(), vec![consumer]);
        assert_eq!(store.groups().unwrap().len(), 1, "classic groups only");
        store
            .write_group_changes(&[GroupWrite::DeleteGroup("cg".into())])
            .unwrap();
        assert!(store.consumer_groups().unwrap().is_empty());
        assert_eq!(store.all_offsets().unwrap().len(), 3);
        store
            .write_group_changes(&[GroupWrite::DeleteOffsets {
                group: "g".into(),
                partitions: vec![("t".into(), 1)],
            }])
            .unwrap();
        assert_eq!(store.all_offsets().unwrap().len(), 2);
        store
            .write_group_changes(&[GroupWrite::DeleteGroup("g".into())])
            .unwrap();
        assert!(store.groups().unwrap().is_empty());
        let left = store.all_offsets().unwrap();
        assert_eq!(left, vec![("g2".into(), "t".into(), 0, o(1))]);
    }
}
