//! The `offsets` and `groups` column families: committed offsets (written before a commit is
//! acknowledged) and classic group metadata (generation, protocol, members, assignments).

use bytes::Bytes;
use rocksdb::{Direction, IteratorMode, WriteBatch};

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

impl MetaStore {
    /// Stores a group's commits atomically (one synced write batch).
    pub fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(String, i32, CommittedOffset)],
    ) -> Result<(), MetaError> {
        let mut batch = WriteBatch::default();
        for (topic, partition, o) in offsets {
            batch.put_cf(
                self.cf(CF_OFFSETS),
                offset_key(group, topic, *partition),
                o.encode(),
            );
        }
        self.db.write_opt(batch, &Self::durable())?;
        Ok(())
    }

    pub fn delete_offsets(&self, group: &str, partitions: &[(String, i32)]) -> Result<(), MetaError> {
        let mut batch = WriteBatch::default();
        for (topic, partition) in partitions {
            batch.delete_cf(self.cf(CF_OFFSETS), offset_key(group, topic, *partition));
        }
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

    /// Removes a group: its record and all its offsets, in one synced batch.
    pub fn delete_group(&self, group: &str) -> Result<(), MetaError> {
        let mut batch = WriteBatch::default();
        let prefix = group_prefix(group);
        for item in self.db.iterator_cf(
            self.cf(CF_OFFSETS),
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (key, _) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            batch.delete_cf(self.cf(CF_OFFSETS), key);
        }
        batch.delete_cf(self.cf(CF_GROUPS), group.as_bytes());
        self.db.write_opt(batch, &Self::durable())?;
        Ok(())
    }

    pub fn put_group(&self, group: &GroupRecord) -> Result<(), MetaError> {
        self.db.put_cf_opt(
            self.cf(CF_GROUPS),
            group.group_id.as_bytes(),
            group.encode(),
            &Self::durable(),
        )?;
        Ok(())
    }

    pub fn groups(&self) -> Result<Vec<GroupRecord>, MetaError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_GROUPS), IteratorMode::Start) {
            let (key, value) = item?;
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
        store
            .commit_offsets("g", &[("t".into(), 0, o(5)), ("t".into(), 1, o(7))])
            .unwrap();
        store.commit_offsets("g2", &[("t".into(), 0, o(1))]).unwrap();
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
        store.put_group(&group).unwrap();
        assert_eq!(store.groups().unwrap(), vec![group]);
        assert_eq!(store.all_offsets().unwrap().len(), 3);
        store.delete_group("g").unwrap();
        assert!(store.groups().unwrap().is_empty());
        let left = store.all_offsets().unwrap();
        assert_eq!(left, vec![("g2".into(), "t".into(), 0, o(1))]);
    }
}
