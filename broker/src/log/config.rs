/// Which timestamp a topic stores (Kafka's `message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// The producer's timestamps are kept.
    #[default]
    CreateTime,
    /// The broker stamps each batch's maxTimestamp with the append time.
    LogAppendTime,
}

/// Per-partition log settings; `Default` gives Kafka's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when a batch would push the active segment past this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first append is older than this.
    pub segment_ms: i64,
    /// `segment.jitter.ms`: each segment rolls up to this much earlier than `segment.ms`
    /// (Kafka's rollJitterMs), by an amount fixed per segment.
    pub segment_jitter_ms: i64,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u32,
    /// `max.message.bytes`: the largest batch accepted by `append`.
    pub max_message_bytes: usize,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`: how far into the past a CreateTime record may be.
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far into the future a CreateTime record may be.
    pub timestamp_after_max_ms: i64,
    /// Written into each appended batch's partitionLeaderEpoch field.
    pub leader_epoch: i32,
    /// `log.flush.before.visible`: the high watermark stops at the recovery point, so readers
    /// see only fsynced records; otherwise it follows the log end at each append.
    pub flush_before_visible: bool,
    /// `cleanup.policy` includes `delete`: `retention.ms` and `retention.bytes` apply.
    pub delete_retention: bool,
    /// `retention.ms`: a sealed segment whose largest timestamp is older than this goes;
    /// negative keeps forever.
    pub retention_ms: i64,
    /// `retention.bytes`: the oldest segments go while the log is larger than this; negative is
    /// unbounded.
    pub retention_bytes: i64,
    /// `file.delete.delay.ms`: how long a deleted segment's files stay, renamed `.deleted`.
    pub file_delete_delay_ms: u64,
    /// `cleanup.policy` includes `compact`: the log cleaner keeps the latest record per key.
    pub compact: bool,
    /// `min.cleanable.dirty.ratio`: the share of dirty bytes at which the log is cleaned.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records younger than this are not cleaned.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: dirty records older than this are cleaned whatever the ratio,
    /// and the active segment of a compacted log rolls after at most this long.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long the cleaner keeps tombstones and transaction markers
    /// after the round that first kept them.
    pub delete_retention_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            segment_jitter_ms: 0,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: 3_600_000,
            leader_epoch: 0,
            flush_before_visible: false,
            delete_retention: true,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            file_delete_delay_ms: 60_000,
            compact: false,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 86_400_000,
        }
    }
}

impl LogConfig {
    /// Index entries hold 32-bit positions and Kafka's `segment.bytes` is an int, so a segment
    /// never grows past `i32::MAX` whatever the configuration says.
    pub fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.clamp(1, i32::MAX as u64)
    }

    /// The roll age of the segment at `base_offset`: `max_segment_ms` less its jitter, a
    /// value in `[0, segment.jitter.ms)` derived from the segment's base offset (Kafka draws it
    /// at random when the segment is made; a hash keeps it the same across restarts), bounded
    /// as Kafka bounds it by the roll age itself.
    pub fn roll_ms(&self, base_offset: i64) -> i64 {
        let max = self.max_segment_ms();
        let jitter = self.segment_jitter_ms.min(max);
        if jitter <= 0 {
            return max;
        }
        // splitmix64 of the base offset: spread evenly, cheap, no state.
        let mut z = (base_offset as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        max - (z % jitter as u64) as i64
    }

    /// Kafka's `maxSegmentMs`: a compacted log rolls by `max.compaction.lag.ms` too, so that
    /// its records become cleanable in time.
    pub fn max_segment_ms(&self) -> i64 {
        if self.compact && self.max_compaction_lag_ms > 0 {
            self.segment_ms.min(self.max_compaction_lag_ms)
        } else {
            self.segment_ms
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_roll_up_to_the_jitter_early_each_by_its_own_amount() {
        let config = LogConfig {
            segment_ms: 10_000,
            segment_jitter_ms: 3_000,
            ..LogConfig::default()
        };
        let ages: Vec<i64> = (0..200).map(|base| config.roll_ms(base * 1000)).collect();
        assert!(ages.iter().all(|a| (7_001..=10_000).contains(a)), "{ages:?}");
        let distinct: std::collections::HashSet<_> = ages.iter().collect();
        assert!(
            distinct.len() > 100,
            "spread over the jitter: {} values",
            distinct.len()
        );
        assert_eq!(
            config.roll_ms(5),
            config.roll_ms(5),
            "the same segment keeps its age"
        );
        let plain = LogConfig {
            segment_jitter_ms: 0,
            ..config
        };
        assert_eq!(plain.roll_ms(42), 10_000);
        // A jitter above the roll age is bounded by it.
        let wild = LogConfig {
            segment_jitter_ms: 50_000,
            ..config
        };
        assert!((1..=10_000).contains(&wild.roll_ms(7)));
    }
}
