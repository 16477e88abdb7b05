//! The `x-mock-scenario` request header: `;`- or `,`-separated tokens that change how the mock
//! answers one request. An unknown token is an error (answered with 400) so a typo in a test
//! cannot silently test the default path.

use std::time::Duration;

pub const HEADER: &str = "x-mock-scenario";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scenario {
    /// `status=N`: answer with this status; non-2xx gives an error body in the provider's format.
    pub status: Option<u16>,
    /// `delay_ms=N`: wait before sending response headers.
    pub delay: Duration,
    /// `gap_ms=N`: time between streamed events (default: the server's, 30 ms).
    pub gap: Option<Duration>,
    /// `stall_after=N`: stream N events, then send nothing more until the client goes away.
    pub stall_after: Option<usize>,
    /// `reset_after=N`: stream N events, then abort the connection mid-body.
    pub reset_after: Option<usize>,
    /// `reset_mid=N`: stream N events and the first half of the next, then abort.
    pub reset_mid: Option<usize>,
    /// `tool_call`: answer with a tool/function call whose arguments carry the user text.
    pub tool_call: bool,
    /// `chunk_words=N`: words per streamed text delta (default 2).
    pub chunk_words: Option<usize>,
    /// `chunk_chars=N`: cut streamed text and tool-call argument deltas every N chars instead,
    /// mid-word, so a test can make any token straddle two events.
    pub chunk_chars: Option<usize>,
    /// `cached=N`: input tokens reported as read from the prompt cache.
    pub cached: u64,
    /// `cache_write=N`: input tokens reported as written to the prompt cache (Anthropic).
    pub cache_write: u64,
    /// `reasoning=N`: reasoning/thinking tokens reported (OpenAI, Gemini).
    pub reasoning: u64,
    /// `hop_headers`: add hop-by-hop headers to the response (a proxy must strip them).
    pub hop_headers: bool,
    /// `echo_auth`: with an error `status`, the error message (and an `x-mock-auth-echo`
    /// header) quote the key the request carried, as a real 401 does ("Incorrect API key
    /// provided: …").
    pub echo_auth: bool,
    /// `error_body=html|text|empty|empty_json|echo`: with an error `status`, answer with an HTML
    /// page, a `text/plain` line, an empty body (`content-length: 0`; `empty_json` with
    /// `content-type: application/json`), or a JSON error in the provider's format whose message
    /// quotes the request body.
    pub error_body: Option<ErrorBody>,
    /// `encoding=gzip|deflate|br|zstd|bogus`: answer compressed (with `content-encoding`), as
    /// if the upstream ignored `accept-encoding: identity`. Streams support `gzip` (flushed per
    /// event, so they still stream); `bogus` sends the header with a plain body.
    pub encoding: Option<String>,
    /// `interleave=ping|comment|empty`: between every two SSE events, an event that carries no
    /// text: an Anthropic-style `event: ping`, a `: keepalive` comment, or an empty delta
    /// (OpenAI `delta: {}`, Anthropic an empty `text_delta`, Gemini a ping).
    pub interleave: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorBody {
    Html,
    Text,
    Empty,
    EmptyJson,
    Echo,
}

impl Scenario {
    pub fn parse(header: &str) -> Result<Self, String> {
        let mut s = Scenario::default();
        for token in header
            .split([';', ','])
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let (key, value) = match token.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (token, None),
            };
            let num = |v: Option<&str>| -> Result<u64, String> {
                v.ok_or_else(|| format!("scenario token `{key}` needs a value"))?
                    .parse::<u64>()
                    .map_err(|e| format!("scenario token `{token}`: {e}"))
            };
            match key {
                "status" => {
                    let n = num(value)?;
                    if !(100..=599).contains(&n) {
                        return Err(format!("scenario status {n} out of range"));
                    }
                    s.status = Some(n as u16);
                }
                "delay_ms" => s.delay = Duration::from_millis(num(value)?),
                "gap_ms" => s.gap = Some(Duration::from_millis(num(value)?)),
                "stall_after" => s.stall_after = Some(num(value)? as usize),
                "reset_after" => s.reset_after = Some(num(value)? as usize),
                "reset_mid" => s.reset_mid = Some(num(value)? as usize),
                "chunk_words" => s.chunk_words = Some(num(value)?.max(1) as usize),
                "chunk_chars" => s.chunk_chars = Some(num(value)?.max(1) as usize),
                "cached" => s.cached = num(value)?,
                "cache_write" => s.cache_write = num(value)?,
                "reasoning" => s.reasoning = num(value)?,
                "tool_call" if value.is_none() => s.tool_call = true,
                "hop_headers" if value.is_none() => s.hop_headers = true,
                "echo_auth" if value.is_none() => s.echo_auth = true,
                "interleave" => match value {
                    Some(v @ ("ping" | "comment" | "empty")) => s.interleave = Some(v.to_owned()),
                    _ => return Err(format!("scenario token `{token}`: ping|comment|empty")),
                },
                "encoding" => match value {
                    Some(v @ ("gzip" | "deflate" | "br" | "zstd" | "bogus")) => {
                        s.encoding = Some(v.to_owned())
                    }
                    _ => {
                        return Err(format!(
                            "scenario token `{token}`: gzip|deflate|br|zstd|bogus"
                        ))
                    }
                },
                "error_body" => {
                    s.error_body = Some(match value {
                        Some("html") => ErrorBody::Html,
                        Some("text") => ErrorBody::Text,
                        Some("empty") => ErrorBody::Empty,
                        Some("empty_json") => ErrorBody::EmptyJson,
                        Some("echo") => ErrorBody::Echo,
                        _ => {
                            return Err(format!(
                                "scenario token `{token}`: html|text|empty|empty_json|echo"
                            ))
                        }
                    })
                }
                _ => return Err(format!("unknown scenario token `{token}`")),
            }
        }
        Ok(s)
    }

    /// Status code to answer with when it is an error.
    pub fn error_status(&self) -> Option<u16> {
        self.status.filter(|s| !(200..300).contains(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tokens() {
        let s = Scenario::parse("status=429; delay_ms=10, gap_ms=5;tool_call;stall_after=2")
            .expect("valid");
        assert_eq!(s.status, Some(429));
        assert_eq!(s.delay, Duration::from_millis(10));
        assert_eq!(s.gap, Some(Duration::from_millis(5)));
        assert!(s.tool_call);
        assert_eq!(s.stall_after, Some(2));
        assert_eq!(
            Scenario::parse("chunk_chars=3").expect("valid").chunk_chars,
            Some(3)
        );
        assert_eq!(s.error_status(), Some(429));
        assert_eq!(Scenario::parse("").expect("empty"), Scenario::default());
    }

    #[test]
    fn rejects_unknown_and_malformed_tokens() {
        assert!(Scenario::parse("stauts=500").is_err());
        assert!(Scenario::parse("status=abc").is_err());
        assert!(Scenario::parse("status").is_err());
        assert!(Scenario::parse("tool_call=1").is_err());
        assert!(Scenario::parse("status=99").is_err());
    }
}
