//! The walk over a body: every node classified once. Item, part, block and tool types are
//! matched as enums ([`super::kinds`]) with no default arm. Paths are built only when an error
//! names one.

use serde_json::{Map, Value};

use super::fields::{self, Field, Nested};
use super::kinds::{AnthropicTool, Block, ChatPart, ChatTool, Item, Part, ResponsesTool};
use super::{Endpoint, FieldError, Media, Reading, Source, Text};
use crate::policy::{Capability, UnknownFields};

/// One step of a JSON path.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// A JSON path, as a chain of steps on the stack: rendered only when an error names it.
#[derive(Clone, Copy)]
struct At<'a> {
    up: Option<&'a At<'a>>,
    seg: Seg<'a>,
}

impl<'a> At<'a> {
    fn root(key: &'a str) -> At<'a> {
        At {
            up: None,
            seg: Seg::Key(key),
        }
    }
    fn key(&'a self, key: &'a str) -> At<'a> {
        At {
            up: Some(self),
            seg: Seg::Key(key),
        }
    }
    fn index(&'a self, i: usize) -> At<'a> {
        At {
            up: Some(self),
            seg: Seg::Index(i),
        }
    }
    fn render(&self) -> String {
        let mut out = self.up.map(At::render).unwrap_or_default();
        match self.seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
        out
    }
}

struct Walk<'r, 't> {
    endpoint: Endpoint,
    /// `None`: the keys were checked by an earlier walk (redaction walks again).
    unknown: Option<UnknownFields>,
    read: &'r mut Reading,
    text: &'t mut dyn FnMut(Text, &mut String),
}

/// Walks a body: the top-level fields against the endpoint's table, then in depth.
pub(super) fn body(
    endpoint: Endpoint,
    body: &mut Map<String, Value>,
    unknown: Option<UnknownFields>,
    read: &mut Reading,
    text: &mut dyn FnMut(Text, &mut String),
) -> Result<(), FieldError> {
    let mut w = Walk {
        endpoint,
        unknown,
        read,
        text,
    };
    let mut drop: Vec<String> = Vec::new();
    for (k, v) in body.iter_mut() {
        let Some((name, field)) = fields::entry(endpoint, k) else {
            if w.unknown.is_some() {
                w.unknown(At::root(k))?;
                drop.push(k.clone());
            }
            continue;
        };
        let at = At::root(name);
        match field {
            Field::Pass => {}
            Field::Meridian => {
                if name == "previous_response_id" && !v.is_null() {
                    w.read.stored_history = true;
                }
            }
            Field::Count => w.count(name, v)?,
            Field::Integer => {
                if !v.is_null() && v.as_i64().is_none() && v.as_u64().is_none() {
                    return Err(not_integer(name, v, "an integer"));
                }
            }
            Field::Cap(c) => {
                if !v.is_null() && *v != Value::Bool(false) {
                    w.cap(c);
                    match c {
                        Capability::Store => w.read.stored_history = true, // `conversation`
                        // Chat's `web_search_options` and Azure's `data_sources`: the provider
                        // searches once and bills what it found as input.
                        Capability::WebSearch | Capability::DataSources => w.provider_tool(Some(1)),
                        _ => {}
                    }
                }
            }
            Field::CapIfTrue(c) => {
                if *v == Value::Bool(true) {
                    w.cap(c);
                }
            }
            Field::Priced => {
                let dearer = match name {
                    "service_tier" => matches!(v.as_str(), Some("priority" | "scale")),
                    "modalities" => v.as_array().is_some_and(|m| m.iter().any(|x| x == "audio")),
                    // `audio`: output audio's settings.
                    _ => !v.is_null(),
                };
                if dearer {
                    w.cap(Capability::PricedOptions);
                }
            }
            Field::Nested(n) => w.nested(n, v, &at)?,
        }
    }
    for k in drop {
        body.shift_remove(&k);
    }
    Ok(())
}

/// A value that should have been an integer: what it was instead.
fn not_integer(name: &'static str, v: &Value, want: &str) -> FieldError {
    let was = match v {
        Value::String(_) => "a string",
        Value::Bool(_) => "a boolean",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
        Value::Number(n) if n.as_f64().is_some_and(|f| f < 0.0) => "a negative number",
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() != 0.0) => "a fraction",
        Value::Number(_) => "a number written with a fraction or out of range",
        Value::Null => "null",
    };
    FieldError {
        path: name.to_string(),
        param: Some(name),
        message: format!("`{name}` must be {want}, not {was}: send it as a JSON number without quotes or a decimal point"),
        code: "invalid_type",
    }
}

/// A media part's source from a URL field: a `data:` URL is inline, any other URL is fetched.
fn url_source(url: Option<&Value>) -> Option<Source> {
    let u = url?.as_str()?;
    Some(
        if u.trim_start()
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("data:"))
        {
            Source::Inline
        } else {
            Source::Url
        },
    )
}

fn present(o: &Map<String, Value>, key: &str) -> bool {
    o.get(key).is_some_and(|v| !v.is_null())
}

/// Keys of provider-shaped objects (earlier turns' tool items) that hold no text the model
/// reads: types, ids, states, and the provider's encrypted or signed payloads.
fn structural(key: &str) -> bool {
    matches!(
        key,
        "type" | "id" | "status" | "role" | "signature" | "encrypted_content"
    ) || key.ends_with("_id")
}

fn list(v: &mut Value) -> std::slice::IterMut<'_, Value> {
    match v {
        Value::Array(a) => a.iter_mut(),
        _ => [].iter_mut(),
    }
}

impl Walk<'_, '_> {
    fn cap(&mut self, c: Capability) {
        self.read.capabilities.insert(c);
    }

    /// A tool the provider runs, calling it at most `max_uses` times (Anthropic's server
    /// tools) if it says.
    fn provider_tool(&mut self, max_uses: Option<u64>) {
        self.read.provider_tools += 1;
        self.read.provider_tool_uses = match (self.read.provider_tools, max_uses) {
            (1, Some(n)) => Some(n),
            (_, Some(n)) => self.read.provider_tool_uses.map(|m| m.saturating_add(n)),
            (_, None) => None,
        };
    }

    fn say(&mut self, kind: Text, s: &mut String) {
        self.read.text_bytes = self.read.text_bytes.saturating_add(s.len() as u64);
        (self.text)(kind, s);
    }

    fn media(&mut self, _what: Media, source: Source) {
        self.read.media += 1;
        if let Some(c) = source.capability() {
            self.read.unseen_media += 1;
            self.cap(c);
        }
    }

    /// An unknown key at `at`: an error, or recorded for removal (the caller removes it).
    fn unknown(&mut self, at: At<'_>) -> Result<(), FieldError> {
        let path = at.render();
        match self.unknown {
            Some(UnknownFields::Drop) | None => {
                self.read.dropped.push(path);
                Ok(())
            }
            Some(UnknownFields::Refuse) => Err(FieldError {
                message: format!(
                    "unknown field `{path}` for {}: Meridian forwards only the fields it knows for each endpoint (see docs/request-fields.md). Remove it, or ask the operator to set `[settings.request] unknown_fields = \"drop\"` in the policy to have unknown fields dropped.",
                    self.endpoint.path()
                ),
                path,
                param: None,
                code: "unknown_parameter",
            }),
        }
    }

    /// Keeps only the `known` keys of an object (refusing or dropping the others).
    fn keys(
        &mut self,
        obj: &mut Map<String, Value>,
        known: &[&str],
        at: &At<'_>,
    ) -> Result<(), FieldError> {
        if self.unknown.is_none() {
            return Ok(());
        }
        let mut drop: Vec<String> = Vec::new();
        for k in obj.keys() {
            if known
                .binary_search_by(|n| crate::policy::cmp_names(n, k))
                .is_err()
            {
                self.unknown(at.key(k))?;
                drop.push(k.clone());
            }
        }
        for k in drop {
            obj.shift_remove(&k);
        }
        Ok(())
    }

    fn bad_type(&self, at: At<'_>, what: &str) -> FieldError {
        let path = at.render();
        FieldError {
            message: format!(
                "`{path}` has the type `{what}`, which Meridian does not know for {}: it cannot tell what the provider would be asked to do. See docs/request-fields.md.",
                self.endpoint.path()
            ),
            path,
            param: None,
            code: "unknown_parameter",
        }
    }

    /// A count (`max_tokens`, `n`, …): a non-negative integer or `null`; the output bound and
    /// the completions asked for are read here, once.
    fn count(&mut self, name: &'static str, v: &Value) -> Result<(), FieldError> {
        if v.is_null() {
            return Ok(());
        }
        let Some(n) = v.as_u64() else {
            return Err(not_integer(name, v, "a non-negative integer"));
        };
        let over = |most: u64| {
            FieldError {
            path: name.to_string(),
            param: Some(name),
            message: format!("`{name}` is {n}, more than {most}, the most Meridian accepts: ask for at most {most}"),
            code: "invalid_value",
        }
        };
        match name {
            "max_tokens" | "max_completion_tokens" | "max_output_tokens" => {
                if n > super::MAX_OUTPUT_TOKENS {
                    return Err(over(super::MAX_OUTPUT_TOKENS));
                }
                self.read.max_output = Some(self.read.max_output.map_or(n, |m| m.max(n)));
            }
            "max_tool_calls" => self.read.provider_tool_calls = Some(n),
            "n" | "best_of" => {
                if n > super::MAX_COMPLETIONS {
                    return Err(over(super::MAX_COMPLETIONS));
                }
                if n == 0 {
                    return Err(FieldError {
                        path: name.to_string(),
                        param: Some(name),
                        message: format!("`{name}` must be a positive integer"),
                        code: "invalid_value",
                    });
                }
                self.read.completions = self.read.completions.max(n);
            }
            _ => {}
        }
        Ok(())
    }

    fn string(&mut self, kind: Text, v: Option<&mut Value>) {
        if let Some(Value::String(s)) = v {
            self.say(kind, s);
        }
    }

    /// A string, or a list's strings (token arrays are not text).
    fn strings(&mut self, kind: Text, v: &mut Value) {
        match v {
            Value::String(s) => self.say(kind, s),
            Value::Array(items) => {
                for i in items {
                    if let Value::String(s) = i {
                        self.say(kind, s);
                    }
                }
            }
            _ => {}
        }
    }

    /// Every string inside (tool input, schemas, earlier turns' tool results), keys being the
    /// client's or the provider's names; a media object inside is a media part.
    fn deep(&mut self, kind: Text, v: Option<&mut Value>) {
        let Some(v) = v else { return };
        match v {
            Value::String(s) => self.say(kind, s),
            Value::Array(items) => items.iter_mut().for_each(|i| self.deep(kind, Some(i))),
            Value::Object(o) => self.deep_object(kind, o),
            _ => {}
        }
    }

    fn deep_object(&mut self, kind: Text, o: &mut Map<String, Value>) {
        if self.media_object(kind, o) {
            return;
        }
        for (k, x) in o.iter_mut() {
            if !structural(k) {
                self.deep(kind, Some(x));
            }
        }
    }

    /// A media object of any protocol met inside a value walked in depth (a tool's output, a
    /// prompt's variables, a server tool's results): counted and its source's capability raised.
    fn media_object(&mut self, kind: Text, o: &mut Map<String, Value>) -> bool {
        let Some(t) = o.get("type").and_then(Value::as_str) else {
            return false;
        };
        match t {
            "image_url" | "input_image" | "input_file" | "input_audio" | "file" => {
                self.response_media(kind, o);
                true
            }
            "image" | "document" => {
                self.block_media(kind, o);
                true
            }
            "computer_screenshot" => {
                self.response_media(kind, o);
                true
            }
            _ => false,
        }
    }

    fn nested(&mut self, n: Nested, v: &mut Value, at: &At<'_>) -> Result<(), FieldError> {
        match n {
            Nested::ChatMessages => self.chat_messages(v, at)?,
            Nested::ChatTools => self.chat_tools(v, at, false)?,
            Nested::ChatFunctions => self.chat_tools(v, at, true)?,
            Nested::ResponseFormat => {
                self.deep(Text::ToolDefinition, v.get_mut("json_schema"));
            }
            Nested::Prediction => {
                if let Some(c) = v.get_mut("content") {
                    self.chat_content(Text::Prompt, c, &at.key("content"))?;
                }
            }
            Nested::Strings => self.strings(Text::Prompt, v),
            Nested::System => self.blocks(Text::Prompt, v, at)?,
            Nested::MessagesMessages => {
                for (i, m) in list(v).enumerate() {
                    let Value::Object(m) = m else { continue };
                    let at = at.index(i);
                    self.keys(m, fields::MESSAGES_MESSAGE, &at)?;
                    let said = match m.get("role").and_then(Value::as_str) {
                        Some("assistant") => Text::Reply,
                        _ => Text::Prompt,
                    };
                    if let Some(c) = m.get_mut("content") {
                        self.blocks(said, c, &at.key("content"))?;
                    }
                }
            }
            Nested::MessagesTools => self.messages_tools(v, at)?,
            Nested::Input => match v {
                Value::String(s) => self.say(Text::Prompt, s),
                other => {
                    for (i, item) in list(other).enumerate() {
                        self.item(item, &at.index(i))?;
                    }
                }
            },
            Nested::ResponsesTools => self.responses_tools(v, at)?,
            Nested::TextFormat => {
                self.deep(
                    Text::ToolDefinition,
                    v.get_mut("format").and_then(|f| f.get_mut("schema")),
                );
            }
            Nested::Prompt => {
                if !v.is_null() {
                    self.cap(Capability::Files);
                    self.deep(Text::Prompt, v.get_mut("variables"));
                }
            }
        }
        Ok(())
    }

    // Chat.

    fn chat_messages(&mut self, v: &mut Value, at: &At<'_>) -> Result<(), FieldError> {
        for (i, m) in list(v).enumerate() {
            let Value::Object(m) = m else { continue };
            let at = at.index(i);
            self.keys(m, fields::CHAT_MESSAGE, &at)?;
            let said = match m.get("role").and_then(Value::as_str) {
                Some("tool" | "function") => Text::ToolOutput,
                Some("assistant") => Text::Reply,
                _ => Text::Prompt,
            };
            for (k, val) in m.iter_mut() {
                match k.as_str() {
                    "content" => self.chat_content(said, val, &at.key("content"))?,
                    "name" | "refusal" => self.string(Text::Prompt, Some(val)),
                    "tool_calls" => {
                        for call in list(val) {
                            let f = call.get_mut("function");
                            self.string(Text::ToolCall, f.and_then(|f| f.get_mut("arguments")));
                            let c = call.get_mut("custom");
                            self.string(Text::ToolCall, c.and_then(|c| c.get_mut("input")));
                        }
                    }
                    "function_call" => self.string(Text::ToolCall, val.get_mut("arguments")),
                    "reasoning" | "reasoning_content" => self.deep(Text::Reasoning, Some(val)),
                    "audio" if !val.is_null() => self.media(Media::Audio, Source::Earlier),
                    _ => {} // `role`, `tool_call_id`: structure
                }
            }
        }
        Ok(())
    }

    /// A chat `content`: a string or parts.
    fn chat_content(&mut self, said: Text, c: &mut Value, at: &At<'_>) -> Result<(), FieldError> {
        let parts = match c {
            Value::String(s) => {
                self.say(said, s);
                return Ok(());
            }
            Value::Array(parts) => parts,
            _ => return Ok(()),
        };
        for (j, p) in parts.iter_mut().enumerate() {
            let Value::Object(o) = p else { continue };
            let at = at.index(j);
            let kind = o.get("type").and_then(Value::as_str).unwrap_or("");
            let Some(kind) = ChatPart::parse(kind) else {
                return Err(self.bad_type(at.key("type"), kind));
            };
            let known: &[&str] = match kind {
                ChatPart::Text => {
                    self.string(said, o.get_mut("text"));
                    &["cache_control", "text", "type"]
                }
                ChatPart::Refusal => {
                    self.string(said, o.get_mut("refusal"));
                    &["refusal", "type"]
                }
                ChatPart::ImageUrl => {
                    let src = url_source(o.get("image_url").and_then(|i| i.get("url")));
                    self.media(Media::Image, src.unwrap_or(Source::Inline));
                    &["image_url", "type"]
                }
                ChatPart::InputAudio => {
                    self.media(Media::Audio, Source::Inline);
                    &["input_audio", "type"]
                }
                ChatPart::File => {
                    let by_id = o
                        .get("file")
                        .and_then(Value::as_object)
                        .is_some_and(|f| present(f, "file_id"));
                    let src = if by_id {
                        Source::FileId
                    } else {
                        Source::Inline
                    };
                    self.media(Media::File, src);
                    self.string(said, o.get_mut("file").and_then(|f| f.get_mut("filename")));
                    &["file", "type"]
                }
            };
            self.keys(o, known, &at)?;
        }
        Ok(())
    }

    fn chat_tools(&mut self, v: &mut Value, at: &At<'_>, legacy: bool) -> Result<(), FieldError> {
        if v.as_array().is_some_and(|a| !a.is_empty()) {
            self.read.tools = true;
        }
        for (i, t) in list(v).enumerate() {
            if legacy {
                self.deep(Text::ToolDefinition, Some(t)); // name, description, parameters
                continue;
            }
            let Value::Object(o) = t else { continue };
            let kind = o.get("type").and_then(Value::as_str).unwrap_or("function");
            let Some(kind) = ChatTool::parse(kind) else {
                return Err(self.bad_type(at.index(i).key("type"), kind));
            };
            match kind {
                ChatTool::Function => self.deep(Text::ToolDefinition, o.get_mut("function")),
                ChatTool::Custom => self.deep(Text::ToolDefinition, o.get_mut("custom")),
            }
        }
        Ok(())
    }

    // Anthropic Messages.

    /// Anthropic content: a string or blocks.
    fn blocks(&mut self, said: Text, v: &mut Value, at: &At<'_>) -> Result<(), FieldError> {
        match v {
            Value::String(s) => self.say(said, s),
            Value::Array(items) => {
                for (k, b) in items.iter_mut().enumerate() {
                    self.block(said, b, &at.index(k))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// An image or document block's media (a document with text or blocks is text).
    fn block_media(&mut self, said: Text, o: &mut Map<String, Value>) {
        let media = if o.get("type").and_then(Value::as_str) == Some("image") {
            Media::Image
        } else {
            for k in ["title", "context"] {
                self.string(said, o.get_mut(k));
            }
            Media::File
        };
        let Some(src) = o.get_mut("source") else {
            self.media(media, Source::Inline);
            return;
        };
        match src.get("type").and_then(Value::as_str) {
            Some("text") if media == Media::File => self.string(said, src.get_mut("data")),
            Some("content") if media == Media::File => {
                // Blocks inside a document: their types were checked where the document stood.
                self.deep(said, src.get_mut("content"));
            }
            Some("url") => self.media(media, Source::Url),
            Some("file") => self.media(media, Source::FileId),
            _ => self.media(media, Source::Inline),
        }
    }

    /// An Anthropic content block (in a message, a tool result or `system`).
    fn block(&mut self, said: Text, b: &mut Value, at: &At<'_>) -> Result<(), FieldError> {
        let Value::Object(o) = b else { return Ok(()) };
        let kind = o.get("type").and_then(Value::as_str).unwrap_or("");
        let Some(kind) = Block::parse(kind) else {
            return Err(self.bad_type(at.key("type"), kind));
        };
        match kind {
            Block::Text => self.string(said, o.get_mut("text")),
            Block::Image => self.block_media(said, o),
            Block::Document => {
                if let Some(Value::Array(inner)) = o
                    .get_mut("source")
                    .filter(|s| s.get("type").and_then(Value::as_str) == Some("content"))
                    .and_then(|s| s.get_mut("content"))
                {
                    let at = at.key("source");
                    let at = at.key("content");
                    for (k, x) in inner.iter_mut().enumerate() {
                        self.block(said, x, &at.index(k))?;
                    }
                    for k in ["title", "context"] {
                        self.string(said, o.get_mut(k));
                    }
                } else {
                    self.block_media(said, o);
                }
            }
            Block::SearchResult => self.deep_object(Text::ToolOutput, o),
            Block::ToolUse | Block::ServerToolUse | Block::McpToolUse => {
                self.deep(Text::ToolCall, o.get_mut("input"))
            }
            Block::ToolResult | Block::McpToolResult => {
                if let Some(c) = o.get_mut("content") {
                    self.blocks(Text::ToolOutput, c, &at.key("content"))?;
                }
            }
            Block::Thinking => self.string(Text::Reasoning, o.get_mut("thinking")),
            Block::RedactedThinking => {} // encrypted by the provider: nothing readable
            Block::ToolReference => self.string(Text::ToolDefinition, o.get_mut("tool_name")),
            Block::BrowserState => self.deep_object(Text::ToolOutput, o),
            Block::ContainerUpload => {
                self.media(Media::File, Source::FileId);
                self.cap(Capability::CodeExecution);
            }
            Block::WebSearchToolResult
            | Block::WebFetchToolResult
            | Block::CodeExecutionToolResult
            | Block::BashCodeExecutionToolResult
            | Block::TextEditorCodeExecutionToolResult
            | Block::ToolSearchToolResult => self.deep(Text::ToolOutput, o.get_mut("content")),
        }
        Ok(())
    }

    fn messages_tools(&mut self, v: &mut Value, at: &At<'_>) -> Result<(), FieldError> {
        if v.as_array().is_some_and(|a| !a.is_empty()) {
            self.read.tools = true;
        }
        for (i, t) in list(v).enumerate() {
            let kind = t.get("type").and_then(Value::as_str);
            let Some(tool) = AnthropicTool::parse(kind) else {
                return Err(self.bad_type(at.index(i).key("type"), kind.unwrap_or("")));
            };
            // Anthropic's own tools (`bash_*`, `computer_*`, …, and the ones it runs) come with
            // a definition Anthropic writes into the prompt.
            if kind.is_some_and(|k| k != "custom") {
                self.read.defined_tools += 1;
            }
            // The tools Anthropic runs: a capability each, and calls it may make.
            let runs = match tool {
                AnthropicTool::Client => {
                    self.deep(Text::ToolDefinition, t.get_mut("description"));
                    self.deep(Text::ToolDefinition, t.get_mut("input_schema"));
                    None
                }
                AnthropicTool::WebSearch => Some(Capability::WebSearch),
                AnthropicTool::WebFetch => Some(Capability::WebFetch),
                AnthropicTool::CodeExecution => Some(Capability::CodeExecution),
                AnthropicTool::Mcp => Some(Capability::Mcp),
            };
            if let Some(c) = runs {
                self.cap(c);
                self.provider_tool(t.get("max_uses").and_then(Value::as_u64));
            }
        }
        Ok(())
    }

    // Responses.

    /// One `input` item.
    fn item(&mut self, item: &mut Value, at: &At<'_>) -> Result<(), FieldError> {
        let kind = super::item_type(item);
        let Some(kind) = Item::parse(kind) else {
            if !item.is_object() {
                return Ok(());
            }
            return Err(self.bad_type(at.key("type"), kind));
        };
        let Value::Object(o) = item else {
            return Ok(());
        };
        match kind {
            Item::Message => {
                self.keys(o, fields::RESPONSES_MESSAGE, at)?;
                let said = match o.get("role").and_then(Value::as_str) {
                    Some("assistant") => Text::Reply,
                    _ => Text::Prompt,
                };
                match o.get_mut("content") {
                    Some(Value::String(s)) => self.say(said, s),
                    Some(Value::Array(parts)) => {
                        let at = at.key("content");
                        for (j, p) in parts.iter_mut().enumerate() {
                            self.part(said, p, &at.index(j))?;
                        }
                    }
                    _ => {}
                }
            }
            Item::FunctionCall => {
                self.keys(o, fields::FUNCTION_CALL, at)?;
                self.string(Text::ToolCall, o.get_mut("arguments"));
            }
            Item::FunctionCallOutput => {
                self.keys(o, fields::FUNCTION_CALL_OUTPUT, at)?;
                self.tool_output(o.get_mut("output"), &at.key("output"))?;
            }
            Item::CustomToolCall => self.string(Text::ToolCall, o.get_mut("input")),
            Item::CustomToolCallOutput => {
                self.tool_output(o.get_mut("output"), &at.key("output"))?
            }
            Item::Reasoning => {
                self.deep(Text::Reasoning, o.get_mut("summary"));
                self.deep(Text::Reasoning, o.get_mut("content"));
            }
            Item::ItemReference => {
                self.cap(Capability::Store);
                self.read.stored_history = true;
            }
            Item::ComputerCallOutput => {
                if let Some(Value::Object(shot)) = o.get_mut("output") {
                    self.response_media(Text::ToolOutput, shot);
                }
            }
            Item::ImageGenerationCall => self.media(Media::Image, Source::Inline),
            Item::WebSearchCall
            | Item::ComputerCall
            | Item::LocalShellCall
            | Item::ShellCall
            | Item::ApplyPatchCall
            | Item::McpApprovalRequest => self.deep_object(Text::ToolCall, o),
            Item::McpListTools => self.deep_object(Text::ToolDefinition, o),
            Item::McpCall => {
                self.deep(Text::ToolCall, o.get_mut("arguments"));
                self.deep(Text::ToolCall, o.get_mut("name"));
                self.deep(Text::ToolOutput, o.get_mut("output"));
                self.deep(Text::ToolOutput, o.get_mut("error"));
            }
            Item::McpApprovalResponse => self.deep(Text::Prompt, o.get_mut("reason")),
            Item::ToolSearchCall => self.deep(Text::ToolCall, o.get_mut("arguments")),
            Item::ToolSearchOutput | Item::AdditionalTools => {
                if let Some(tools) = o.get_mut("tools") {
                    self.responses_tools(tools, &at.key("tools"))?;
                }
            }
            Item::ConfigurationUpdate => self.deep(
                Text::ToolDefinition,
                o.get_mut("text")
                    .and_then(|t| t.get_mut("format"))
                    .and_then(|f| f.get_mut("schema")),
            ),
            // The provider's own encrypted summary of earlier context, and the request for one.
            Item::Compaction | Item::CompactionTrigger => {}
            Item::Program => self.string(Text::ToolCall, o.get_mut("code")),
            Item::ProgramOutput => self.string(Text::ToolOutput, o.get_mut("result")),
            Item::FileSearchCall
            | Item::CodeInterpreterCall
            | Item::LocalShellCallOutput
            | Item::ShellCallOutput
            | Item::ApplyPatchCallOutput => self.deep_object(Text::ToolOutput, o),
        }
        Ok(())
    }

    /// A tool's output: a string, parts (checked as a message's are) or a value.
    fn tool_output(&mut self, v: Option<&mut Value>, at: &At<'_>) -> Result<(), FieldError> {
        match v {
            Some(Value::String(s)) => self.say(Text::ToolOutput, s),
            Some(Value::Array(parts)) => {
                for (j, p) in parts.iter_mut().enumerate() {
                    self.part(Text::ToolOutput, p, &at.index(j))?;
                }
            }
            other => self.deep(Text::ToolOutput, other),
        }
        Ok(())
    }

    /// A media part in the Responses shape (`input_image`, `input_file`, `input_audio`, a
    /// computer screenshot) or a chat one met in depth: its source and capability.
    fn response_media(&mut self, said: Text, o: &mut Map<String, Value>) {
        let t = o.get("type").and_then(Value::as_str).unwrap_or("");
        let media = match t {
            "input_audio" => Media::Audio,
            "input_file" | "file" => Media::File,
            _ => Media::Image,
        };
        let mut source = Source::Inline;
        if let Some(url) = url_source(o.get("image_url").or_else(|| o.get("file_url"))) {
            source = url;
        }
        let chat_url = o.get("image_url").and_then(|i| i.get("url"));
        if let Some(url) = url_source(chat_url) {
            source = url;
        }
        let chat_file_id = o
            .get("file")
            .and_then(Value::as_object)
            .is_some_and(|f| present(f, "file_id"));
        if present(o, "file_id") || chat_file_id {
            if source == Source::Url {
                self.cap(Capability::RemoteMedia);
            }
            source = Source::FileId;
        }
        self.string(said, o.get_mut("filename"));
        self.media(media, source);
    }

    fn part(&mut self, said: Text, p: &mut Value, at: &At<'_>) -> Result<(), FieldError> {
        let Value::Object(o) = p else { return Ok(()) };
        let kind = o.get("type").and_then(Value::as_str).unwrap_or("");
        let Some(kind) = Part::parse(kind) else {
            return Err(self.bad_type(at.key("type"), kind));
        };
        let known: &[&str] = match kind {
            Part::InputText => {
                self.string(said, o.get_mut("text"));
                &["text", "type"]
            }
            Part::OutputText => {
                self.string(said, o.get_mut("text"));
                &["annotations", "logprobs", "text", "type"]
            }
            Part::Refusal => {
                self.string(said, o.get_mut("refusal"));
                &["refusal", "type"]
            }
            Part::InputAudio => {
                self.media(Media::Audio, Source::Inline);
                &["input_audio", "type"]
            }
            Part::InputImage => {
                self.response_media(said, o);
                &["detail", "file_id", "image_url", "type"]
            }
            Part::InputFile => {
                self.response_media(said, o);
                &["file_data", "file_id", "file_url", "filename", "type"]
            }
        };
        self.keys(o, known, at)
    }

    /// Responses tools: functions and custom tools run by the client; the built-in tools run by
    /// the provider are capabilities.
    fn responses_tools(&mut self, v: &mut Value, at: &At<'_>) -> Result<(), FieldError> {
        if v.as_array().is_some_and(|a| !a.is_empty()) {
            self.read.tools = true;
        }
        for (i, t) in list(v).enumerate() {
            let kind = t.get("type").and_then(Value::as_str).unwrap_or("");
            let Some(tool) = ResponsesTool::parse(kind) else {
                return Err(self.bad_type(at.index(i).key("type"), kind));
            };
            // OpenAI's own tools come with a definition it writes into the prompt.
            if !matches!(kind, "function" | "custom" | "namespace") {
                self.read.defined_tools += 1;
            }
            let cap = match tool {
                ResponsesTool::Client => {
                    for k in ["description", "parameters", "format", "output_schema"] {
                        self.deep(Text::ToolDefinition, t.get_mut(k));
                    }
                    None
                }
                ResponsesTool::Shell => {
                    let env = t.get("environment").and_then(|e| e.get("type"));
                    env.is_some_and(|e| e != "local")
                        .then_some(Capability::CodeExecution)
                }
                ResponsesTool::Namespace => {
                    self.deep(Text::ToolDefinition, t.get_mut("description"));
                    if let Some(inner) = t.get_mut("tools") {
                        self.responses_tools(inner, &at.index(i).key("tools"))?;
                    }
                    None
                }
                ResponsesTool::ProgrammaticToolCalling => Some(Capability::CodeExecution),
                ResponsesTool::WebSearch => Some(Capability::WebSearch),
                ResponsesTool::FileSearch => Some(Capability::Files),
                ResponsesTool::CodeInterpreter => Some(Capability::CodeExecution),
                ResponsesTool::Mcp => Some(Capability::Mcp),
            };
            if let Some(c) = cap {
                self.cap(c);
                // Bounded by the request's `max_tool_calls`, read with the other counts.
                self.provider_tool(None);
            }
        }
        Ok(())
    }
}
