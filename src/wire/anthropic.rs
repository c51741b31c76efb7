//! OpenAI chat ⇄ Anthropic Messages, after the two API references: requests, whole answers, and
//! streams translated event by event as they arrive. Pure.

use serde_json::{json, Map, Value};

/// An OpenAI chat request as an Anthropic Messages request. `Err` names the first field (as a
/// JSON path) that Anthropic's API cannot express: it is refused, never silently dropped.
pub fn request(
    body: &Map<String, Value>,
    model: &str,
    default_max_tokens: u32,
) -> Result<Value, String> {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_string()));
    for (k, v) in body {
        let default = match k.as_str() {
            "model"
            | "messages"
            | "stream"
            | "max_tokens"
            | "max_completion_tokens"
            | "temperature"
            | "top_p"
            | "stop"
            | "tools"
            | "tool_choice"
            | "parallel_tool_calls"
            | "user"
            | "stream_options" => continue,
            "n" => v.as_u64() == Some(1),
            "presence_penalty" | "frequency_penalty" => v.as_f64() == Some(0.0),
            "logprobs" | "store" => v.as_bool() == Some(false),
            "response_format" => v.get("type").and_then(Value::as_str) == Some("text"),
            _ => false,
        };
        if !v.is_null() && !default {
            return Err(format!("`{k}`"));
        }
    }

    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<(String, Vec<Value>)> = Vec::new();
    let push = |messages: &mut Vec<(String, Vec<Value>)>, role: &str, blocks: Vec<Value>| {
        if blocks.is_empty() {
            return;
        }
        match messages.last_mut() {
            Some((r, b)) if r == role => b.extend(blocks),
            _ => messages.push((role.to_string(), blocks)),
        }
    };
    let Some(list) = body.get("messages").and_then(Value::as_array) else {
        return Err("`messages`".into());
    };
    for (i, m) in list.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let content = m.get("content");
        match role {
            "system" | "developer" => system.extend(texts(content, i)?),
            "user" => push(&mut messages, "user", blocks(content, i)?),
            "assistant" => {
                let mut b = blocks(content, i)?;
                for (j, call) in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let f = &call["function"];
                    let args = f["arguments"].as_str().unwrap_or("{}");
                    let input: Value =
                        serde_json::from_str(if args.is_empty() { "{}" } else { args }).map_err(
                            |_| {
                                format!(
                                    "`messages[{i}].tool_calls[{j}].function.arguments` (not JSON)"
                                )
                            },
                        )?;
                    b.push(json!({"type": "tool_use", "id": call["id"], "name": f["name"], "input": input}));
                }
                push(&mut messages, "assistant", b);
            }
            "tool" => {
                let result = match content {
                    Some(Value::String(s)) => Value::String(s.clone()),
                    Some(Value::Array(_)) => Value::Array(blocks(content, i)?),
                    _ => Value::String(String::new()),
                };
                push(
                    &mut messages,
                    "user",
                    vec![
                        json!({"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": result}),
                    ],
                );
            }
            other => return Err(format!("`messages[{i}].role` `{other}`")),
        }
    }
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system.join("\n\n")));
    }
    out.insert(
        "messages".into(),
        Value::Array(
            messages
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    let max = body
        .get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(u64::from(default_max_tokens));
    out.insert("max_tokens".into(), Value::from(max));
    for k in ["temperature", "top_p", "stream"] {
        if let Some(v) = body.get(k).filter(|v| !v.is_null()) {
            out.insert(k.into(), v.clone());
        }
    }
    match body.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        let mut t = Vec::new();
        for (i, tool) in tools.iter().enumerate() {
            if tool["type"] != "function" {
                return Err(format!("`tools[{i}].type`"));
            }
            let f = &tool["function"];
            let mut one = json!({"name": f["name"], "input_schema": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"}))});
            if let Some(d) = f.get("description") {
                one["description"] = d.clone();
            }
            t.push(one);
        }
        out.insert("tools".into(), Value::Array(t));
    }
    let mut choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            _ => return Err("`tool_choice`".into()),
        }),
        Some(v) if v["type"] == "function" => {
            Some(json!({"type": "tool", "name": v["function"]["name"]}))
        }
        Some(_) => return Err("`tool_choice`".into()),
    };
    if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        choice
            .get_or_insert_with(|| json!({"type": "auto"}))
            .as_object_mut()
            .map(|c| c.insert("disable_parallel_tool_use".into(), Value::Bool(true)));
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    if let Some(u) = body.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": u}));
    }
    Ok(Value::Object(out))
}

/// The text of a system message: a string or text parts.
fn texts(content: Option<&Value>, i: usize) -> Result<Vec<String>, String> {
    match content {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| match (p["type"].as_str(), p["text"].as_str()) {
                (Some("text"), Some(t)) => Ok(t.to_string()),
                _ => Err(format!(
                    "`messages[{i}].content[{j}]` (only text in a system message)"
                )),
            })
            .collect(),
        None | Some(Value::Null) => Ok(vec![]),
        Some(_) => Err(format!("`messages[{i}].content`")),
    }
}

/// A message's content as Anthropic content blocks.
fn blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, String> {
    match content {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(s)) if s.is_empty() => Ok(vec![]),
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| match p["type"].as_str() {
                Some("text") => Ok(json!({"type": "text", "text": p["text"]})),
                Some("image_url") => {
                    let url = p["image_url"]["url"].as_str().unwrap_or("");
                    if let Some(rest) = url.strip_prefix("data:") {
                        let (media, data) = rest
                            .split_once(";base64,")
                            .ok_or_else(|| format!("`messages[{i}].content[{j}].image_url.url` (a data URL that is not base64)"))?;
                        Ok(json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}))
                    } else if url.starts_with("https://") || url.starts_with("http://") {
                        Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
                    } else {
                        Err(format!("`messages[{i}].content[{j}].image_url.url`"))
                    }
                }
                Some(other) => Err(format!("`messages[{i}].content[{j}].type` `{other}`")),
                None => Err(format!("`messages[{i}].content[{j}].type`")),
            })
            .collect(),
        Some(_) => Err(format!("`messages[{i}].content`")),
    }
}

/// Anthropic's `stop_reason` as OpenAI's `finish_reason`.
pub fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop", // end_turn, stop_sequence, pause_turn
    }
}

/// Anthropic usage as OpenAI usage: cache reads and writes are prompt tokens too.
pub fn usage(u: &Value) -> Value {
    crate::sse::Usage::from_anthropic(u).to_openai()
}

/// A whole Anthropic answer as an OpenAI `chat.completion`.
pub fn response(v: &Value, created: u64) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in v["content"].as_array().into_iter().flatten() {
        match b["type"].as_str() {
            Some("text") => text.push_str(b["text"].as_str().unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": b["id"],
                "type": "function",
                "function": {"name": b["name"], "arguments": b["input"].to_string()},
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": v["id"],
        "object": "chat.completion",
        "created": created,
        "model": v["model"],
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(v["stop_reason"].as_str().unwrap_or("end_turn")),
        }],
        "usage": usage(&v["usage"]),
    })
}

/// Translates an Anthropic event stream into OpenAI `chat.completion.chunk` events as the bytes
/// arrive, whatever their split: whole events out, at most one partial line held.
#[derive(Debug, Default)]
pub struct StreamTranslator {
    /// `data: {"id":…,"object":"chat.completion.chunk","created":…,"model":…,"choices":[{"index":0,"delta":`
    /// once the message has started: deltas are written after it without building JSON trees.
    prefix: String,
    partial: Vec<u8>,
    data: String,
    id: Value,
    model: Value,
    created: u64,
    include_usage: bool,
    usage: Value,
    /// Content-block index → tool-call index, for tool-use blocks.
    tools: Vec<(u64, usize)>,
    done: bool,
}

impl StreamTranslator {
    pub fn new(created: u64, include_usage: bool) -> StreamTranslator {
        StreamTranslator {
            created,
            include_usage,
            ..StreamTranslator::default()
        }
    }

    fn chunk(&self, delta: Value, finish: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    fn emit(out: &mut Vec<u8>, v: &Value) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(v.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    /// The common events, text and tool-argument deltas, without a JSON tree: `true` if done.
    fn fast_delta(&mut self, data: &str, out: &mut Vec<u8>) -> bool {
        #[derive(serde::Deserialize)]
        struct Delta<'a> {
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
            #[serde(default)]
            text: Option<String>,
            #[serde(default)]
            partial_json: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Event<'a> {
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
            #[serde(default)]
            index: u64,
            #[serde(borrow)]
            delta: Delta<'a>,
        }
        if self.prefix.is_empty() || !data.contains("content_block_delta") {
            return false;
        }
        let Ok(e) = serde_json::from_str::<Event>(data) else {
            return false;
        };
        if e.kind != "content_block_delta" {
            return false;
        }
        let quoted = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
        let delta = match (e.delta.kind.as_ref(), e.delta.text, e.delta.partial_json) {
            ("text_delta", Some(t), _) => format!("{{\"content\":{}}}", quoted(&t)),
            ("input_json_delta", _, Some(j)) => {
                match self.tools.iter().find(|(b, _)| *b == e.index) {
                    Some(&(_, index)) => format!(
                        "{{\"tool_calls\":[{{\"index\":{index},\"function\":{{\"arguments\":{}}}}}]}}",
                        quoted(&j)
                    ),
                    None => return true,
                }
            }
            _ => return true, // thinking and signature deltas have no OpenAI form
        };
        out.extend_from_slice(self.prefix.as_bytes());
        out.extend_from_slice(delta.as_bytes());
        out.extend_from_slice(b",\"finish_reason\":null}]}\n\n");
        true
    }

    /// One whole Anthropic event (its `data`).
    fn event(&mut self, data: &str, out: &mut Vec<u8>) {
        if self.fast_delta(data, out) {
            return;
        }
        let Ok(e) = serde_json::from_str::<Value>(data) else {
            // Not JSON: passed on as it came, so the stream guard reports it as malformed.
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(data.as_bytes());
            out.extend_from_slice(b"\n\n");
            return;
        };
        match e["type"].as_str().unwrap_or("") {
            "message_start" => {
                let m = &e["message"];
                self.id = m["id"].clone();
                self.model = m["model"].clone();
                self.usage = m["usage"].clone();
                self.prefix = format!(
                    "data: {{\"id\":{},\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{},\"choices\":[{{\"index\":0,\"delta\":",
                    self.id, self.created, self.model
                );
                Self::emit(
                    out,
                    &self.chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                );
            }
            "content_block_start" => {
                let b = &e["content_block"];
                if b["type"] == "tool_use" {
                    let index = self.tools.len();
                    self.tools.push((e["index"].as_u64().unwrap_or(0), index));
                    Self::emit(
                        out,
                        &self.chunk(
                            json!({"tool_calls": [{"index": index, "id": b["id"], "type": "function", "function": {"name": b["name"], "arguments": ""}}]}),
                            Value::Null,
                        ),
                    );
                } else if b["type"] == "text" && b["text"].as_str().is_some_and(|t| !t.is_empty()) {
                    Self::emit(out, &self.chunk(json!({"content": b["text"]}), Value::Null));
                }
            }
            "content_block_delta" => {
                let d = &e["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => {
                        Self::emit(out, &self.chunk(json!({"content": d["text"]}), Value::Null))
                    }
                    Some("input_json_delta") => {
                        let block = e["index"].as_u64().unwrap_or(0);
                        if let Some(&(_, index)) = self.tools.iter().find(|(b, _)| *b == block) {
                            Self::emit(
                                out,
                                &self.chunk(
                                    json!({"tool_calls": [{"index": index, "function": {"arguments": d["partial_json"]}}]}),
                                    Value::Null,
                                ),
                            );
                        }
                    }
                    _ => {} // thinking and signature deltas have no OpenAI form
                }
            }
            "message_delta" => {
                if let Some(u) = e["usage"].as_object() {
                    if let Some(o) = self.usage.as_object_mut() {
                        for (k, v) in u {
                            o.insert(k.clone(), v.clone());
                        }
                    } else {
                        self.usage = Value::Object(u.clone());
                    }
                }
                if let Some(stop) = e["delta"]["stop_reason"].as_str() {
                    Self::emit(
                        out,
                        &self.chunk(json!({}), Value::String(finish_reason(stop).into())),
                    );
                }
            }
            "message_stop" => {
                if self.include_usage {
                    let mut last = self.chunk(json!({}), Value::Null);
                    last["choices"] = json!([]);
                    last["usage"] = usage(&self.usage);
                    Self::emit(out, &last);
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.done = true;
            }
            "error" => {
                let err = &e["error"];
                Self::emit(
                    out,
                    &json!({"error": {"message": err["message"], "type": err["type"], "code": Value::Null}}),
                );
            }
            _ => {} // ping, content_block_stop, and event types added later
        }
    }

    /// Upstream bytes in, OpenAI SSE bytes out.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&rest[..nl]);
            rest = &rest[nl + 1..];
            if self.done {
                continue;
            }
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if line.is_empty() {
                if !self.data.is_empty() {
                    let data = std::mem::take(&mut self.data);
                    self.event(&data, &mut out);
                }
            } else if let Some(d) = line.strip_prefix(b"data:") {
                let d = d.strip_prefix(b" ").unwrap_or(d);
                if self.data.len() + d.len() > MAX_LINE_BYTES {
                    // An event that never ends: passed on as not JSON, so the stream guard ends
                    // the stream as malformed rather than this buffer growing.
                    self.data.clear();
                    self.done = true;
                    out.extend_from_slice(b"data: an Anthropic event longer than 1 MiB\n\n");
                    continue;
                }
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(d));
            }
            // `event:` lines name what `data.type` says again; comments are dropped.
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > MAX_LINE_BYTES {
            // Passed on as not JSON, so the stream guard ends the stream as malformed.
            self.partial.clear();
            out.extend_from_slice(b"data: an Anthropic event line longer than 1 MiB\n\n");
        }
        out
    }
}

/// The longest partial line held.
const MAX_LINE_BYTES: usize = 1 << 20;
