//! Transaction markers: the control batches (COMMIT or ABORT) the transaction coordinator
//! writes to every partition of a transaction when it ends, in Kafka's format: a transactional
//! control batch of one record whose key is (version 0, type) and whose value is (version 0,
//! coordinator epoch).

use super::batch::{RecordBatchHeader, BATCH_HEADER_SIZE};

const ATTRIBUTES: i16 = 0x10 | 0x20; // transactional | control
const ABORT: i16 = 0;
const COMMIT: i16 = 1;

/// The end of one producer's transaction in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub coordinator_epoch: i32,
    pub commit: bool,
}

fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// A zigzag varint at the start of `b`: (value, bytes used).
fn read_varint(b: &[u8]) -> Option<(i64, usize)> {
    let mut z = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        z |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((((z >> 1) as i64) ^ -((z & 1) as i64), i + 1));
        }
    }
    None
}

impl TxnMarker {
    /// The marker as a v2 batch at base offset 0 (the log assigns the real one), stamped with
    /// `timestamp`.
    pub fn batch(&self, timestamp: i64) -> Vec<u8> {
        let mut record = vec![0u8]; // attributes
        varint(&mut record, 0); // timestamp delta
        varint(&mut record, 0); // offset delta
        varint(&mut record, 4);
        record.extend_from_slice(&0i16.to_be_bytes());
        record.extend_from_slice(&(if self.commit { COMMIT } else { ABORT }).to_be_bytes());
        varint(&mut record, 6);
        record.extend_from_slice(&0i16.to_be_bytes());
        record.extend_from_slice(&self.coordinator_epoch.to_be_bytes());
        varint(&mut record, 0); // headers
        let mut records = Vec::with_capacity(record.len() + 2);
        varint(&mut records, record.len() as i64);
        records.extend_from_slice(&record);

        let mut b = Vec::with_capacity(BATCH_HEADER_SIZE + records.len());
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&((BATCH_HEADER_SIZE - 12 + records.len()) as i32).to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch, set at append
        b.push(2);
        b.extend_from_slice(&[0; 4]); // CRC, below
        b.extend_from_slice(&ATTRIBUTES.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
        b.extend_from_slice(&timestamp.to_be_bytes());
        b.extend_from_slice(&timestamp.to_be_bytes());
        b.extend_from_slice(&self.producer_id.to_be_bytes());
        b.extend_from_slice(&self.producer_epoch.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
        b.extend_from_slice(&1i32.to_be_bytes()); // record count
        b.extend_from_slice(&records);
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// Reads the marker of a control batch (`batch` whole, its header `h`). `None` for a
    /// control record of another type, or bytes that do not hold one.
    pub fn parse(h: &RecordBatchHeader, batch: &[u8]) -> Option<TxnMarker> {
        if !h.is_control() {
            return None;
        }
        let rest = batch.get(BATCH_HEADER_SIZE..)?;
        let (_, mut at) = read_varint(rest)?; // record length
        at += 1; // attributes
        for _ in 0..2 {
            // timestamp delta, offset delta
            at += read_varint(rest.get(at..)?)?.1;
        }
        let (key_len, n) = read_varint(rest.get(at..)?)?;
        at += n;
        let key = rest.get(at..at + usize::try_from(key_len).ok()?)?;
        at += key.len();
        let kind = i16::from_be_bytes(key.get(2..4)?.try_into().ok()?);
        let (_, n) = read_varint(rest.get(at..)?)?; // value length
        at += n;
        let coordinator_epoch = i32::from_be_bytes(rest.get(at + 2..at + 6)?.try_into().ok()?);
        let commit = match kind {
            COMMIT => true,
            ABORT => false,
            _ => return None,
        };
        Some(TxnMarker {
            producer_id: h.producer_id(),
            producer_epoch: h.producer_epoch(),
            coordinator_epoch,
            commit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::crc_matches;

    #[test]
    fn markers_round_trip_in_kafkas_layout() {
        for commit in [true, false] {
            let marker = TxnMarker {
                producer_id: 42,
                producer_epoch: 3,
                coordinator_epoch: 7,
                commit,
            };
            let b = marker.batch(1_700_000_000_000);
            let h = RecordBatchHeader::parse(&b).unwrap();
            assert!(crc_matches(&h, &b));
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.record_count(), h.base_sequence(), h.size()), (1, -1, b.len()));
            assert_eq!(h.max_timestamp(), 1_700_000_000_000);
            // Kafka's control record key: version 0 and the type (1 commit, 0 abort).
            let key_at = BATCH_HEADER_SIZE + 1 + 1 + 1 + 1 + 1;
            assert_eq!(&b[key_at..key_at + 4], &[0, 0, 0, u8::from(commit)]);
            assert_eq!(TxnMarker::parse(&h, &b), Some(marker));
        }
    }
}
