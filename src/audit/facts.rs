//! What a log line keeps of the decision's inputs (`facts`), so that `meridian replay` can
//! decide the request again under another policy: never prompt text, never a header's value
//! (a digest), never a conversation key (the seed drawn from it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::facts::{Endpoint, ProviderPrefs, RequestFacts};
use crate::policy::Policy;

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

/// The decision's first choice: the provider it would try first and where it processes data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct First {
    pub provider: String,
    pub location: String,
    /// Where it keeps what it retains, when its entry says so apart from where it processes
    /// (a line written before storage was recorded has none: where it processes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
}

/// What a log line keeps of the facts a decision read and of its first choice (`facts` in the
/// line), beyond what the line says anyway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    pub endpoint: Endpoint,
    #[serde(default, skip_serializing_if = "is_default")]
    pub stream: bool,
    /// The request's own privacy flags (`x-meridian-privacy`, `provider`) by name; the
    /// tenant's come from the policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub privacy: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_region: Option<String>,
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub tools: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub media_parts: u64,
    /// OpenRouter's `models`, when the request sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub betas: Vec<String>,
    /// The request's `provider` preferences, when it sent any.
    #[serde(default, skip_serializing_if = "is_default")]
    pub provider: ProviderPrefs,
    /// Each header a rule of the policy names: a digest of its value ([`header_digest`]), or
    /// `null` when the request did not send it. Never the value itself (a rule may name a
    /// header whose value is the client's business); headers no rule names are not kept. Lines
    /// from before digests held the value, and are read as such.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Option<String>>,
    /// The weighted spread's seed (hex) when a conversation key chose it; without one the
    /// request id is the seed. The key itself is never kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    /// Measured times to the first byte the decision read (a latency sort).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measured_ms: Vec<(String, u32)>,
    /// The provider that keeps the previous response a follow-up continues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// The decision's first choice (before providers cooling down are skipped); none when the
    /// policy refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<First>,
}

/// What the log keeps of a header's value: `sha256:` and the first 16 bytes of its SHA-256, in
/// hex. A rule's condition is presence or an exact value, so the digest decides it as the value
/// would.
pub fn header_digest(value: &str) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(value.as_bytes());
    let mut out = String::with_capacity(7 + 32);
    out.push_str("sha256:");
    crate::trace::hex_into(&mut out, &d[..16]);
    out
}

impl Inputs {
    /// What the log keeps of `facts`, as `policy` decided them.
    pub fn of(
        policy: &Policy,
        facts: &RequestFacts,
        first: Option<First>,
        pinned: Option<&str>,
    ) -> Inputs {
        let mut headers = BTreeMap::new();
        for name in policy.rule_header_names() {
            let value = facts
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| header_digest(v));
            headers.insert(name.to_string(), value);
        }
        Inputs {
            endpoint: facts.endpoint,
            stream: facts.stream,
            privacy: facts
                .privacy
                .names()
                .into_iter()
                .map(str::to_string)
                .collect(),
            edge_region: facts.edge_region.clone(),
            input_tokens: facts.input_tokens,
            output_tokens: facts.output_tokens,
            tools: facts.tools,
            media_parts: facts.media_parts,
            models: facts.models.clone(),
            betas: facts.betas.clone(),
            provider: facts.prefs.clone(),
            headers,
            seed: (facts.affinity.is_some() || facts.seed.is_some())
                .then(|| crate::trace::to_hex(&facts.spread_seed().to_be_bytes())),
            measured_ms: facts.measured_ms.clone(),
            pinned: pinned.map(str::to_string),
            first,
        }
    }
}
