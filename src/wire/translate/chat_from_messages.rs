//! Chat shapes made from Anthropic Messages shapes, after the two API references: a Messages
//! request as a chat request (an Anthropic client served by an OpenAI-wire provider), and an
//! Anthropic provider's answer as a chat answer, whole or as a stream translated event by event
//! as it arrives. Pure.

use serde_json::{json, Map, Value};

use crate::json::Object;
use crate::request::kinds::{AnthropicTool, Block};

/// An Anthropic Messages request as an OpenAI chat request. `Err` names the first field an
/// OpenAI-wire provider cannot take.
pub fn request(body: &Map<String, Value>, model: &str) -> Result<Value, String> {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_string()));
    for (k, v) in body {
        match k.as_str() {
            "model" | "messages" | "system" | "max_tokens" | "temperature" | "top_p"
            | "stop_sequences" | "stream" | "tools" | "tool_choice" | "metadata" => {}
            _ if v.is_null() => {}
            other => return Err(format!("`{other}`")),
        }
    }
    let mut messages = Vec::new();
    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let text = blocks
                .iter()
                .enumerate()
                .map(|(i, b)| text_of(b).ok_or_else(|| format!("`system[{i}]`")))
                .collect::<Result<Vec<_>, _>>()?;
            messages.push(json!({"role": "system", "content": text.join("\n\n")}));
        }
        Some(_) => return Err("`system`".into()),
    }
    let Some(list) = body.get("messages").and_then(Value::as_array) else {
        return Err("`messages`".into());
    };
    for (i, m) in list.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        if role != "user" && role != "assistant" {
            return Err(format!("`messages[{i}].role` `{role}`"));
        }
        message(m, role, i, &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));
    for k in ["max_tokens", "temperature", "top_p"] {
        if let Some(v) = body.get(k).filter(|v| !v.is_null()) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(s) = body.get("stop_sequences").filter(|v| !v.is_null()) {
        out.insert("stop".into(), s.clone());
    }
    if body.get("stream") == Some(&Value::Bool(true)) {
        out.insert("stream".into(), Value::Bool(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    tools_of(body, &mut out)?;
    if let Some(u) = body
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .filter(|u| !u.is_null())
    {
        out.insert("user".into(), u.clone());
    }
    Ok(Value::Object(out))
}

/// One message as chat messages (a tool result is a `tool` message of its own), pushed to
/// `messages`.
fn message(m: &Value, role: &str, i: usize, messages: &mut Vec<Value>) -> Result<(), String> {
    let blocks = match &m["content"] {
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(b) => b.clone(),
        _ => return Err(format!("`messages[{i}].content`")),
    };
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let kind = b["type"].as_str().unwrap_or("");
        let refused = || format!("`messages[{i}].content[{j}].type` `{kind}`");
        match Block::parse(kind) {
            Some(Block::Text) => parts.push(json!({"type": "text", "text": b["text"]})),
            Some(Block::Image) => {
                let s = &b["source"];
                let url = match s["type"].as_str() {
                    Some("base64") => format!(
                        "data:{};base64,{}",
                        s["media_type"].as_str().unwrap_or("image/png"),
                        s["data"].as_str().unwrap_or("")
                    ),
                    Some("url") => s["url"].as_str().unwrap_or("").to_string(),
                    _ => return Err(format!("`messages[{i}].content[{j}].source`")),
                };
                parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
            Some(Block::ToolUse) if role == "assistant" => calls.push(json!({
                "id": b["id"], "type": "function",
                "function": {"name": b["name"], "arguments": b["input"].to_string()},
            })),
            Some(Block::ToolResult) if role == "user" => {
                let content = match &b["content"] {
                    Value::String(s) => s.clone(),
                    // A chat tool message holds text only: any other block is refused by its
                    // path, never dropped.
                    Value::Array(inner) => inner
                        .iter()
                        .enumerate()
                        .map(|(k, x)| {
                            text_of(x)
                                .ok_or_else(|| format!("`messages[{i}].content[{j}].content[{k}]`"))
                        })
                        .collect::<Result<Vec<_>, _>>()?
                        .join(""),
                    Value::Null => String::new(),
                    _ => return Err(format!("`messages[{i}].content[{j}].content`")),
                };
                messages.push(
                    json!({"role": "tool", "tool_call_id": b["tool_use_id"], "content": content}),
                );
            }
            // A tool call in a user turn or a result in an assistant turn has no chat form.
            Some(Block::ToolUse | Block::ToolResult) => return Err(refused()),
            // Documents, search results and thinking have no chat form; the rest are what
            // Anthropic's server tools did in an earlier turn, meaningful only to Anthropic.
            Some(
                Block::Document
                | Block::SearchResult
                | Block::Thinking
                | Block::RedactedThinking
                | Block::ContainerUpload
                | Block::ServerToolUse
                | Block::McpToolUse
                | Block::McpToolResult
                | Block::WebSearchToolResult
                | Block::WebFetchToolResult
                | Block::CodeExecutionToolResult
                | Block::BashCodeExecutionToolResult
                | Block::TextEditorCodeExecutionToolResult
                | Block::ToolSearchToolResult
                | Block::ToolReference
                | Block::BrowserState,
            )
            | None => return Err(refused()),
        }
    }
    if parts.is_empty() && calls.is_empty() {
        return Ok(());
    }
    let content = match parts.as_slice() {
        [] => Value::Null,
        [one] if one["type"] == "text" => one["text"].clone(),
        _ => Value::Array(parts),
    };
    let mut msg = json!({"role": role, "content": content});
    if !calls.is_empty() {
        msg["tool_calls"] = Value::Array(calls);
    }
    messages.push(msg);
    Ok(())
}

/// A text block's text; `None` for any other block.
fn text_of(b: &Value) -> Option<String> {
    match b["type"].as_str().and_then(Block::parse) {
        Some(Block::Text) => b["text"].as_str().map(str::to_string),
        _ => None,
    }
}

/// The tools and the tool choice, in chat's shapes.
fn tools_of(body: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), String> {
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        let mut t = Vec::new();
        for (i, tool) in tools.iter().enumerate() {
            match AnthropicTool::parse(tool["type"].as_str()) {
                // A client tool with its own schema is a function; Anthropic's own client tools
                // (`bash_*`, `computer_*`, …) have none a chat provider would know.
                Some(AnthropicTool::Client) if tool.get("input_schema").is_some() => {}
                Some(AnthropicTool::Client) => {
                    return Err(format!("`tools[{i}]` (a tool defined by Anthropic)"))
                }
                Some(
                    AnthropicTool::WebSearch
                    | AnthropicTool::WebFetch
                    | AnthropicTool::CodeExecution
                    | AnthropicTool::Mcp,
                )
                | None => return Err(format!("`tools[{i}]` (a server tool)")),
            }
            let mut f = json!({"name": tool["name"], "parameters": tool["input_schema"]});
            if let Some(d) = tool.get("description") {
                f["description"] = d.clone();
            }
            t.push(json!({"type": "function", "function": f}));
        }
        out.insert("tools".into(), Value::Array(t));
    }
    if let Some(c) = body.get("tool_choice").filter(|v| !v.is_null()) {
        let choice = match c["type"].as_str() {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => json!({"type": "function", "function": {"name": c["name"]}}),
            _ => return Err("`tool_choice`".into()),
        };
        out.insert("tool_choice".into(), choice);
        if c["disable_parallel_tool_use"] == true {
            out.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    Ok(())
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
    crate::usage::Usage::from_anthropic(u).to_openai()
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
    reader: crate::sse::LineReader,
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
            delta: Object<Delta<'a>>,
        }
        if self.prefix.is_empty() || !data.contains("content_block_delta") {
            return false;
        }
        // Objects only, as the event's tree below reads them: serde's derived structs would
        // also read an array (`["content_block_delta", 0, {…}]`), which the tree ignores.
        let Ok(Object(e)) = serde_json::from_str::<Object<Event>>(data) else {
            return false;
        };
        let Object(delta) = e.delta;
        if e.kind != "content_block_delta" {
            return false;
        }
        let quoted = |s: &str| crate::json::to_string(s).unwrap_or_else(|_| "\"\"".into());
        let delta = match (delta.kind.as_ref(), delta.text, delta.partial_json) {
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
        let mut reader = std::mem::take(&mut self.reader);
        let read = reader.feed(chunk, |line| {
            if self.done {
                return true;
            }
            if crate::sse::is_blank(line) {
                if !self.data.is_empty() {
                    let data = std::mem::take(&mut self.data);
                    self.event(&data, &mut out);
                }
            } else if let Some(d) = crate::sse::data_of(line) {
                if self.data.len() + d.len() > MAX_LINE_BYTES {
                    // An event that never ends: passed on as not JSON, so the stream guard ends
                    // the stream as malformed rather than this buffer growing.
                    self.data.clear();
                    self.done = true;
                    out.extend_from_slice(b"data: an Anthropic event longer than 1 MiB\n\n");
                    return true;
                }
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(d));
            }
            // `event:` lines name what `data.type` says again; comments are dropped.
            true
        });
        self.reader = reader;
        if read.is_err() {
            // Passed on as not JSON, so the stream guard ends the stream as malformed.
            out.extend_from_slice(b"data: an Anthropic event line longer than 1 MiB\n\n");
        }
        out
    }
}

/// The longest event held.
const MAX_LINE_BYTES: usize = crate::sse::MAX_LINE_BYTES;
