//! Decoding a compressed upstream response as it streams. Airlock asks for `identity`, but an
//! upstream may compress anyway; a body Airlock cannot read could not be guarded, restored or
//! metered, so it is decoded chunk by chunk (whatever each chunk decodes to goes on at once)
//! and the client gets it plain. An encoding Airlock does not know fails closed.

use bytes::Bytes;
use std::io::{self, Write};
use zstd::stream::raw::Operation;

/// The most one compressed chunk may decode to. JSON and SSE text compress about 10:1 and a
/// chunk is at most a few hundred KiB, so a real answer stays far below; a small chunk that
/// expands past it (gzip reaches 1000:1 on repeated bytes, zstd and brotli more) is a
/// decompression bomb, refused before it is held in memory whole.
pub const MAX_DECODED_CHUNK: usize = 16 << 20;

/// What a decoder writes into: a buffer that refuses to grow past [`MAX_DECODED_CHUNK`]
/// between two takes.
#[derive(Default)]
pub struct Sink {
    buf: Vec<u8>,
}

impl Sink {
    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    fn room(&self, more: usize) -> io::Result<()> {
        if self.buf.len() + more > MAX_DECODED_CHUNK {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "one chunk decodes to more than {} MiB (a decompression bomb?)",
                    MAX_DECODED_CHUNK >> 20
                ),
            ));
        }
        Ok(())
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.room(data.len())?;
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A streaming decoder for one `content-encoding`.
pub enum ResponseDecoder {
    Gzip(flate2::write::MultiGzDecoder<Sink>),
    Deflate(flate2::write::ZlibDecoder<Sink>),
    Br(Box<brotli::DecompressorWriter<Sink>>),
    Zstd(Box<Zstd>),
}

/// zstd through the raw API: unlike its `Write` adapter, it tells whether the input ended at
/// the end of a frame, so a body cut short is an error rather than a silently shorter answer.
pub struct Zstd {
    dec: zstd::stream::raw::Decoder<'static>,
    out: Sink,
    /// Whether the input so far ends where a frame ends (true before any input: an empty
    /// body is complete).
    at_frame_end: bool,
}

impl Zstd {
    fn push(&mut self, mut input: &[u8]) -> io::Result<()> {
        let mut scratch = [0u8; 16 << 10];
        loop {
            let st = self.dec.run_on_buffers(input, &mut scratch)?;
            self.out.write_all(&scratch[..st.bytes_written])?;
            input = &input[st.bytes_read..];
            if st.bytes_read > 0 || st.bytes_written > 0 {
                self.at_frame_end = st.remaining == 0;
            }
            // Done once the input is used up and the decoder had no more output than fitted.
            if input.is_empty() && st.bytes_written < scratch.len() {
                return Ok(());
            }
        }
    }
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
                ResponseDecoder::Gzip(flate2::write::MultiGzDecoder::new(Sink::default()))
            }
            "deflate" => ResponseDecoder::Deflate(flate2::write::ZlibDecoder::new(Sink::default())),
            "br" => ResponseDecoder::Br(Box::new(brotli::DecompressorWriter::new(
                Sink::default(),
                8192,
            ))),
            "zstd" => ResponseDecoder::Zstd(Box::new(Zstd {
                dec: zstd::stream::raw::Decoder::new().map_err(|_| UnknownEncoding(enc.clone()))?,
                out: Sink::default(),
                at_frame_end: true,
            })),
            _ => return Err(UnknownEncoding(enc)),
        }))
    }

    /// One compressed chunk in; whatever it decodes to so far out.
    pub fn push(&mut self, chunk: &[u8]) -> io::Result<Bytes> {
        let out = match self {
            ResponseDecoder::Gzip(d) => {
                d.write_all(chunk)?;
                d.flush()?;
                d.get_mut().take()
            }
            ResponseDecoder::Deflate(d) => {
                d.write_all(chunk)?;
                d.flush()?;
                d.get_mut().take()
            }
            ResponseDecoder::Br(d) => {
                d.write_all(chunk)?;
                d.flush()?;
                d.get_mut().take()
            }
            ResponseDecoder::Zstd(d) => {
                d.push(chunk)?;
                d.out.take()
            }
        };
        Ok(Bytes::from(out))
    }

    /// The compressed body ended: the rest, or an error if it was cut short.
    pub fn finish(self) -> io::Result<Bytes> {
        let out = match self {
            ResponseDecoder::Gzip(d) => d.finish()?.take(),
            ResponseDecoder::Deflate(d) => d.finish()?.take(),
            ResponseDecoder::Br(mut d) => {
                d.close()?;
                d.into_inner()
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::UnexpectedEof, "brotli stream cut short")
                    })?
                    .take()
            }
            ResponseDecoder::Zstd(mut d) => {
                if !d.at_frame_end {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "zstd stream cut short",
                    ));
                }
                d.out.take()
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
                let out = decode_all(enc, &packed, size).expect("complete");
                assert_eq!(out, plain, "{enc} in chunks of {size}");
            }
        }
    }

    fn decode_all(enc: &str, packed: &[u8], size: usize) -> io::Result<Vec<u8>> {
        let mut d = ResponseDecoder::for_encoding(enc)
            .expect("known")
            .expect("not identity");
        let mut out = Vec::new();
        for c in packed.chunks(size) {
            out.extend_from_slice(&d.push(c)?);
        }
        out.extend_from_slice(&d.finish()?);
        Ok(out)
    }

    /// Regression: a zstd body cut short decoded to a shorter answer without an error (the
    /// `Write` adapter cannot tell); every encoding now reports it.
    #[test]
    fn a_body_cut_short_is_an_error_in_every_encoding() {
        let plain: Vec<u8> = (0..3000)
            .flat_map(|i| format!("{{\"n\":{i}}}\n").into_bytes())
            .collect();
        for enc in ["gzip", "deflate", "br", "zstd"] {
            let packed = compress(enc, &plain);
            for cut in [packed.len() / 3, packed.len() / 2, packed.len() - 1] {
                let got = decode_all(enc, &packed[..cut], 64);
                assert!(
                    got.is_err(),
                    "{enc} cut at {cut} of {}: no error",
                    packed.len()
                );
            }
        }
    }

    #[test]
    fn zstd_frames_back_to_back_decode_whole() {
        let mut packed = compress("zstd", b"first frame, ");
        packed.extend_from_slice(&compress("zstd", b"second frame"));
        for size in [1, 5, packed.len()] {
            let out = decode_all("zstd", &packed, size).expect("complete");
            assert_eq!(out, b"first frame, second frame");
        }
    }

    /// Regression: one small chunk could expand without bound in memory.
    #[test]
    fn a_chunk_that_expands_past_the_cap_is_refused() {
        let zeros = vec![0u8; MAX_DECODED_CHUNK + (1 << 20)];
        for enc in ["gzip", "deflate", "br", "zstd"] {
            let packed = compress(enc, &zeros);
            assert!(packed.len() < 1 << 20, "{enc}: {} bytes", packed.len());
            let err = decode_all(enc, &packed, packed.len()).expect_err("refused");
            assert!(
                err.to_string().contains("decompression bomb"),
                "{enc}: {err}"
            );
        }
        // The cap is per chunk: gzip's zeros in 1 KiB pieces (about 1 MiB each) all decode.
        let packed = compress("gzip", &zeros);
        let out = decode_all("gzip", &packed, 1 << 10).expect("small chunks");
        assert_eq!(out.len(), zeros.len());
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
