//! The record checks Kafka's LogValidator applies to a batch a client produces, beyond its header
//! and CRC (`batch::validate_produce_batch`): in an uncompressed batch, the records actually
//! present must be what the header declares (their count, each record's length and fields), and
//! every record's timestamp must lie within `message.timestamp.before.max.ms` /
//! `after.max.ms` of the broker's clock under CreateTime, and in a compacted topic every record
//! must have a key. One pass over the record bytes, no allocation unless a record is refused.
//!
//! Compressed batches are not decompressed here: their timestamps are checked from the header's
//! base and max timestamps (the first record's and the largest), which bounds every record from
//! above but not from below; Kafka decompresses and checks each one.
//!
//! Where Keel does decode records (a compacted topic's compressed produce, ListOffsets by
//! timestamp), `decode_batches` walks each decompressed records section the same way before
//! kafka-protocol's decoder, which sizes allocations from the counts it reads, sees it.

use std::cell::Cell;

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder, RecordSet};

use super::batch::{RecordBatchHeader, BATCH_HEADER_SIZE};
use super::compression::decompress;
use super::record::Reader;
use super::{LogConfig, LogError, TimestampType};

/// Checks a produced batch's records against `config` at `now_ms`. `keys_required` names the
/// topic partition when its topic is compacted: every record needs a key (checked here for
/// uncompressed batches; the caller decodes compressed ones).
pub fn validate_records(
    batch: &[u8],
    header: &RecordBatchHeader,
    config: &LogConfig,
    now_ms: i64,
    keys_required: Option<&str>,
) -> Result<(), LogError> {
    let check_timestamps = config.timestamp_type == TimestampType::CreateTime;
    if header.timestamp_type() == TimestampType::LogAppendTime && !check_timestamps {
        return Err(LogError::InvalidTimestamp(vec![(
            0,
            "Invalid timestamp type in message. Producer should not set timestamp type to LogAppendTime."
                .into(),
        )]));
    }
    let bounds = TimestampBounds::new(config, now_ms);
    if header.compression() != 0 {
        // The header's timestamps stand for the records Kafka would check one by one.
        if check_timestamps {
            for ts in [header.base_timestamp(), header.max_timestamp()] {
                if let Some(e) = bounds.refuse(ts, header.base_offset()) {
                    return Err(LogError::InvalidTimestamp(vec![(0, e)]));
                }
            }
        }
        return Ok(());
    }
    let mut reader = Reader::new(&batch[BATCH_HEADER_SIZE..]);
    // As Kafka's validateRecord: a record missing its key is refused for that, else its
    // timestamp is checked; any timestamp error makes the whole answer INVALID_TIMESTAMP.
    let (mut record_errors, mut timestamp_refused) = (Vec::new(), false);
    for index in 0..header.record_count() {
        if reader.at_end() {
            return Err(invalid("Incorrect declared batch size, premature EOF reached"));
        }
        let record = reader.record()?;
        if let (Some(partition), None) = (keys_required, record.key) {
            record_errors.push((
                index,
                format!("Compacted topic cannot accept message without key in topic partition {partition}."),
            ));
        } else if check_timestamps {
            let ts = header.base_timestamp().wrapping_add(record.timestamp_delta);
            // The offset only names the record in the message; a client's base offset may be
            // anything before the log assigns one, so it wraps, as in Kafka.
            if let Some(e) = bounds.refuse(ts, header.base_offset().wrapping_add(i64::from(index))) {
                record_errors.push((index, e));
                timestamp_refused = true;
            }
        }
    }
    if !reader.at_end() {
        return Err(invalid(
            "Incorrect declared batch size, records still remaining in file",
        ));
    }
    match (record_errors.is_empty(), timestamp_refused) {
        (true, _) => Ok(()),
        (false, true) => Err(LogError::InvalidTimestamp(record_errors)),
        (false, false) => Err(LogError::InvalidRecords(record_errors)),
    }
}

/// Decodes whole record batches with kafka-protocol's RecordBatchDecoder, after checking what
/// it would otherwise trust. Its decoder sizes each record's header map from the header count
/// before reading a single header, so 83 bytes claiming 2^31 headers made it touch 2 GB (found
/// by the `record_batch` fuzz target). Here each batch's records section, decompressed, is
/// first walked as `validate_records` walks an uncompressed batch: the decoder sees only
/// sections holding exactly the records their header counts, each a well-formed record whose
/// every length and count is backed by bytes.
pub fn decode_batches(mut bytes: Bytes) -> Result<RecordSet, LogError> {
    // The decompression hook does not see the batch header: take the record counts, in order,
    // from the batches laid end to end (the decoder stops at the first that does not chain).
    let mut batches = Vec::new();
    let mut pos = 0usize;
    while let Some(head) = bytes.get(pos..pos + BATCH_HEADER_SIZE) {
        let field = |at: usize, n: usize| head[at..at + n].iter().fold(0i64, |v, b| v << 8 | i64::from(*b));
        let length = field(8, 4) as i32;
        batches.push(Bases {
            count: field(57, 4) as i32,
            offset: field(0, 8),
            timestamp: field(27, 8),
        });
        match usize::try_from(length) {
            Ok(length) => pos = pos.saturating_add(12).saturating_add(length),
            Err(_) => break,
        }
    }
    let next = Cell::new(0usize);
    let checked = |section: &mut Bytes, compression: Compression| -> anyhow::Result<Bytes> {
        let plain = decompress(compression, section)?;
        let index = next.replace(next.get() + 1);
        let bases = batches.get(index).copied().unwrap_or(Bases {
            count: -1,
            offset: 0,
            timestamp: 0,
        });
        let declared = bases.count;
        let present = count_records(&plain, &bases).map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(
            usize::try_from(declared).is_ok_and(|d| d == present),
            "the batch declares {declared} records and holds {present}"
        );
        Ok(plain)
    };
    RecordBatchDecoder::decode_with_custom_compression(&mut bytes, Some(checked))
        .map_err(|e| invalid(&format!("Undecodable record batch: {e}")))
}

/// What a batch's header says its records are relative to.
#[derive(Debug, Clone, Copy)]
struct Bases {
    count: i32,
    offset: i64,
    timestamp: i64,
}

/// How many well-formed records a records section holds, ending exactly with the last. Each
/// record's offset and timestamp (base plus delta) must be representable: the decoder adds
/// them without checking.
fn count_records(section: &[u8], bases: &Bases) -> Result<usize, LogError> {
    let mut reader = Reader::new(section);
    let mut count = 0;
    while !reader.at_end() {
        let record = reader.record()?;
        if bases.timestamp.checked_add(record.timestamp_delta).is_none()
            || bases.offset.checked_add(i64::from(record.offset_delta)).is_none()
        {
            return Err(invalid(
                "A record's timestamp or offset delta overflows its batch's base",
            ));
        }
        count += 1;
    }
    Ok(count)
}

fn invalid(message: &str) -> LogError {
    LogError::InvalidRecord(message.into())
}

/// The window a CreateTime record's timestamp must lie in.
struct TimestampBounds {
    now: i64,
    before: i64,
    after: i64,
}

impl TimestampBounds {
    fn new(config: &LogConfig, now: i64) -> Self {
        TimestampBounds {
            now,
            before: config.timestamp_before_max_ms,
            after: config.timestamp_after_max_ms,
        }
    }

    /// Kafka's message for a timestamp out of the window; none for one inside it or for a record
    /// without a timestamp (-1).
    fn refuse(&self, ts: i64, offset: i64) -> Option<String> {
        let diff = self.now.saturating_sub(ts);
        (ts != -1 && (diff > self.before || diff.saturating_neg() > self.after)).then(|| {
            format!(
                "Timestamp {ts} of message with offset {offset} is out of range. The timestamp should be within [{}, {}]",
                self.now.saturating_sub(self.before),
                self.now.saturating_add(self.after)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::validate_produce_batch;
    use crate::log::testutil::BatchSpec;

    const NOW: i64 = 1_700_000_000_000;

    fn check(batch: &[u8], config: &LogConfig) -> Result<(), LogError> {
        let header = validate_produce_batch(batch)?;
        validate_records(batch, &header, config, NOW, None)
    }

    fn config() -> LogConfig {
        LogConfig {
            timestamp_before_max_ms: 60_000,
            timestamp_after_max_ms: 60_000,
            ..LogConfig::default()
        }
    }

    #[test]
    fn well_formed_records_within_the_window_pass() {
        let b = BatchSpec::new(5).timestamps(NOW - 1_000, 100).build();
        check(&b, &config()).unwrap();
        check(
            &BatchSpec::new(1).timestamps(NOW, 0).value_size(300).build(),
            &config(),
        )
        .unwrap();
    }

    #[test]
    fn a_record_count_that_disagrees_with_the_records_is_invalid() {
        // More records declared than present, and fewer.
        let more = BatchSpec::new(3).timestamps(NOW, 1).claimed_records(4).build();
        assert!(
            matches!(check(&more, &config()), Err(LogError::InvalidRecord(m)) if m.contains("premature EOF"))
        );
        let fewer = BatchSpec::new(3).timestamps(NOW, 1).claimed_records(2).build();
        assert!(
            matches!(check(&fewer, &config()), Err(LogError::InvalidRecord(m)) if m.contains("records still remaining"))
        );
    }

    #[test]
    fn a_record_whose_length_disagrees_with_its_fields_is_invalid() {
        let mut b = BatchSpec::new(1).timestamps(NOW, 0).build();
        // The first record's length varint is the first byte after the header: grow it by one
        // (zigzag: +2) and append a byte so the batch still holds the declared length.
        b[BATCH_HEADER_SIZE] += 2;
        b.push(0);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(
            matches!(check(&b, &config()), Err(LogError::InvalidRecord(m)) if m.contains("Invalid record size"))
        );
    }

    #[test]
    fn timestamps_outside_the_window_are_refused_per_record() {
        let b = BatchSpec::new(4).timestamps(NOW - 30_000, 30_000).build();
        // Records at -30 s, 0, +30 s, +60 s: all within 60 s.
        check(&b, &config()).unwrap();
        let b = BatchSpec::new(4).timestamps(NOW - 90_000, 60_000).build();
        // Records at -90 s, -30 s, +30 s, +90 s: the first and the last are out.
        match check(&b, &config()) {
            Err(LogError::InvalidTimestamp(errors)) => {
                assert_eq!(errors.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 3]);
                assert!(errors[0].1.contains("is out of range"), "{}", errors[0].1);
            }
            other => panic!("expected INVALID_TIMESTAMP, got {other:?}"),
        }
    }

    #[test]
    fn log_append_time_topics_ignore_client_timestamps_but_refuse_the_attribute() {
        let config = LogConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..config()
        };
        check(&BatchSpec::new(2).timestamps(0, 1).build(), &config).unwrap();
        let stamped = BatchSpec::new(2).timestamps(NOW, 1).attributes(0x08).build();
        assert!(matches!(
            check(&stamped, &config),
            Err(LogError::InvalidTimestamp(_))
        ));
    }

    #[test]
    fn compressed_batches_are_checked_by_their_header_timestamps() {
        // gzip: the records are not decompressed, only the header timestamps checked.
        let b = BatchSpec::new(2)
            .timestamps(NOW + 120_000, 1)
            .attributes(1)
            .build();
        assert!(matches!(check(&b, &config()), Err(LogError::InvalidTimestamp(_))));
        check(
            &BatchSpec::new(2).timestamps(NOW, 1).attributes(1).build(),
            &config(),
        )
        .unwrap();
    }

    #[test]
    fn a_compacted_topic_refuses_keyless_records_and_names_them() {
        let keyed = BatchSpec::new(2).timestamps(NOW, 1).build();
        let header = validate_produce_batch(&keyed).unwrap();
        validate_records(&keyed, &header, &config(), NOW, Some("t-0")).unwrap();
        let keyless = keyless_batch();
        let header = validate_produce_batch(&keyless).unwrap();
        match validate_records(&keyless, &header, &config(), NOW, Some("t-0")) {
            Err(LogError::InvalidRecords(errors)) => {
                assert_eq!(errors.len(), 1);
                assert_eq!(errors[0].0, 0);
                assert!(
                    errors[0].1.contains("without key in topic partition t-0"),
                    "{}",
                    errors[0].1
                );
            }
            other => panic!("expected INVALID_RECORD, got {other:?}"),
        }
        // Not compacted: a keyless record is fine.
        validate_records(&keyless, &header, &config(), NOW, None).unwrap();
    }

    /// One uncompressed record with a null key at `NOW`.
    fn keyless_batch() -> Vec<u8> {
        // length, attributes 0, timestamp delta 0, offset delta 0, key -1, value "v" (1), 0 headers
        let record = [0u8, 0, 0, 1, 2, b'v', 0];
        let mut records = vec![(record.len() as u8) << 1];
        records.extend_from_slice(&record);
        let mut b = BatchSpec::new(1).timestamps(NOW, 0).build();
        b.truncate(BATCH_HEADER_SIZE);
        b.extend_from_slice(&records);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// The process's peak resident memory, in MiB.
    fn peak_rss_mib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib / 1024
    }

    #[test]
    fn decoding_checks_records_before_the_decoder_trusts_their_counts() {
        // Plain and gzip-compressed, well formed: decoded as the records they are.
        for attributes in [0, 1] {
            let b = BatchSpec::new(3).attributes(attributes).build();
            let set = decode_batches(Bytes::from(b)).unwrap();
            let keys: Vec<_> = set.records.iter().map(|r| r.key.clone().unwrap()).collect();
            assert_eq!(keys, [&b"k0"[..], b"k1", b"k2"]);
        }
        // Records claiming 2^31 - 1 headers they do not hold: kafka-protocol alone would size a
        // header map for them (2 GB touched per record); here they are refused first.
        let before = peak_rss_mib();
        for attributes in [0, 1] {
            let b = BatchSpec::new(3)
                .attributes(attributes)
                .headers_claimed(i64::from(i32::MAX))
                .build();
            assert!(matches!(
                decode_batches(Bytes::from(b)),
                Err(LogError::InvalidRecord(_))
            ));
        }
        let grown = peak_rss_mib().saturating_sub(before);
        assert!(
            grown < 256,
            "decoding hostile header counts grew the peak RSS by {grown} MiB"
        );
        // A header count that disagrees with the records present is refused too.
        let b = BatchSpec::new(3).attributes(1).record_count_field(2).build();
        assert!(decode_batches(Bytes::from(b)).is_err());
    }
}
