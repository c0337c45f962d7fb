//! Steps through the batch headers of a segment file with positional reads, reading only
//! headers (buffered in chunks, so small batches cost no syscall each).

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::batch::{RecordBatchHeader, BATCH_HEADER_SIZE};
use super::LogError;

const CHUNK: u64 = 16 * 1024;

pub(crate) struct HeaderWalker<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_start: u64,
}

impl<'a> HeaderWalker<'a> {
    /// Walks batches starting at `start`, which must be a batch boundary, up to `end`.
    pub(crate) fn new(file: &'a File, start: u64, end: u64) -> Self {
        HeaderWalker {
            file,
            pos: start,
            end,
            buf: Vec::new(),
            buf_start: start,
        }
    }

    /// The next batch lying entirely before `end`, as (position, header); `None` exactly at
    /// `end`. Anything else at the current position (a short or invalid header, a batch running
    /// past `end`) is reported as corruption.
    pub(crate) fn next_batch(&mut self) -> Result<Option<(u64, RecordBatchHeader)>, LogError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let header_end = self.pos + BATCH_HEADER_SIZE as u64;
        if header_end > self.end {
            return Err(self.corrupt("a partial batch header"));
        }
        if self.pos < self.buf_start || header_end > self.buf_start + self.buf.len() as u64 {
            let len = CHUNK.min(self.end - self.pos) as usize;
            self.buf.resize(len, 0);
            self.file.read_exact_at(&mut self.buf, self.pos)?;
            self.buf_start = self.pos;
        }
        let at = (self.pos - self.buf_start) as usize;
        let header = RecordBatchHeader::parse(&self.buf[at..at + BATCH_HEADER_SIZE])
            .map_err(|e| self.corrupt(&e.to_string()))?;
        let batch_end = self.pos + header.size() as u64;
        if batch_end > self.end {
            return Err(self.corrupt("a batch running past the end of the log"));
        }
        let at = self.pos;
        self.pos = batch_end;
        Ok(Some((at, header)))
    }

    fn corrupt(&self, what: &str) -> LogError {
        LogError::CorruptRecord(format!("{what} at position {}", self.pos))
    }
}
