//! The v2 record batch header, produce-side validation and header rewriting. Records inside a
//! batch are never decoded here: batches stay bytes from the socket to the disk and back.

use super::{LogError, TimestampType};

/// Size of the v2 batch header; records start right after it.
pub const BATCH_HEADER_SIZE: usize = 61;
/// baseOffset + batchLength: the bytes not counted by batchLength.
pub(crate) const LOG_OVERHEAD: usize = 12;
/// The smallest batchLength a v2 batch can have (a header with no records).
const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_SIZE - LOG_OVERHEAD) as i32;

const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// The CRC covers everything from the attributes to the end of the batch.
const CRC_COVERED_FROM: usize = 21;
const MAX_TIMESTAMP_AT: usize = 35;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
pub(crate) const TRANSACTIONAL_BIT: i16 = 0x10;
pub(crate) const CONTROL_BIT: i16 = 0x20;
/// KIP-534: the base timestamp holds the delete horizon, set by the log cleaner.
pub(crate) const DELETE_HORIZON_BIT: i16 = 0x40;

/// The parsed 61-byte header of a v2 (magic 2) record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordBatchHeader {
    base_offset: i64,
    batch_length: i32,
    partition_leader_epoch: i32,
    magic: i8,
    crc: u32,
    attributes: i16,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    record_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl RecordBatchHeader {
    /// Parses the header at the start of `bytes`. Rejects (as `CorruptRecord`) a short slice, a
    /// magic other than 2 and a batchLength too small to hold the header, so that `size()` can
    /// always be used to step to the next batch. The CRC is not checked here.
    pub fn parse(bytes: &[u8]) -> Result<Self, LogError> {
        if bytes.len() < BATCH_HEADER_SIZE {
            return Err(LogError::CorruptRecord(format!(
                "{} bytes cannot hold a {BATCH_HEADER_SIZE}-byte record batch header",
                bytes.len()
            )));
        }
        // Magic sits at byte 16 in every message format, so check it before trusting the rest.
        let magic = bytes[MAGIC_AT] as i8;
        if magic != 2 {
            return Err(LogError::CorruptRecord(format!(
                "unsupported record batch magic {magic}"
            )));
        }
        let batch_length = be_i32(bytes, 8);
        if batch_length < MIN_BATCH_LENGTH {
            return Err(LogError::CorruptRecord(format!(
                "record batch length {batch_length} is smaller than the header"
            )));
        }
        Ok(RecordBatchHeader {
            base_offset: be_i64(bytes, 0),
            batch_length,
            partition_leader_epoch: be_i32(bytes, LEADER_EPOCH_AT),
            magic,
            crc: be_i32(bytes, CRC_AT) as u32,
            attributes: be_i16(bytes, 21),
            last_offset_delta: be_i32(bytes, 23),
            base_timestamp: be_i64(bytes, 27),
            max_timestamp: be_i64(bytes, MAX_TIMESTAMP_AT),
            producer_id: be_i64(bytes, 43),
            producer_epoch: be_i16(bytes, 51),
            base_sequence: be_i32(bytes, 53),
            record_count: be_i32(bytes, 57),
        })
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    /// Offset of the last record: baseOffset + lastOffsetDelta. Wrapping, as Java's: a client's
    /// batch may carry any base offset before the log assigns the real one.
    pub fn last_offset(&self) -> i64 {
        self.base_offset.wrapping_add(i64::from(self.last_offset_delta))
    }
    pub fn batch_length(&self) -> i32 {
        self.batch_length
    }
    /// Total size of the batch in bytes, including baseOffset and batchLength.
    pub fn size(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        self.partition_leader_epoch
    }
    pub fn magic(&self) -> i8 {
        self.magic
    }
    pub fn crc(&self) -> u32 {
        self.crc
    }
    pub fn attributes(&self) -> i16 {
        self.attributes
    }
    /// Compression codec id: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
    /// The time after which the cleaner may remove this batch's tombstones (or, for a control
    /// batch, the marker), once a cleaning has set it (KIP-534).
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes & DELETE_HORIZON_BIT != 0).then_some(self.base_timestamp)
    }
    pub fn last_offset_delta(&self) -> i32 {
        self.last_offset_delta
    }
    pub fn base_timestamp(&self) -> i64 {
        self.base_timestamp
    }
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    pub fn producer_id(&self) -> i64 {
        self.producer_id
    }
    pub fn producer_epoch(&self) -> i16 {
        self.producer_epoch
    }
    pub fn base_sequence(&self) -> i32 {
        self.base_sequence
    }
    pub fn record_count(&self) -> i32 {
        self.record_count
    }
}

/// Whether the CRC stored in `batch` (one whole batch) matches its contents.
pub(crate) fn crc_matches(header: &RecordBatchHeader, batch: &[u8]) -> bool {
    batch.len() >= BATCH_HEADER_SIZE && crc32c::crc32c(&batch[CRC_COVERED_FROM..]) == header.crc
}

/// The checks Kafka applies to the batch of one partition in a produce request (v3+): exactly
/// one v2 batch, intact, with a consistent record count, and no control batch.
pub fn validate_produce_batch(bytes: &[u8]) -> Result<RecordBatchHeader, LogError> {
    let header = RecordBatchHeader::parse(bytes)?;
    let size = header.size();
    if size > bytes.len() {
        return Err(LogError::CorruptRecord(format!(
            "record batch claims {size} bytes but only {} were sent",
            bytes.len()
        )));
    }
    if size < bytes.len() {
        return Err(if RecordBatchHeader::parse(&bytes[size..]).is_ok() {
            LogError::InvalidRecord("exactly one record batch per partition".into())
        } else {
            LogError::CorruptRecord(format!(
                "{} trailing bytes after the record batch",
                bytes.len() - size
            ))
        });
    }
    if !crc_matches(&header, bytes) {
        return Err(LogError::CorruptRecord("record batch CRC mismatch".into()));
    }
    if header.record_count < 1 {
        return Err(LogError::InvalidRecord(format!(
            "record batch has record count {}",
            header.record_count
        )));
    }
    if i64::from(header.last_offset_delta) != i64::from(header.record_count) - 1 {
        return Err(LogError::InvalidRecord(format!(
            "lastOffsetDelta {} does not match record count {}",
            header.last_offset_delta, header.record_count
        )));
    }
    if header.is_control() {
        return Err(LogError::InvalidRecord(
            "clients may not write control batches".into(),
        ));
    }
    if header.producer_id >= 0 && header.base_sequence < 0 {
        return Err(LogError::InvalidRecord(format!(
            "Invalid sequence number {} in record batch with producerId {}",
            header.base_sequence, header.producer_id
        )));
    }
    Ok(header)
}

/// The header of `batch` as it is stored: offsets assigned, leader epoch set, and for
/// LogAppendTime the timestamp type and maxTimestamp set the way Kafka does it (records are left
/// alone). Only a changed CRC-covered field forces a CRC recomputation, and that is computed over
/// the new header and the untouched payload in place.
pub(crate) fn rewrite_header(
    batch: &[u8],
    base_offset: i64,
    leader_epoch: i32,
    log_append_time: Option<i64>,
) -> [u8; BATCH_HEADER_SIZE] {
    let mut h = [0u8; BATCH_HEADER_SIZE];
    h.copy_from_slice(&batch[..BATCH_HEADER_SIZE]);
    h[0..8].copy_from_slice(&base_offset.to_be_bytes());
    h[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
    if let Some(now) = log_append_time {
        let attributes = be_i16(&h, CRC_COVERED_FROM) | TIMESTAMP_TYPE_BIT;
        h[CRC_COVERED_FROM..CRC_COVERED_FROM + 2].copy_from_slice(&attributes.to_be_bytes());
        h[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now.to_be_bytes());
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&h[CRC_COVERED_FROM..]),
            &batch[BATCH_HEADER_SIZE..],
        );
        h[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
    h
}

/// Iterates over the whole batches at the start of a byte range, yielding each batch's position
/// in the range and its header. Only headers are read (no CRC check). Iteration stops at the
/// first batch that is partial or has an unusable header; `position()` then tells where the
/// whole batches end.
pub struct BatchHeaders<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> BatchHeaders<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BatchHeaders {
            buf,
            pos: 0,
            done: false,
        }
    }

    /// End of the last whole batch yielded so far.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl Iterator for BatchHeaders<'_> {
    type Item = (usize, RecordBatchHeader);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = &self.buf[self.pos..];
        match RecordBatchHeader::parse(rest) {
            Ok(h) if h.size() <= rest.len() => {
                let at = self.pos;
                self.pos += h.size();
                Some((at, h))
            }
            _ => {
                self.done = true;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::testutil::{batch, BatchSpec};

    #[test]
    fn parses_header_fields() {
        let b = BatchSpec::new(3).base_offset(7).timestamps(1000, 10).build();
        let h = RecordBatchHeader::parse(&b).unwrap();
        assert_eq!(h.base_offset(), 7);
        assert_eq!(h.last_offset(), 9);
        assert_eq!(h.size(), b.len());
        assert_eq!(h.magic(), 2);
        assert_eq!(h.record_count(), 3);
        assert_eq!(h.last_offset_delta(), 2);
        assert_eq!(h.base_timestamp(), 1000);
        assert_eq!(h.max_timestamp(), 1020);
        assert_eq!(h.producer_id(), -1);
        assert_eq!(h.producer_epoch(), -1);
        assert_eq!(h.base_sequence(), -1);
        assert_eq!(h.compression(), 0);
        assert_eq!(h.timestamp_type(), TimestampType::CreateTime);
        assert!(!h.is_transactional() && !h.is_control());
        assert_eq!(validate_produce_batch(&b).unwrap(), h);
    }

    #[test]
    fn rejects_short_and_mis_sized_buffers() {
        let b = batch(2);
        assert!(matches!(
            validate_produce_batch(&b[..40]),
            Err(LogError::CorruptRecord(_))
        ));
        assert!(matches!(
            validate_produce_batch(&b[..b.len() - 1]),
            Err(LogError::CorruptRecord(_))
        ));
        let mut trailing = b.clone();
        trailing.extend_from_slice(&[0u8; 5]);
        assert!(matches!(
            validate_produce_batch(&trailing),
            Err(LogError::CorruptRecord(_))
        ));
        let mut two = b.clone();
        two.extend_from_slice(&batch(1));
        match validate_produce_batch(&two) {
            Err(LogError::InvalidRecord(m)) => assert!(m.contains("exactly one")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_bad_magic_and_crc() {
        let mut b = batch(2);
        b[16] = 1;
        assert!(matches!(
            validate_produce_batch(&b),
            Err(LogError::CorruptRecord(_))
        ));
        let mut b = batch(2);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        match validate_produce_batch(&b) {
            Err(LogError::CorruptRecord(m)) => assert!(m.contains("CRC")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_inconsistent_counts_and_control_batches() {
        let b = BatchSpec::new(2).record_count_field(3).build();
        assert!(matches!(
            validate_produce_batch(&b),
            Err(LogError::InvalidRecord(_))
        ));
        let b = BatchSpec::new(0).build();
        assert!(matches!(
            validate_produce_batch(&b),
            Err(LogError::InvalidRecord(_))
        ));
        let b = BatchSpec::new(1).attributes(CONTROL_BIT).build();
        assert!(matches!(
            validate_produce_batch(&b),
            Err(LogError::InvalidRecord(_))
        ));
        let b = BatchSpec::new(1).attributes(TRANSACTIONAL_BIT).build();
        assert!(validate_produce_batch(&b).unwrap().is_transactional());
        let b = BatchSpec::new(1).producer(5, 0, -1).build();
        match validate_produce_batch(&b) {
            Err(LogError::InvalidRecord(m)) => assert!(m.contains("sequence"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rewrite_keeps_crc_for_create_time_and_recomputes_for_log_append_time() {
        let b = BatchSpec::new(3).timestamps(5000, 1).build();
        let h = rewrite_header(&b, 42, 3, None);
        let mut stored = h.to_vec();
        stored.extend_from_slice(&b[BATCH_HEADER_SIZE..]);
        let parsed = validate_produce_batch(&stored).unwrap();
        assert_eq!(parsed.base_offset(), 42);
        assert_eq!(parsed.partition_leader_epoch(), 3);
        assert_eq!(stored[CRC_COVERED_FROM..], b[CRC_COVERED_FROM..]);

        let h = rewrite_header(&b, 42, 0, Some(99_999));
        let mut stored = h.to_vec();
        stored.extend_from_slice(&b[BATCH_HEADER_SIZE..]);
        let parsed = validate_produce_batch(&stored).unwrap();
        assert_eq!(parsed.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(parsed.max_timestamp(), 99_999);
        assert_eq!(parsed.base_timestamp(), 5000);
    }

    #[test]
    fn iterates_whole_batches_only() {
        let mut buf = Vec::new();
        let sizes: Vec<usize> = (1..=3)
            .map(|n| {
                let b = BatchSpec::new(n).base_offset(n as i64 * 10).build();
                buf.extend_from_slice(&b);
                b.len()
            })
            .collect();
        let whole = buf.len();
        buf.extend_from_slice(&batch(2)[..30]);
        let mut it = BatchHeaders::new(&buf);
        let got: Vec<(usize, i64)> = it.by_ref().map(|(p, h)| (p, h.base_offset())).collect();
        assert_eq!(got, vec![(0, 10), (sizes[0], 20), (sizes[0] + sizes[1], 30)]);
        assert_eq!(it.position(), whole);
        assert_eq!(it.next(), None);
        assert_eq!(BatchHeaders::new(&[]).count(), 0);
    }
}
