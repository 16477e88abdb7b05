//! Multipart bodies (uploads): where each part's headers and content lie, so that every byte
//! that can be text is scanned.
//!
//! The reader is lenient where a server may be (LF-only line ends, padding after a delimiter,
//! quoted or unquoted boundaries) and refuses what it cannot place: a body with no delimiter
//! line for the declared boundary, a part whose headers never end, or no close delimiter. A body
//! it refuses is blocked like any body Airlock cannot read (`policy.unparseable`).
//!
//! Finding more delimiters than a strict server would only makes the parts smaller; bytes are
//! skipped only inside a part recognised as binary ([`is_binary`]), so leniency never hides text.

use std::ops::Range;

/// One part: its header block and its content, as byte ranges of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// From the first header byte to the blank line that ends the headers.
    pub headers: Range<usize>,
    pub content: Range<usize>,
    /// `name` of `Content-Disposition` (empty if absent).
    pub name: String,
    /// The part's `Content-Type`, lowercased (empty if absent).
    pub content_type: String,
}

/// A multipart body Airlock cannot place its parts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MultipartError {
    #[error("the Content-Type names no multipart boundary")]
    NoBoundary,
    #[error("no delimiter line for the boundary the Content-Type names")]
    NoDelimiter,
    #[error("a part's headers never end (at byte {0})")]
    HeadersUnterminated(usize),
    #[error("the body has no close delimiter")]
    NoClose,
}

/// A whole multipart body: the parts, and what lies outside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart {
    pub parts: Vec<Part>,
    /// Bytes before the first delimiter and after the close delimiter: servers ignore them,
    /// but they go upstream, so they are scanned too.
    pub outside: [Range<usize>; 2],
}

/// The `boundary` parameter of a `multipart/*` Content-Type.
pub fn boundary(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        (k.trim().eq_ignore_ascii_case("boundary") && !v.is_empty()).then_some(v)
    })
}

/// Splits `body` at the delimiter lines of `boundary`.
pub fn parse(body: &[u8], boundary: &str) -> Result<Multipart, MultipartError> {
    let delim = format!("--{boundary}");
    let d = delim.as_bytes();
    // Delimiter lines in order: (start of the line, end of the line incl. its break, close?).
    let mut lines: Vec<(usize, usize, bool)> = Vec::new();
    for pos in memchr::memmem::find_iter(body, d) {
        if pos > 0 && body[pos - 1] != b'\n' {
            continue;
        }
        let after = &body[pos + d.len()..];
        let (close, rest) = match after.strip_prefix(b"--") {
            Some(rest) => (true, rest),
            None => (false, after),
        };
        // Transport padding, then the line break (or the end of the body after a close).
        let pad = rest
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
        let brk = match &rest[pad..] {
            [b'\r', b'\n', ..] => 2,
            [b'\n', ..] => 1,
            [] if close => 0,
            // Text that only starts like a delimiter: part of a part's content.
            _ => continue,
        };
        let end = pos + d.len() + usize::from(close) * 2 + pad + brk;
        lines.push((pos, end, close));
        if close {
            break;
        }
    }
    let Some(&(first, _, _)) = lines.first() else {
        return Err(MultipartError::NoDelimiter);
    };
    let Some(&(_, close_end, true)) = lines.last() else {
        return Err(MultipartError::NoClose);
    };
    let mut parts = Vec::with_capacity(lines.len() - 1);
    for w in lines.windows(2) {
        let (start, next) = (w[0].1, w[1].0);
        // The line break before the next delimiter belongs to the delimiter.
        let mut end = next;
        if end > start && body[end - 1] == b'\n' {
            end -= 1;
            if end > start && body[end - 1] == b'\r' {
                end -= 1;
            }
        }
        let part = &body[start..end];
        let (hdr_len, sep) = header_end(part).ok_or(MultipartError::HeadersUnterminated(start))?;
        let headers = &part[..hdr_len];
        let (name, content_type) = describe(headers);
        parts.push(Part {
            headers: start..start + hdr_len,
            content: start + hdr_len + sep..end,
            name,
            content_type,
        });
    }
    Ok(Multipart {
        parts,
        outside: [0..first, close_end..body.len()],
    })
}

/// The length of the header block and of the blank line after it (`\r\n\r\n`, `\n\n`, or a
/// part that starts with its blank line: no headers).
fn header_end(part: &[u8]) -> Option<(usize, usize)> {
    if part.starts_with(b"\r\n") {
        return Some((0, 2));
    }
    if part.starts_with(b"\n") {
        return Some((0, 1));
    }
    // The first line break followed by an empty line.
    for nl in memchr::memchr_iter(b'\n', part) {
        let rest = &part[nl + 1..];
        if rest.starts_with(b"\r\n") {
            return Some((nl + 1, 2));
        }
        if rest.starts_with(b"\n") {
            return Some((nl + 1, 1));
        }
    }
    None
}

/// The `name` and lowercased `Content-Type` of a part's headers (for locations and messages).
fn describe(headers: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(headers);
    let mut name = String::new();
    let mut content_type = String::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let k = k.trim();
        if k.eq_ignore_ascii_case("content-type") {
            content_type = v.trim().to_ascii_lowercase();
        } else if k.eq_ignore_ascii_case("content-disposition") {
            if let Some(n) = v.split(';').find_map(|p| {
                let (pk, pv) = p.trim().split_once('=')?;
                pk.trim()
                    .eq_ignore_ascii_case("name")
                    .then(|| pv.trim().trim_matches('"').to_owned())
            }) {
                name = n;
            }
        }
    }
    (name, content_type)
}

/// Whether `bytes` are recognisably binary, so scanning them as text would find nothing: a NUL
/// in the first 8 KiB (as `airlock scan` decides), or the signature of an image, audio, video
/// or compressed format. The declared type is not trusted: `.env` sent as
/// `application/octet-stream` is text and is scanned.
pub fn is_binary(bytes: &[u8]) -> bool {
    const MAGIC: [&[u8]; 14] = [
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff",       // JPEG
        b"GIF87a",             //
        b"GIF89a",             //
        b"ID3",                // MP3 with tags
        b"fLaC",               //
        b"OggS",               //
        b"\x1a\x45\xdf\xa3",   // Matroska, WebM
        b"PK\x03\x04",         // zip (docx, xlsx, jar …)
        b"\x1f\x8b",           // gzip
        b"\x28\xb5\x2f\xfd",   // zstd
        b"BZh",                // bzip2
        b"\xfd7zXZ\x00",       // xz
        b"7z\xbc\xaf\x27\x1c", // 7z
    ];
    if MAGIC.iter().any(|m| bytes.starts_with(m)) {
        return true;
    }
    // RIFF containers (WAV, WebP, AVI) and ISO media (MP4, MOV, HEIC, AVIF).
    if bytes.len() >= 12
        && ((bytes.starts_with(b"RIFF") && matches!(&bytes[8..12], b"WAVE" | b"WEBP" | b"AVI "))
            || &bytes[4..8] == b"ftyp")
    {
        return true;
    }
    memchr::memchr(0, &bytes[..bytes.len().min(8192)]).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[(&str, &[u8])], nl: &str, boundary: &str) -> Vec<u8> {
        let mut b = Vec::new();
        for (headers, content) in parts {
            b.extend_from_slice(format!("--{boundary}{nl}{headers}{nl}{nl}").as_bytes());
            b.extend_from_slice(content);
            b.extend_from_slice(nl.as_bytes());
        }
        b.extend_from_slice(format!("--{boundary}--{nl}").as_bytes());
        b
    }

    #[test]
    fn boundaries_quoted_or_not() {
        assert_eq!(boundary("multipart/form-data; boundary=abc"), Some("abc"));
        assert_eq!(
            boundary("multipart/form-data; charset=x; BOUNDARY=\"q\""),
            Some("q")
        );
        assert_eq!(
            boundary("multipart/form-data; boundary=\"a b\""),
            Some("a b")
        );
        assert_eq!(boundary("multipart/form-data"), None);
        assert_eq!(boundary("multipart/form-data; boundary="), None);
    }

    #[test]
    fn parts_with_crlf_and_lf_only() {
        for nl in ["\r\n", "\n"] {
            let b = body(
                &[
                    ("Content-Disposition: form-data; name=\"purpose\"", b"batch"),
                    (
                        "Content-Disposition: form-data; name=\"file\"; filename=\".env\"\nContent-Type: application/octet-stream",
                        b"A=1\n--XyZnot-a-delimiter\n",
                    ),
                ],
                nl,
                "XyZ",
            );
            let m = parse(&b, "XyZ").expect("parses");
            assert_eq!(m.parts.len(), 2, "{nl:?}");
            assert_eq!(&b[m.parts[0].content.clone()], b"batch");
            assert_eq!(m.parts[0].name, "purpose");
            assert_eq!(
                &b[m.parts[1].content.clone()],
                b"A=1\n--XyZnot-a-delimiter\n"
            );
            assert_eq!(m.parts[1].name, "file");
            assert_eq!(m.parts[1].content_type, "application/octet-stream");
            assert!(m.outside[1].is_empty());
        }
    }

    #[test]
    fn refuses_what_it_cannot_place() {
        let b = body(
            &[("Content-Disposition: form-data; name=\"a\"", b"x")],
            "\r\n",
            "one",
        );
        assert_eq!(parse(&b, "other"), Err(MultipartError::NoDelimiter));
        let open = &b[..b.len() - "--one--\r\n".len()];
        assert_eq!(parse(open, "one"), Err(MultipartError::NoClose));
        assert!(matches!(
            parse(
                b"--one\r\nContent-Type: text/plain\r\nno blank line\r\n--one--",
                "one"
            ),
            Err(MultipartError::HeadersUnterminated(_))
        ));
        // A close delimiter at the very end, without a line break, is fine.
        assert!(parse(b"--one\r\n\r\nx\r\n--one--", "one").is_ok());
    }

    #[test]
    fn binary_by_signature_or_nul_never_by_declared_type() {
        assert!(is_binary(b"\x89PNG\r\n\x1a\n...."));
        assert!(is_binary(b"RIFF\x10\x00\x00\x00WEBPVP8 "));
        assert!(is_binary(b"\x00\x00\x00\x18ftypmp42"));
        assert!(is_binary(b"text then \0 a NUL"));
        assert!(!is_binary(b"GITHUB_TOKEN=abc\n"));
        assert!(!is_binary(b"-----BEGIN RSA PRIVATE KEY-----"));
        assert!(!is_binary(b""));
    }
}
