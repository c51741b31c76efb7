//! An OpenAI Responses request as a chat request, after OpenAI's API reference, for providers
//! that do not serve `/v1/responses` themselves (chat-only engines, and Anthropic providers,
//! whose wire then translates the chat request on). Pure. What chat cannot express, or what
//! needs state a provider keeps (`previous_response_id`, item references, reasoning items), is
//! named as a JSON path and refused, never silently dropped.

use serde_json::{json, Map, Value};

use crate::request::kinds::{Item, Part, ResponsesTool};

/// The chat request for a Responses request. `Err` names the first field (a JSON path) chat
/// cannot carry.
pub fn request(body: &Map<String, Value>, model: &str) -> Result<Value, String> {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_string()));
    let mut messages: Vec<Value> = Vec::new();
    for (k, v) in body {
        if v.is_null() {
            continue;
        }
        match k.as_str() {
            "model" | "input" | "instructions" | "tools" | "text" | "reasoning" => {}
            "stream" => {
                out.insert("stream".into(), v.clone());
                if v.as_bool() == Some(true) {
                    out.insert("stream_options".into(), json!({"include_usage": true}));
                }
            }
            "max_output_tokens" => {
                out.insert("max_tokens".into(), v.clone());
            }
            "temperature" | "top_p" | "parallel_tool_calls" | "user" | "service_tier"
            | "top_logprobs" => {
                out.insert(k.clone(), v.clone());
            }
            "tool_choice" => {
                out.insert("tool_choice".into(), tool_choice(v)?);
            }
            // Hints for a provider's cache, abuse detection and bookkeeping of stored
            // responses: they change nothing about the answer, and there is nothing stored.
            "prompt_cache_key" | "safety_identifier" | "metadata" | "include"
            | "stream_options" => {}
            "store" | "background" if v.as_bool() == Some(false) => {}
            "truncation" if v.as_str() == Some("disabled") => {}
            "previous_response_id" => {
                return Err(
                    "`previous_response_id` (this provider keeps no responses: send the whole conversation in `input`)"
                        .into(),
                )
            }
            other => return Err(format!("`{other}`")),
        }
    }
    if let Some(i) = body.get("instructions").and_then(Value::as_str) {
        messages.push(json!({"role": "system", "content": i}));
    }
    match body.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, i, &mut messages)?;
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err("`input`".into()),
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(Value::Array(tools)) = body.get("tools") {
        let mut list = Vec::new();
        for (i, t) in tools.iter().enumerate() {
            let kind = t["type"].as_str().unwrap_or("?");
            let refused = || format!("`tools[{i}]` (a `{kind}` tool)");
            match ResponsesTool::parse(kind) {
                Some(ResponsesTool::Client) if kind == "function" => {}
                // Client tools other than functions have no chat form; the provider-run ones
                // need the provider's own Responses API.
                Some(
                    ResponsesTool::Client
                    | ResponsesTool::Shell
                    | ResponsesTool::Namespace
                    | ResponsesTool::WebSearch
                    | ResponsesTool::FileSearch
                    | ResponsesTool::CodeInterpreter
                    | ResponsesTool::ProgrammaticToolCalling
                    | ResponsesTool::Mcp,
                )
                | None => return Err(refused()),
            }
            let mut f = Map::new();
            for key in ["name", "description", "parameters", "strict"] {
                if let Some(v) = t.get(key).filter(|v| !v.is_null()) {
                    f.insert(key.into(), v.clone());
                }
            }
            list.push(json!({"type": "function", "function": f}));
        }
        if !list.is_empty() {
            out.insert("tools".into(), Value::Array(list));
        }
    }
    if let Some(text) = body.get("text").filter(|v| !v.is_null()) {
        if let Some(f) = text.get("format").filter(|v| !v.is_null()) {
            match f["type"].as_str() {
                Some("text") => {}
                Some("json_object") => {
                    out.insert("response_format".into(), json!({"type": "json_object"}));
                }
                Some("json_schema") => {
                    let mut s = Map::new();
                    for key in ["name", "description", "schema", "strict"] {
                        if let Some(v) = f.get(key).filter(|v| !v.is_null()) {
                            s.insert(key.into(), v.clone());
                        }
                    }
                    out.insert(
                        "response_format".into(),
                        json!({"type": "json_schema", "json_schema": s}),
                    );
                }
                _ => return Err("`text.format`".into()),
            }
        }
        if let Some(v) = text.get("verbosity").filter(|v| !v.is_null()) {
            out.insert("verbosity".into(), v.clone());
        }
    }
    if let Some(r) = body.get("reasoning").filter(|v| !v.is_null()) {
        if let Some(e) = r.get("effort").filter(|v| !v.is_null()) {
            out.insert("reasoning_effort".into(), e.clone());
        }
        if r.get("summary").is_some_and(|s| !s.is_null()) {
            return Err("`reasoning.summary`".into());
        }
    }
    Ok(Value::Object(out))
}

fn tool_choice(v: &Value) -> Result<Value, String> {
    match v {
        Value::String(_) => Ok(v.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => Ok(
            json!({"type": "function", "function": {"name": o.get("name").cloned().unwrap_or(Value::Null)}}),
        ),
        _ => Err("`tool_choice`".into()),
    }
}

/// One input item as chat messages: consecutive function calls become one assistant message.
fn input_item(item: &Value, i: usize, messages: &mut Vec<Value>) -> Result<(), String> {
    let kind = crate::request::item_type(item);
    match Item::parse(kind) {
        Some(Item::Message) => {
            let role = match item["role"].as_str() {
                Some("developer" | "system") => "system",
                Some("user") => "user",
                Some("assistant") => "assistant",
                _ => return Err(format!("`input[{i}].role`")),
            };
            let content = match &item["content"] {
                Value::String(s) => Value::String(s.clone()),
                Value::Array(parts) => {
                    let mut out = Vec::new();
                    for (j, p) in parts.iter().enumerate() {
                        out.push(
                            part(p, role).ok_or_else(|| format!("`input[{i}].content[{j}]`"))?,
                        );
                    }
                    // An assistant turn or a system message is plain text in chat.
                    if role != "user" {
                        let text: Vec<&str> =
                            out.iter().filter_map(|p| p["text"].as_str()).collect();
                        if text.len() != out.len() {
                            return Err(format!("`input[{i}].content`"));
                        }
                        Value::String(text.concat())
                    } else {
                        Value::Array(out)
                    }
                }
                _ => return Err(format!("`input[{i}].content`")),
            };
            messages.push(json!({"role": role, "content": content}));
        }
        Some(Item::FunctionCall) => {
            let call = json!({
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"].as_str().unwrap_or("{}")},
            });
            match messages.last_mut() {
                Some(m)
                    if m["role"] == "assistant"
                        && m.get("tool_calls").is_some_and(Value::is_array) =>
                {
                    if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
                        calls.push(call);
                    }
                }
                Some(m) if m["role"] == "assistant" && m.get("tool_calls").is_none() => {
                    m["tool_calls"] = json!([call]);
                }
                _ => messages
                    .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        Some(Item::FunctionCallOutput) => {
            let output = match &item["output"] {
                Value::String(s) => Value::String(s.clone()),
                Value::Array(parts) => {
                    let mut text = String::new();
                    for (j, p) in parts.iter().enumerate() {
                        match p["type"].as_str().and_then(Part::parse) {
                            Some(Part::InputText | Part::OutputText) => {
                                text.push_str(p["text"].as_str().unwrap_or(""))
                            }
                            // A chat tool message holds text only.
                            Some(
                                Part::Refusal
                                | Part::InputAudio
                                | Part::InputImage
                                | Part::InputFile,
                            )
                            | None => return Err(format!("`input[{i}].output[{j}]`")),
                        }
                    }
                    Value::String(text)
                }
                _ => return Err(format!("`input[{i}].output`")),
            };
            messages
                .push(json!({"role": "tool", "tool_call_id": item["call_id"], "content": output}));
        }
        // Reasoning items, references to stored items and the results of provider-run tools
        // only mean something to the provider that made them; chat has no form for custom
        // tools' calls or for the client-run tools' items.
        Some(
            Item::CustomToolCall
            | Item::CustomToolCallOutput
            | Item::Reasoning
            | Item::ItemReference
            | Item::WebSearchCall
            | Item::FileSearchCall
            | Item::CodeInterpreterCall
            | Item::ImageGenerationCall
            | Item::McpCall
            | Item::McpListTools
            | Item::McpApprovalRequest
            | Item::McpApprovalResponse
            | Item::ComputerCall
            | Item::ComputerCallOutput
            | Item::LocalShellCall
            | Item::LocalShellCallOutput
            | Item::ShellCall
            | Item::ShellCallOutput
            | Item::ApplyPatchCall
            | Item::ApplyPatchCallOutput
            | Item::ToolSearchCall
            | Item::ToolSearchOutput
            | Item::AdditionalTools
            | Item::ConfigurationUpdate
            | Item::Compaction
            | Item::CompactionTrigger
            | Item::Program
            | Item::ProgramOutput,
        )
        | None => {
            return Err(format!(
                "`input[{i}]` (a `{}` item)",
                if kind.is_empty() { "?" } else { kind }
            ))
        }
    }
    Ok(())
}

/// A content part as a chat part; `None` when chat has no form for it.
fn part(p: &Value, role: &str) -> Option<Value> {
    match Part::parse(p["type"].as_str()?)? {
        Part::InputText | Part::OutputText => {
            Some(json!({"type": "text", "text": p["text"].as_str()?}))
        }
        Part::InputImage if role == "user" => {
            let url = p["image_url"].as_str()?;
            let mut image = json!({"url": url});
            if let Some(d) = p["detail"].as_str() {
                image["detail"] = Value::String(d.to_string());
            }
            Some(json!({"type": "image_url", "image_url": image}))
        }
        Part::InputAudio if role == "user" => {
            Some(json!({"type": "input_audio", "input_audio": p["input_audio"].clone()}))
        }
        Part::Refusal => Some(json!({"type": "text", "text": p["refusal"].as_str()?})),
        // Media in a turn that is not the user's, and files (by id or URL: a chat provider
        // would need the provider's own file store), have no chat form.
        Part::InputImage | Part::InputAudio | Part::InputFile => None,
    }
}
