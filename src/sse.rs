//! The streaming contract. Meridian passes SSE bytes through as they arrive and watches them:
//! a stream that ends without `data: [DONE]`, breaks, or carries an event that is not JSON is
//! ended with an explicit error event in OpenAI's error shape, never with a fake clean end.

use serde::Deserialize;

use crate::json::Object;
use crate::usage::{AnthropicUsage, Usage};

/// Longest SSE line we hold while waiting for its end; protects memory on a broken upstream.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// The one reading of an SSE line, for every dialect: the value of a `data:` field (one
/// leading space and a trailing `\r` removed), or `None` for any other line (a comment, an
/// `event:` or `id:` field, the blank line that ends an event).
pub fn data_of(line: &[u8]) -> Option<&[u8]> {
    let bare = line.strip_suffix(b"\r").unwrap_or(line);
    let data = bare.strip_prefix(b"data:")?;
    Some(data.strip_prefix(b" ").unwrap_or(data))
}

/// Whether a line, without its `\n`, is blank (it ends an event).
pub fn is_blank(line: &[u8]) -> bool {
    line.is_empty() || line == b"\r"
}

/// The lines of bytes that hold whole lines (what the stream guard passes on), each without its
/// `\n`.
pub fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    trimmed
        .split(|&b| b == b'\n')
        .take(if bytes.is_empty() { 0 } else { usize::MAX })
}

/// Cuts bytes that arrive split anywhere into whole lines, holding at most one partial line of
/// at most [`MAX_LINE_BYTES`].
#[derive(Debug, Default)]
pub struct LineReader {
    partial: Vec<u8>,
}

/// A line longer than [`MAX_LINE_BYTES`] never ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

impl LineReader {
    /// Hands each whole line of `chunk` (with what was held before it), without its `\n`, to
    /// `line`, which says whether to go on; keeps the rest. Errors when the partial line grows
    /// past the bound.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut line: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), LineTooLong> {
        let mut rest = chunk;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let (head, tail) = rest.split_at(nl);
            rest = &tail[1..];
            let go_on = if self.partial.is_empty() {
                line(head)
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(head);
                line(&whole)
            };
            if !go_on {
                return Ok(());
            }
        }
        if self.partial.len() + rest.len() > MAX_LINE_BYTES {
            self.partial.clear();
            return Err(LineTooLong);
        }
        self.partial.extend_from_slice(rest);
        Ok(())
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
    /// OpenAI Responses events, ending with `response.completed`, `response.incomplete` or
    /// `response.failed` (the provider's own account of a failure, passed on as it is).
    Responses,
}

/// The part of a Responses event the guard reads. Each object in it is read from a JSON object
/// only ([`Object`]), at every depth: serde's derived structs would read one from an array.
#[derive(Deserialize)]
struct ResponsesProbe {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    response: Option<Object<ResponsesObject>>,
}

#[derive(Deserialize)]
struct ResponsesObject {
    #[serde(default)]
    usage: Option<ResponsesUsage>,
}

/// Responses `usage`, read as chat's; from a JSON object only, as every usage is.
#[derive(Deserialize)]
#[serde(from = "Object<ResponsesCounts>")]
pub struct ResponsesUsage(ResponsesCounts);

impl From<Object<ResponsesCounts>> for ResponsesUsage {
    fn from(Object(c): Object<ResponsesCounts>) -> ResponsesUsage {
        ResponsesUsage(c)
    }
}

#[derive(Deserialize)]
struct ResponsesCounts {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<Object<ResponsesInputDetails>>,
}

#[derive(Deserialize)]
struct ResponsesInputDetails {
    #[serde(default)]
    cached_tokens: u64,
}

impl ResponsesUsage {
    pub fn usage(&self) -> Usage {
        let c = &self.0;
        Usage {
            prompt_tokens: c.input_tokens,
            completion_tokens: c.output_tokens,
            total_tokens: c.input_tokens.saturating_add(c.output_tokens),
            cached_tokens: c
                .input_tokens_details
                .as_ref()
                .map_or(0, |d| d.0.cached_tokens),
            cache_write_tokens: 0,
        }
    }
}

/// The part of an Anthropic event the guard reads (its objects from JSON objects only).
#[derive(Deserialize)]
struct AnthropicProbe {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: Option<Object<AnthropicMessage>>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct AnthropicMessage {
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

/// Only the part of a chunk we read; serde skips the rest without allocating it.
#[derive(Deserialize)]
struct ChunkProbe {
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

/// Whether an OpenAI chunk's data may have a `usage` or an `error` key: it holds one of the
/// names in quotes, or a `\u` escape (which could spell either). Otherwise its only check is
/// that it is a JSON object: one that starts with `{` and has neither name is read by
/// [`ChunkProbe`] as it is by `IgnoredAny` (with no keys that it reads, the probe's only
/// other check is that a key is UTF-8: bytes of a stream's values were never checked to be).
fn may_name_usage_or_error(data: &[u8]) -> bool {
    data.first() != Some(&b'{')
        || memchr::memchr2_iter(b'"', b'\\', data).any(|i| {
            let after = &data[i + 1..];
            match data[i] {
                b'"' => after.starts_with(b"usage\"") || after.starts_with(b"error\""),
                _ => after.first() == Some(&b'u'),
            }
        })
}

/// Whether an Anthropic event's data may be one the guard reads: it spells `"usage"`,
/// `"error"` or a name that starts `"message` (the `message` of `message_start`, the types
/// `message_start`, `message_delta`, `message_stop`), holds a `\u` escape, or is not an
/// object. Otherwise the probe would find no usage, no end and no error in it: it could only
/// count it ([`SseGuard::check_framing_only`]).
/// Written out, as the chat one is: one helper for both that took the names as a slice cost a
/// chat stream about 4,400 instructions an event in the component (`scripts/count-instructions`).
fn anthropic_may_matter(data: &[u8]) -> bool {
    data.first() != Some(&b'{')
        || memchr::memchr2_iter(b'"', b'\\', data).any(|i| {
            let after = &data[i + 1..];
            match data[i] {
                b'"' => {
                    after.starts_with(b"usage\"")
                        || after.starts_with(b"error\"")
                        || after.starts_with(b"message")
                }
                _ => after.first() == Some(&b'u'),
            }
        })
}

/// An event whose data is not the JSON its dialect has: what the parser said, without the
/// position (which would only repeat the upstream's bytes).
fn not_json(e: serde_json::Error) -> StreamFault {
    StreamFault::Malformed(format!(
        "event data is not a JSON object: {}",
        e.to_string()
            .split(" at line")
            .next()
            .unwrap_or("invalid JSON")
    ))
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
    /// An output guard stopped the stream (the message says which and why).
    Guard(String),
}

impl StreamFault {
    pub fn code(&self) -> &'static str {
        match self {
            StreamFault::Truncated => "upstream_stream_truncated",
            StreamFault::Broken(_) => "upstream_stream_broken",
            StreamFault::Malformed(_) => "upstream_stream_malformed",
            StreamFault::UpstreamError => "upstream_stream_error",
            StreamFault::Deadline => "stream_deadline_exceeded",
            StreamFault::Guard(_) => "guardrail_refused",
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
            StreamFault::Guard(why) => format!("{why} The response above is partial."),
        }
    }
}

/// The SSE error event Meridian sends when a stream cannot end cleanly.
pub fn error_event(fault: &StreamFault, provider: &str, request_id: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "error": {
            "message": fault.message(provider),
            "type": if matches!(fault, StreamFault::Guard(_)) { "guardrail_error" } else { "upstream_error" },
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
    reader: LineReader,
    done: bool,
    /// The blank line that ends the `[DONE]` event has been passed on.
    closed: bool,
    pub events: u64,
    /// Usage as reported so far.
    pub usage: Option<Usage>,
    /// Whether the provider's final usage arrived (OpenAI's usage chunk, Anthropic's
    /// `message_delta`, a Responses terminal event): before it, what was reported is a start
    /// (Anthropic's `message_start` counts one output token), not what will be billed.
    pub usage_final: bool,
    upstream_error: bool,
    dialect: Dialect,
    /// `stream_events = "framed"`: a chat event that cannot name `usage` or `error` is checked
    /// for its outline only (see [`SseGuard::check_framing_only`]).
    framed: bool,
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
        if self.framed && data.last() == Some(&b'}') && !anthropic_may_matter(data) {
            // What the probe would do with it: count it.
            self.events += 1;
            self.usage.get_or_insert_with(Usage::default);
            return Ok(true);
        }
        let Object(probe): Object<AnthropicProbe> =
            serde_json::from_slice(data).map_err(not_json)?;
        self.events += 1;
        let u = self.usage.get_or_insert_with(Usage::default);
        if let Some(a) = probe.message.as_ref().and_then(|m| m.0.usage.as_ref()) {
            u.add_anthropic(a);
        }
        if let Some(a) = &probe.usage {
            u.add_anthropic(a);
            self.usage_final = true;
        }
        match probe.kind.as_str() {
            "message_stop" => self.done = true,
            "error" => self.upstream_error = true,
            _ => {}
        }
        Ok(true)
    }

    /// A Responses event's data: a terminal event completes the stream (a provider's own
    /// `response.failed` is its truthful end); `error` is the upstream's error; usage comes with
    /// the terminal event's response.
    fn responses_line(&mut self, data: &[u8]) -> Result<bool, StreamFault> {
        let Object(probe): Object<ResponsesProbe> =
            serde_json::from_slice(data).map_err(not_json)?;
        self.events += 1;
        if let Some(u) = probe.response.as_ref().and_then(|r| r.0.usage.as_ref()) {
            self.usage = Some(u.usage());
            self.usage_final = true;
        }
        match probe.kind.as_str() {
            "response.completed" | "response.incomplete" | "response.failed" => self.done = true,
            "error" => self.upstream_error = true,
            _ => {}
        }
        Ok(true)
    }

    /// From now on (`[settings] stream_events = "framed"`, once the first event was checked), a
    /// chat event whose data cannot name `usage` or `error`, or an Anthropic event whose data
    /// cannot name `usage`, `error` or a `message…`, passes when it is a whole line whose data
    /// has a JSON object's outline, `{` to `}`, without being parsed. Other events, `[DONE]`,
    /// and every event of the Responses dialect are read as before. For a stream whose events
    /// go on as they came: a stream Meridian rewrites reads every event anyway.
    pub fn check_framing_only(&mut self) {
        self.framed = true;
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

    /// Inspects a chunk as it arrives. A chunk of whole lines that all pass (a provider's
    /// event, usually) is what goes on, as it came: its bytes are not copied.
    pub fn feed(&mut self, chunk: impl Into<Vec<u8>>) -> Fed {
        let chunk = chunk.into();
        let mut out = Fed::default();
        let mut reader = std::mem::take(&mut self.reader);
        // While `whole` holds, every line so far passed and the lines are `chunk[..at]`.
        let mut whole = reader.partial.is_empty() && chunk.last() == Some(&b'\n');
        let mut at = 0;
        let read = reader.feed(&chunk, |line| {
            let verdict = self.line(line);
            if whole {
                if matches!(verdict, Ok(true)) {
                    at += line.len() + 1;
                    return true;
                }
                whole = false;
                out.send.extend_from_slice(&chunk[..at]);
            }
            match verdict {
                Ok(true) => {
                    out.send.extend_from_slice(line);
                    out.send.push(b'\n');
                    true
                }
                Ok(false) => true,
                Err(f) => {
                    out.fault = Some(f);
                    false
                }
            }
        });
        self.reader = reader;
        if whole {
            out.send = chunk;
        }
        if read.is_err() && out.fault.is_none() {
            out.fault = Some(StreamFault::Malformed(format!(
                "a line longer than {MAX_LINE_BYTES} bytes"
            )));
        }
        out
    }

    /// Checks one whole line: `Ok(true)` to pass it on, `Ok(false)` to drop it.
    fn line(&mut self, line: &[u8]) -> Result<bool, StreamFault> {
        if self.done {
            // The stream is complete: only the blank line that ends the `[DONE]` event goes on.
            let pass = is_blank(line) && !self.closed;
            self.closed |= pass;
            return Ok(pass);
        }
        let Some(data) = data_of(line) else {
            return Ok(true); // comments, `event:`, `id:`, blank separators
        };
        match self.dialect {
            Dialect::Anthropic => return self.anthropic_line(data),
            Dialect::Responses => return self.responses_line(data),
            Dialect::OpenAi => {}
        }
        if data == b"[DONE]" {
            self.done = true;
            return Ok(true);
        }
        if !may_name_usage_or_error(data) {
            if self.framed && data.last() == Some(&b'}') {
                self.events += 1;
                return Ok(true);
            }
            // Nothing in it can be a `usage` or `error` key: the event is only checked to be
            // JSON, without reading its keys.
            return match serde_json::from_slice::<serde::de::IgnoredAny>(data) {
                Ok(_) => {
                    self.events += 1;
                    Ok(true)
                }
                Err(e) => Err(not_json(e)),
            };
        }
        match serde_json::from_slice::<Object<ChunkProbe>>(data) {
            Ok(Object(probe)) => {
                self.events += 1;
                if probe.usage.is_some() {
                    self.usage = probe.usage;
                    self.usage_final = true;
                }
                if probe.error.is_some() {
                    self.upstream_error = true;
                }
                Ok(true)
            }
            Err(e) => Err(not_json(e)),
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
    use proptest::prelude::*;

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

    /// serde reads a struct from a JSON array (its fields in order): an array is no event, in
    /// any dialect, and no usage.
    #[test]
    fn an_event_whose_data_is_an_array_is_malformed_in_every_dialect() {
        for (dialect, data) in [
            (
                Dialect::OpenAi,
                "[{\"prompt_tokens\":1,\"completion_tokens\":2}]",
            ),
            (Dialect::OpenAi, " [null]"),
            (Dialect::Anthropic, "[\"message_stop\"]"),
            (Dialect::Responses, "[\"response.completed\"]"),
            // Nor is a usage that is an array.
            (Dialect::OpenAi, "{\"choices\":[],\"usage\":[5,6,11]}"),
            (
                Dialect::Anthropic,
                "{\"type\":\"message_delta\",\"usage\":[5,0,0,6]}",
            ),
            // Nor an object inside one that holds usage, at any depth.
            (
                Dialect::Anthropic,
                "{\"type\":\"message_start\",\"message\":[{\"input_tokens\":5,\"output_tokens\":1}]}",
            ),
            (
                Dialect::Responses,
                "{\"type\":\"response.completed\",\"response\":[{\"input_tokens\":5,\"output_tokens\":6}]}",
            ),
            (
                Dialect::Responses,
                "{\"type\":\"response.completed\",\"response\":{\"usage\":[5,6]}}",
            ),
            (
                Dialect::Responses,
                "{\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":6,\"input_tokens_details\":[3]}}}",
            ),
            (
                Dialect::OpenAi,
                "{\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6,\"prompt_tokens_details\":[3]}}",
            ),
        ] {
            for framed in [false, true] {
                let mut g = SseGuard::for_dialect(dialect);
                if framed {
                    g.check_framing_only();
                }
                let fed = g.feed(format!("data: {data}\n\n").into_bytes());
                assert!(
                    matches!(fed.fault, Some(StreamFault::Malformed(_))),
                    "{dialect:?} {data}"
                );
                assert_eq!((g.usage, g.saw_done(), g.events), (None, false, 0));
            }
        }
    }

    #[test]
    fn endless_line_is_bounded() {
        let mut g = SseGuard::new();
        let big = vec![b'a'; MAX_LINE_BYTES / 2 + 1];
        assert_eq!(ok(g.feed(&big[..])), b"");
        assert!(g.feed(&big[..]).fault.is_some());
    }

    /// A key as a provider might write it: plain, or with one letter as a `\u` escape.
    fn spelled(key: &str, escape: Option<usize>) -> String {
        match escape {
            Some(i) if i < key.len() => format!(
                "\"{}\\u{:04x}{}\"",
                &key[..i],
                key.as_bytes()[i],
                &key[i + 1..]
            ),
            _ => format!("\"{key}\""),
        }
    }

    /// An event's data from its members: an object, or (`damage` 2) one that never closes, or
    /// (3) one with a comma before its closing brace: not JSON, in an object's outline.
    fn object_of(members: &[String], damage: usize) -> String {
        let mut data = format!("{{{}}}", members.join(","));
        match damage {
            2 => {
                data.pop();
            }
            3 => data.insert(data.len() - 1, ','),
            _ => {}
        }
        data
    }

    /// `"key":value`, the key spelled plainly or with one of its bytes as a `\u` escape.
    fn spelled_member(
        key: impl Strategy<Value = &'static str>,
        value: impl Strategy<Value = String>,
    ) -> impl Strategy<Value = String> {
        (key, proptest::option::of(0usize..6), value)
            .prop_map(|(k, e, v)| format!("{}:{v}", spelled(k, e)))
    }

    fn member() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("usage"),
            Just("error"),
            Just("id"),
            Just("choices"),
            Just("usages"),
            Just("rror"),
        ];
        let value = prop_oneof![
            Just("null".to_string()),
            (0u64..1000, 0u64..1000).prop_map(|(p, c)| format!(
                "{{\"prompt_tokens\":{p},\"completion_tokens\":{c},\"total_tokens\":{}}}",
                p + c
            )),
            Just("{\"message\":\"boom\"}".to_string()),
            "[a-z \"\\\\]{0,12}".prop_map(|t| format!("{:?}", t)),
            Just("[{\"delta\":{\"content\":\"x\"},\"usage\":null,\"error\":1}]".to_string()),
        ];
        spelled_member(key, value)
    }

    proptest! {
        /// What the guard reads from a stream of chat chunks (events, usage, an upstream error, a
        /// fault) is what reading each event's data as a JSON value finds at its top level,
        /// whatever the keys' spelling, whichever way the chunks are cut. Checking framing only
        /// (`stream_events = "framed"`), the one difference is the documented one: data that is
        /// not JSON but has an object's outline, `{` to `}`, and spells neither `"usage"` nor
        /// `"error"` nor any `\u` escape, passes as an event.
        #[test]
        fn what_the_guard_reads_is_what_each_events_json_says(
            events in proptest::collection::vec(
                (proptest::collection::vec(member(), 0..5), 0usize..4),
                1..6,
            ),
            cut in 0usize..400,
            framed in any::<bool>(),
        ) {
            let mut bytes = Vec::new();
            let (mut want_events, mut want_usage, mut want_error, mut want_fault) =
                (0u64, None, false, false);
            for (members, damage) in &events {
                let data = object_of(members, *damage);
                bytes.extend_from_slice(format!("data: {data}\n\n").as_bytes());
                if want_fault {
                    continue;
                }
                let outlined_plain = data.starts_with('{')
                    && data.ends_with('}')
                    && !data.contains("\"usage\"")
                    && !data.contains("\"error\"")
                    && !data.contains("\\u");
                match serde_json::from_str::<serde_json::Value>(&data) {
                    Err(_) if framed && outlined_plain => want_events += 1,
                    Err(_) => want_fault = true,
                    Ok(v) => {
                        // Duplicate keys: serde's struct reading refuses them where it reads them.
                        let names: Vec<String> = members
                            .iter()
                            .map(|m| {
                                let key = &m[..m.find("\":").unwrap() + 1];
                                serde_json::from_str::<String>(key).unwrap()
                            })
                            .collect();
                        let twice = |k: &str| names.iter().filter(|n| *n == k).count() > 1;
                        if twice("usage") || twice("error") {
                            want_fault = true;
                            continue;
                        }
                        // `usage` is read as token counts: an object (a count it lacks is 0).
                        let usage = v.get("usage").filter(|u| !u.is_null());
                        if usage.is_some_and(|u| !u.is_object()) {
                            want_fault = true;
                            continue;
                        }
                        want_events += 1;
                        if let Some(u) = usage {
                            want_usage = Some(u["completion_tokens"].as_u64().unwrap_or(0));
                        }
                        want_error |= v.get("error").is_some_and(|e| !e.is_null());
                    }
                }
            }
            let cut = cut.min(bytes.len());
            let mut g = SseGuard::new();
            if framed {
                g.check_framing_only();
            }
            let mut sent = Vec::new();
            let mut fault = false;
            for part in [&bytes[..cut], &bytes[cut..]] {
                let fed = g.feed(part);
                sent.extend_from_slice(&fed.send);
                if fed.fault.is_some() {
                    fault = true;
                    break;
                }
            }
            prop_assert_eq!(fault, want_fault);
            prop_assert_eq!(g.events, want_events);
            prop_assert_eq!(g.usage.map(|u| u.completion_tokens), want_usage);
            prop_assert_eq!(g.saw_upstream_error(), want_error);
            if !fault {
                prop_assert_eq!(sent, bytes);
            }
        }
    }

    /// Members of an Anthropic event: the names the guard reads (`type`, `usage`, `message`,
    /// `error`), others, and near misses, spelled plainly or with a `\u` escape.
    fn anthropic_member() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("type"),
            Just("usage"),
            Just("message"),
            Just("error"),
            Just("index"),
            Just("delta"),
            Just("messages"),
        ];
        let kind = prop_oneof![
            Just("message_start"),
            Just("message_delta"),
            Just("message_stop"),
            Just("error"),
            Just("ping"),
            Just("content_block_delta"),
        ];
        let value = prop_oneof![
            Just("null".to_string()),
            Just("5".to_string()),
            Just("[1,2]".to_string()),
            kind.prop_map(|k| format!("\"{k}\"")),
            (0u64..100, 0u64..100)
                .prop_map(|(i, o)| format!("{{\"input_tokens\":{i},\"output_tokens\":{o}}}")),
            (0u64..100).prop_map(|o| format!("{{\"usage\":{{\"output_tokens\":{o}}}}}")),
            "[a-z \"\\\\]{0,12}".prop_map(|t| format!("{:?}", t)),
        ];
        spelled_member(key, value)
    }

    proptest! {
        /// Checking framing only, an Anthropic stream's guard reads what the checking guard reads
        /// from the same events, but for the documented difference: an event whose data has an
        /// object's outline, `{` to `}`, and spells neither `"usage"` nor `"error"` nor a name
        /// starting `"message` nor any `\u` escape is counted as an event and nothing more,
        /// JSON or not. The reference is the checking guard fed the same stream with each such
        /// event's data replaced by `{}`.
        #[test]
        fn framed_anthropic_events_are_read_as_checked_ones_but_the_outlined_plain(
            events in proptest::collection::vec(
                (proptest::collection::vec(anthropic_member(), 0..4), 0usize..4),
                1..6,
            ),
            cut in 0usize..400,
        ) {
            let (mut bytes, mut reference) = (Vec::new(), Vec::new());
            for (members, damage) in &events {
                let data = object_of(members, *damage);
                let outlined_plain = data.starts_with('{')
                    && data.ends_with('}')
                    && !data.contains("\"usage\"")
                    && !data.contains("\"error\"")
                    && !data.contains("\"message")
                    && !data.contains("\\u");
                bytes.extend_from_slice(format!("event: e\ndata: {data}\n\n").as_bytes());
                let read = if outlined_plain { "{}" } else { data.as_str() };
                reference.extend_from_slice(format!("event: e\ndata: {read}\n\n").as_bytes());
            }
            let mut want = SseGuard::for_dialect(Dialect::Anthropic);
            let want_fault = want.feed(reference).fault.is_some();
            let mut g = SseGuard::for_dialect(Dialect::Anthropic);
            g.check_framing_only();
            let cut = cut.min(bytes.len());
            let (mut sent, mut fault) = (Vec::new(), false);
            for part in [&bytes[..cut], &bytes[cut..]] {
                let fed = g.feed(part);
                sent.extend_from_slice(&fed.send);
                if fed.fault.is_some() {
                    fault = true;
                    break;
                }
            }
            prop_assert_eq!(fault, want_fault);
            prop_assert_eq!(g.events, want.events);
            prop_assert_eq!(g.usage, want.usage);
            prop_assert_eq!(g.usage_final, want.usage_final);
            prop_assert_eq!(g.saw_done(), want.saw_done());
            prop_assert_eq!(g.saw_upstream_error(), want.saw_upstream_error());
            if !fault {
                // Everything up to the end (`message_stop`'s event) goes on as it came.
                prop_assert!(bytes.starts_with(&sent));
                if !g.saw_done() {
                    prop_assert_eq!(sent, bytes);
                }
            }
        }
    }

    #[test]
    fn framed_anthropic_streams_pass_outlined_deltas_and_read_the_rest() {
        let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n";
        let garbled = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"]}\n\n";
        let end = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":12}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let stream = format!("{start}{garbled}{end}");
        let mut g = SseGuard::for_dialect(Dialect::Anthropic);
        g.check_framing_only();
        assert_eq!(ok(g.feed(stream.as_bytes())), stream.as_bytes());
        assert!(g.saw_done() && g.usage_final);
        let u = g.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (7, 12));
        assert_eq!(g.finish(), Ok(()));
        // Checked, the garbled delta ends it.
        let mut g = SseGuard::for_dialect(Dialect::Anthropic);
        let fed = g.feed(stream.as_bytes());
        assert_eq!(
            fed.send,
            format!("{start}event: content_block_delta\n").as_bytes()
        );
        assert!(matches!(fed.fault, Some(StreamFault::Malformed(_))));
        // Framed, an event that may name what the guard reads is read: garbled, it ends the
        // stream; an upstream's error is seen.
        for (bad, error) in [
            (
                "{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":1]}",
                false,
            ),
            (
                "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}",
                true,
            ),
        ] {
            let mut g = SseGuard::for_dialect(Dialect::Anthropic);
            g.check_framing_only();
            let fed = g.feed(format!("{start}event: x\ndata: {bad}\n\n").into_bytes());
            assert_eq!(fed.fault.is_some(), !error, "{bad}");
            assert_eq!(g.saw_upstream_error(), error, "{bad}");
        }
    }

    #[test]
    fn a_chunk_of_whole_lines_goes_on_as_it_came_and_a_dropped_line_is_cut_from_it() {
        let mut g = SseGuard::new();
        let chunk = b"data: {\"a\":1}\n\n".to_vec();
        let at = chunk.as_ptr();
        let fed = g.feed(chunk);
        assert_eq!(fed.send, b"data: {\"a\":1}\n\n");
        assert_eq!(fed.send.as_ptr(), at, "the same bytes, not a copy");
        let fed = g.feed(&b"data: [DONE]\n\ndata: {\"late\":1}\n\n"[..]);
        assert_eq!(fed.send, b"data: [DONE]\n\n");
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
}
