//! Anthropic clients in: a Messages request for an OpenAI-wire provider, its answer back in
//! Anthropic's shape (whole, or a stream of Anthropic events as the OpenAI chunks arrive), and
//! errors in Anthropic's shape. Pure.

use serde_json::{json, Map, Value};

/// Anthropic's `error.type` for a status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 409 | 415 | 422 | 451 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 | 405 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// `{"type":"error","error":{"type":…,"message":…}}`, with Meridian's details kept aside.
pub fn error_body(status: u16, message: &str, details: Option<&Value>) -> Vec<u8> {
    let mut e = json!({"type": "error", "error": {"type": error_type(status), "message": message}});
    if let Some(d) = details {
        e["error"]["meridian"] = d.clone();
    }
    e.to_string().into_bytes()
}

/// An Anthropic Messages request as an OpenAI chat request. `Err` names the first field an
/// OpenAI-wire provider cannot take.
pub fn to_chat(body: &Map<String, Value>, model: &str) -> Result<Value, String> {
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
                .map(|(i, b)| match (b["type"].as_str(), b["text"].as_str()) {
                    (Some("text"), Some(t)) => Ok(t.to_string()),
                    _ => Err(format!("`system[{i}]`")),
                })
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
        let blocks = match &m["content"] {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(b) => b.clone(),
            _ => return Err(format!("`messages[{i}].content`")),
        };
        let mut parts = Vec::new();
        let mut calls = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            match b["type"].as_str().unwrap_or("") {
                "text" => parts.push(json!({"type": "text", "text": b["text"]})),
                "image" => {
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
                "tool_use" if role == "assistant" => calls.push(json!({
                    "id": b["id"], "type": "function",
                    "function": {"name": b["name"], "arguments": b["input"].to_string()},
                })),
                "tool_result" if role == "user" => {
                    let content = match &b["content"] {
                        Value::String(s) => s.clone(),
                        Value::Array(inner) => inner
                            .iter()
                            .filter_map(|x| x["text"].as_str())
                            .collect::<Vec<_>>()
                            .join(""),
                        _ => String::new(),
                    };
                    messages.push(json!({"role": "tool", "tool_call_id": b["tool_use_id"], "content": content}));
                }
                other => return Err(format!("`messages[{i}].content[{j}].type` `{other}`")),
            }
        }
        if parts.is_empty() && calls.is_empty() {
            continue;
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
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        let mut t = Vec::new();
        for (i, tool) in tools.iter().enumerate() {
            if tool.get("input_schema").is_none() {
                return Err(format!("`tools[{i}]` (a server tool)"));
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
    if let Some(u) = body
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .filter(|u| !u.is_null())
    {
        out.insert("user".into(), u.clone());
    }
    Ok(Value::Object(out))
}

/// OpenAI's `finish_reason` as Anthropic's `stop_reason`.
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

fn usage_of(u: &Value) -> Value {
    let prompt = u["prompt_tokens"].as_u64().unwrap_or(0);
    let cached = u["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or(0)
        .min(prompt);
    json!({
        "input_tokens": prompt - cached,
        "cache_read_input_tokens": cached,
        "output_tokens": u["completion_tokens"].as_u64().unwrap_or(0),
    })
}

/// A whole OpenAI `chat.completion` as an Anthropic message.
pub fn from_chat(v: &Value) -> Value {
    let choice = &v["choices"][0];
    let m = &choice["message"];
    let mut content = Vec::new();
    if let Some(t) = m["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    for c in m["tool_calls"].as_array().into_iter().flatten() {
        let args = c["function"]["arguments"].as_str().unwrap_or("{}");
        content.push(json!({
            "type": "tool_use", "id": c["id"], "name": c["function"]["name"],
            "input": serde_json::from_str::<Value>(args).unwrap_or_else(|_| json!({})),
        }));
    }
    json!({
        "id": v["id"],
        "type": "message",
        "role": "assistant",
        "model": v["model"],
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str().unwrap_or("stop")),
        "stop_sequence": Value::Null,
        "usage": usage_of(&v["usage"]),
    })
}

/// Turns checked OpenAI SSE lines (as the stream guard passes them on) into Anthropic events.
#[derive(Debug, Default)]
pub struct ToMessages {
    started: bool,
    /// The open content block: its index and whether it is text (else a tool call's index).
    open: Option<(u64, Option<u64>)>,
    next_block: u64,
    stop: Option<&'static str>,
    usage: Value,
    error: bool,
}

fn event(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

impl ToMessages {
    pub fn new() -> ToMessages {
        ToMessages::default()
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn chunk(&mut self, v: &Value, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            event(
                out,
                "message_start",
                &json!({"type": "message_start", "message": {
                "id": v["id"], "type": "message", "role": "assistant", "model": v["model"],
                "content": [], "stop_reason": Value::Null, "stop_sequence": Value::Null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}),
            );
        }
        if !v["usage"].is_null() {
            self.usage = v["usage"].clone();
        }
        for c in v["choices"].as_array().into_iter().flatten() {
            let d = &c["delta"];
            if let Some(t) = d["content"].as_str().filter(|t| !t.is_empty()) {
                if !matches!(self.open, Some((_, None))) {
                    self.close(out);
                    let index = self.next_block;
                    self.next_block += 1;
                    self.open = Some((index, None));
                    event(
                        out,
                        "content_block_start",
                        &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
                    );
                }
                let index = self.open.map_or(0, |(i, _)| i);
                event(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}}),
                );
            }
            for call in d["tool_calls"].as_array().into_iter().flatten() {
                let tool = call["index"].as_u64().unwrap_or(0);
                if self.open.is_none_or(|(_, t)| t != Some(tool)) {
                    self.close(out);
                    let index = self.next_block;
                    self.next_block += 1;
                    self.open = Some((index, Some(tool)));
                    event(
                        out,
                        "content_block_start",
                        &json!({"type": "content_block_start", "index": index,
                        "content_block": {"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": {}}}),
                    );
                }
                if let Some(args) = call["function"]["arguments"]
                    .as_str()
                    .filter(|a| !a.is_empty())
                {
                    let index = self.open.map_or(0, |(i, _)| i);
                    event(
                        out,
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": args}}),
                    );
                }
            }
            if let Some(f) = c["finish_reason"].as_str() {
                self.close(out);
                self.stop = Some(stop_reason(f));
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.close(out);
        let u = usage_of(&self.usage);
        event(
            out,
            "message_delta",
            &json!({"type": "message_delta",
            "delta": {"stop_reason": self.stop.unwrap_or("end_turn"), "stop_sequence": Value::Null},
            "usage": {"output_tokens": u["output_tokens"]}}),
        );
        event(out, "message_stop", &json!({"type": "message_stop"}));
    }

    /// Whole OpenAI SSE lines in, Anthropic events out. `[DONE]` ends the message; an error
    /// event (the stream contract's own, or the upstream's) becomes Anthropic's `error` event
    /// and the message never stops cleanly.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in bytes.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(data) = line.strip_prefix(b"data:") else {
                continue; // blank separators, `event: error` (its data line follows)
            };
            let data = data.strip_prefix(b" ").unwrap_or(data);
            if self.error {
                continue;
            }
            if data == b"[DONE]" {
                self.finish(&mut out);
                continue;
            }
            let Ok(v) = serde_json::from_slice::<Value>(data) else {
                continue;
            };
            if let Some(e) = v.get("error") {
                self.error = true;
                let status = match e["code"].as_str() {
                    Some("upstream_rate_limited") => 429,
                    _ => 500,
                };
                event(
                    &mut out,
                    "error",
                    &json!({"type": "error", "error": {
                        "type": error_type(status),
                        "message": e["message"].as_str().unwrap_or("the stream failed"),
                    }}),
                );
                continue;
            }
            self.chunk(&v, &mut out);
        }
        out
    }
}
