//! Puts redacted values back into answers: a whole (non-stream) answer, or a stream as it
//! arrives, everywhere the model writes: text, tool-call arguments (OpenAI's, whole and
//! streamed) and Anthropic tool-use input. A placeholder the model writes across two stream
//! events is put back too: text that ends in what may be the start of a placeholder is held back
//! (never more than the longest placeholder) until the next event of the same choice (and tool
//! call) shows whether it is one. Inside tool-call arguments, which are JSON text, the original
//! is put back JSON-escaped. Each `[` costs one hash lookup: restoring is linear in the text.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// Where a piece of streamed text belongs: a choice's content, or one of its tool calls'
/// arguments.
type Slot = (u64, Option<u64>);

pub struct Restorer {
    /// Placeholder → original.
    originals: HashMap<String, String>,
    longest: usize,
    /// Text held back per slot.
    held: Vec<(Slot, String)>,
    /// `id`, `object`, `created`, `model` of the last event, for an event that hands over text
    /// still held when the stream ends.
    template: Map<String, Value>,
    /// Whether the stream is a completions stream (`text`) rather than chat (`delta.content`).
    text_field: bool,
}

impl Restorer {
    pub fn new(pairs: Vec<(String, String)>) -> Restorer {
        let longest = pairs.iter().map(|(p, _)| p.len()).max().unwrap_or(0);
        Restorer {
            originals: pairs.into_iter().collect(),
            longest,
            held: Vec::new(),
            template: Map::new(),
            text_field: false,
        }
    }

    /// Replaces every complete placeholder in `s`.
    pub fn replace_all(&self, s: &str) -> String {
        self.replace(s, false)
    }

    /// Replaces every complete placeholder in `s`; `json`: `s` is JSON text, and the originals
    /// go in escaped as JSON string content.
    fn replace(&self, s: &str, json: bool) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(at) = rest.find('[') {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            let window = &tail.as_bytes()[..tail.len().min(self.longest)];
            let found = window
                .iter()
                .position(|&b| b == b']')
                .and_then(|close| self.originals.get(&tail[..=close]).map(|o| (close, o)));
            match found {
                Some((close, original)) => {
                    if json {
                        let quoted = crate::json::to_string(original).unwrap_or_default();
                        out.push_str(&quoted[1..quoted.len().saturating_sub(1).max(1)]);
                    } else {
                        out.push_str(original);
                    }
                    rest = &tail[close + 1..];
                }
                None => {
                    out.push('[');
                    rest = &tail[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// Whether `tail` (starting with `[`) may be the start of a placeholder: `[`, then upper-case
    /// letters, digits and `_`, shorter than the longest placeholder.
    fn may_start_placeholder(&self, tail: &str) -> bool {
        tail.len() < self.longest
            && tail
                .bytes()
                .skip(1)
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    }

    fn restore_json_string(&self, v: &mut Value) {
        if let Value::String(s) = v {
            if s.contains('[') {
                *s = self.replace(s, true);
            }
        }
    }

    fn restore_string(&self, v: &mut Value) {
        if let Value::String(s) = v {
            if s.contains('[') {
                *s = self.replace_all(s);
            }
        }
    }

    /// A whole answer: message contents, tool-call arguments and completion texts. A body that
    /// is not JSON is returned unchanged.
    pub fn restore_body(&self, body: &[u8]) -> Vec<u8> {
        let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
            return body.to_vec();
        };
        // An Anthropic message: text blocks and tool inputs.
        if let Some(Value::Array(blocks)) = v.get_mut("content") {
            for b in blocks {
                if let Some(t) = b.get_mut("text") {
                    self.restore_string(t);
                }
                if let Some(input) = b.get_mut("input") {
                    let mut s = Value::String(input.to_string());
                    self.restore_json_string(&mut s);
                    if let Some(parsed) = s.as_str().and_then(|s| serde_json::from_str(s).ok()) {
                        *input = parsed;
                    }
                }
            }
        }
        if let Some(Value::Array(choices)) = v.get_mut("choices") {
            for c in choices {
                if let Some(t) = c.get_mut("text") {
                    self.restore_string(t);
                }
                let Some(m) = c.get_mut("message") else {
                    continue;
                };
                if let Some(t) = m.get_mut("content") {
                    self.restore_string(t);
                }
                if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
                    for call in calls {
                        if let Some(a) = call
                            .get_mut("function")
                            .and_then(|f| f.get_mut("arguments"))
                        {
                            self.restore_json_string(a);
                        }
                    }
                }
            }
        }
        crate::json::to_vec(&v).unwrap_or_else(|_| body.to_vec())
    }

    fn take_held(&mut self, slot: Slot) -> String {
        match self.held.iter().position(|(i, _)| *i == slot) {
            Some(p) => self.held.swap_remove(p).1,
            None => String::new(),
        }
    }

    /// One slot's new text: restored, minus a tail that may be the start of a placeholder
    /// (kept for the next piece) unless this is the choice's last piece. Tool-call arguments
    /// (`slot.1`) are JSON text.
    fn piece(&mut self, slot: Slot, s: &str, last: bool) -> String {
        let mut text = self.take_held(slot);
        text.push_str(s);
        // Only a held tail (never restored text) can end in an unfinished placeholder: restore
        // up to it, hold it.
        let cut = match text.rfind('[') {
            Some(at) if !last && self.may_start_placeholder(&text[at..]) => at,
            _ => text.len(),
        };
        let out = self.replace(&text[..cut], slot.1.is_some());
        if cut < text.len() {
            self.held.push((slot, text[cut..].to_string()));
        }
        out
    }

    fn restore_event(&mut self, event: &mut Value) {
        let Some(obj) = event.as_object_mut() else {
            return;
        };
        for key in ["id", "object", "created", "model"] {
            if let Some(v) = obj.get(key) {
                self.template.insert(key.to_string(), v.clone());
            }
        }
        let Some(Value::Array(choices)) = obj.get_mut("choices") else {
            return;
        };
        for c in choices {
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let last = c.get("finish_reason").is_some_and(|f| !f.is_null());
            let slot = if c.get("text").is_some() {
                self.text_field = true;
                c.get_mut("text")
            } else {
                c.get_mut("delta").and_then(|d| {
                    if d.get("content").is_none() && last {
                        // Text still held must leave with the choice's last event.
                        if let Some(o) = d.as_object_mut() {
                            o.insert("content".into(), Value::String(String::new()));
                        }
                    }
                    d.get_mut("content")
                })
            };
            match slot {
                Some(Value::String(s)) => {
                    let restored = self.piece((index, None), s, last);
                    *s = restored;
                }
                Some(Value::Null) | None if last => {
                    // A final event without text: nothing held can be lost, as `piece` ran
                    // for every earlier piece; hand over what is held anyway.
                    let held = self.take_held((index, None));
                    if !held.is_empty() {
                        if let Some(d) = c.get_mut("delta").and_then(Value::as_object_mut) {
                            d.insert("content".into(), Value::String(held));
                        }
                    }
                }
                _ => {}
            }
            let calls = c
                .get_mut("delta")
                .and_then(|d| d.get_mut("tool_calls"))
                .and_then(Value::as_array_mut);
            let mut seen: Vec<u64> = Vec::new();
            for call in calls.into_iter().flatten() {
                let tool = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                seen.push(tool);
                if let Some(Value::String(a)) = call
                    .get_mut("function")
                    .and_then(|f| f.get_mut("arguments"))
                {
                    let restored = self.piece((index, Some(tool)), a, last);
                    *a = restored;
                }
            }
            if last {
                // Arguments still held for this choice's tool calls leave with its last event.
                let rest: Vec<(Slot, String)> = self
                    .held
                    .iter()
                    .filter(|((i, t), _)| *i == index && t.is_some_and(|t| !seen.contains(&t)))
                    .cloned()
                    .collect();
                self.held
                    .retain(|((i, t), _)| !(*i == index && t.is_some()));
                if !rest.is_empty() {
                    if let Some(d) = c.get_mut("delta").and_then(Value::as_object_mut) {
                        let list = d
                            .entry("tool_calls")
                            .or_insert_with(|| Value::Array(Vec::new()));
                        if let Value::Array(list) = list {
                            for ((_, t), text) in rest {
                                list.push(serde_json::json!({"index": t, "function": {"arguments": text}}));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Events for text still held (the stream ended without a final event for some choice).
    fn flush_events(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for ((index, tool), text) in std::mem::take(&mut self.held) {
            let mut e = self.template.clone();
            let choice = match tool {
                Some(t) => {
                    serde_json::json!({"index": index, "delta": {"tool_calls": [{"index": t, "function": {"arguments": text}}]}, "finish_reason": null})
                }
                None if self.text_field => {
                    serde_json::json!({"index": index, "text": text, "finish_reason": null})
                }
                None => {
                    serde_json::json!({"index": index, "delta": {"content": text}, "finish_reason": null})
                }
            };
            e.insert("choices".into(), Value::Array(vec![choice]));
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&crate::json::to_vec(&e).unwrap_or_default());
            out.extend_from_slice(b"\n\n");
        }
        out
    }

    /// Restores checked SSE lines (whole lines, as the stream guard passes them on).
    pub fn restore_stream(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len() + 16);
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            let Some(data) = crate::sse::data_of(line.strip_suffix(b"\n").unwrap_or(line)) else {
                out.extend_from_slice(line);
                continue;
            };
            if data == b"[DONE]" {
                out.extend(self.flush_events());
                out.extend_from_slice(line);
                continue;
            }
            let Ok(mut event) = serde_json::from_slice::<Value>(data) else {
                out.extend_from_slice(line);
                continue;
            };
            self.restore_event(&mut event);
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&crate::json::to_vec(&event).unwrap_or_default());
            out.push(b'\n');
        }
        out
    }

    /// What is still held, as events, before an error event ends the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        self.flush_events()
    }
}
