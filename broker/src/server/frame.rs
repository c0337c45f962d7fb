//! A response frame as the parts it is written from: the encoded head, and record data kept as
//! the `Bytes` the log read it into, so a fetch's records are never copied in user space between
//! the read and the socket (the writer hands every part to one `writev`).
//!
//! The protocol crate encodes into any `ByteBufMut`; `SplicingBuf` is one that, when the
//! encoder puts the slice of a payload it was told about (a fetch's records), ends the current
//! part there and keeps a reference to the payload instead of copying it.

use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Payloads smaller than this are copied into the head: a part costs an iovec and a `Bytes`
/// clone, which is more than copying a few hundred bytes.
const SPLICE_MIN: usize = 4096;

/// An encoded response frame (size prefix, header, body) in order.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    parts: Vec<Bytes>,
}

impl Frame {
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(Bytes::is_empty)
    }

    /// The frame's parts, to be written in order.
    pub fn into_parts(self) -> Vec<Bytes> {
        self.parts
    }

    /// The whole frame in one buffer (a copy), for tests to compare encodings.
    #[cfg(test)]
    pub fn to_bytes(&self) -> Bytes {
        match self.parts.as_slice() {
            [one] => one.clone(),
            parts => parts
                .iter()
                .flat_map(|p| p.iter().copied())
                .collect::<Vec<u8>>()
                .into(),
        }
    }
}

impl From<Bytes> for Frame {
    fn from(bytes: Bytes) -> Frame {
        Frame { parts: vec![bytes] }
    }
}

/// The encoder's buffer: bytes the encoder writes go to the current head part; a payload
/// registered with `splice` is referenced, not copied, when the encoder puts exactly its slice.
pub struct SplicingBuf {
    head: BytesMut,
    parts: Vec<Bytes>,
    /// Bytes in `parts`.
    done: usize,
    /// Payloads to reference, in the order the encoder meets them.
    payloads: Vec<Bytes>,
    next: usize,
}

impl SplicingBuf {
    /// A buffer for a frame of `size` bytes, referencing `payloads` (in encoding order) where
    /// the encoder puts them.
    pub fn new(size: usize, payloads: Vec<Bytes>) -> SplicingBuf {
        let payloads: Vec<Bytes> = payloads.into_iter().filter(|p| p.len() >= SPLICE_MIN).collect();
        let spliced: usize = payloads.iter().map(Bytes::len).sum();
        SplicingBuf {
            head: BytesMut::with_capacity(size.saturating_sub(spliced)),
            parts: Vec::with_capacity(2 * payloads.len() + 1),
            done: 0,
            payloads,
            next: 0,
        }
    }

    pub fn finish(mut self) -> Frame {
        if !self.head.is_empty() || self.parts.is_empty() {
            self.parts.push(self.head.split().freeze());
        }
        Frame { parts: self.parts }
    }

    fn head_range(&self, r: &Range<usize>) -> Range<usize> {
        assert!(
            r.start >= self.done,
            "the encoder went back to bytes already handed on ({r:?}, {} done)",
            self.done
        );
        r.start - self.done..r.end - self.done
    }
}

#[allow(unsafe_code)]
// SAFETY: every method delegates to the head `BytesMut`, whose own implementation upholds
// `BufMut`'s contract; `put_slice` only adds whole, initialised parts besides.
unsafe impl BufMut for SplicingBuf {
    fn remaining_mut(&self) -> usize {
        self.head.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's promise about `cnt` is about the chunk the head gave it.
        unsafe { self.head.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.head.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if let Some(payload) = self.payloads.get(self.next) {
            if src.as_ptr() == payload.as_ptr() && src.len() == payload.len() {
                let payload = payload.clone();
                self.next += 1;
                let head = self.head.split().freeze();
                self.done += head.len() + payload.len();
                if !head.is_empty() {
                    self.parts.push(head);
                }
                self.parts.push(payload);
                return;
            }
        }
        self.head.put_slice(src);
    }
}

impl ByteBufMut for SplicingBuf {
    fn offset(&self) -> usize {
        self.done + self.head.len()
    }

    fn seek(&mut self, offset: usize) {
        let r = self.head_range(&(offset..offset));
        self.head.resize(r.start, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        let r = self.head_range(&r);
        &mut self.head[r]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn response(records: &[Bytes]) -> FetchResponse {
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(
                records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        PartitionData::default()
                            .with_partition_index(i as i32)
                            .with_high_watermark(7)
                            .with_records(Some(r.clone()))
                    })
                    .collect(),
            )])
    }

    #[test]
    fn a_spliced_fetch_response_has_the_bytes_of_a_plain_encoding_and_references_its_records() {
        let records = [
            Bytes::from(vec![1u8; 10_000]),
            Bytes::from(vec![2u8; 100]),
            Bytes::new(),
            Bytes::from(vec![3u8; 5_000]),
        ];
        let response = response(&records);
        for version in 4..=16 {
            let size = response.compute_size(version).unwrap();
            let mut plain = BytesMut::new();
            response.encode(&mut plain, version).unwrap();
            let mut spliced = SplicingBuf::new(size, records.to_vec());
            response.encode(&mut spliced, version).unwrap();
            let frame = spliced.finish();
            assert_eq!(frame.len(), size, "v{version}");
            assert_eq!(frame.to_bytes(), plain.freeze(), "v{version}");
            let parts = frame.into_parts();
            // The two large record sets are the very buffers the log read; the small one is
            // copied into the head.
            for big in [&records[0], &records[3]] {
                assert!(
                    parts
                        .iter()
                        .any(|p| p.as_ptr() == big.as_ptr() && p.len() == big.len()),
                    "v{version}: a large record set was copied"
                );
            }
            // Head, records, head, records, and from v12 the tagged fields after the records.
            let expected = if version >= 12 { 5 } else { 4 };
            assert_eq!(parts.len(), expected, "v{version}");
        }
    }

    #[test]
    fn equal_bytes_elsewhere_are_copied_not_mistaken_for_the_payload() {
        let records = Bytes::from(vec![9u8; 8192]);
        let copy = Bytes::from(records.to_vec());
        let mut buf = SplicingBuf::new(8192, vec![records]);
        buf.put_slice(&copy);
        let parts = buf.finish().into_parts();
        assert_eq!(parts.len(), 1);
        assert_ne!(parts[0].as_ptr(), copy.as_ptr());
    }
}
