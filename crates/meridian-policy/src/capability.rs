//! Capabilities: what a request may ask a provider to do beyond reading the prompt and writing
//! an answer (keep it, fetch something, run something, send it on). The policy grants them per
//! provider and rules narrow them; a request never grants itself one.

use serde::{Deserialize, Serialize};

/// One capability. The discriminant is its bit in a [`CapSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// The provider keeps the conversation (OpenAI `store: true`).
    Store = 0,
    /// The provider reads the operator's data sources for the caller (Azure `data_sources`).
    DataSources = 1,
    /// The provider connects to MCP servers the request names (Anthropic `mcp_servers`, the
    /// `mcp_toolset` tool, the `mcp-client-*` beta).
    Mcp = 2,
    /// The provider runs code (Anthropic's code execution tool, `container`).
    CodeExecution = 3,
    /// The provider searches the web (Anthropic's web search tool, OpenAI `web_search_options`).
    WebSearch = 4,
    /// The provider fetches URLs (Anthropic's web fetch tool).
    WebFetch = 5,
    /// The request refers to files stored at the provider (`file_id`, `source.type = "file"`).
    Files = 6,
    /// The provider fetches media from a URL the request names (`image_url` with an http(s)
    /// URL, an image or document `source.type = "url"`).
    RemoteMedia = 7,
    /// The request chooses a way of billing dearer than the catalog's prices: OpenAI's
    /// `service_tier` `priority` or `scale`, audio output (`audio`, `modalities` with
    /// `audio`), Anthropic's long-context (`context-1m-*`) and one-hour cache
    /// (`extended-cache-ttl-*`) betas. Costs and reservations use the model's
    /// `option_price_factor`.
    PricedOptions = 8,
}

impl Capability {
    pub const ALL: [Capability; 9] = [
        Capability::Store,
        Capability::DataSources,
        Capability::Mcp,
        Capability::CodeExecution,
        Capability::WebSearch,
        Capability::WebFetch,
        Capability::Files,
        Capability::RemoteMedia,
        Capability::PricedOptions,
    ];

    /// The name the policy and the audit use.
    pub fn name(self) -> &'static str {
        CAPABILITY_NAMES[self as usize]
    }

    pub fn from_name(name: &str) -> Option<Capability> {
        CAPABILITY_NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Capability::ALL[i])
    }
}

/// Names, in bit order.
pub const CAPABILITY_NAMES: &[&str] = &[
    "store",
    "data_sources",
    "mcp",
    "code_execution",
    "web_search",
    "web_fetch",
    "files",
    "remote_media",
    "priced_options",
];

/// A set of capabilities, as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CapSet(pub u16);

impl CapSet {
    pub const EMPTY: CapSet = CapSet(0);
    /// What a provider is granted when its entry says nothing: a hosted provider may fetch media
    /// from public URLs the request names; a self-hosted engine may not (it would fetch from
    /// inside the operator's network).
    pub const HOSTED_DEFAULT: CapSet = CapSet(1 << Capability::RemoteMedia as u16);

    pub fn of(caps: &[Capability]) -> CapSet {
        let mut s = CapSet::EMPTY;
        for c in caps {
            s.insert(*c);
        }
        s
    }

    pub fn contains(self, c: Capability) -> bool {
        self.0 & (1 << c as u16) != 0
    }

    pub fn insert(&mut self, c: Capability) {
        self.0 |= 1 << c as u16;
    }

    pub fn union(self, o: CapSet) -> CapSet {
        CapSet(self.0 | o.0)
    }

    pub fn intersect(self, o: CapSet) -> CapSet {
        CapSet(self.0 & o.0)
    }

    /// What `self` has that `o` lacks.
    pub fn minus(self, o: CapSet) -> CapSet {
        CapSet(self.0 & !o.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }

    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Capability::name).collect()
    }
}

/// `anthropic-beta` values an Anthropic provider accepts when its entry names none: betas that
/// only change how the model generates, never what the provider keeps, fetches, runs or sends
/// on. Betas that do (`mcp-client-*`, `code-execution-*`, `web-fetch-*`, `files-api-*`,
/// `skills-*`), and those that change the price (`context-1m-*`, `extended-cache-ttl-*`:
/// `priced_options`), are capabilities and need the provider's grant as well.
pub const DEFAULT_ANTHROPIC_BETAS: &[&str] = &[
    "prompt-caching-*",
    "extended-cache-ttl-*",
    "interleaved-thinking-*",
    "fine-grained-tool-streaming-*",
    "token-efficient-tools-*",
    "context-1m-*",
    "output-128k-*",
    "max-tokens-3-5-sonnet-*",
];

/// The capability an `anthropic-beta` value turns on, if any.
pub fn beta_capability(beta: &str) -> Option<Capability> {
    let b = beta.trim().to_ascii_lowercase();
    let starts = |p: &str| b.starts_with(p);
    if starts("mcp-client-") {
        Some(Capability::Mcp)
    } else if starts("code-execution-") || starts("skills-") {
        Some(Capability::CodeExecution)
    } else if starts("web-fetch-") {
        Some(Capability::WebFetch)
    } else if starts("web-search-") {
        Some(Capability::WebSearch)
    } else if starts("files-api-") {
        Some(Capability::Files)
    } else if starts("context-1m-") || starts("extended-cache-ttl-") {
        Some(Capability::PricedOptions)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_bits_agree() {
        for (i, c) in Capability::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert_eq!(Capability::from_name(c.name()), Some(*c));
        }
        assert_eq!(Capability::from_name("stores"), None);
        let s = CapSet::of(&[Capability::Store, Capability::Files]);
        assert_eq!(s.names(), vec!["store", "files"]);
        assert_eq!(
            s.minus(CapSet::of(&[Capability::Files])).names(),
            vec!["store"]
        );
    }

    #[test]
    fn betas_that_fetch_run_or_forward_are_capabilities() {
        assert_eq!(
            beta_capability("mcp-client-2025-04-04"),
            Some(Capability::Mcp)
        );
        assert_eq!(
            beta_capability("code-execution-2025-05-22"),
            Some(Capability::CodeExecution)
        );
        assert_eq!(
            beta_capability("web-fetch-2025-09-10"),
            Some(Capability::WebFetch)
        );
        assert_eq!(
            beta_capability("files-api-2025-04-14"),
            Some(Capability::Files)
        );
        assert_eq!(beta_capability("interleaved-thinking-2025-05-14"), None);
    }
}
