//! What the fuzz targets (`fuzz/`, run by `scripts/fuzz.sh`) feed arbitrary bytes to: request
//! framing and decoding for every advertised API, produce batch validation, a partition's
//! recovery from arbitrary segment and index files, and the properties and checkpoint
//! parsers. Each entry point must return for any input: no panic, no hang, no unbounded
//! allocation. The same functions replay the checked-in corpora as a unit test, so a finding
//! fixed once stays fixed in `scripts/test.sh`.
//!
//! Above every layer (like `main.rs`): it drives the server's parser and the log directly.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::config::{properties, Config};
use crate::log::{
    decode_batches, read_partition_metadata, read_recovery_points, validate_produce_batch, validate_records,
    BatchHeaders, LogConfig, LogDirHealth, PartitionLog, RecoveryHint,
};
use crate::server::{parse_request, ParsedRequest};

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, as `fuzz/fuzz_targets/<name>.rs` and the corpus directories name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("request", request),
    ("record_batch", record_batch),
    ("segment_recovery", segment_recovery),
    ("properties", properties),
];

/// A request frame (without its size prefix), as the connection reads it: the header parsed
/// and checked against the API table, then the body decoded as that API and version.
pub fn request(data: &[u8]) {
    if let Ok(ParsedRequest::Request {
        entry, version, body, ..
    }) = parse_request(Bytes::copy_from_slice(data))
    {
        let _ = entry.decode_only(body, version);
    }
}

/// A produced batch, through every check a Produce applies before the append: the header and
/// CRC, the record walk (with and without the compacted topic's key rule), and the checked
/// decoding a compacted topic's compressed batch and a ListOffsets by timestamp use.
///
/// A fuzzer cannot forge CRC-32C checksums, so each input also runs with its batches' CRCs
/// recomputed, which lets it reach the record walk.
pub fn record_batch(data: &[u8]) {
    check_batch(data);
    let mut fixed = data.to_vec();
    if fix_crcs(&mut fixed) > 0 {
        check_batch(&fixed);
    }
}

fn check_batch(data: &[u8]) {
    let Ok(header) = validate_produce_batch(data) else {
        return;
    };
    let config = LogConfig::default();
    let now = 1_700_000_000_000;
    let _ = validate_records(data, &header, &config, now, None);
    let _ = validate_records(data, &header, &config, now, Some("fuzz-0"));
    // As a compacted topic's produce and a ListOffsets by timestamp decode a batch.
    let _ = decode_batches(Bytes::copy_from_slice(data));
}

/// Recomputes the CRC-32C of each v2 batch laid end to end in `bytes` (as far as their length
/// fields chain), returning how many it fixed.
fn fix_crcs(bytes: &mut [u8]) -> usize {
    const CRC_AT: usize = 17;
    const ATTRIBUTES_AT: usize = 21;
    let (mut pos, mut fixed) = (0usize, 0usize);
    while bytes.len() - pos >= crate::log::BATCH_HEADER_SIZE {
        let length = i32::from_be_bytes([bytes[pos + 8], bytes[pos + 9], bytes[pos + 10], bytes[pos + 11]]);
        let Some(size) = usize::try_from(length).ok().and_then(|l| l.checked_add(12)) else {
            break;
        };
        if size < crate::log::BATCH_HEADER_SIZE || size > bytes.len() - pos {
            break;
        }
        let crc = crc32c::crc32c(&bytes[pos + ATTRIBUTES_AT..pos + size]);
        bytes[pos + CRC_AT..pos + ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
        fixed += 1;
        pos += size;
    }
    fixed
}

/// Splits the input into a partition directory's files (one or two segments with their
/// indexes, the recovery-point checkpoint, partition.metadata), opens the partition as a start
/// after a crash or after a clean shutdown would, and reads everything it then serves. Then
/// one append and read back must work on whatever recovery kept.
pub fn segment_recovery(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some(root) = ScratchDir::new() else {
        return;
    };
    let dir = root.path().join("fuzz-0");
    if std::fs::create_dir(&dir).is_err() {
        return;
    }
    // Parts separated by a marker unlikely inside short inputs; missing parts stay empty. Mode
    // bit 1 recomputes the segments' batch CRCs, which a fuzzer cannot forge.
    let mut parts: Vec<Vec<u8>> = split_parts(rest).into_iter().map(<[u8]>::to_vec).collect();
    parts.resize(8, Vec::new());
    if mode & 2 == 2 {
        fix_crcs(&mut parts[0]);
        fix_crcs(&mut parts[4]);
    }
    let second_base = 1000;
    let names = [
        format!("{:020}.log", 0),
        format!("{:020}.index", 0),
        format!("{:020}.timeindex", 0),
        format!("{:020}.txnindex", 0),
        format!("{second_base:020}.log"),
        format!("{second_base:020}.index"),
        "partition.metadata".to_string(),
        "recovery-point-offset-checkpoint".to_string(),
    ];
    let files: Vec<(String, &[u8])> = names.into_iter().zip(parts.iter().map(Vec::as_slice)).collect();
    for (name, bytes) in &files {
        // An empty second segment is left out, so single-segment logs are common.
        if bytes.is_empty() && name.starts_with(&format!("{second_base:020}")) {
            continue;
        }
        let target = if name == "recovery-point-offset-checkpoint" {
            root.path().join(name)
        } else {
            dir.join(name)
        };
        if write_file(&target, bytes).is_err() {
            return;
        }
    }
    let _ = read_partition_metadata(&dir);
    let points = read_recovery_points(root.path());
    let hint = RecoveryHint {
        clean_shutdown: mode & 1 == 1,
        recovery_point: points.get(&("fuzz".to_string(), 0)).copied(),
    };
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..LogConfig::default()
    };
    let health = LogDirHealth::new(root.path());
    let Ok(log) = PartitionLog::open_recovering(&dir, config, health, Vec::new(), hint) else {
        return;
    };
    read_all(&log);
    if log.append(&one_record_batch(), 1_700_000_000_000).is_ok() {
        let _ = log.flush_until(log.log_end_offset());
        read_all(&log);
    }
}

/// Reads a log from its start to its high watermark, batch by batch, as a consumer would.
fn read_all(log: &PartitionLog) {
    let mut offset = log.log_start_offset();
    // Each read returns at least one batch or nothing; bounded so a bug cannot loop forever.
    for _ in 0..10_000 {
        let Ok(read) = log.read(offset, 1 << 20, true) else {
            return;
        };
        let mut last = None;
        for (_, header) in BatchHeaders::new(&read.records) {
            last = Some(header.last_offset());
        }
        match last {
            Some(last) if last >= offset => offset = last + 1,
            _ => return,
        }
    }
    panic!("reading the recovered log did not end");
}

fn split_parts(data: &[u8]) -> Vec<&[u8]> {
    const MARKER: &[u8] = b"|||";
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() < 7 {
        match rest.windows(MARKER.len()).position(|w| w == MARKER) {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + MARKER.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}

/// A directory of its own under the system's temporary directory, removed when dropped (the
/// library does not depend on `tempfile`).
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Option<ScratchDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "keel-fuzz-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).ok()?;
        Some(ScratchDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A valid one-record batch, as a producer sends it.
fn one_record_batch() -> Vec<u8> {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType as WireTimestampType,
    };
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: WireTimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from_static(b"v")),
        headers: Default::default(),
    };
    let mut buf = bytes::BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, [&record], &options).expect("a one-record batch encodes");
    buf.to_vec()
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::File::create(path)?.write_all(bytes)
}

/// A server.properties text, then every entry it gives as a command-line override of a
/// configuration (which checks each known setting's type, bounds and allowed values), and
/// each line as an environment variable name of the apache/kafka image's convention.
pub fn properties(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let entries = properties::parse(&text);
    let overrides: Vec<String> = entries.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = Config::load(None, Vec::new(), &overrides);
    for line in text.lines() {
        let _ = properties::env_to_key(line);
    }
}

/// Replays every checked-in corpus file through its target (the short version of fuzzing that
/// `scripts/test.sh` runs).
pub fn replay_corpus(corpus_root: &Path) -> usize {
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let Ok(entries) = std::fs::read_dir(corpus_root.join(name)) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(bytes) = std::fs::read(entry.path()) {
                target(&bytes);
                replayed += 1;
            }
        }
    }
    replayed
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Every corpus input, including each past finding, runs through its target without a panic.
    #[test]
    fn checked_in_fuzz_corpora_replay_cleanly() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let replayed = super::replay_corpus(&root);
        assert!(
            replayed >= super::TARGETS.len(),
            "only {replayed} corpus inputs under {}",
            root.display()
        );
    }
}
