//! What a client may send, per client protocol: one table of fields per endpoint, as data, and
//! the walk that checks a body against it. A field in no table is refused with a 400 that names
//! it and the setting that would let it through (`[settings.request] unknown_fields`), or
//! dropped when the policy says so. Fields that make a provider keep, fetch, run or send on
//! something are [`Capability`]s: facts of the request that `decide` matches against what the
//! policy grants each provider; they never pass because the client sent them.
//!
//! Nested objects the model or the provider reads (messages, content parts, tools) have tables
//! of their own, so an extra field cannot ride along inside them either. Values inside tool
//! schemas, `metadata`, `response_format` and the like are the client's data and are not walked.

use serde_json::{Map, Value};

use crate::policy::capability::beta_capability;
use crate::policy::{CapSet, Capability, UnknownFields};
use crate::routes::Endpoint;

/// How a known field is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Forwarded as sent, on every wire that can express it.
    Pass,
    /// Meridian's own (the OpenRouter-style `provider` object): read into the facts, removed.
    Meridian,
    /// A capability whenever its value is not the inert one (`null`, `false`).
    Cap(Capability),
    /// A capability only when `true` (`store`).
    CapIfTrue(Capability),
    /// Checked in depth by [`check`]: messages, content, tools.
    Nested,
}

use Field::*;

/// Sampling and decoding options that OpenAI-compatible engines (vLLM, TGI, Ollama, llama.cpp
/// server) and routers accept beside OpenAI's own; they change how text is generated, nothing
/// else.
const ENGINE_SAMPLING: &[&str] = &[
    "chat_template_kwargs",
    "guided_choice",
    "guided_grammar",
    "guided_json",
    "guided_regex",
    "ignore_eos",
    "include_stop_str_in_output",
    "length_penalty",
    "min_p",
    "min_tokens",
    "repetition_penalty",
    "skip_special_tokens",
    "top_a",
    "top_k",
    "typical_p",
];

/// `POST /v1/chat/completions` (OpenAI's create-chat-completion parameters, Azure's
/// `data_sources`, and the engines' sampling options). Sorted by name.
pub const CHAT: &[(&str, Field)] = &[
    ("audio", Pass),
    ("data_sources", Cap(crate::policy::Capability::DataSources)),
    ("frequency_penalty", Pass),
    ("function_call", Pass),
    ("functions", Nested),
    ("logit_bias", Pass),
    ("logprobs", Pass),
    ("max_completion_tokens", Pass),
    ("max_tokens", Pass),
    ("messages", Nested),
    ("metadata", Pass),
    ("modalities", Pass),
    ("model", Pass),
    ("models", Meridian),
    ("n", Pass),
    ("parallel_tool_calls", Pass),
    ("prediction", Pass),
    ("presence_penalty", Pass),
    ("prompt_cache_key", Pass),
    ("provider", Meridian),
    ("reasoning_effort", Pass),
    ("response_format", Pass),
    ("safety_identifier", Pass),
    ("seed", Pass),
    ("service_tier", Pass),
    ("stop", Pass),
    ("store", CapIfTrue(crate::policy::Capability::Store)),
    ("stream", Pass),
    ("stream_options", Pass),
    ("temperature", Pass),
    ("tool_choice", Pass),
    ("tools", Nested),
    ("top_logprobs", Pass),
    ("top_p", Pass),
    ("user", Pass),
    ("verbosity", Pass),
    (
        "web_search_options",
        Cap(crate::policy::Capability::WebSearch),
    ),
];

/// `POST /v1/completions`. Sorted by name.
pub const COMPLETIONS: &[(&str, Field)] = &[
    ("best_of", Pass),
    ("echo", Pass),
    ("frequency_penalty", Pass),
    ("logit_bias", Pass),
    ("logprobs", Pass),
    ("max_tokens", Pass),
    ("model", Pass),
    ("n", Pass),
    ("presence_penalty", Pass),
    ("prompt", Pass),
    ("provider", Meridian),
    ("seed", Pass),
    ("stop", Pass),
    ("stream", Pass),
    ("stream_options", Pass),
    ("suffix", Pass),
    ("temperature", Pass),
    ("top_p", Pass),
    ("user", Pass),
];

/// `POST /v1/embeddings`. Sorted by name.
pub const EMBEDDINGS: &[(&str, Field)] = &[
    ("dimensions", Pass),
    ("encoding_format", Pass),
    ("input", Pass),
    ("model", Pass),
    ("provider", Meridian),
    ("user", Pass),
];

/// `POST /v1/messages` (Anthropic's create-message parameters). Sorted by name.
pub const MESSAGES: &[(&str, Field)] = &[
    ("container", Cap(crate::policy::Capability::CodeExecution)),
    ("context_management", Pass),
    ("max_tokens", Pass),
    ("mcp_servers", Cap(crate::policy::Capability::Mcp)),
    ("messages", Nested),
    ("metadata", Pass),
    ("model", Pass),
    ("models", Meridian),
    ("provider", Meridian),
    ("service_tier", Pass),
    ("stop_sequences", Pass),
    ("stream", Pass),
    ("system", Nested),
    ("temperature", Pass),
    ("thinking", Pass),
    ("tool_choice", Pass),
    ("tools", Nested),
    ("top_k", Pass),
    ("top_p", Pass),
];

/// `POST /v1/responses` (OpenAI's create-response parameters). Sorted by name.
/// `previous_response_id` is Meridian's: the id it returned, sealed, which names the provider
/// that holds the response.
pub const RESPONSES: &[(&str, Field)] = &[
    ("background", CapIfTrue(crate::policy::Capability::Store)),
    ("conversation", Cap(crate::policy::Capability::Store)),
    ("include", Pass),
    ("input", Nested),
    ("instructions", Pass),
    ("max_output_tokens", Pass),
    ("max_tool_calls", Pass),
    ("metadata", Pass),
    ("model", Pass),
    ("models", Meridian),
    ("parallel_tool_calls", Pass),
    ("previous_response_id", Meridian),
    ("prompt", Cap(crate::policy::Capability::Files)),
    ("prompt_cache_key", Pass),
    ("provider", Meridian),
    ("reasoning", Pass),
    ("safety_identifier", Pass),
    ("service_tier", Pass),
    ("store", CapIfTrue(crate::policy::Capability::Store)),
    ("stream", Pass),
    ("stream_options", Pass),
    ("temperature", Pass),
    ("text", Pass),
    ("tool_choice", Pass),
    ("tools", Nested),
    ("top_logprobs", Pass),
    ("top_p", Pass),
    ("truncation", Pass),
    ("user", Pass),
];

/// Keys of one chat message.
const CHAT_MESSAGE: &[&str] = &[
    "audio",
    "content",
    "function_call",
    "name",
    "reasoning",
    "reasoning_content",
    "refusal",
    "role",
    "tool_call_id",
    "tool_calls",
];
/// Keys of one Anthropic message.
const MESSAGES_MESSAGE: &[&str] = &["content", "role"];

/// A Responses input item's type: its `type`, or `message` for one that has only a `role`
/// (the API's shorthand), or empty.
pub fn item_kind(item: &Value) -> &str {
    item.get("type")
        .and_then(Value::as_str)
        .unwrap_or(if item.get("role").is_some() {
            "message"
        } else {
            ""
        })
}

/// The table for an endpoint.
pub fn table(endpoint: Endpoint) -> &'static [(&'static str, Field)] {
    match endpoint {
        Endpoint::Chat => CHAT,
        Endpoint::Completions => COMPLETIONS,
        Endpoint::Embeddings => EMBEDDINGS,
        Endpoint::Messages => MESSAGES,
        Endpoint::Responses => RESPONSES,
    }
}

/// A field of `endpoint`'s table, or one of the engines' sampling options on an endpoint that
/// generates text.
fn lookup(endpoint: Endpoint, name: &str) -> Option<Field> {
    if endpoint != Endpoint::Embeddings && ENGINE_SAMPLING.binary_search(&name).is_ok() {
        return Some(Pass);
    }
    let table = table(endpoint);
    table
        .binary_search_by(|(k, _)| (*k).cmp(name))
        .ok()
        .map(|i| table[i].1)
}

/// What the check found: the capabilities the request asks for, the `anthropic-beta` values it
/// sends, and the unknown fields removed (with `unknown_fields = "drop"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    pub capabilities: CapSet,
    pub betas: Vec<String>,
    pub dropped: Vec<String>,
}

/// Why a body does not fit its table: always the client's to fix (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as a JSON path (`messages[2].foo`).
    pub path: String,
    pub message: String,
    pub code: &'static str,
}

struct Walk<'a> {
    endpoint: Endpoint,
    unknown: UnknownFields,
    shape: &'a mut Shape,
}

impl Walk<'_> {
    /// An unknown key at `path`: an error, or recorded and removed (the caller removes it).
    fn unknown(&mut self, path: String) -> Result<(), FieldError> {
        match self.unknown {
            UnknownFields::Drop => {
                self.shape.dropped.push(path);
                Ok(())
            }
            UnknownFields::Refuse => Err(FieldError {
                message: format!(
                    "unknown field `{path}` for {}: Meridian forwards only the fields it knows for each endpoint (see docs/request-fields.md). Remove it, or ask the operator to set `[settings.request] unknown_fields = \"drop\"` in the policy to have unknown fields dropped.",
                    self.endpoint.path()
                ),
                path,
                code: "unknown_parameter",
            }),
        }
    }

    /// Keeps only the `known` keys of an object (refusing or dropping the others).
    fn keys(
        &mut self,
        obj: &mut Map<String, Value>,
        known: &[&str],
        at: &str,
    ) -> Result<(), FieldError> {
        let mut drop: Vec<String> = Vec::new();
        for k in obj.keys() {
            if known.binary_search(&k.as_str()).is_err() {
                self.unknown(format!("{at}.{k}"))?;
                drop.push(k.clone());
            }
        }
        for k in drop {
            obj.shift_remove(&k);
        }
        Ok(())
    }

    fn add(&mut self, c: Capability) {
        self.shape.capabilities.insert(c);
    }

    fn bad_type(&self, path: String, what: &str) -> FieldError {
        FieldError {
            message: format!(
                "`{path}` has the type `{what}`, which Meridian does not know for {}: it cannot tell what the provider would be asked to do. See docs/request-fields.md.",
                self.endpoint.path()
            ),
            path,
            code: "unknown_parameter",
        }
    }

    /// A media URL the provider would fetch itself (not a `data:` URL).
    fn media_url(&mut self, url: Option<&Value>) {
        if url
            .and_then(Value::as_str)
            .is_some_and(|u| !u.trim_start().to_ascii_lowercase().starts_with("data:"))
        {
            self.add(Capability::RemoteMedia);
        }
    }

    /// The messages of either protocol: each message's keys against `keys`, each part (chat) or
    /// block (Anthropic) of its `content` through `part`.
    fn messages(
        &mut self,
        v: &mut Value,
        keys: &[&str],
        part: fn(&mut Self, &mut Value, &str) -> Result<(), FieldError>,
    ) -> Result<(), FieldError> {
        let Value::Array(list) = v else { return Ok(()) };
        for (i, m) in list.iter_mut().enumerate() {
            let Value::Object(m) = m else { continue };
            self.keys(m, keys, &format!("messages[{i}]"))?;
            if let Some(Value::Array(parts)) = m.get_mut("content") {
                for (j, p) in parts.iter_mut().enumerate() {
                    part(self, p, &format!("messages[{i}].content[{j}]"))?;
                }
            }
        }
        Ok(())
    }

    fn chat_part(&mut self, p: &mut Value, at: &str) -> Result<(), FieldError> {
        let Value::Object(o) = p else { return Ok(()) };
        let kind = o
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let known: &[&str] = match kind.as_str() {
            "text" => &["cache_control", "text", "type"],
            "image_url" => {
                self.media_url(o.get("image_url").and_then(|i| i.get("url")));
                &["image_url", "type"]
            }
            "input_audio" => &["input_audio", "type"],
            "file" => {
                if o.get("file")
                    .and_then(|f| f.get("file_id"))
                    .is_some_and(|f| !f.is_null())
                {
                    self.add(Capability::Files);
                }
                &["file", "type"]
            }
            "refusal" => &["refusal", "type"],
            other => return Err(self.bad_type(format!("{at}.type"), other)),
        };
        self.keys(o, known, at)
    }

    fn chat_tools(&mut self, v: &mut Value, field: &str) -> Result<(), FieldError> {
        let Value::Array(list) = v else { return Ok(()) };
        for (i, t) in list.iter_mut().enumerate() {
            let Value::Object(o) = t else { continue };
            if field == "functions" {
                continue; // the legacy form: name, description, parameters
            }
            let kind = o.get("type").and_then(Value::as_str).unwrap_or("function");
            match kind {
                "function" | "custom" => {}
                other => return Err(self.bad_type(format!("{field}[{i}].type"), other)),
            }
        }
        Ok(())
    }

    /// An Anthropic content block (in a message, a tool result or `system`).
    fn block(&mut self, b: &mut Value, at: &str) -> Result<(), FieldError> {
        let Value::Object(o) = b else { return Ok(()) };
        let kind = o
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match kind.as_str() {
            "image" | "document" => match o
                .get("source")
                .and_then(|s| s.get("type"))
                .and_then(Value::as_str)
            {
                Some("url") => self.add(Capability::RemoteMedia),
                Some("file") => self.add(Capability::Files),
                _ => {}
            },
            "container_upload" => {
                self.add(Capability::Files);
                self.add(Capability::CodeExecution);
            }
            "tool_result" => {
                if let Some(Value::Array(inner)) = o.get_mut("content") {
                    for (k, x) in inner.iter_mut().enumerate() {
                        self.block(x, &format!("{at}.content[{k}]"))?;
                    }
                }
            }
            // What a conversation already holds: the model's text, thinking and tool calls, and
            // the results of server tools that ran in an earlier turn.
            "text"
            | "tool_use"
            | "thinking"
            | "redacted_thinking"
            | "search_result"
            | "server_tool_use"
            | "web_search_tool_result"
            | "web_fetch_tool_result"
            | "code_execution_tool_result"
            | "bash_code_execution_tool_result"
            | "text_editor_code_execution_tool_result"
            | "mcp_tool_use"
            | "mcp_tool_result" => {}
            other => return Err(self.bad_type(format!("{at}.type"), other)),
        }
        Ok(())
    }

    /// The items of a Responses `input`: messages (their parts checked as chat's are), function
    /// calls and their outputs, reasoning, and the items of provider-run tools from an earlier
    /// turn; a reference to a stored item needs the provider's retention.
    fn response_items(&mut self, v: &mut Value) -> Result<(), FieldError> {
        let Value::Array(list) = v else { return Ok(()) };
        for (i, item) in list.iter_mut().enumerate() {
            let at = format!("input[{i}]");
            let kind = item_kind(item).to_string();
            let Value::Object(o) = item else { continue };
            match kind.as_str() {
                "message" => {
                    self.keys(o, &["content", "id", "role", "status", "type"], &at)?;
                    if let Some(Value::Array(parts)) = o.get_mut("content") {
                        for (j, p) in parts.iter_mut().enumerate() {
                            self.response_part(p, &format!("{at}.content[{j}]"))?;
                        }
                    }
                }
                "function_call" => self.keys(
                    o,
                    &["arguments", "call_id", "id", "name", "status", "type"],
                    &at,
                )?,
                "function_call_output" => {
                    self.keys(o, &["call_id", "id", "output", "status", "type"], &at)?
                }
                "custom_tool_call" | "custom_tool_call_output" | "reasoning" => {}
                "item_reference" => self.add(Capability::Store),
                // What provider-run tools did in an earlier turn, as the provider returned it.
                "web_search_call"
                | "file_search_call"
                | "code_interpreter_call"
                | "mcp_call"
                | "mcp_list_tools"
                | "mcp_approval_request"
                | "mcp_approval_response"
                | "image_generation_call"
                | "computer_call"
                | "computer_call_output"
                | "local_shell_call"
                | "local_shell_call_output" => {}
                other => return Err(self.bad_type(format!("{at}.type"), other)),
            }
        }
        Ok(())
    }

    fn response_part(&mut self, p: &mut Value, at: &str) -> Result<(), FieldError> {
        let Value::Object(o) = p else { return Ok(()) };
        let kind = o
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let known: &[&str] = match kind.as_str() {
            "input_text" => &["text", "type"],
            "output_text" => &["annotations", "logprobs", "text", "type"],
            "refusal" => &["refusal", "type"],
            "input_audio" => &["input_audio", "type"],
            "input_image" => {
                self.media_url(o.get("image_url"));
                if o.get("file_id").is_some_and(|f| !f.is_null()) {
                    self.add(Capability::Files);
                }
                &["detail", "file_id", "image_url", "type"]
            }
            "input_file" => {
                if o.get("file_id").is_some_and(|f| !f.is_null()) {
                    self.add(Capability::Files);
                }
                self.media_url(o.get("file_url"));
                &["file_data", "file_id", "file_url", "filename", "type"]
            }
            other => return Err(self.bad_type(format!("{at}.type"), other)),
        };
        self.keys(o, known, at)
    }

    /// Responses tools: functions and custom tools run by the client; the built-in tools run by
    /// the provider are capabilities.
    fn response_tools(&mut self, v: &mut Value) -> Result<(), FieldError> {
        let Value::Array(list) = v else { return Ok(()) };
        for (i, t) in list.iter().enumerate() {
            let kind = t.get("type").and_then(Value::as_str).unwrap_or("");
            match kind {
                "function"
                | "custom"
                | "computer_use_preview"
                | "computer"
                | "local_shell"
                | "shell"
                | "apply_patch" => {}
                k if k.starts_with("web_search") => self.add(Capability::WebSearch),
                "file_search" => self.add(Capability::Files),
                "code_interpreter" => self.add(Capability::CodeExecution),
                "mcp" => self.add(Capability::Mcp),
                other => return Err(self.bad_type(format!("tools[{i}].type"), other)),
            }
        }
        Ok(())
    }

    fn messages_tools(&mut self, v: &mut Value) -> Result<(), FieldError> {
        let Value::Array(list) = v else { return Ok(()) };
        for (i, t) in list.iter().enumerate() {
            let Some(kind) = t.get("type").and_then(Value::as_str) else {
                continue; // a client tool
            };
            let starts = |p: &str| kind.starts_with(p);
            if kind == "custom"
                || starts("bash_")
                || starts("text_editor_")
                || starts("computer_")
                || starts("memory_")
            {
                // Run by the client, not the provider.
            } else if starts("web_search_") {
                self.add(Capability::WebSearch);
            } else if starts("web_fetch_") {
                self.add(Capability::WebFetch);
            } else if starts("code_execution_") {
                self.add(Capability::CodeExecution);
            } else if kind == "mcp_toolset" {
                self.add(Capability::Mcp);
            } else {
                return Err(self.bad_type(format!("tools[{i}].type"), kind));
            }
        }
        Ok(())
    }
}

/// Checks a parsed body against its endpoint's tables: unknown fields are refused or removed
/// (`unknown`), capabilities are collected, and `anthropic-beta` values (Anthropic clients) are
/// read from `headers`, beta values that turn on a capability counting as it.
pub fn check(
    endpoint: Endpoint,
    body: &mut Map<String, Value>,
    headers: &[(String, String)],
    unknown: UnknownFields,
) -> Result<Shape, FieldError> {
    let mut shape = Shape::default();
    let mut w = Walk {
        endpoint,
        unknown,
        shape: &mut shape,
    };
    let mut drop: Vec<String> = Vec::new();
    for (k, v) in body.iter_mut() {
        match lookup(endpoint, k) {
            None => {
                w.unknown(k.clone())?;
                drop.push(k.clone());
            }
            Some(Pass | Meridian) => {}
            Some(Cap(c)) => {
                if !v.is_null() && *v != Value::Bool(false) {
                    w.add(c);
                }
            }
            Some(CapIfTrue(c)) => {
                if *v == Value::Bool(true) {
                    w.add(c);
                }
            }
            Some(Nested) => match (endpoint, k.as_str()) {
                (Endpoint::Chat, "messages") => w.messages(v, CHAT_MESSAGE, Walk::chat_part)?,
                (Endpoint::Chat, "tools" | "functions") => w.chat_tools(v, &k.clone())?,
                (Endpoint::Messages, "messages") => w.messages(v, MESSAGES_MESSAGE, Walk::block)?,
                (Endpoint::Messages, "tools") => w.messages_tools(v)?,
                (Endpoint::Responses, "input") => w.response_items(v)?,
                (Endpoint::Responses, "tools") => w.response_tools(v)?,
                (Endpoint::Messages, "system") => {
                    if let Value::Array(blocks) = v {
                        for (i, b) in blocks.iter_mut().enumerate() {
                            w.block(b, &format!("system[{i}]"))?;
                        }
                    }
                }
                _ => {}
            },
        }
    }
    for k in drop {
        body.shift_remove(&k);
    }
    if endpoint == Endpoint::Messages {
        for (_, v) in headers.iter().filter(|(k, _)| k == "anthropic-beta") {
            for beta in v.split(',').map(str::trim).filter(|b| !b.is_empty()) {
                if let Some(c) = beta_capability(beta) {
                    shape.capabilities.insert(c);
                }
                shape.betas.push(beta.to_string());
            }
        }
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_sorted_so_lookups_find_every_field() {
        for t in [CHAT, COMPLETIONS, EMBEDDINGS, MESSAGES, RESPONSES] {
            assert!(t.windows(2).all(|w| w[0].0 < w[1].0), "{t:?}");
        }
        for t in [ENGINE_SAMPLING, CHAT_MESSAGE, MESSAGES_MESSAGE] {
            assert!(t.windows(2).all(|w| w[0] < w[1]), "{t:?}");
        }
    }
}
