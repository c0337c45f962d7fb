//! The four codecs of a batch's records section (the batch attributes' low three bits), through
//! kafka-protocol's implementations: Kafka's framings (xerial snappy, LZ4 frames), and raw
//! snappy as librdkafka writes it on the way in.

use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};
use kafka_protocol::records::Compression;

use super::LogError;

/// The codec of a batch's compression id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
pub(crate) fn codec(id: u8) -> Result<Compression, LogError> {
    Ok(match id {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => return Err(LogError::CorruptRecord(format!("unknown compression codec {id}"))),
    })
}

/// The plain records of a records section stored with `codec`.
pub(crate) fn decompress(codec: Compression, section: &Bytes) -> anyhow::Result<Bytes> {
    let mut section = section.clone();
    let take = |b: &mut Bytes| Ok(std::mem::take(b));
    Ok(match codec {
        Compression::None => section,
        Compression::Gzip => Gzip::decompress(&mut section, take)?,
        Compression::Snappy => Snappy::decompress(&mut section, take)?,
        Compression::Lz4 => Lz4::decompress(&mut section, take)?,
        Compression::Zstd => Zstd::decompress(&mut section, take)?,
    })
}

/// `plain` records compressed with `codec`, as a producer of that codec writes them.
pub(crate) fn compress(codec: Compression, plain: &[u8]) -> Result<Vec<u8>, LogError> {
    let mut out = BytesMut::new();
    let fill = |b: &mut BytesMut| {
        b.extend_from_slice(plain);
        Ok(())
    };
    let done = match codec {
        Compression::None => return Ok(plain.to_vec()),
        Compression::Gzip => Gzip::compress(&mut out, fill),
        Compression::Snappy => Snappy::compress(&mut out, fill),
        Compression::Lz4 => Lz4::compress(&mut out, fill),
        Compression::Zstd => Zstd::compress(&mut out, fill),
    };
    done.map_err(|e| LogError::CorruptRecord(format!("cannot compress records: {e}")))?;
    Ok(out.to_vec())
}
