//! Decoding a compressed upstream response as it streams. Airlock asks for `identity`, but an
//! upstream may compress anyway; a body Airlock cannot read could not be guarded, restored or
//! metered, so it is decoded chunk by chunk (whatever each chunk decodes to goes on at once)
//! and the client gets it plain. An encoding Airlock does not know fails closed.

use bytes::Bytes;
use std::io::{self, Write};

/// A streaming decoder for one `content-encoding`.
pub enum ResponseDecoder {
    Gzip(flate2::write::MultiGzDecoder<Vec<u8>>),
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>),
    Br(Box<brotli::DecompressorWriter<Vec<u8>>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Vec<u8>>>),
}

/// The upstream's `content-encoding` is one Airlock cannot decode.
#[derive(Debug, thiserror::Error)]
#[error("the upstream answered with content-encoding `{0}`, which Airlock cannot decode (gzip, deflate, br and zstd are supported); the response was not passed on unread")]
pub struct UnknownEncoding(pub String);

impl ResponseDecoder {
    /// The decoder for `encoding`; `None` for `identity` (or none at all).
    pub fn for_encoding(encoding: &str) -> Result<Option<ResponseDecoder>, UnknownEncoding> {
        let enc = encoding.trim().to_ascii_lowercase();
        Ok(Some(match enc.as_str() {
            "" | "identity" => return Ok(None),
            "gzip" | "x-gzip" => {
                ResponseDecoder::Gzip(flate2::write::MultiGzDecoder::new(Vec::new()))
            }
            "deflate" => ResponseDecoder::Deflate(flate2::write::ZlibDecoder::new(Vec::new())),
            "br" => {
                ResponseDecoder::Br(Box::new(brotli::DecompressorWriter::new(Vec::new(), 8192)))
            }
            "zstd" => ResponseDecoder::Zstd(Box::new(
                zstd::stream::write::Decoder::new(Vec::new())
                    .map_err(|_| UnknownEncoding(enc.clone()))?,
            )),
            _ => return Err(UnknownEncoding(enc)),
        }))
    }

    /// One compressed chunk in; whatever it decodes to so far out.
    pub fn push(&mut self, chunk: &[u8]) -> io::Result<Bytes> {
        let out = match self {
            ResponseDecoder::Gzip(d) => {
                d.write_all(chunk)?;
                d.flush()?;
                d.get_mut()
            }
            ResponseDecoder::Deflate(d) => {
                d.write_all(chunk)?;
                d.flush()?;
                d.get_mut()
            }
            ResponseDecoder::Br(d) => {
                d.write_all(chunk)?;
                d.flush()?;
                d.get_mut()
            }
            ResponseDecoder::Zstd(d) => {
                d.write_all(chunk)?;
                d.flush()?;
                d.get_mut()
            }
        };
        Ok(Bytes::from(std::mem::take(out)))
    }

    /// The compressed body ended: the rest, or an error if it was cut short.
    pub fn finish(self) -> io::Result<Bytes> {
        let out = match self {
            ResponseDecoder::Gzip(d) => d.finish()?,
            ResponseDecoder::Deflate(d) => d.finish()?,
            ResponseDecoder::Br(mut d) => {
                d.close()?;
                d.into_inner().map_err(|_| {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "brotli stream cut short")
                })?
            }
            ResponseDecoder::Zstd(mut d) => {
                d.flush()?;
                d.into_inner()
            }
        };
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(enc: &str, data: &[u8]) -> Vec<u8> {
        match enc {
            "gzip" => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).expect("write");
                e.finish().expect("gzip")
            }
            "deflate" => {
                let mut e =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).expect("write");
                e.finish().expect("zlib")
            }
            "br" => {
                let mut out = Vec::new();
                {
                    let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                    e.write_all(data).expect("write");
                }
                out
            }
            "zstd" => zstd::encode_all(data, 3).expect("zstd"),
            _ => unreachable!(),
        }
    }

    #[test]
    fn every_encoding_decodes_chunk_by_chunk() {
        let plain: Vec<u8> = (0..2000)
            .flat_map(|i| format!("data: {{\"n\":{i}}}\n\n").into_bytes())
            .collect();
        for enc in ["gzip", "deflate", "br", "zstd"] {
            let packed = compress(enc, &plain);
            for size in [1, 7, 512, packed.len()] {
                let mut d = ResponseDecoder::for_encoding(enc)
                    .expect("known")
                    .expect("not identity");
                let mut out = Vec::new();
                for c in packed.chunks(size) {
                    out.extend_from_slice(&d.push(c).expect("decodes"));
                }
                out.extend_from_slice(&d.finish().expect("complete"));
                assert_eq!(out, plain, "{enc} in chunks of {size}");
            }
        }
    }

    #[test]
    fn identity_is_none_and_unknown_is_refused() {
        assert!(ResponseDecoder::for_encoding("identity")
            .expect("ok")
            .is_none());
        assert!(ResponseDecoder::for_encoding("compress").is_err());
        assert!(ResponseDecoder::for_encoding("gzip, br").is_err());
    }
}
