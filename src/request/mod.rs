//! The one reading of a request body. A body is walked once ([`read`]) and every node of it
//! classified once: text a model reads ([`Text`]), a media or file reference ([`Media`] from a
//! [`Source`]), a tool definition, call or output, an option, a capability. Every stage reads
//! what this module found: the field tables and capabilities, the personal-data scan and
//! redaction (through the same walk, [`texts`]), the input and output bounds of the
//! reservation, and the facts `decide`, `explain`, `diff` and `replay` read. Adding an item
//! type or a content part is one change in [`kinds`]; the walk's exhaustive matches fail the
//! build until it says what the new type is.
//!
//! This is data: it imports nothing above it but the policy model.

pub mod fields;
pub mod kinds;
pub mod prefix;
#[cfg(test)]
mod tests;
mod walk;

use serde_json::{Map, Value};

use crate::policy::{CapSet, Capability, UnknownFields};

pub use fields::Field;
pub use kinds::item_type;

/// The inference endpoints Meridian forwards.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    /// Anthropic's Messages API, for clients built on Anthropic's SDKs.
    Messages,
    /// OpenAI's Responses API.
    Responses,
}

impl Endpoint {
    pub fn from_path(path: &str) -> Option<Endpoint> {
        match path {
            "/v1/chat/completions" => Some(Endpoint::Chat),
            "/v1/completions" => Some(Endpoint::Completions),
            "/v1/embeddings" => Some(Endpoint::Embeddings),
            "/v1/messages" => Some(Endpoint::Messages),
            "/v1/responses" => Some(Endpoint::Responses),
            _ => None,
        }
    }

    /// The path clients call.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Messages => "/v1/messages",
            Endpoint::Responses => "/v1/responses",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "messages",
            Endpoint::Responses => "responses",
        }
    }
}

/// Tokens counted for each image, audio or file part, in the input estimate and the
/// reservation: more than the largest any of the hosted APIs bills for one shown inline
/// (OpenAI's high-detail tiles, Anthropic's ~1,600 per image).
pub const TOKENS_PER_MEDIA_PART: u64 = 2_000;

/// Input a provider adds to a request that offers tools: the system prompt that enables tool
/// use. Anthropic's tool-use pricing reference lists 159 to 530 tokens by model and
/// `tool_choice` (346 for current models); OpenAI states none, and its function definitions
/// are rendered in fewer tokens than their JSON has bytes.
pub const TOOL_PROMPT_TOKENS: u64 = 1_024;

/// Input a provider adds for each tool it defines itself (the body names it, the provider
/// writes its definition): Anthropic's reference lists 245 (bash), 700 (text editor) and 735
/// per computer-use tool, plus 466 to 499 of system prompt.
pub const DEFINED_TOOL_TOKENS: u64 = 1_536;

/// The most output tokens a request may ask for per completion where the catalog states no
/// `max_output` for its model: above what any model Meridian knows of generates (the largest
/// published limits are 128k tokens), so that a bound is a bound and counter arithmetic never
/// overflows.
pub const MAX_OUTPUT_TOKENS: u64 = 1 << 20;

/// The most completions a request may ask for (`n`, `best_of`): OpenAI's own limit.
pub const MAX_COMPLETIONS: u64 = 128;

/// What a piece of text is to the model. Every kind is scanned for personal data and counted in
/// the input estimate; the kind says where it stood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    /// The conversation: messages, `system`, `instructions`, a prompt, embeddings' input.
    Prompt,
    /// What the model said in an earlier turn (an assistant message's text).
    Reply,
    /// A tool's name, description or schema, or a structured-output schema.
    ToolDefinition,
    /// The arguments or input of a tool call the model made in an earlier turn.
    ToolCall,
    /// What a tool returned (a function's output, a server tool's results, retrieved documents).
    ToolOutput,
    /// The model's reasoning from an earlier turn (`thinking`, `reasoning_content`, summaries).
    Reasoning,
}

/// What a media part holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Image,
    Audio,
    /// A PDF or other document.
    File,
}

/// Where a media part's content comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// In the body (base64, a `data:` URL): its bytes are counted.
    Inline,
    /// A URL the provider fetches itself: `remote_media`.
    Url,
    /// A file the provider holds, by id: `files`.
    FileId,
    /// The provider's own earlier output, by id (a chat assistant message's `audio.id`).
    Earlier,
}

impl Source {
    /// The capability a part from this source needs.
    pub fn capability(self) -> Option<Capability> {
        match self {
            Source::Url => Some(Capability::RemoteMedia),
            Source::FileId => Some(Capability::Files),
            Source::Inline | Source::Earlier => None,
        }
    }
}

/// What one reading of a body found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    /// What the request asks providers to do beyond answering.
    pub capabilities: CapSet,
    /// `anthropic-beta` values an Anthropic client sent.
    pub betas: Vec<String>,
    /// Unknown fields removed under `unknown_fields = "drop"`, as JSON paths.
    pub dropped: Vec<String>,
    /// Bytes of text the model reads.
    pub text_bytes: u64,
    /// Media parts of any source.
    pub media: u64,
    /// Media parts whose content the body does not show (by URL or by id).
    pub unseen_media: u64,
    /// The output the request asks for per completion (`max_tokens` and the like; the largest
    /// when several are set).
    pub max_output: Option<u64>,
    /// How many completions it asks for (`n`, or `best_of` when larger; at least 1).
    pub completions: u64,
    /// Whether it offers the model tools.
    pub tools: bool,
    /// Tools whose definition the provider writes into the prompt itself (its own client tools,
    /// such as Anthropic's `bash_*` or OpenAI's `computer_use_preview`, and the tools it runs).
    pub defined_tools: u64,
    /// Tools the provider runs itself (web search and fetch, file search, code execution, MCP):
    /// each call's results are billed as input the body does not show, and each call has the
    /// model read the conversation again.
    pub provider_tools: u64,
    /// How many calls of those tools the request allows in all, where every one states a
    /// bound (Anthropic's `max_uses` on each server tool).
    pub provider_tool_uses: Option<u64>,
    /// The request's own bound on the calls of provider-run tools (Responses `max_tool_calls`).
    pub provider_tool_calls: Option<u64>,
    /// Whether the provider is asked to read history the body does not show
    /// (`previous_response_id`, `conversation`, `item_reference`).
    pub stored_history: bool,
}

impl Reading {
    /// The most output the request may generate, all completions together.
    pub fn output_bound(&self) -> Option<u64> {
        self.max_output
            .map(|m| m.saturating_mul(self.completions.max(1)))
    }

    /// Input the provider adds to what the body shows: the tool-use system prompt and the
    /// definitions of its own tools ([`TOOL_PROMPT_TOKENS`], [`DEFINED_TOOL_TOKENS`]). Per
    /// message overheads (a few tokens each) are covered by the estimate of one token per byte
    /// of the body: every message's JSON has more bytes than its overhead has tokens.
    pub fn overhead_tokens(&self) -> u64 {
        let prompt = if self.tools { TOOL_PROMPT_TOKENS } else { 0 };
        prompt.saturating_add(self.defined_tools.saturating_mul(DEFINED_TOOL_TOKENS))
    }

    /// The most times the model may read the conversation in one request: once, plus once per
    /// call of a provider-run tool; `None` when the request lets the provider run tools without
    /// stating how many calls (no bound exists).
    pub fn model_reads(&self) -> Option<u64> {
        if self.provider_tools == 0 {
            return Some(1);
        }
        self.provider_tool_calls
            .or(self.provider_tool_uses)
            .map(|n| n.saturating_add(1))
    }
}

/// Why a body does not fit its tables: always the client's to fix (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as a JSON path (`messages[2].foo`).
    pub path: String,
    /// The top-level field, where the error is about one field's value.
    pub param: Option<&'static str>,
    pub message: String,
    pub code: &'static str,
}

/// Reads a parsed body once: checks every field against its endpoint's tables (unknown fields
/// refused, or removed under `unknown`), collects capabilities and `anthropic-beta` values (from
/// `headers`, Anthropic clients), counts text and media, reads the output bounds as strict
/// integers, and hands every text the model reads to `text`.
pub fn read(
    endpoint: Endpoint,
    body: &mut Map<String, Value>,
    headers: &[(String, String)],
    unknown: UnknownFields,
    text: &mut dyn FnMut(Text, &mut String),
) -> Result<Reading, FieldError> {
    let mut reading = Reading {
        completions: 1,
        ..Reading::default()
    };
    walk::body(endpoint, body, Some(unknown), &mut reading, text)?;
    if endpoint == Endpoint::Messages {
        for (_, v) in headers.iter().filter(|(k, _)| k == "anthropic-beta") {
            for beta in v.split(',').map(str::trim).filter(|b| !b.is_empty()) {
                if let Some(c) = crate::policy::capability::beta_capability(beta) {
                    reading.capabilities.insert(c);
                }
                reading.betas.push(beta.to_string());
            }
        }
    }
    Ok(reading)
}

/// Hands every text the model reads in a body [`read`] already checked to `text`, which may
/// change it (redaction): the same walk, so what is redacted is exactly what was scanned.
pub fn texts(
    endpoint: Endpoint,
    body: &mut Map<String, Value>,
    text: &mut dyn FnMut(Text, &mut String),
) -> Reading {
    let mut reading = Reading::default();
    // Keys were checked by `read`; a count `read` refused never gets here.
    let _ = walk::body(endpoint, body, None, &mut reading, text);
    reading
}
