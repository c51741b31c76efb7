//! The validated policy: every reference resolved, every value checked. Built only by `load`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Text in a policy: borrowed from static data in the built-in policy (`build.rs` writes it out
/// as Rust, so the component neither decodes nor allocates it), owned in a policy loaded at run
/// time.
pub type Text = Cow<'static, str>;
/// A list in a policy, borrowed or owned as [`Text`] is.
pub type List<T> = Cow<'static, [T]>;

macro_rules! typed_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Text);
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        /// Lets sets and maps keyed by the id be searched with a `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

typed_id!(
    /// A provider's id in the catalog.
    ProviderId
);
typed_id!(
    /// A rule's id.
    RuleId
);
typed_id!(
    /// A tenant's id.
    TenantId
);

/// The policy file format version this build understands.
pub const FORMAT_VERSION: i64 = 1;

pub use crate::capability::{CapSet, Capability, CAPABILITY_NAMES, DEFAULT_ANTHROPIC_BETAS};
pub use crate::country::{Country, CountrySet};
pub use crate::limits::{Health, LimitPer, LimitSettings, Limits, Metric, Window, WindowLimit};
pub use crate::location::{
    AddressForm, AddressHeader, Anonymous, ClientSource, CountryForm, CountryHeader, EdgeSecret,
    Platform,
};
pub use crate::pii::{KindSet, PiiAction, PiiConfig, PiiWhen};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    pub name: Text,
    pub revision: Text,
    /// First 12 hex digits of the sha256 of the policy text: tells two texts apart in audit logs.
    pub digest: Text,
    pub settings: Settings,
    /// Every jurisdiction name (built-in and user-defined) → its countries.
    /// Sorted by name. A list rather than a map: it is only ever scanned, and a list decodes
    /// without building a tree on every request.
    pub jurisdictions: List<(Text, CountrySet)>,
    pub providers: List<Provider>,
    pub tenants: List<Tenant>,
    /// Model routes (`[[routes]]`): a public name for an ordered list of models, each tried in
    /// turn when the one before has no allowed provider or all its attempts failed.
    pub routes: List<ModelRoute>,
    pub rules: List<Rule>,
    /// The `[pii]` section: custom patterns, and whether any rule uses personal data.
    pub pii: PiiConfig,
    /// The guards' catalog and the rules' uses of it (`[[guards]]`, `[[rules.guards]]`). Not
    /// in serde's form of the model: the compiled form writes it after the rest
    /// ([`crate::compiled`]), so a form written before guards existed still reads.
    #[serde(skip)]
    pub guards: crate::Guards,
    /// Not part of the built-in policy's static data: the component never runs test cases.
    #[serde(skip)]
    pub cases: Vec<Case>,
    /// What `meridian check` warns about: valid, but probably not what the operator wants.
    #[serde(skip)]
    pub warnings: Vec<crate::Diagnostic>,
}

impl Policy {
    /// `name@revision+digest`, the policy version reported on every response.
    pub fn version_label(&self) -> String {
        // Concatenated, not `format!`: formatting costs thousands of instructions a request.
        [&*self.name, "@", &self.revision, "+", &self.digest].concat()
    }

    pub fn provider(&self, id: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.id.0 == id)
    }

    /// The header names the rules' `when.header` conditions read (repeats included).
    pub fn rule_header_names(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .flat_map(|r| r.when.headers.iter().map(|(n, _)| n.as_ref()))
    }

    /// Whether any rule matches on a request header (`when.header`).
    pub fn rules_read_headers(&self) -> bool {
        self.rule_header_names().next().is_some()
    }

    pub fn tenant(&self, id: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.id.0 == id)
    }

    /// The jurisdictions (sorted names) a country belongs to.
    pub fn jurisdictions_of(&self, country: Country) -> Vec<&str> {
        let mut names = Vec::with_capacity(self.jurisdictions.len());
        names.extend(
            self.jurisdictions
                .iter()
                .filter(|(_, cs)| cs.contains(country))
                .map(|(n, _)| n.as_ref()),
        );
        names
    }

    /// Every public model name some provider serves, sorted, without duplicates.
    pub fn model_names(&self) -> Vec<&str> {
        let set: BTreeSet<&str> = self
            .providers
            .iter()
            .flat_map(|p| p.models.keys().map(|k| k.as_ref()))
            .chain(self.routes.iter().map(|r| r.id.as_ref()))
            .collect();
        set.into_iter().collect()
    }

    pub fn route(&self, id: &str) -> Option<&ModelRoute> {
        self.routes.iter().find(|r| r.id == id)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Where the client's location comes from: one platform's headers, never a list of them.
    pub client: ClientSource,
    pub max_body_bytes: u64,
    /// Whether callers without a tenant key are served, and from which providers.
    pub anonymous: Anonymous,
    /// Pass the upstream's `x-ratelimit-*` response headers to the client.
    pub expose_ratelimit_headers: bool,
    /// The audit headers as one header each, or folded into one `x-meridian-audit`.
    pub audit_headers: AuditHeaders,
    /// The attempt plan when no matching rule changes it.
    pub plan: Plan,
    /// What happens to a request field Meridian does not know (`[settings.request]`).
    pub unknown_fields: UnknownFields,
    /// A request header that names the conversation (`[settings.request] affinity_header`):
    /// where the policy spreads load, one conversation stays on one provider.
    pub affinity_header: Option<Text>,
    /// How limits are kept (`[settings.limits]`).
    pub limits: LimitSettings,
    /// Provider cool-down after repeated failures (`[settings.health]`); off when `None`.
    pub health: Option<Health>,
    /// Signed receipts (`[settings.receipts]`); off when `None`.
    #[serde(skip)]
    pub receipts: Option<crate::evidence::Receipts>,
    /// The record of processing's settings (`[settings.record]`).
    #[serde(skip)]
    pub record: crate::evidence::RecordSettings,
    /// How a chat stream's events are checked (`[settings] stream_events`). Written in the
    /// compiled form's own section (see [`crate::compiled`]).
    #[serde(skip)]
    pub stream_events: StreamEvents,
}

/// `[settings] stream_events`: what Meridian checks of a chat stream's events after the first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamEvents {
    /// Every event is checked to be JSON: a malformed one ends the stream with an error event.
    #[default]
    Checked,
    /// An event passed on as it came, whose data cannot name `usage` or `error`, is checked
    /// for its SSE framing and for being a JSON object's outline (`{` … `}`), not parsed. The
    /// first event, every event Meridian reads and every stream it rewrites are still checked.
    Framed,
}

/// `[settings] audit_headers`: how a response carries its audit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditHeaders {
    /// One header per fact (`x-meridian-provider`, `x-meridian-cost-usd`, ...).
    #[default]
    Each,
    /// `x-request-id` and one `x-meridian-audit` header holding the same facts as a structured
    /// field dictionary (RFC 9651): every header a runtime adds costs a host call per header.
    One,
}

/// `[settings.request] unknown_fields`: a field that is in no table of the client's protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownFields {
    /// 400, naming the field and this setting.
    #[default]
    Refuse,
    /// Removed before forwarding, and named in the audit.
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireKind {
    /// The OpenAI HTTP API, spoken by OpenAI and most providers and self-hosted engines.
    OpenAi,
    /// Azure OpenAI: the OpenAI wire under `{base}/openai/deployments/{deployment}/…` with an
    /// `api-version` query parameter and an `api-key` header.
    Azure,
    /// Anthropic's Messages API (`{base}/messages`, `x-api-key`, `anthropic-version`).
    Anthropic,
}

impl WireKind {
    pub fn name(self) -> &'static str {
        match self {
            WireKind::OpenAi => "openai",
            WireKind::Azure => "azure",
            WireKind::Anthropic => "anthropic",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Provider {
    pub id: ProviderId,
    pub kind: WireKind,
    /// Base URL up to and including the API version path, e.g. `https://api.openai.com/v1`.
    pub base_url: BaseUrl,
    /// Name of the Spin variable that holds this provider's key; `None` for keyless engines.
    pub key_secret: Option<Text>,
    /// Where data is processed, as written (a country code or a jurisdiction name).
    pub location: Text,
    /// The countries `location` stands for.
    pub countries: CountrySet,
    /// The one country, when `countries` has exactly one (most providers): residency checks
    /// then test a single bit.
    pub single_country: Option<Country>,
    /// How long the provider keeps request data; `None`: the entry does not say (unknown, so it
    /// never satisfies `no-data-collection` unless the provider offers `zdr`).
    pub retention_days: Option<u32>,
    /// Whether the provider may train on inputs; `None`: the entry does not say (unknown, so it
    /// never satisfies `no-training` or `no-data-collection`).
    pub trains_on_inputs: Option<bool>,
    pub zdr: bool,
    pub self_hosted: bool,
    /// Public model name → what this provider calls it, with prices.
    pub models: ModelMap,
    pub latency_ms: Option<u32>,
    pub weight: u32,
    /// `azure`: the `api-version` query parameter; `anthropic`: the `anthropic-version` header.
    pub api_version: Option<Text>,
    /// `anthropic`: `max_tokens` when the client sends none.
    pub max_tokens: Option<u32>,
    /// What requests may ask this provider to do beyond answering (`capabilities`; when the
    /// entry says nothing, [`CapSet::HOSTED_DEFAULT`] for hosted providers and nothing for
    /// self-hosted engines).
    pub capabilities: CapSet,
    /// `anthropic`: the `anthropic-beta` values it may be sent (globs; when the entry says
    /// nothing, [`DEFAULT_ANTHROPIC_BETAS`]).
    pub anthropic_betas: List<Glob>,
    /// Serves OpenAI's Responses API itself (`responses = true`, OpenAI-wire providers): a
    /// `/v1/responses` request is passed through to it, not translated to chat.
    pub responses: bool,
    /// Where it keeps what it retains, when not where it processes (`storage`). Written after
    /// the rest in the compiled form ([`crate::evidence`]).
    #[serde(skip)]
    pub storage: Option<crate::evidence::Storage>,
    /// What a transfer to it rests on, when it is outside `[settings.record] home`.
    #[serde(skip)]
    pub safeguard: Option<crate::evidence::Safeguard>,
    /// Its replicas, when it is a self-hosted pool (`[providers.pool]`). Written after the rest
    /// in the compiled form ([`crate::pool`]).
    #[serde(skip)]
    pub pool: Option<crate::pool::Pool>,
}

/// A provider's base URL, checked by validation (http or https, a host, no query or fragment)
/// and kept as its normalised text, so loading a compiled policy does not parse URLs again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BaseUrl(pub Text);

impl BaseUrl {
    pub(crate) fn new(url: &url::Url) -> BaseUrl {
        BaseUrl(url.as_str().to_string().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parsed URL (validation guaranteed it parses).
    pub fn url(&self) -> Result<url::Url, url::ParseError> {
        url::Url::parse(&self.0)
    }
}

impl crate::Recipient for Provider {
    fn location(&self) -> &str {
        &self.location
    }
    fn pooled(&self) -> bool {
        self.pool.is_some()
    }
    fn countries(&self) -> (&CountrySet, Option<Country>) {
        (&self.countries, self.single_country)
    }
    fn self_hosted(&self) -> bool {
        self.self_hosted
    }
    fn zdr(&self) -> bool {
        self.zdr
    }
    fn trains_on_inputs(&self) -> Option<bool> {
        self.trains_on_inputs
    }
    fn retention_days(&self) -> Option<u32> {
        self.retention_days
    }
    fn storage(&self) -> Option<&crate::evidence::Storage> {
        self.storage.as_ref()
    }
    fn safeguard(&self) -> Option<crate::evidence::Safeguard> {
        self.safeguard
    }
}

/// A provider's models, sorted by public name: looked up by binary search, and decoded as a list
/// (no tree is built on every request).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModelMap(pub List<(Text, ModelEntry)>);

impl ModelMap {
    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.0
            .binary_search_by(|(k, _)| crate::cmp_names(k.as_ref(), name))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// The public names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &Text> {
        self.0.iter().map(|(k, _)| k)
    }
}

impl From<BTreeMap<String, ModelEntry>> for ModelMap {
    fn from(m: BTreeMap<String, ModelEntry>) -> Self {
        ModelMap(m.into_iter().map(|(k, v)| (Text::Owned(k), v)).collect())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    pub upstream: Text,
    /// USD per million input tokens.
    pub input_price: Option<f64>,
    /// USD per million output tokens.
    pub output_price: Option<f64>,
    /// USD per million prompt tokens read from the provider's cache (else `input_price`).
    pub cache_read_price: Option<f64>,
    /// USD per million prompt tokens written to the provider's cache (else `input_price`).
    pub cache_write_price: Option<f64>,
    /// The most tokens (input and output together) the model takes.
    pub context_window: Option<u64>,
    /// The most output tokens it generates.
    pub max_output: Option<u64>,
    /// The most the billing options a request may choose (`priced_options`: a priority tier,
    /// audio output, long context, one-hour cache writes) multiply this model's prices by, from
    /// the provider's price list. Without it, a limited request that chooses one is refused.
    pub option_price_factor: Option<f64>,
}

impl ModelEntry {
    /// The sort key for "cheapest first": input plus output price. Every request pays for input,
    /// so an unknown input price sorts last; an unknown output price (embeddings) counts as 0.
    pub fn blended_price(input: Option<f64>, output: Option<f64>) -> f64 {
        input.unwrap_or(f64::INFINITY) + output.unwrap_or(0.0)
    }
}

/// Privacy requirements: each set flag removes providers that do not meet it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacyFlags {
    pub zdr: bool,
    pub no_training: bool,
    pub local_only: bool,
    /// OpenRouter's `data_collection: deny`: no retention (unless zdr) and no training.
    pub no_data_collection: bool,
}

/// Names accepted in `privacy` lists and the `x-meridian-privacy` header.
pub const PRIVACY_FLAG_NAMES: &[&str] = &["zdr", "no-training", "local-only", "no-data-collection"];

impl PrivacyFlags {
    pub fn set(&mut self, name: &str) -> bool {
        match name {
            "zdr" => self.zdr = true,
            "no-training" => self.no_training = true,
            "local-only" => self.local_only = true,
            "no-data-collection" => self.no_data_collection = true,
            _ => return false,
        }
        true
    }

    pub fn union(self, o: PrivacyFlags) -> PrivacyFlags {
        PrivacyFlags {
            zdr: self.zdr || o.zdr,
            no_training: self.no_training || o.no_training,
            local_only: self.local_only || o.local_only,
            no_data_collection: self.no_data_collection || o.no_data_collection,
        }
    }

    /// Whether every flag set in `self` is also set in `have`.
    pub fn satisfied_by(self, have: PrivacyFlags) -> bool {
        (!self.zdr || have.zdr)
            && (!self.no_training || have.no_training)
            && (!self.local_only || have.local_only)
            && (!self.no_data_collection || have.no_data_collection)
    }

    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.zdr {
            v.push("zdr");
        }
        if self.no_training {
            v.push("no-training");
        }
        if self.local_only {
            v.push("local-only");
        }
        if self.no_data_collection {
            v.push("no-data-collection");
        }
        v
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelRoute {
    pub id: Text,
    /// Public model names of the catalog, in the order tried.
    pub models: List<Text>,
}

/// A range of estimated input tokens (`when.input_tokens = { max = 2000 }`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRange {
    pub min: Option<u64>,
    pub max: Option<u64>,
}

impl TokenRange {
    pub fn contains(&self, n: u64) -> bool {
        self.min.is_none_or(|m| n >= m) && self.max.is_none_or(|m| n <= m)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    /// sha256 digests of the tenant's API keys.
    pub key_hashes: List<[u8; 32]>,
    /// Model globs the tenant may use; empty means any.
    pub models: List<Glob>,
    /// Where this tenant's data may be processed (names as written, countries resolved).
    pub jurisdictions: Option<Residency>,
    pub privacy: PrivacyFlags,
    /// Browser (publishable) keys: the origins allowed to use them. Empty for server keys.
    pub origins: List<Text>,
    /// A cap on `max_tokens`/`max_completion_tokens` for this tenant's requests.
    pub max_tokens: Option<u64>,
    /// Requests, tokens, spend and concurrency this tenant (or each of its keys) may use.
    pub limits: Option<Limits>,
    /// What its data is processed for, as the record of processing states (`purposes`).
    #[serde(skip)]
    pub purposes: List<Text>,
}

/// A set of allowed processing countries, with the names it came from for messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Residency {
    pub names: List<Text>,
    pub countries: CountrySet,
}

/// A model glob (`*`, `?`); its text is all there is, so it is static data in the built-in policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct Glob {
    pub text: Text,
}

impl From<String> for Glob {
    fn from(text: String) -> Self {
        Glob { text: text.into() }
    }
}

impl From<Glob> for String {
    fn from(g: Glob) -> String {
        g.text.into_owned()
    }
}

impl Glob {
    pub fn new(text: &str) -> Self {
        Glob {
            text: text.to_string().into(),
        }
    }

    /// `*` matches any run of characters (none included), `?` any one character; everything
    /// else matches itself. Backtracks only to the last `*`; allocates nothing.
    pub fn matches(&self, text: &str) -> bool {
        let pat: &str = &self.text;
        let (mut pi, mut ti) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while let Some(tc) = text[ti..].chars().next() {
            match pat[pi..].chars().next() {
                Some('*') => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                Some(pc) if pc == '?' || pc == tc => {
                    pi += pc.len_utf8();
                    ti += tc.len_utf8();
                    continue;
                }
                _ => {}
            }
            let Some((sp, st)) = star else {
                return false;
            };
            let skipped = text[st..].chars().next().map_or(1, char::len_utf8);
            pi = sp + 1;
            ti = st + skipped;
            star = Some((sp, ti));
        }
        pat[pi..].chars().all(|c| c == '*')
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rule {
    pub id: RuleId,
    // In the compiled form, a part the rule leaves at its default is one byte (most rules set
    // one or two of these parts, and a request reads every rule of a run-time policy).
    #[serde(with = "crate::compiled::elided")]
    pub when: When,
    #[serde(with = "crate::compiled::elided")]
    pub require: Require,
    #[serde(with = "crate::compiled::elided")]
    pub prefer: Prefer,
    #[serde(with = "crate::compiled::elided")]
    pub plan: PlanPatch,
    /// `redact`, `restore`, `refuse`.
    #[serde(with = "crate::compiled::elided")]
    pub pii: PiiAction,
    /// Limits on the requests this rule matches, counted per caller.
    pub limits: Option<Limits>,
    /// The model route that serves matching requests (`route = "cheap-first"`).
    pub route: Option<Text>,
}

/// Conditions; every one present must hold for the rule to match. An empty `when` always matches.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct When {
    pub client_countries: Option<CountrySet>,
    pub edge_regions: Option<List<Text>>,
    pub tenants: Option<List<TenantId>>,
    /// `Some(true)`: only requests with no tenant (anonymous) match.
    pub anonymous: Option<bool>,
    pub models: Option<List<Glob>>,
    pub privacy: Option<PrivacyFlags>,
    /// Lower-case header name → required value (`None`: present with any value).
    pub headers: List<(Text, Option<Text>)>,
    pub stream: Option<bool>,
    pub endpoints: Option<List<Text>>,
    /// Whether the request carried the right edge secret (`settings.client.edge_secret`).
    pub edge_verified: Option<bool>,
    /// Personal data found in the prompt.
    pub pii: Option<PiiWhen>,
    /// Whether the caller used a browser (publishable) key: a tenant with `origins`.
    pub browser: Option<bool>,
    /// The request's estimated input tokens.
    pub input_tokens: Option<TokenRange>,
    /// Whether the request offers the model tools.
    pub tools: Option<bool>,
    /// Whether the request carries images, audio or files.
    pub media: Option<bool>,
}

/// Hard constraints: they only ever remove providers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Require {
    pub jurisdiction: Option<Residency>,
    pub self_hosted: bool,
    pub privacy: PrivacyFlags,
    pub providers: Option<ProviderSet>,
    pub deny: ProviderSet,
    pub max_price: MaxPrice,
    /// The most providers may be asked to do for matching requests: granted capabilities
    /// outside this set are withdrawn (`None`: the providers' grants stand).
    pub capabilities: Option<CapSet>,
    /// Where recipients may keep what they retain (`storage`), beside where they process.
    #[serde(skip)]
    pub storage: Option<Residency>,
}

/// Providers a rule names, as positions in [`Policy::providers`] (validation resolved the ids).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSet(pub List<u32>);

impl ProviderSet {
    pub fn contains(&self, index: usize) -> bool {
        self.0.iter().any(|i| *i as usize == index)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<usize> for ProviderSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut v: Vec<u32> = iter
            .into_iter()
            .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
            .collect();
        v.sort_unstable();
        v.dedup();
        ProviderSet(v.into())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MaxPrice {
    pub input: Option<f64>,
    pub output: Option<f64>,
}

impl MaxPrice {
    pub fn tighten(self, o: MaxPrice) -> MaxPrice {
        fn min(a: Option<f64>, b: Option<f64>) -> Option<f64> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        MaxPrice {
            input: min(self.input, o.input),
            output: min(self.output, o.output),
        }
    }

    pub fn is_set(&self) -> bool {
        self.input.is_some() || self.output.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sort {
    Price,
    Latency,
    /// A weighted choice by the catalog's `weight`s (and the rule's `weights`, which override).
    Weighted,
    /// Nearest first: by distance from the client's country (else the edge region) to where
    /// the provider processes data (`places`).
    Nearest,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Prefer {
    pub order: List<ProviderId>,
    pub sort: Option<Sort>,
    pub weights: List<(ProviderId, u32)>,
}

impl Prefer {
    pub fn is_empty(&self) -> bool {
        self.order.is_empty() && self.sort.is_none() && self.weights.is_empty()
    }
}

/// What makes the forwarding engine move to the next attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackOn {
    pub connect: bool,
    pub timeout: bool,
    /// Upstream answered 2xx with a body that is not what the API promises.
    pub malformed: bool,
    pub statuses: List<u16>,
}

impl Default for FallbackOn {
    fn default() -> Self {
        FallbackOn {
            connect: true,
            timeout: true,
            malformed: true,
            // 529: Anthropic's "overloaded".
            statuses: Cow::Borrowed(&[429, 500, 502, 503, 504, 529]),
        }
    }
}

/// How to attempt the candidates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Per attempt: until the upstream's response headers.
    pub attempt_timeout_ms: u64,
    /// Streams: from the response headers until the first body byte.
    pub first_byte_timeout_ms: u64,
    /// Streams: the longest silence allowed between two body chunks.
    pub idle_timeout_ms: u64,
    /// For the whole request, all attempts included, until the response starts.
    pub deadline_ms: u64,
    /// Streams: from the request's start until the stream's end; past it the stream ends with
    /// an error event.
    pub stream_deadline_ms: u64,
    /// Extra attempts on the same provider before moving on.
    pub retries: u32,
    pub backoff_ms: u64,
    pub fallback_on: FallbackOn,
    /// Start the next candidate if the current one has not answered after this long.
    pub hedge_after_ms: Option<u64>,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            attempt_timeout_ms: 30_000,
            first_byte_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            deadline_ms: 120_000,
            stream_deadline_ms: 600_000,
            retries: 0,
            backoff_ms: 250,
            fallback_on: FallbackOn::default(),
            hedge_after_ms: None,
        }
    }
}

/// A rule's changes to the plan: only the fields it sets.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PlanPatch {
    pub attempt_timeout_ms: Option<u64>,
    pub first_byte_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub stream_deadline_ms: Option<u64>,
    pub retries: Option<u32>,
    pub backoff_ms: Option<u64>,
    pub fallback_on: Option<FallbackOn>,
    pub hedge_after_ms: Option<u64>,
}

impl PlanPatch {
    /// Fields this patch sets that `plan` has not been given by an earlier rule.
    pub fn apply(&self, plan: &mut Plan, taken: &mut BTreeSet<&'static str>) {
        macro_rules! field {
            ($f:ident) => {
                if let Some(v) = &self.$f {
                    if taken.insert(stringify!($f)) {
                        plan.$f = v.clone();
                    }
                }
            };
        }
        field!(attempt_timeout_ms);
        field!(first_byte_timeout_ms);
        field!(idle_timeout_ms);
        field!(deadline_ms);
        field!(stream_deadline_ms);
        field!(retries);
        field!(backoff_ms);
        field!(fallback_on);
        if let Some(v) = self.hedge_after_ms {
            if taken.insert("hedge_after_ms") {
                plan.hedge_after_ms = Some(v);
            }
        }
    }
}

/// A `[[test]]` case: request facts and what the decision must be.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub line: usize,
    pub model: String,
    pub country: Option<Country>,
    pub edge_region: Option<String>,
    pub tenant: Option<TenantId>,
    pub privacy: PrivacyFlags,
    pub stream: bool,
    pub headers: Vec<(String, String)>,
    /// The OpenRouter-style `provider` object, as JSON.
    pub provider: Option<serde_json::Value>,
    pub request_id: String,
    /// The text of the request's user message (scanned for personal data as a real one is).
    pub prompt: Option<String>,
    /// The personal-data kinds the prompt must be found to contain, exactly.
    pub expect_pii: Option<Vec<String>>,
    /// The pools' replicas the request may go to (`provider@replica`), in candidate and
    /// catalog order, exactly.
    pub expect_replicas: Option<Vec<String>>,
    pub expect: Expectation,
}

#[derive(Debug, Clone)]
pub enum Expectation {
    /// The candidates, in exactly this order.
    Order(Vec<ProviderId>),
    /// Only the first candidate.
    First(ProviderId),
    /// A refusal with this status.
    Refusal(u16),
}

#[cfg(test)]
mod glob_tests {
    use super::Glob;
    use proptest::prelude::*;

    #[test]
    fn known_patterns() {
        let g = |p: &str, t: &str| Glob::new(p).matches(t);
        assert!(g("gpt-4*", "gpt-4o-mini"));
        assert!(g("*", ""));
        assert!(g("llama-?-8b", "llama-3-8b"));
        assert!(!g("llama-?-8b", "llama-31-8b"));
        assert!(g("*-8b*", "llama-3.1-8b-instruct"));
        assert!(!g("claude-*", "gpt-4o"));
        assert!(g("é*ü", "éxü"));
    }

    proptest! {
        /// The same answers as the `wildmatch` crate, the matcher globs used before.
        #[test]
        fn agrees_with_wildmatch(pattern in "[ab*?é-]{0,8}", text in "[abé-]{0,10}") {
            let oracle = wildmatch::WildMatch::new(&pattern).matches(&text);
            prop_assert_eq!(Glob::new(&pattern).matches(&text), oracle, "{} ~ {}", pattern, text);
        }
    }
}
