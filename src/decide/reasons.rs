//! Why providers are excluded and why a request is refused: kept as data while deciding,
//! rendered (text or JSON) only where shown.

use std::fmt;

use serde::Serialize;

use super::Decision;
use crate::policy::{Capability, ProviderId, RuleId, TenantId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonKind {
    Residency,
    Privacy,
    Scope,
    Price,
    /// What the request asks the provider to do (keep, fetch, run, send on) is not granted.
    Capability,
    /// The provider failed repeatedly and every node skips it for a while (`[settings.health]`).
    Health,
    /// The model cannot take a request this long (`context_window`, `max_output`).
    Context,
    /// Every allowed replica of a pool is over its queue bound or down (`[providers.pool]`).
    Load,
}

impl ReasonKind {
    pub fn name(self) -> &'static str {
        match self {
            ReasonKind::Residency => "residency",
            ReasonKind::Privacy => "privacy",
            ReasonKind::Scope => "scope",
            ReasonKind::Price => "price",
            ReasonKind::Capability => "capability",
            ReasonKind::Health => "health",
            ReasonKind::Context => "context",
            ReasonKind::Load => "load",
        }
    }
}

/// Why one constraint excludes one provider. Kept as data and rendered only when shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason<'p> {
    /// What imposed the constraint: shown as "rule `x`", "tenant `y`" or "request".
    pub by: Who<'p>,
    pub kind: ReasonKind,
    pub message: Message<'p>,
}

/// Who imposed a constraint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Who<'p> {
    Rule(&'p RuleId),
    Tenant(&'p TenantId),
    Request,
    /// The policy's `allow_anonymous`, for a caller without a tenant key.
    Anonymous,
    /// `[settings.health]`, from failures every node records in the shared store.
    Health,
    /// A pool's load summary in the shared store (`[providers.pool]`).
    Pool,
}

impl fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Rule(id) => write!(f, "rule `{id}`"),
            Who::Tenant(id) => write!(f, "tenant `{id}`"),
            Who::Request => f.write_str("request"),
            Who::Anonymous => f.write_str("anonymous access"),
            Who::Health => f.write_str("provider health:"),
            Who::Pool => f.write_str("pool load:"),
        }
    }
}

/// What is wrong with the provider, in words when displayed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Message<'p> {
    Outside {
        location: &'p str,
        allowed: &'p [crate::policy::Text],
    },
    /// Keeps what it retains outside where the constraint allows (`require.storage`).
    StoredOutside {
        location: &'p str,
        allowed: &'p [crate::policy::Text],
    },
    NotSelfHosted,
    NoZdr,
    TrainsOnInputs,
    /// The provider's entry does not say whether it trains on inputs: unknown.
    TrainingUnstated,
    CollectsData {
        retention_days: Option<u32>,
        trains_on_inputs: Option<bool>,
    },
    NotAllowed,
    Denied,
    /// Anonymous callers may not spend the operator's key for this provider.
    SpendsKey,
    AbovePrice {
        what: &'static str,
        price: f64,
        limit: f64,
    },
    NoPrice {
        what: &'static str,
    },
    /// The provider's wire has no way to carry a capability the request uses.
    WireLacks {
        capability: Capability,
        wire: &'static str,
    },
    /// The policy does not grant the provider a capability the request uses.
    NotGranted {
        capability: Capability,
    },
    /// A matched rule withdraws a capability the provider is granted.
    Withdrawn {
        capability: Capability,
    },
    /// The request asks the provider to keep the conversation on a route that requires zero
    /// data retention (or no data collection).
    StoreOnZdr,
    /// An `anthropic-beta` value the provider's `anthropic_beta` list does not match.
    BetaNotAllowed,
    /// The request (input plus output) is longer than the model's context window.
    ContextTooSmall {
        model: &'p str,
        window: u64,
        input: u64,
        output: u64,
    },
    /// The request asks for more output than the model generates.
    OutputTooLong {
        model: &'p str,
        asked: u64,
        most: u64,
    },
    /// Skipped after repeated failures, until a time (Unix seconds).
    CoolingDown {
        until_s: u64,
        failures: u64,
        window_s: u64,
    },
    /// Every replica of the pool the request may use has `max_queue` waiting requests or more
    /// (`queued`), or is down (`down`).
    PoolFull {
        queued: usize,
        down: usize,
        max_queue: u32,
    },
}

impl fmt::Display for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Message::Outside { location, allowed } => write!(
                f,
                "processes data in `{location}`, outside the allowed `{}`",
                allowed.join(", ")
            ),
            Message::StoredOutside { location, allowed } => write!(
                f,
                "keeps data in `{location}`, outside the allowed storage `{}`",
                allowed.join(", ")
            ),
            Message::NotSelfHosted => f.write_str("is not self-hosted (local-only)"),
            Message::NoZdr => f.write_str("does not offer zero data retention"),
            Message::TrainsOnInputs => f.write_str("may train on inputs"),
            Message::TrainingUnstated => f.write_str(
                "does not say whether it trains on inputs, so it may (the policy can state `trains_on_inputs = false` for it)",
            ),
            Message::CollectsData {
                retention_days,
                trains_on_inputs,
            } => {
                let days = retention_days
                    .map_or_else(|| "not stated".to_string(), |d| format!("{d} days"));
                let trains = trains_on_inputs.map_or("not stated", |t| if t { "true" } else { "false" });
                write!(f, "collects data (retention {days}, trains on inputs: {trains})")
            }
            Message::NotAllowed => f.write_str("is not in the allowed providers"),
            Message::Denied => f.write_str("is denied"),
            Message::SpendsKey => f.write_str(
                "needs the operator's provider key, which callers without a tenant key may not spend (send a tenant key; the policy can allow this with `allow_anonymous = \"paid\"`)",
            ),
            Message::AbovePrice { what, price, limit } => write!(
                f,
                "{what} price {price} USD/M tokens is above the maximum {limit}"
            ),
            Message::NoPrice { what } => write!(
                f,
                "has no {what} price, so the maximum price cannot be proven"
            ),
            Message::WireLacks { capability, wire } => write!(
                f,
                "uses `{}` ({}), which the provider's `{wire}` wire cannot carry for this endpoint",
                capability.name(),
                fields_of(capability)
            ),
            Message::NotGranted { capability } => write!(
                f,
                "uses `{}` ({}), which the policy does not grant this provider (grant it with `capabilities = [\"{}\"]` on the provider)",
                capability.name(),
                fields_of(capability),
                capability.name()
            ),
            Message::Withdrawn { capability } => write!(
                f,
                "withdraws `{}` ({}), which the request uses",
                capability.name(),
                fields_of(capability)
            ),
            Message::StoreOnZdr => f.write_str(
                "requires zero data retention, and the request asks the provider to store the conversation (`store: true`)",
            ),
            Message::BetaNotAllowed => f.write_str(
                "sends an `anthropic-beta` value that the provider's `anthropic_beta` list does not allow",
            ),
            Message::ContextTooSmall {
                model,
                window,
                input,
                output,
            } => write!(
                f,
                "its model `{model}` has a context window of {window} tokens, less than this request's estimated {input} input and {output} output tokens"
            ),
            Message::OutputTooLong { model, asked, most } => write!(
                f,
                "its model `{model}` generates at most {most} output tokens; the request asks for {asked}"
            ),
            Message::CoolingDown {
                until_s,
                failures,
                window_s,
            } => write!(
                f,
                "cooling down until {} after {failures} failures within {window_s} s",
                crate::calendar::rfc3339(until_s)
            ),
            Message::PoolFull {
                queued,
                down,
                max_queue,
            } => match (queued, down) {
                (q, 0) => write!(
                    f,
                    "every allowed replica ({q}) has {max_queue} or more requests waiting (`max_queue`)"
                ),
                (0, d) => write!(f, "every allowed replica ({d}) is down"),
                (q, d) => write!(
                    f,
                    "every allowed replica is full ({q} with {max_queue} or more requests waiting, `max_queue`) or down ({d})"
                ),
            },
        }
    }
}

/// `{"by": "rule `x`", "kind": "residency", "message": "..."}`.
impl Serialize for Reason<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Reason", 3)?;
        st.serialize_field("by", &Shown(&self.by))?;
        st.serialize_field("kind", &self.kind)?;
        st.serialize_field("message", &Shown(&self.message))?;
        st.end()
    }
}

/// "rule `x` is denied": who imposed the constraint, then what is wrong.
impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.by, self.message)
    }
}

/// Serializes a value as its Display text.
struct Shown<'a, T>(&'a T);

impl<T: fmt::Display> Serialize for Shown<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

/// The request fields that turn a capability on, for messages.
pub fn fields_of(c: Capability) -> &'static str {
    match c {
        Capability::Store => "`store: true`",
        Capability::DataSources => "`data_sources`",
        Capability::Mcp => "`mcp_servers`, an `mcp_toolset` tool or the `mcp-client` beta",
        Capability::CodeExecution => {
            "a code execution tool, `container` or a `container_upload` block"
        }
        Capability::WebSearch => "a web search tool or `web_search_options`",
        Capability::WebFetch => "a web fetch tool",
        Capability::Files => "a provider-side file reference (`file_id`, `source.type = \"file\"`)",
        Capability::RemoteMedia => {
            "an image or document URL the provider would fetch (`image_url`, `source.type = \"url\"`)"
        }
        Capability::PricedOptions => {
            "`service_tier: \"priority\"` or `\"scale\"`, audio output (`audio`, `modalities`), or the `context-1m` or `extended-cache-ttl` beta"
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exclusion<'p> {
    pub provider: &'p ProviderId,
    pub reasons: Vec<Reason<'p>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

pub(super) fn refusal_for(d: &Decision, model: &str) -> Refusal {
    let residency_only = d
        .excluded
        .iter()
        .any(|e| e.reasons.iter().all(|r| r.kind == ReasonKind::Residency));
    let details = d
        .excluded
        .iter()
        .map(|e| {
            let why = e
                .reasons
                .iter()
                .map(Reason::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            format!("`{}`: {why}", e.provider)
        })
        .collect::<Vec<_>>()
        .join(" | ");
    // Some provider is out only for what the request asks it to do: removing those fields (or
    // a grant) is what would serve it, so that is what the refusal says.
    let capability_only = d.excluded.iter().any(|e| {
        !e.reasons.is_empty() && e.reasons.iter().all(|r| r.kind == ReasonKind::Capability)
    });
    if capability_only {
        return Refusal {
            status: 403,
            code: "capability_not_granted",
            message: format!(
                "This request asks the provider to do something the policy grants no allowed provider of `{model}`: remove those fields, or ask the operator to grant the capability. Excluded: {details}"
            ),
        };
    }
    if residency_only {
        Refusal {
            status: 451,
            code: "residency_violation",
            message: format!(
                "No provider allowed for a client in `{}` may serve `{model}`: the policy forbids sending this request where the remaining providers process data. Excluded: {details}",
                d.client_country
            ),
        }
    } else {
        Refusal {
            status: 403,
            code: "no_allowed_provider",
            message: format!(
                "No provider meets this request's privacy and scope requirements for `{model}`. Excluded: {details}"
            ),
        }
    }
}
