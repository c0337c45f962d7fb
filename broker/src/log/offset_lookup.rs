//! ListOffsets' question to the log, as Kafka's UnifiedLog.fetchOffsetByTimestamp answers it:
//! the offset for a special position (earliest, latest, the largest timestamp) or for the first
//! record at or after a timestamp. The indexes find batches; Kafka answers with the exact
//! record, so this decodes the one batch found (ListOffsets is not on the hot path).

use kafka_protocol::records::TimestampType;

use super::{LogError, PartitionLog};

/// What ListOffsets asks for in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The high watermark, or for read_committed the last stable offset.
    Latest,
    /// The log start offset (local and overall: nothing is tiered).
    Earliest,
    /// The first record carrying the largest timestamp.
    MaxTimestamp,
    /// The last tiered offset: nothing is tiered here.
    LatestTiered,
    /// The first record whose timestamp is at or after this one.
    Timestamp(i64),
}

/// An answer: an offset, and the record's timestamp (-1 for the special positions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundOffset {
    pub offset: i64,
    pub timestamp: i64,
}

/// What decoding a batch found by timestamp gave.
enum Refined {
    /// The first live record that qualifies.
    Record(FoundOffset),
    /// No record at or after the log start qualifies (only deleted ones did).
    NoLiveMatch,
    /// The batch could not be read back (a DeleteRecords ran meanwhile, or it does not decode):
    /// the batch-level answer stands.
    Unreadable,
}

impl PartitionLog {
    /// The offset ListOffsets answers with, or `None` where Kafka answers -1. A read_committed
    /// caller sees nothing at or past the last stable offset (Kafka's `lastFetchableOffset`):
    /// LATEST is the last stable offset, and a lookup landing beyond it finds nothing.
    pub fn fetch_offset_by_timestamp(
        &self,
        spec: OffsetSpec,
        read_committed: bool,
    ) -> Result<Option<FoundOffset>, LogError> {
        let last_fetchable = if read_committed {
            self.last_stable_offset()
        } else {
            self.high_watermark()
        };
        if spec == OffsetSpec::Latest {
            return Ok(Some(FoundOffset {
                offset: last_fetchable,
                timestamp: -1,
            }));
        }
        let found = self.lookup(spec)?;
        Ok(found.filter(|f| spec == OffsetSpec::Earliest || f.offset < last_fetchable))
    }

    fn lookup(&self, spec: OffsetSpec) -> Result<Option<FoundOffset>, LogError> {
        let position = |offset| {
            Some(FoundOffset {
                offset,
                timestamp: -1,
            })
        };
        Ok(match spec {
            OffsetSpec::Latest => position(self.high_watermark()),
            OffsetSpec::Earliest => position(self.log_start_offset()),
            OffsetSpec::LatestTiered => None,
            OffsetSpec::MaxTimestamp => match self.max_timestamp() {
                Some((offset, ts)) => Some(match self.refine(offset, ts, |t| t == ts)? {
                    Refined::Record(found) => found,
                    Refined::NoLiveMatch | Refined::Unreadable => FoundOffset {
                        offset: offset.max(self.log_start_offset()),
                        timestamp: ts,
                    },
                }),
                None => None,
            },
            OffsetSpec::Timestamp(ts) => {
                let mut from = self.log_start_offset();
                loop {
                    let Some(batch) = self.offset_for_timestamp(ts, from)? else {
                        break None;
                    };
                    match self.refine(batch.base_offset, batch.max_timestamp, |t| t >= ts)? {
                        Refined::Record(found) => break Some(found),
                        // Only records DeleteRecords removed qualified: search on from the next
                        // batch, as Kafka's LogSegment.findOffsetByTimestamp does.
                        Refined::NoLiveMatch => from = batch.last_offset + 1,
                        Refined::Unreadable => {
                            break Some(FoundOffset {
                                offset: batch.base_offset.max(self.log_start_offset()),
                                timestamp: batch.max_timestamp,
                            })
                        }
                    }
                }
            }
        })
    }

    /// Decodes the one batch holding `offset` and finds its first live record whose timestamp
    /// satisfies `wanted`.
    fn refine(
        &self,
        offset: i64,
        batch_timestamp: i64,
        wanted: impl Fn(i64) -> bool,
    ) -> Result<Refined, LogError> {
        // Records deleted by DeleteRecords may share the batch; they are not answers.
        let log_start = self.log_start_offset();
        let read = match self.read(offset.max(log_start), 1, true) {
            Ok(read) => read,
            Err(LogError::OffsetOutOfRange { .. }) => return Ok(Refined::Unreadable),
            Err(e) => return Err(e),
        };
        let Ok(set) = super::decode_batches(read.records) else {
            return Ok(Refined::Unreadable);
        };
        // With LogAppendTime every record carries the batch's timestamp, whatever its delta says.
        let mut live = set.records.iter().filter(|r| r.offset >= log_start).peekable();
        if let Some(first) = live.peek() {
            if first.timestamp_type == TimestampType::LogAppend {
                return Ok(Refined::Record(FoundOffset {
                    offset: first.offset,
                    timestamp: batch_timestamp,
                }));
            }
        }
        Ok(live
            .find(|r| wanted(r.timestamp))
            .map_or(Refined::NoLiveMatch, |r| {
                Refined::Record(FoundOffset {
                    offset: r.offset,
                    timestamp: r.timestamp,
                })
            }))
    }
}
