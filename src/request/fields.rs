//! What a client may send, per client protocol: one table of fields per endpoint, as data. A
//! field in no table is refused with a 400 that names it and the setting that would let it
//! through (`[settings.request] unknown_fields`), or dropped when the policy says so. Fields that
//! make a provider keep, fetch, run or send on something are [`Capability`]s: facts of the
//! request that `decide` matches against what the policy grants each provider; they never pass
//! because the client sent them. Fields that hold what the model reads are [`Nested`]: the walk
//! ([`super::walk`]) reads them in depth, once.

use crate::policy::Capability;

use super::Endpoint;

/// How a known field is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Forwarded as sent, on every wire that can express it.
    Pass,
    /// A count: a non-negative integer (or `null`); a string or a fraction is refused by name.
    Count,
    /// An integer of either sign (or `null`), such as `seed`.
    Integer,
    /// Meridian's own (the OpenRouter-style `provider` object, `models`): read into the facts,
    /// removed.
    Meridian,
    /// A capability whenever its value is not the inert one (`null`, `false`).
    Cap(Capability),
    /// A capability only when `true` (`store`).
    CapIfTrue(Capability),
    /// A billing choice: `priced_options` when its value selects a price dearer than the
    /// catalog's (a `service_tier` of `priority` or `scale`, audio output).
    Priced,
    /// What the model reads, walked in depth by [`super::walk`]: messages, parts, tools.
    Nested(Nested),
}

/// The fields that hold what the model reads. The walk matches on this without a default arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nested {
    /// Chat `messages`.
    ChatMessages,
    /// Chat `tools`.
    ChatTools,
    /// Chat's legacy `functions`.
    ChatFunctions,
    /// Chat `response_format` (its `json_schema`).
    ResponseFormat,
    /// Chat `prediction` (its `content`).
    Prediction,
    /// A string or a list of strings (token arrays are not text): completions' `prompt` and
    /// `suffix`, embeddings' `input`, Responses' `instructions`.
    Strings,
    /// Anthropic `system`: a string or blocks.
    System,
    /// Anthropic `messages`.
    MessagesMessages,
    /// Anthropic `tools`.
    MessagesTools,
    /// Responses `input`: a string or items.
    Input,
    /// Responses `tools`.
    ResponsesTools,
    /// Responses `text` (its `format.schema`).
    TextFormat,
    /// Responses `prompt`: a stored prompt template (`files`) whose `variables` the model reads.
    Prompt,
}

use self::Nested as N;
use Field::{Cap, CapIfTrue, Count, Integer, Meridian, Pass, Priced};

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
    ("audio", Priced),
    ("data_sources", Cap(Capability::DataSources)),
    ("frequency_penalty", Pass),
    ("function_call", Pass),
    ("functions", Field::Nested(N::ChatFunctions)),
    ("logit_bias", Pass),
    ("logprobs", Pass),
    ("max_completion_tokens", Count),
    ("max_tokens", Count),
    ("messages", Field::Nested(N::ChatMessages)),
    ("metadata", Pass),
    ("modalities", Priced),
    ("model", Pass),
    ("models", Meridian),
    ("n", Count),
    ("parallel_tool_calls", Pass),
    ("prediction", Field::Nested(N::Prediction)),
    ("presence_penalty", Pass),
    ("prompt_cache_key", Pass),
    ("provider", Meridian),
    ("reasoning_effort", Pass),
    ("response_format", Field::Nested(N::ResponseFormat)),
    ("safety_identifier", Pass),
    ("seed", Integer),
    ("service_tier", Priced),
    ("stop", Pass),
    ("store", CapIfTrue(Capability::Store)),
    ("stream", Pass),
    ("stream_options", Pass),
    ("temperature", Pass),
    ("tool_choice", Pass),
    ("tools", Field::Nested(N::ChatTools)),
    ("top_logprobs", Count),
    ("top_p", Pass),
    ("user", Pass),
    ("verbosity", Pass),
    ("web_search_options", Cap(Capability::WebSearch)),
];

/// `POST /v1/completions`. Sorted by name.
pub const COMPLETIONS: &[(&str, Field)] = &[
    ("best_of", Count),
    ("echo", Pass),
    ("frequency_penalty", Pass),
    ("logit_bias", Pass),
    ("logprobs", Count),
    ("max_tokens", Count),
    ("model", Pass),
    ("n", Count),
    ("presence_penalty", Pass),
    ("prompt", Field::Nested(N::Strings)),
    ("provider", Meridian),
    ("seed", Integer),
    ("stop", Pass),
    ("stream", Pass),
    ("stream_options", Pass),
    ("suffix", Field::Nested(N::Strings)),
    ("temperature", Pass),
    ("top_p", Pass),
    ("user", Pass),
];

/// `POST /v1/embeddings`. Sorted by name.
pub const EMBEDDINGS: &[(&str, Field)] = &[
    ("dimensions", Count),
    ("encoding_format", Pass),
    ("input", Field::Nested(N::Strings)),
    ("model", Pass),
    ("provider", Meridian),
    ("user", Pass),
];

/// `POST /v1/messages` (Anthropic's create-message parameters). Sorted by name.
pub const MESSAGES: &[(&str, Field)] = &[
    ("container", Cap(Capability::CodeExecution)),
    ("context_management", Pass),
    ("max_tokens", Count),
    ("mcp_servers", Cap(Capability::Mcp)),
    ("messages", Field::Nested(N::MessagesMessages)),
    ("metadata", Pass),
    ("model", Pass),
    ("models", Meridian),
    ("provider", Meridian),
    ("service_tier", Pass),
    ("stop_sequences", Pass),
    ("stream", Pass),
    ("system", Field::Nested(N::System)),
    ("temperature", Pass),
    ("thinking", Pass),
    ("tool_choice", Pass),
    ("tools", Field::Nested(N::MessagesTools)),
    ("top_k", Count),
    ("top_p", Pass),
];

/// `POST /v1/responses` (OpenAI's create-response parameters). Sorted by name.
/// `previous_response_id` is Meridian's: the id it returned, sealed, which names the provider
/// that holds the response.
pub const RESPONSES: &[(&str, Field)] = &[
    ("background", CapIfTrue(Capability::Store)),
    ("conversation", Cap(Capability::Store)),
    ("include", Pass),
    ("input", Field::Nested(N::Input)),
    ("instructions", Field::Nested(N::Strings)),
    ("max_output_tokens", Count),
    ("max_tool_calls", Count),
    ("metadata", Pass),
    ("model", Pass),
    ("models", Meridian),
    ("parallel_tool_calls", Pass),
    ("previous_response_id", Meridian),
    ("prompt", Field::Nested(N::Prompt)),
    ("prompt_cache_key", Pass),
    ("provider", Meridian),
    ("reasoning", Pass),
    ("safety_identifier", Pass),
    ("service_tier", Priced),
    ("store", CapIfTrue(Capability::Store)),
    ("stream", Pass),
    ("stream_options", Pass),
    ("temperature", Pass),
    ("text", Field::Nested(N::TextFormat)),
    ("tool_choice", Pass),
    ("tools", Field::Nested(N::ResponsesTools)),
    ("top_logprobs", Count),
    ("top_p", Pass),
    ("truncation", Pass),
    ("user", Pass),
];

/// Keys of one chat message.
pub const CHAT_MESSAGE: &[&str] = &[
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
pub const MESSAGES_MESSAGE: &[&str] = &["content", "role"];
/// Keys of a Responses message item.
pub const RESPONSES_MESSAGE: &[&str] = &["content", "id", "phase", "role", "status", "type"];
/// Keys of a Responses function call.
pub const FUNCTION_CALL: &[&str] = &[
    "arguments",
    "call_id",
    "caller",
    "id",
    "name",
    "namespace",
    "status",
    "type",
];
/// Keys of a Responses function call's output.
pub const FUNCTION_CALL_OUTPUT: &[&str] = &[
    "call_id",
    "caller",
    "id",
    "name",
    "namespace",
    "output",
    "status",
    "type",
];

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

/// A field of `endpoint`'s table (first: its own type wins), or one of the engines' sampling
/// options on an endpoint that generates text: its name (static, for errors that name it) and how it is treated.
pub fn entry(endpoint: Endpoint, name: &str) -> Option<(&'static str, Field)> {
    let table = table(endpoint);
    if let Ok(i) = table.binary_search_by(|(k, _)| crate::policy::cmp_names(k, name)) {
        return Some(table[i]);
    }
    if endpoint == Endpoint::Embeddings {
        return None;
    }
    let i = ENGINE_SAMPLING
        .binary_search_by(|k| crate::policy::cmp_names(k, name))
        .ok()?;
    Some((ENGINE_SAMPLING[i], Pass))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_sorted_so_lookups_find_every_field() {
        for t in [CHAT, COMPLETIONS, EMBEDDINGS, MESSAGES, RESPONSES] {
            assert!(t.windows(2).all(|w| w[0].0 < w[1].0), "{t:?}");
        }
        for t in [
            ENGINE_SAMPLING,
            CHAT_MESSAGE,
            MESSAGES_MESSAGE,
            RESPONSES_MESSAGE,
            FUNCTION_CALL,
            FUNCTION_CALL_OUTPUT,
        ] {
            assert!(t.windows(2).all(|w| w[0] < w[1]), "{t:?}");
        }
    }
}
