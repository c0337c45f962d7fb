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
use super::segment::{segment_file, BatchInfo, LogSegment, SegmentState};
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
}

pub(crate) fn load_segment(spec: &LoadSpec<'_>) -> Result<LogSegment, LogError> {
    let file =
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(segment_file(spec.dir, spec.base_offset, "log"))?;
    let size = file.metadata()?.len();
    if spec.trust_index {
        match trusted_state(spec, &file, size) {
            Ok(state) => {
                return Ok(LogSegment::from_parts(
                    spec.dir,
                    spec.base_offset,
                    file,
                    size,
                    state,
                )?)
            }
            Err(why) => {
                tracing::warn!(segment = spec.base_offset, dir = %spec.dir.display(), reason = %why, "rebuilding segment indexes")
            }
        }
    }
    let (state, valid) = scan(spec, &file, size)?;
    let segment = LogSegment::from_parts(spec.dir, spec.base_offset, file, valid, state)?;
    if spec.offset_limit.is_some() {
        segment.flush()?;
    }
    Ok(segment)
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

/// Validates every batch, truncates the file at the first bad one and rebuilds the indexes.
/// Returns the state and the valid size.
fn scan(spec: &LoadSpec<'_>, file: &File, size: u64) -> Result<(SegmentState, u64), LogError> {
    let base = spec.base_offset;
    let mut state = SegmentState::new(
        OffsetIndex::create(segment_file(spec.dir, base, "index"), base)?,
        TimeIndex::create(segment_file(spec.dir, base, "timeindex"), base)?,
        base,
    );
    let mut reader = BufReader::with_capacity(SCAN_BUFFER, file);
    let mut batch = Vec::new();
    let mut pos = 0u64;
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
            // Kafka ages a reloaded segment from its first batch's timestamp.
            let ts = h.max_timestamp();
            state.rolling_ts = Some(if (0..=spec.now_ms).contains(&ts) {
                ts
            } else {
                spec.now_ms
            });
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
