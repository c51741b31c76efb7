//! The streaming contract. Meridian passes SSE bytes through as they arrive and watches them:
//! a stream that ends without `data: [DONE]`, breaks, or carries an event that is not JSON is
//! ended with an explicit error event in OpenAI's error shape, never with a fake clean end.

use serde::{Deserialize, Serialize};

/// Longest SSE line we hold while waiting for its end; protects memory on a broken upstream.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Token counts as OpenAI's `usage` reports them. `prompt_tokens` includes cached ones:
/// `prompt_tokens_details.cached_tokens` (reads) and, from Anthropic answers,
/// `prompt_tokens_details.cache_write_tokens` (writes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RawUsage")]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub cached_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Deserialize)]
struct RawUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<RawDetails>,
}

#[derive(Deserialize, Default)]
struct RawDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

impl From<RawUsage> for Usage {
    fn from(r: RawUsage) -> Usage {
        let d = r.prompt_tokens_details.unwrap_or_default();
        Usage {
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            total_tokens: r.total_tokens,
            cached_tokens: d.cached_tokens.unwrap_or(0),
            cache_write_tokens: d.cache_write_tokens.unwrap_or(0),
        }
    }
}

/// A model's prices, USD per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prices {
    pub input: Option<f64>,
    pub output: Option<f64>,
    /// Cached prompt tokens read; `input` when absent.
    pub cache_read: Option<f64>,
    /// Prompt tokens written to the cache; `input` when absent.
    pub cache_write: Option<f64>,
}

impl Usage {
    /// Takes what an Anthropic usage object reports (an event may carry only some counts):
    /// cache reads and writes are prompt tokens too.
    pub fn add_anthropic(&mut self, a: &AnthropicUsage) {
        if let Some(n) = a.input_tokens {
            let cached = a.cache_read_input_tokens.unwrap_or(0);
            let written = a.cache_creation_input_tokens.unwrap_or(0);
            self.prompt_tokens = n.saturating_add(cached).saturating_add(written);
            self.cached_tokens = cached;
            self.cache_write_tokens = written;
        }
        if let Some(n) = a.output_tokens {
            self.completion_tokens = n;
        }
        self.total_tokens = self.prompt_tokens.saturating_add(self.completion_tokens);
    }

    /// From a whole Anthropic usage object (JSON).
    pub fn from_anthropic(u: &serde_json::Value) -> Usage {
        let mut usage = Usage::default();
        let a = AnthropicUsage::deserialize(u).unwrap_or_default();
        usage.add_anthropic(&a);
        usage
    }

    /// OpenAI's `usage` object.
    pub fn to_openai(&self) -> serde_json::Value {
        let mut details = serde_json::json!({"cached_tokens": self.cached_tokens});
        if self.cache_write_tokens > 0 {
            details["cache_write_tokens"] = self.cache_write_tokens.into();
        }
        serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": details,
        })
    }

    /// USD, from prices per million tokens; cache reads and writes at their own prices when
    /// the catalog gives them.
    pub fn cost(&self, p: Prices) -> Option<f64> {
        if p.input.is_none() && p.output.is_none() {
            return None;
        }
        let input = p.input.unwrap_or(0.0);
        let cached = self.cached_tokens.min(self.prompt_tokens);
        let written = self.cache_write_tokens.min(self.prompt_tokens - cached);
        let plain = self.prompt_tokens - cached - written;
        let c = plain as f64 * input
            + cached as f64 * p.cache_read.unwrap_or(input)
            + written as f64 * p.cache_write.unwrap_or(input)
            + self.completion_tokens as f64 * p.output.unwrap_or(0.0);
        Some(c / 1_000_000.0)
    }
}

/// The event format of a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dialect {
    /// `data: {chunk}` events ending with `data: [DONE]`.
    #[default]
    OpenAi,
    /// Anthropic's named events, ending with `message_stop`.
    Anthropic,
}

/// The part of an Anthropic event the guard reads.
#[derive(Deserialize)]
struct AnthropicProbe {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: Option<AnthropicMessage>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct AnthropicMessage {
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

/// Anthropic's usage object, as `message_start`, `message_delta` and whole answers carry it.
#[derive(Deserialize, Default)]
pub struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

/// Only the part of a chunk we read; serde skips the rest without allocating it.
#[derive(Deserialize)]
struct ChunkProbe {
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

/// What went wrong with a stream, as the client will be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFault {
    /// The upstream ended the body before `data: [DONE]`.
    Truncated,
    /// The upstream connection failed or went silent.
    Broken(String),
    /// An event's data was not JSON.
    Malformed(String),
    /// The upstream itself sent an error event.
    UpstreamError,
    /// The stream ran past the plan's `stream_deadline_ms`.
    Deadline,
}

impl StreamFault {
    pub fn code(&self) -> &'static str {
        match self {
            StreamFault::Truncated => "upstream_stream_truncated",
            StreamFault::Broken(_) => "upstream_stream_broken",
            StreamFault::Malformed(_) => "upstream_stream_malformed",
            StreamFault::UpstreamError => "upstream_stream_error",
            StreamFault::Deadline => "stream_deadline_exceeded",
        }
    }

    pub fn message(&self, provider: &str) -> String {
        match self {
            StreamFault::Truncated => format!(
                "the upstream provider `{provider}` ended the stream before it was complete; the response above is partial"
            ),
            StreamFault::Broken(why) => format!(
                "the stream from upstream provider `{provider}` failed midway ({why}); the response above is partial"
            ),
            StreamFault::Malformed(why) => format!(
                "upstream provider `{provider}` sent a malformed stream event ({why}); the stream was stopped"
            ),
            StreamFault::UpstreamError => format!(
                "upstream provider `{provider}` reported an error in the stream; the response above is partial"
            ),
            StreamFault::Deadline => format!(
                "the stream from upstream provider `{provider}` ran past this deployment's stream deadline; the response above is partial"
            ),
        }
    }
}

/// The SSE error event Meridian sends when a stream cannot end cleanly.
pub fn error_event(fault: &StreamFault, provider: &str, request_id: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "error": {
            "message": fault.message(provider),
            "type": "upstream_error",
            "param": null,
            "code": fault.code(),
            "meridian": { "provider": provider, "request_id": request_id },
        }
    });
    let mut out = b"event: error\ndata: ".to_vec();
    out.extend_from_slice(body.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

/// What a chunk fed to the guard gives: the bytes that may go to the client (whole lines that
/// checked out), and the fault that ends the stream, if any.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fed {
    pub send: Vec<u8>,
    pub fault: Option<StreamFault>,
}

/// Watches an OpenAI-style SSE stream line by line. A line reaches the client only once it is
/// whole and checked; at most one partial line is held. After `data: [DONE]` nothing but blank
/// lines is passed on.
#[derive(Debug, Default)]
pub struct SseGuard {
    partial: Vec<u8>,
    done: bool,
    /// The blank line that ends the `[DONE]` event has been passed on.
    closed: bool,
    pub events: u64,
    pub usage: Option<Usage>,
    upstream_error: bool,
    dialect: Dialect,
}

impl SseGuard {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn for_dialect(dialect: Dialect) -> Self {
        SseGuard {
            dialect,
            ..Self::default()
        }
    }

    /// An Anthropic event's data: `message_stop` completes the stream, `error` is the
    /// upstream's error, usage is gathered from `message_start` and `message_delta`.
    fn anthropic_line(&mut self, data: &[u8]) -> Result<bool, StreamFault> {
        let probe: AnthropicProbe = serde_json::from_slice(data).map_err(|e| {
            StreamFault::Malformed(format!(
                "event data is not a JSON object: {}",
                e.to_string()
                    .split(" at line")
                    .next()
                    .unwrap_or("invalid JSON")
            ))
        })?;
        self.events += 1;
        let u = self.usage.get_or_insert_with(Usage::default);
        if let Some(a) = probe.message.as_ref().and_then(|m| m.usage.as_ref()) {
            u.add_anthropic(a);
        }
        if let Some(a) = &probe.usage {
            u.add_anthropic(a);
        }
        match probe.kind.as_str() {
            "message_stop" => self.done = true,
            "error" => self.upstream_error = true,
            _ => {}
        }
        Ok(true)
    }

    pub fn saw_done(&self) -> bool {
        self.done
    }

    /// Ends the final event if its blank line has not come yet (it is in a later chunk that is
    /// never read): the line that dispatches it, else nothing.
    pub fn close(&mut self) -> &'static [u8] {
        if self.done && !self.closed {
            self.closed = true;
            b"\n"
        } else {
            b""
        }
    }

    /// Whether an event carried an `error` object (the upstream reported an error in-stream).
    pub fn saw_upstream_error(&self) -> bool {
        self.upstream_error
    }

    /// Inspects a chunk as it arrives.
    pub fn feed(&mut self, chunk: &[u8]) -> Fed {
        let mut out = Fed::default();
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(nl);
            rest = &tail[1..];
            let whole;
            let line = if self.partial.is_empty() {
                line
            } else {
                let mut full = std::mem::take(&mut self.partial);
                full.extend_from_slice(line);
                whole = full;
                &whole[..]
            };
            match self.line(line) {
                Ok(true) => {
                    out.send.extend_from_slice(line);
                    out.send.push(b'\n');
                }
                Ok(false) => {}
                Err(f) => {
                    out.fault = Some(f);
                    return out;
                }
            }
        }
        if self.partial.len() + rest.len() > MAX_LINE_BYTES {
            out.fault = Some(StreamFault::Malformed(format!(
                "a line longer than {MAX_LINE_BYTES} bytes"
            )));
            return out;
        }
        self.partial.extend_from_slice(rest);
        out
    }

    /// Checks one whole line: `Ok(true)` to pass it on, `Ok(false)` to drop it.
    fn line(&mut self, line: &[u8]) -> Result<bool, StreamFault> {
        let bare = line.strip_suffix(b"\r").unwrap_or(line);
        if self.done {
            // The stream is complete: only the blank line that ends the `[DONE]` event goes on.
            let pass = bare.is_empty() && !self.closed;
            self.closed |= pass;
            return Ok(pass);
        }
        let Some(data) = bare.strip_prefix(b"data:") else {
            return Ok(true); // comments, `event:`, `id:`, blank separators
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        if self.dialect == Dialect::Anthropic {
            return self.anthropic_line(data);
        }
        if data == b"[DONE]" {
            self.done = true;
            return Ok(true);
        }
        match serde_json::from_slice::<ChunkProbe>(data) {
            Ok(probe) => {
                self.events += 1;
                if probe.usage.is_some() {
                    self.usage = probe.usage;
                }
                if probe.error.is_some() {
                    self.upstream_error = true;
                }
                Ok(true)
            }
            Err(e) => Err(StreamFault::Malformed(format!(
                "event data is not a JSON object: {}",
                e.to_string()
                    .split(" at line")
                    .next()
                    .unwrap_or("invalid JSON")
            ))),
        }
    }

    /// Called when the upstream body ends normally.
    pub fn finish(&self) -> Result<(), StreamFault> {
        if self.done {
            Ok(())
        } else if self.upstream_error {
            Err(StreamFault::UpstreamError)
        } else {
            Err(StreamFault::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(f: Fed) -> Vec<u8> {
        assert_eq!(f.fault, None);
        f.send
    }

    #[test]
    fn clean_stream_with_usage_split_across_chunks() {
        let mut g = SseGuard::new();
        let sent = ok(g.feed(b"data: {\"choices\":[]}\n\nda"));
        assert_eq!(
            sent, b"data: {\"choices\":[]}\n\n",
            "the partial line is held"
        );
        let sent = ok(g.feed(b"ta: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5,\"total_tokens\":8}}\n\n"));
        assert!(sent.starts_with(b"data: {\"choices\":[],\"usage\""));
        assert_eq!(g.finish(), Err(StreamFault::Truncated));
        assert_eq!(ok(g.feed(b"data: [DONE]\n\n")), b"data: [DONE]\n\n");
        assert_eq!(g.finish(), Ok(()));
        assert_eq!(g.events, 2);
        assert_eq!(g.usage.unwrap().completion_tokens, 5);
    }

    #[test]
    fn valid_events_before_a_malformed_line_are_delivered() {
        let mut g = SseGuard::new();
        let f = g.feed(b"data: {\"a\":1}\n\ndata: {not json}\ndata: {\"b\":2}\n\n");
        assert_eq!(f.send, b"data: {\"a\":1}\n\n");
        assert!(matches!(f.fault, Some(StreamFault::Malformed(_))));
    }

    #[test]
    fn nothing_after_done() {
        let mut g = SseGuard::new();
        let f = g.feed(b"data: [DONE]\n\ndata: {\"late\":1}\n\n: comment\n");
        assert_eq!(
            f,
            Fed {
                send: b"data: [DONE]\n\n".to_vec(),
                fault: None
            }
        );
        assert_eq!(g.finish(), Ok(()));
    }

    #[test]
    fn upstream_error_event_without_done() {
        let mut g = SseGuard::new();
        ok(g.feed(b"data: {\"error\":{\"message\":\"boom\"}}\n\n"));
        assert!(g.saw_upstream_error());
        assert_eq!(g.finish(), Err(StreamFault::UpstreamError));
    }

    #[test]
    fn endless_line_is_bounded() {
        let mut g = SseGuard::new();
        let big = vec![b'a'; MAX_LINE_BYTES / 2 + 1];
        assert_eq!(ok(g.feed(&big)), b"");
        assert!(g.feed(&big).fault.is_some());
    }

    #[test]
    fn error_event_is_openai_shaped_and_not_done() {
        let ev = error_event(&StreamFault::Truncated, "p1", "r1");
        let s = String::from_utf8(ev).unwrap();
        assert!(s.starts_with("event: error\ndata: {"));
        assert!(!s.contains("[DONE]"));
        let json: serde_json::Value =
            serde_json::from_str(s.trim_start_matches("event: error\ndata: ").trim()).unwrap();
        assert_eq!(json["error"]["code"], "upstream_stream_truncated");
    }

    #[test]
    fn cost_from_prices() {
        let u = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 500_000,
            ..Usage::default()
        };
        let p = |input, output| Prices {
            input,
            output,
            ..Prices::default()
        };
        assert_eq!(u.cost(p(Some(0.15), Some(0.6))), Some(0.45));
        assert_eq!(u.cost(p(None, None)), None);
    }

    #[test]
    fn cached_prompt_tokens_are_priced_as_the_catalog_says() {
        // OpenAI's shape, and Anthropic's translated: 1M prompt tokens of which 600k were read
        // from the cache and 100k written to it.
        let u: Usage = serde_json::from_str(
            r#"{"prompt_tokens":1000000,"completion_tokens":0,"total_tokens":1000000,
                "prompt_tokens_details":{"cached_tokens":600000,"cache_write_tokens":100000}}"#,
        )
        .unwrap();
        assert_eq!((u.cached_tokens, u.cache_write_tokens), (600_000, 100_000));
        let prices = Prices {
            input: Some(3.0),
            output: Some(15.0),
            cache_read: Some(0.3),
            cache_write: Some(3.75),
        };
        // 300k plain × 3 + 600k × 0.30 + 100k × 3.75, per million.
        let want = (300_000.0 * 3.0 + 600_000.0 * 0.3 + 100_000.0 * 3.75) / 1e6;
        assert!((u.cost(prices).unwrap() - want).abs() < 1e-9);
        // Without cache prices every prompt token costs the input price.
        let plain = Prices {
            cache_read: None,
            cache_write: None,
            ..prices
        };
        assert!((u.cost(plain).unwrap() - 3.0).abs() < 1e-9);
    }
}
