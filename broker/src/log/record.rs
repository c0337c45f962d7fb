//! The records inside a v2 batch, in Kafka's DefaultRecord encoding (zigzag varint lengths,
//! offset and timestamp as deltas from the batch's base), read as byte spans without allocating;
//! and the writing of a whole batch around a records section. Produce and fetch never come
//! here: the validator walks records to check them, the cleaner to filter and rewrite them.

use super::batch::{RecordBatchHeader, BATCH_HEADER_SIZE, LOG_OVERHEAD};
use super::LogError;

/// Appends `v` as a zigzag varint (Kafka's varlong; a varint is the same for i32 values).
pub(crate) fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn invalid(message: &str) -> LogError {
    LogError::InvalidRecord(message.into())
}

/// A cursor over a records section.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn varlong(&mut self) -> Result<i64, LogError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(invalid("Incorrect declared batch size, premature EOF reached"));
            };
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                // Zigzag: the sign is the lowest bit.
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(invalid("Invalid varlong in a record"))
    }

    fn varint(&mut self) -> Result<i32, LogError> {
        i32::try_from(self.varlong()?).map_err(|_| invalid("Invalid varint in a record"))
    }

    /// Takes `len` bytes of a key, value or header; a negative length is a null.
    fn bytes(&mut self, len: i32) -> Result<Option<&'a [u8]>, LogError> {
        let Ok(n) = usize::try_from(len) else {
            return Ok(None);
        };
        if self.buf.len() - self.pos < n {
            return Err(invalid("Incorrect declared batch size, premature EOF reached"));
        }
        let taken = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(Some(taken))
    }

    /// Reads one record as Kafka's DefaultRecord.readFrom does: every length and count must be
    /// backed by bytes, and the fields must end exactly where the record's declared size does.
    pub(crate) fn record(&mut self) -> Result<RecordRef<'a>, LogError> {
        let size = self.varint()?;
        let size = usize::try_from(size).map_err(|_| invalid(&format!("Invalid record size {size}")))?;
        if self.buf.len() - self.pos < size {
            return Err(invalid("Incorrect declared batch size, premature EOF reached"));
        }
        let start = self.pos;
        let mut body = Reader {
            buf: &self.buf[..start + size],
            pos: start,
        };
        let attributes = body.bytes(1)?.map_or(0, |a| a[0]);
        let timestamp_delta = body.varlong()?;
        let offset_delta = body.varint()?;
        let rest_at = body.pos;
        let key_len = body.varint()?;
        let key = body.bytes(key_len)?;
        let value_len = body.varint()?;
        let value = body.bytes(value_len)?;
        let headers = body.varint()?;
        if headers < 0 {
            return Err(invalid("Found invalid number of record headers"));
        }
        for _ in 0..headers {
            let key = body.varint()?;
            if key < 0 {
                return Err(invalid("Invalid negative header key size"));
            }
            body.bytes(key)?;
            let value = body.varint()?;
            body.bytes(value)?;
        }
        if body.pos != start + size {
            return Err(invalid(&format!(
                "Invalid record size: expected to read {size} bytes in record payload, but instead read {}",
                body.pos - start
            )));
        }
        self.pos = start + size;
        Ok(RecordRef {
            attributes,
            timestamp_delta,
            offset_delta,
            key,
            value,
            rest: &self.buf[rest_at..start + size],
        })
    }
}

/// One record of a records section, borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordRef<'a> {
    pub(crate) attributes: u8,
    pub(crate) timestamp_delta: i64,
    pub(crate) offset_delta: i32,
    /// `None` for a null key.
    pub(crate) key: Option<&'a [u8]>,
    /// `None` for a null value: a tombstone.
    pub(crate) value: Option<&'a [u8]>,
    /// The encoded key, value and headers, copied as they are when the record is rewritten.
    rest: &'a [u8],
}

impl RecordRef<'_> {
    /// Appends the record re-encoded with another timestamp delta (its batch's base timestamp
    /// changed), everything else as it was.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>, timestamp_delta: i64) {
        let mut head = Vec::with_capacity(16);
        head.push(self.attributes);
        put_varlong(&mut head, timestamp_delta);
        put_varlong(&mut head, i64::from(self.offset_delta));
        put_varlong(out, (head.len() + self.rest.len()) as i64);
        out.extend_from_slice(&head);
        out.extend_from_slice(self.rest);
    }
}

/// The header fields of a batch to write; length and CRC are computed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchFields {
    pub(crate) base_offset: i64,
    pub(crate) partition_leader_epoch: i32,
    pub(crate) attributes: i16,
    pub(crate) last_offset_delta: i32,
    pub(crate) base_timestamp: i64,
    pub(crate) max_timestamp: i64,
    pub(crate) producer_id: i64,
    pub(crate) producer_epoch: i16,
    pub(crate) base_sequence: i32,
    pub(crate) record_count: i32,
}

impl BatchFields {
    /// The fields of a stored batch, as they are.
    pub(crate) fn of(h: &RecordBatchHeader) -> Self {
        BatchFields {
            base_offset: h.base_offset(),
            partition_leader_epoch: h.partition_leader_epoch(),
            attributes: h.attributes(),
            last_offset_delta: h.last_offset_delta(),
            base_timestamp: h.base_timestamp(),
            max_timestamp: h.max_timestamp(),
            producer_id: h.producer_id(),
            producer_epoch: h.producer_epoch(),
            base_sequence: h.base_sequence(),
            record_count: h.record_count(),
        }
    }

    /// A whole v2 batch of these fields around `records` (the section as stored: compressed if
    /// the attributes say so), with its length and CRC-32C.
    pub(crate) fn encode(&self, records: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(BATCH_HEADER_SIZE + records.len());
        b.extend_from_slice(&self.base_offset.to_be_bytes());
        b.extend_from_slice(&((BATCH_HEADER_SIZE - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
        b.extend_from_slice(&self.partition_leader_epoch.to_be_bytes());
        b.push(2); // magic
        b.extend_from_slice(&[0; 4]); // CRC, below
        b.extend_from_slice(&self.attributes.to_be_bytes());
        b.extend_from_slice(&self.last_offset_delta.to_be_bytes());
        b.extend_from_slice(&self.base_timestamp.to_be_bytes());
        b.extend_from_slice(&self.max_timestamp.to_be_bytes());
        b.extend_from_slice(&self.producer_id.to_be_bytes());
        b.extend_from_slice(&self.producer_epoch.to_be_bytes());
        b.extend_from_slice(&self.base_sequence.to_be_bytes());
        b.extend_from_slice(&self.record_count.to_be_bytes());
        b.extend_from_slice(records);
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_rewritten_with_another_timestamp_delta_keeps_its_fields() {
        let mut section = Vec::new();
        let mut body = vec![0u8];
        put_varlong(&mut body, 5);
        put_varlong(&mut body, 3);
        put_varlong(&mut body, 1);
        body.push(b'k');
        put_varlong(&mut body, -1);
        put_varlong(&mut body, 0);
        put_varlong(&mut section, body.len() as i64);
        section.extend_from_slice(&body);

        let mut r = Reader::new(&section);
        let record = r.record().unwrap();
        assert!(r.at_end());
        assert_eq!((record.timestamp_delta, record.offset_delta), (5, 3));
        assert_eq!((record.key, record.value), (Some(&b"k"[..]), None));

        let mut out = Vec::new();
        record.write_to(&mut out, -1_000_000);
        let again = Reader::new(&out).record().unwrap();
        assert_eq!(again.timestamp_delta, -1_000_000);
        assert_eq!(
            (again.offset_delta, again.key, again.value),
            (3, Some(&b"k"[..]), None)
        );
    }
}
