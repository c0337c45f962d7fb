//! Loading a segment from disk. A sealed segment with sound index files is trusted after a
//! cheap structural check of its tail; the active segment, and any segment whose indexes are
//! missing or unsound, is scanned batch by batch (length, magic, CRC, offset order), cut back to
//! the last good batch, and gets its indexes rebuilt. A sealed segment was fsynced (data and
//! indexes) when it was rolled, so only media damage can hurt it; the active one may end in a
//! torn write.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::path::Path;

use super::batch::{crc_matches, RecordBatchHeader, BATCH_HEADER_SIZE};
use super::index::OffsetIndex;
use super::segment::{segment_file, BatchInfo, IndexLoader, LogSegment, SegmentState};
use super::time_index::TimeIndex;
use super::walker::HeaderWalker;
use super::LogError;

const SCAN_BUFFER: usize = 1024 * 1024;

/// How to load one segment.
pub(crate) struct LoadSpec<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) base_offset: i64,
    /// The next segment's base offset; `None` for the active (last) segment.
    pub(crate) offset_limit: Option<i64>,
    pub(crate) index_interval: u32,
    pub(crate) now_ms: i64,
    /// The segment is known whole on disk (fsynced before the checkpointed recovery point, or
    /// everything after a clean shutdown): its index files are used when sound, and only the
    /// tail after the last index entry is walked. Otherwise every batch is checked.
    pub(crate) trust_index: bool,
    /// The last checkpointed recovery point, when it may fall inside this (untrusted) segment:
    /// everything below it was fsynced, so a scan may start at the last index entry below it
    /// that the log confirms, instead of at the segment's start.
    pub(crate) recovery_point: Option<i64>,
}

pub(crate) fn load_segment(spec: &LoadSpec<'_>) -> Result<LogSegment, LogError> {
    let file =
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(segment_file(spec.dir, spec.base_offset, "log"))?;
    let size = file.metadata()?.len();
    if spec.trust_index && spec.offset_limit.is_some() {
        // A sealed segment known whole: its index files are read, and checked against the
        // log's tail, on first use (Kafka's lazy indexes), so a start with many segments reads
        // only the ones it needs.
        let (dir, base_offset, offset_limit) = (spec.dir.to_path_buf(), spec.base_offset, spec.offset_limit);
        let (index_interval, now_ms) = (spec.index_interval, spec.now_ms);
        let loader: IndexLoader = Box::new(move |file: &File, size: u64| {
            let spec = LoadSpec {
                dir: &dir,
                base_offset,
                offset_limit,
                index_interval,
                now_ms,
                trust_index: true,
                recovery_point: None,
            };
            // Indexes rebuilt by a scan (the files were unsound) are written for next time.
            let loaded = load_state(&spec, file, size).and_then(|(mut state, valid)| {
                state.seal();
                state.offset_index.persist()?;
                state.time_index.persist()?;
                Ok((state, valid))
            });
            match loaded {
                Ok(loaded) => loaded,
                Err(e) => {
                    // Only an I/O error gets here: the segment is served as empty rather
                    // than guessed at, and says why.
                    tracing::error!(segment = base_offset, dir = %dir.display(), error = %e, "cannot load a segment's indexes");
                    (
                        SegmentState::new(
                            OffsetIndex::unloaded(segment_file(&dir, base_offset, "index"), base_offset),
                            TimeIndex::unloaded(segment_file(&dir, base_offset, "timeindex"), base_offset),
                            base_offset,
                        ),
                        0,
                    )
                }
            }
        });
        return Ok(LogSegment::lazy(spec.dir, spec.base_offset, file, size, loader)?);
    }
    let (state, valid) = load_state(spec, &file, size)?;
    let segment = LogSegment::from_parts(spec.dir, spec.base_offset, file, valid, state)?;
    if spec.offset_limit.is_some() {
        segment.flush()?;
    }
    Ok(segment)
}

/// The index state of a segment and its valid size: from sound index files when trusted,
/// else by a scan (from the recovery point when one falls in the segment), which cuts the file
/// back to its last good batch.
fn load_state(spec: &LoadSpec<'_>, file: &File, size: u64) -> Result<(SegmentState, u64), LogError> {
    if spec.trust_index {
        match trusted_state(spec, file, size) {
            Ok(state) => return Ok((state, size)),
            Err(why) => {
                tracing::warn!(segment = spec.base_offset, dir = %spec.dir.display(), reason = %why, "rebuilding segment indexes")
            }
        }
    }
    let (state, start) = match spec
        .recovery_point
        .and_then(|rp| resume_point(spec, file, size, rp))
    {
        Some(resumed) => resumed,
        None => (fresh_state(spec)?, 0),
    };
    scan(spec, file, size, state, start)
}

/// Index state from the index files, if they are sound and agree with the log's tail.
fn trusted_state(spec: &LoadSpec<'_>, file: &File, size: u64) -> Result<SegmentState, String> {
    let base = spec.base_offset;
    let index = OffsetIndex::load(
        segment_file(spec.dir, base, "index"),
        base,
        size,
        spec.offset_limit,
    )?;
    let time_index = TimeIndex::load(
        segment_file(spec.dir, base, "timeindex"),
        base,
        size,
        spec.offset_limit,
    )?;
    let mut state = SegmentState::new(index, time_index, base);
    state.max_timestamp = state.time_index.last_entry();
    if let Some((indexed_offset, pos)) = state.offset_index.last_entry() {
        let mut walker = HeaderWalker::new(file, u64::from(pos), size);
        let mut first = true;
        while let Some((_, h)) = walker.next_batch().map_err(|e| e.to_string())? {
            if first && h.last_offset() != indexed_offset {
                return Err(format!(
                    "index says offset {indexed_offset} at {pos}, log has {}",
                    h.last_offset()
                ));
            }
            if spec.offset_limit.is_some_and(|limit| h.last_offset() >= limit) {
                return Err(format!("offset {} beyond the segment", h.last_offset()));
            }
            first = false;
            state.next_offset = h.last_offset() + 1;
        }
        state.bytes_since_index_entry = size - u64::from(pos);
    }
    Ok(state)
}

/// An empty state with new (truncated) index files, for a scan from the segment's start.
fn fresh_state(spec: &LoadSpec<'_>) -> Result<SegmentState, LogError> {
    let base = spec.base_offset;
    Ok(SegmentState::new(
        OffsetIndex::create(segment_file(spec.dir, base, "index"), base)?,
        TimeIndex::create(segment_file(spec.dir, base, "timeindex"), base)?,
        base,
    ))
}

/// Where a scan of a segment holding the recovery point `rp` can start without reading what
/// lies below it (Kafka's recovery reads only after the recovery point): the last offset index
/// entry whose batch ends below `rp` and that the log confirms (a whole batch with a good CRC
/// and that last offset at that position). The index files may end in garbage after a crash;
/// their sound prefix up to that entry is kept (rewritten, so garbage never stays behind it).
/// `None` when there is no such entry: the segment is scanned from its start.
fn resume_point(spec: &LoadSpec<'_>, file: &File, size: u64, rp: i64) -> Option<(SegmentState, u64)> {
    let base = spec.base_offset;
    let entries: Vec<(i64, u32)> = OffsetIndex::read_prefix(&segment_file(spec.dir, base, "index"), base)
        .into_iter()
        .take_while(|&(offset, pos)| offset < rp && u64::from(pos) < size)
        .collect();
    let &(offset, pos) = entries.last()?;
    let header_at = |at: u64| -> Option<RecordBatchHeader> {
        let mut bytes = [0u8; BATCH_HEADER_SIZE];
        read_exact_at(file, &mut bytes, at).ok()?;
        RecordBatchHeader::parse(&bytes).ok()
    };
    let h = header_at(u64::from(pos))?;
    let end = u64::from(pos) + h.size() as u64;
    if h.last_offset() != offset || end > size {
        return None;
    }
    let mut batch = vec![0u8; h.size()];
    read_exact_at(file, &mut batch, u64::from(pos)).ok()?;
    if !crc_matches(&h, &batch) {
        return None;
    }
    let first = header_at(0)?;
    let times: Vec<(i64, i64)> = TimeIndex::read_prefix(&segment_file(spec.dir, base, "timeindex"), base)
        .into_iter()
        .take_while(|&(_, o)| o <= offset)
        .collect();
    let mut state = fresh_state(spec).ok()?;
    for &(o, p) in &entries {
        state.offset_index.append(o, p);
    }
    for &(ts, o) in &times {
        state.time_index.maybe_append(ts, o);
    }
    state.max_timestamp = state.time_index.last_entry();
    state.rolling_ts = Some(rolling_timestamp(first.max_timestamp(), spec.now_ms));
    state.next_offset = offset + 1;
    state.bytes_since_index_entry = h.size() as u64;
    tracing::debug!(segment = base, dir = %spec.dir.display(), recovery_point = rp, from_position = end, "scanning the segment from its recovery point");
    Some((state, end))
}

fn read_exact_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, at)
}

/// Kafka ages a reloaded segment from its first batch's timestamp (the clock's now when that
/// one is in the future or negative).
fn rolling_timestamp(first_batch_max_ts: i64, now_ms: i64) -> i64 {
    if (0..=now_ms).contains(&first_batch_max_ts) {
        first_batch_max_ts
    } else {
        now_ms
    }
}

/// Validates every batch from `start` (the segment's start, or a resume point whose state
/// `state` holds), truncates the file at the first bad one and rebuilds the indexes. Returns
/// the state and the valid size.
fn scan(
    spec: &LoadSpec<'_>,
    file: &File,
    size: u64,
    mut state: SegmentState,
    start: u64,
) -> Result<(SegmentState, u64), LogError> {
    use std::io::{Seek, SeekFrom};
    let base = spec.base_offset;
    let mut reader = BufReader::with_capacity(SCAN_BUFFER, file);
    reader.seek(SeekFrom::Start(start))?;
    let mut batch = Vec::new();
    let mut pos = start;
    let problem = loop {
        if pos == size {
            break None;
        }
        if size - pos < BATCH_HEADER_SIZE as u64 {
            break Some("a partial batch header".to_string());
        }
        batch.resize(BATCH_HEADER_SIZE, 0);
        reader.read_exact(&mut batch)?;
        let h = match RecordBatchHeader::parse(&batch) {
            Ok(h) => h,
            Err(e) => break Some(e.to_string()),
        };
        if pos + h.size() as u64 > size {
            break Some(format!("a torn batch of {} bytes", h.size()));
        }
        batch.resize(h.size(), 0);
        reader.read_exact(&mut batch[BATCH_HEADER_SIZE..])?;
        if !crc_matches(&h, &batch) {
            break Some("a CRC mismatch".to_string());
        }
        if let Err(why) = check_offsets(spec, &state, &h) {
            break Some(why);
        }
        if pos == 0 {
            state.rolling_ts = Some(rolling_timestamp(h.max_timestamp(), spec.now_ms));
        }
        let info = BatchInfo {
            last_offset: h.last_offset(),
            max_timestamp: h.max_timestamp(),
            size: h.size() as u64,
        };
        state.on_batch(pos, &info, spec.index_interval);
        pos += info.size;
    };
    if let Some(why) = problem {
        tracing::warn!(
            file = %segment_file(spec.dir, base, "log").display(),
            cut_bytes = size - pos,
            valid_bytes = pos,
            reason = %why,
            "truncating log segment at the first invalid batch"
        );
        file.set_len(pos)?;
        super::durable::sync_data(file)?;
    }
    Ok((state, pos))
}

fn check_offsets(spec: &LoadSpec<'_>, state: &SegmentState, h: &RecordBatchHeader) -> Result<(), String> {
    let in_order = h.base_offset() >= state.next_offset
        && h.last_offset_delta() >= 0
        && h.last_offset() - spec.base_offset <= i64::from(i32::MAX)
        && spec.offset_limit.is_none_or(|limit| h.last_offset() < limit);
    if in_order {
        Ok(())
    } else {
        Err(format!(
            "batch offsets {}..={} out of order (expected >= {})",
            h.base_offset(),
            h.last_offset(),
            state.next_offset
        ))
    }
}
