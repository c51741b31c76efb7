//! Anthropic Messages shapes made from chat shapes, after the two API references: a chat request
//! as a Messages request (an OpenAI client served by an Anthropic provider), and an OpenAI-wire
//! provider's chat answer as a Messages answer for an Anthropic client, whole or as a stream of
//! Anthropic events as the chat chunks arrive. Pure.

use serde_json::{json, Map, Value};

use crate::request::kinds::{ChatPart, ChatTool};
use crate::wire::anthropic::error_type;

/// An OpenAI chat request as an Anthropic Messages request. `Err` names the first field (as a
/// JSON path) that Anthropic's API cannot express: it is refused, never silently dropped.
pub fn request(
    body: &Map<String, Value>,
    model: &str,
    default_max_tokens: u32,
) -> Result<Value, String> {
    untranslatable(body)?;
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_string()));
    let (system, messages) = messages(body)?;
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
    tools_of(body, &mut out)?;
    if let Some(u) = body.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": u}));
    }
    Ok(Value::Object(out))
}

/// A field Messages cannot express, unless it has its inert value.
fn untranslatable(body: &Map<String, Value>) -> Result<(), String> {
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
    Ok(())
}

/// The system text and the messages, each role's turns merged (Messages alternates roles).
#[allow(clippy::type_complexity)]
fn messages(body: &Map<String, Value>) -> Result<(Vec<String>, Vec<(String, Vec<Value>)>), String> {
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
    Ok((system, messages))
}

/// The tools and the tool choice, in Messages' shapes.
fn tools_of(body: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), String> {
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        let mut t = Vec::new();
        for (i, tool) in tools.iter().enumerate() {
            match tool["type"]
                .as_str()
                .map_or(Some(ChatTool::Function), ChatTool::parse)
            {
                Some(ChatTool::Function) => {}
                // A free-form tool has no Messages form (Anthropic tools take a JSON schema).
                Some(ChatTool::Custom) | None => return Err(format!("`tools[{i}].type`")),
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
    Ok(())
}

/// The text of a system message: a string or text parts.
fn texts(content: Option<&Value>, i: usize) -> Result<Vec<String>, String> {
    match content {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let only_text =
                    || format!("`messages[{i}].content[{j}]` (only text in a system message)");
                match p["type"].as_str().and_then(ChatPart::parse) {
                    Some(ChatPart::Text) => {
                        p["text"].as_str().map(str::to_string).ok_or_else(only_text)
                    }
                    Some(
                        ChatPart::ImageUrl
                        | ChatPart::InputAudio
                        | ChatPart::File
                        | ChatPart::Refusal,
                    )
                    | None => Err(only_text()),
                }
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
            .map(|(j, p)| match p["type"].as_str().map(|k| (k, ChatPart::parse(k))) {
                Some((_, Some(ChatPart::Text))) => Ok(json!({"type": "text", "text": p["text"]})),
                Some((_, Some(ChatPart::ImageUrl))) => {
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
                // Messages takes no audio; a chat file (by id, or inline with its own naming)
                // and a refusal (the model's own words, kept apart) have no Messages form that
                // keeps their meaning.
                Some((
                    other,
                    Some(ChatPart::InputAudio | ChatPart::File | ChatPart::Refusal) | None,
                )) => Err(format!("`messages[{i}].content[{j}].type` `{other}`")),
                None => Err(format!("`messages[{i}].content[{j}].type`")),
            })
            .collect(),
        Some(_) => Err(format!("`messages[{i}].content`")),
    }
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
pub fn response(v: &Value) -> Value {
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
pub struct StreamTranslator {
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

impl StreamTranslator {
    pub fn new() -> StreamTranslator {
        StreamTranslator::default()
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
        // Blank separators and `event: error` lines carry nothing (the error's data line follows).
        for data in crate::sse::lines(bytes).filter_map(crate::sse::data_of) {
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
