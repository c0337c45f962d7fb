//! Builds valid v2 record batches the way a producer would, for tests.

/// A v2 batch to build: `n` records with keys `k<i>` and values `v<i>` padded to `value_size`,
/// timestamps `base_ts + i * ts_step`.
pub(crate) struct BatchSpec {
    n: usize,
    base_offset: i64,
    base_ts: i64,
    ts_step: i64,
    attributes: i16,
    record_count_field: Option<i32>,
    claimed_records: Option<i32>,
    value_size: usize,
    /// The header count each record claims (none are encoded); 0 by default.
    headers_claimed: i64,
    /// (producer id, epoch, base sequence); none by default.
    producer: (i64, i16, i32),
}

pub(crate) fn batch(n: usize) -> Vec<u8> {
    BatchSpec::new(n).build()
}

fn zigzag_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

impl BatchSpec {
    pub(crate) fn new(n: usize) -> Self {
        BatchSpec {
            n,
            base_offset: 0,
            base_ts: 1_700_000_000_000,
            ts_step: 1,
            attributes: 0,
            record_count_field: None,
            claimed_records: None,
            value_size: 8,
            headers_claimed: 0,
            producer: (-1, -1, -1),
        }
    }
    pub(crate) fn base_offset(mut self, o: i64) -> Self {
        self.base_offset = o;
        self
    }
    pub(crate) fn timestamps(mut self, base: i64, step: i64) -> Self {
        self.base_ts = base;
        self.ts_step = step;
        self
    }
    pub(crate) fn attributes(mut self, a: i16) -> Self {
        self.attributes = a;
        self
    }
    /// Writes a recordCount that disagrees with the records actually encoded.
    pub(crate) fn record_count_field(mut self, c: i32) -> Self {
        self.record_count_field = Some(c);
        self
    }
    /// Claims `n` records (recordCount and lastOffsetDelta) whatever is encoded; the log never
    /// decodes records, so this makes huge offset ranges cheap.
    pub(crate) fn claimed_records(mut self, n: i32) -> Self {
        self.claimed_records = Some(n);
        self
    }
    /// An idempotent producer's batch: its id, epoch and first sequence number.
    pub(crate) fn producer(mut self, id: i64, epoch: i16, base_sequence: i32) -> Self {
        self.producer = (id, epoch, base_sequence);
        self
    }
    /// Every record claims `n` headers and encodes none.
    pub(crate) fn headers_claimed(mut self, n: i64) -> Self {
        self.headers_claimed = n;
        self
    }
    pub(crate) fn value_size(mut self, s: usize) -> Self {
        self.value_size = s;
        self
    }

    pub(crate) fn build(&self) -> Vec<u8> {
        let mut records = Vec::new();
        for i in 0..self.n {
            let key = format!("k{i}").into_bytes();
            let mut value = format!("v{i}").into_bytes();
            value.resize(self.value_size.max(value.len()), b'.');
            let mut r = vec![0u8]; // attributes
            zigzag_varlong(&mut r, i as i64 * self.ts_step);
            zigzag_varlong(&mut r, i as i64);
            zigzag_varlong(&mut r, key.len() as i64);
            r.extend_from_slice(&key);
            zigzag_varlong(&mut r, value.len() as i64);
            r.extend_from_slice(&value);
            zigzag_varlong(&mut r, self.headers_claimed);
            zigzag_varlong(&mut records, r.len() as i64);
            records.extend_from_slice(&r);
        }
        if self.attributes & 0x07 == 1 {
            // gzip, as a producer compresses the records section.
            use kafka_protocol::compression::{Compressor, Gzip};
            let mut out = bytes::BytesMut::new();
            Gzip::compress(&mut out, |buf: &mut bytes::BytesMut| {
                buf.extend_from_slice(&records);
                Ok(())
            })
            .expect("gzip");
            records = out.to_vec();
        }
        let n = self.claimed_records.unwrap_or(self.n as i32);
        let max_ts = self.base_ts + (self.n as i64 - 1).max(0) * self.ts_step;
        let mut b = Vec::with_capacity(61 + records.len());
        b.extend_from_slice(&self.base_offset.to_be_bytes());
        b.extend_from_slice(&((49 + records.len()) as i32).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
        b.push(2); // magic
        b.extend_from_slice(&[0; 4]); // crc, filled below
        b.extend_from_slice(&self.attributes.to_be_bytes());
        b.extend_from_slice(&(n - 1).to_be_bytes());
        b.extend_from_slice(&self.base_ts.to_be_bytes());
        b.extend_from_slice(&max_ts.to_be_bytes());
        b.extend_from_slice(&self.producer.0.to_be_bytes());
        b.extend_from_slice(&self.producer.1.to_be_bytes());
        b.extend_from_slice(&self.producer.2.to_be_bytes());
        b.extend_from_slice(&self.record_count_field.unwrap_or(n).to_be_bytes());
        b.extend_from_slice(&records);
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }
}
