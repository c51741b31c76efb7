//! Request → facts the decision reads. Pure: no I/O, no clock.

use serde_json::{Map, Value};

use crate::location::Location;
use crate::policy::{
    CapSet, Country, MaxPrice, PrivacyFlags, Sort, TenantId, UnknownFields, PRIVACY_FLAG_NAMES,
};
pub use crate::request::Endpoint;

/// The request header that tightens privacy for one request.
pub const PRIVACY_HEADER: &str = "x-meridian-privacy";

/// Longest model name accepted: refused before any lookup, logging or fuzzy matching.
pub const MAX_MODEL_BYTES: usize = 256;

/// The OpenRouter-compatible per-request routing options (`provider` in the body).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ProviderPrefs {
    pub order: Vec<String>,
    pub only: Option<Vec<String>>,
    pub ignore: Vec<String>,
    pub allow_fallbacks: bool,
    pub sort: Option<Sort>,
    pub max_price: MaxPrice,
}

/// No preferences: fallbacks allowed.
impl Default for ProviderPrefs {
    fn default() -> Self {
        ProviderPrefs {
            order: Vec::new(),
            only: None,
            ignore: Vec::new(),
            allow_fallbacks: true,
            sort: None,
            max_price: MaxPrice::default(),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RequestFacts {
    pub request_id: String,
    pub endpoint: Endpoint,
    pub tenant: Option<TenantId>,
    /// ISO code, or `XX` when the deployment's location source gave none (`location` says why).
    pub country: Country,
    /// Where the country came from, and whether the edge secret verified.
    pub location: Location,
    pub edge_region: Option<String>,
    pub model: String,
    pub stream: bool,
    pub privacy: PrivacyFlags,
    pub prefs: ProviderPrefs,
    /// What the request asks providers to do beyond answering (`wire::fields`): matched against
    /// each provider's grant by `decide`.
    pub capabilities: CapSet,
    /// `anthropic-beta` values an Anthropic client sent.
    pub betas: Vec<String>,
    /// Unknown fields removed under `unknown_fields = "drop"`, as JSON paths.
    pub dropped: Vec<String>,
    /// Lower-case name → value, for `when.header` conditions.
    #[serde(skip)]
    pub headers: Vec<(String, String)>,
    /// What names the conversation, for affinity where the policy spreads load: the policy's
    /// header, else `prompt_cache_key`, else `user`; scoped to the tenant.
    pub affinity: Option<String>,
    /// The spread's seed itself, when the facts come from a log line (which keeps the seed,
    /// never the conversation key): it takes the place of `affinity`.
    #[serde(skip)]
    pub seed: Option<u64>,
    /// The prompt's prefix keys, one per `prefix_bytes` bound of the policy's pools
    /// ([`crate::pool::PrefixHasher`]); empty without pools.
    #[serde(skip)]
    pub prefix_keys: Vec<(u32, u64)>,
    /// Estimated input tokens: a quarter of the bytes of every string in the body, plus a fixed
    /// amount per image, audio or file part (a documented, cheap estimate, not a tokenizer).
    pub input_tokens: u64,
    /// The output the request asks for at most (`max_tokens` and the like, times `n`).
    pub output_tokens: Option<u64>,
    /// How many completions it asks for (`n`, or `best_of` when larger; at least 1).
    #[serde(skip)]
    pub completions: u64,
    /// Media parts whose content the body does not show (by URL or by file id).
    #[serde(skip)]
    pub unseen_media: u64,
    /// Whether the provider is asked to read history the body does not show
    /// (`previous_response_id`, `conversation`, `item_reference`).
    #[serde(skip)]
    pub stored_history: bool,
    /// Whether the request offers the model tools.
    pub tools: bool,
    /// Input the provider adds to what the body shows ([`crate::request::Reading::overhead_tokens`]).
    #[serde(skip)]
    pub overhead_tokens: u64,
    /// Tools the provider runs itself, whose results it bills as input.
    #[serde(skip)]
    pub provider_tools: u64,
    /// The most times the model reads the conversation ([`crate::request::Reading::model_reads`]).
    #[serde(skip)]
    pub model_reads: Option<u64>,
    /// How many images, audio or file parts it carries.
    pub media_parts: u64,
    /// OpenRouter's `models`: the client's own order of models, within the route the policy
    /// allows (it narrows, never widens).
    pub models: Option<Vec<String>>,
    /// Measured time to the first byte per provider from this edge region (milliseconds), for
    /// `sort = "latency"`: only providers with enough samples; the policy's `latency_ms` for the
    /// rest. Filled from the shared store by the API; empty elsewhere (`explain`).
    pub measured_ms: Vec<(String, u32)>,
    /// What the prompt's text contains, when the policy has personal-data rules (else not
    /// scanned: `None`). Kinds and counts only, never values.
    #[serde(skip)]
    pub pii: Option<crate::pii::Found>,
    /// What the built-in injection detector found in the text the model reads, when a rule
    /// runs it (else not scanned).
    #[serde(skip)]
    pub injection: Option<crate::guard::builtin::Finding>,
    /// The `[[routes]]` a guard's verdict sends the request along (it takes the place of the
    /// rules' and the request's route).
    #[serde(skip)]
    pub forced_route: Option<String>,
}

/// Why the request's facts could not be read: always the client's fault (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactsError {
    pub message: String,
    pub param: Option<&'static str>,
    pub code: &'static str,
}

fn bad(message: String, param: Option<&'static str>, code: &'static str) -> FactsError {
    FactsError {
        message,
        param,
        code,
    }
}

/// Flags from `x-meridian-privacy: zdr, no-training, local-only`.
pub fn privacy_from_header(value: &str) -> Result<PrivacyFlags, FactsError> {
    let mut flags = PrivacyFlags::default();
    for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        if !flags.set(&word.to_ascii_lowercase()) {
            let hint = crate::policy::did_you_mean(word, PRIVACY_FLAG_NAMES.iter().copied())
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            return Err(bad(
                format!(
                    "unknown privacy flag `{word}` in `{PRIVACY_HEADER}`{hint}; accepted: {}",
                    PRIVACY_FLAG_NAMES.join(", ")
                ),
                None,
                "invalid_privacy_flag",
            ));
        }
    }
    Ok(flags)
}

fn string_list(v: &Value, field: &str) -> Result<Vec<String>, FactsError> {
    let err = || {
        bad(
            format!("`provider.{field}` must be an array of provider ids"),
            Some("provider"),
            "invalid_provider_preferences",
        )
    };
    v.as_array()
        .ok_or_else(err)?
        .iter()
        .map(|x| x.as_str().map(str::to_string).ok_or_else(err))
        .collect()
}

/// Reads the OpenRouter-compatible `provider` object. Unknown fields are refused rather than
/// silently ignored: a client that asks for a restriction we do not understand must hear so.
pub fn provider_prefs(v: &Value) -> Result<(ProviderPrefs, PrivacyFlags), FactsError> {
    let obj = v.as_object().ok_or_else(|| {
        bad(
            "`provider` must be an object".into(),
            Some("provider"),
            "invalid_provider_preferences",
        )
    })?;
    let mut prefs = ProviderPrefs::default();
    let mut flags = PrivacyFlags::default();
    for (k, val) in obj {
        match k.as_str() {
            "order" => prefs.order = string_list(val, k)?,
            "only" => prefs.only = Some(string_list(val, k)?),
            "ignore" => prefs.ignore = string_list(val, k)?,
            "allow_fallbacks" => {
                prefs.allow_fallbacks = val.as_bool().ok_or_else(|| {
                    bad(
                        "`provider.allow_fallbacks` must be a boolean".into(),
                        Some("provider"),
                        "invalid_provider_preferences",
                    )
                })?
            }
            "data_collection" => match val.as_str() {
                Some("deny") => flags.no_data_collection = true,
                Some("allow") => {}
                _ => {
                    return Err(bad(
                        "`provider.data_collection` must be \"allow\" or \"deny\"".into(),
                        Some("provider"),
                        "invalid_provider_preferences",
                    ))
                }
            },
            "zdr" => match val.as_bool() {
                Some(z) => flags.zdr = z,
                None => {
                    return Err(bad(
                        "`provider.zdr` must be a boolean".into(),
                        Some("provider"),
                        "invalid_provider_preferences",
                    ))
                }
            },
            "sort" => {
                prefs.sort = match val.as_str() {
                    Some("price") => Some(Sort::Price),
                    Some("latency") => Some(Sort::Latency),
                    Some("nearest") => Some(Sort::Nearest),
                    Some("throughput") => {
                        return Err(bad(
                            "`provider.sort = \"throughput\"` is not supported: Meridian has no throughput figures for providers; use \"price\" or \"latency\"".into(),
                            Some("provider"),
                            "unsupported_provider_preference",
                        ))
                    }
                    _ => {
                        return Err(bad(
                            "`provider.sort` must be \"price\" or \"latency\"".into(),
                            Some("provider"),
                            "invalid_provider_preferences",
                        ))
                    }
                }
            }
            "max_price" => prefs.max_price = max_price(val)?,
            "require_parameters" | "quantizations" => {
                return Err(bad(
                    format!("`provider.{k}` is not supported by Meridian; remove it"),
                    Some("provider"),
                    "unsupported_provider_preference",
                ))
            }
            other => {
                return Err(bad(
                    format!(
                        "unknown field `provider.{other}`; accepted: order, only, ignore, allow_fallbacks, data_collection, zdr, sort, max_price"
                    ),
                    Some("provider"),
                    "invalid_provider_preferences",
                ))
            }
        }
    }
    Ok((prefs, flags))
}

fn max_price(v: &Value) -> Result<MaxPrice, FactsError> {
    let err = |m: &str| {
        bad(
            m.to_string(),
            Some("provider"),
            "invalid_provider_preferences",
        )
    };
    let obj = v.as_object().ok_or_else(|| {
        err("`provider.max_price` must be an object like {\"prompt\": 1, \"completion\": 2}")
    })?;
    let mut p = MaxPrice::default();
    for (k, val) in obj {
        let n = val
            .as_f64()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .ok_or_else(|| err("`provider.max_price` values must be non-negative numbers (USD per million tokens)"))?;
        match k.as_str() {
            "prompt" | "input" => p.input = Some(n),
            "completion" | "output" => p.output = Some(n),
            _ => {
                return Err(err(
                    "`provider.max_price` accepts `prompt` and `completion`",
                ))
            }
        }
    }
    Ok(p)
}

/// Everything needed besides the body: already-authenticated tenant and the configuration.
pub struct Context<'a> {
    pub request_id: String,
    /// Where the client is (`location::locate`, or given by a tool).
    pub location: Location,
    pub endpoint: Endpoint,
    pub tenant: Option<TenantId>,
    pub edge_region: Option<String>,
    pub headers: &'a [(String, String)],
    /// The policy's personal-data detectors, when any rule uses them: the body's text is scanned.
    pub pii: Option<&'a crate::policy::PiiConfig>,
    /// What to do with a field in no table (`[settings.request] unknown_fields`).
    pub unknown_fields: UnknownFields,
    /// Whether a rule runs the built-in injection detector: the body's text is scanned for it.
    pub injection: bool,
    /// The policy's pools' `prefix_bytes` (`Policy::prefix_bounds`): the leading bytes of the
    /// body's text are hashed up to each, for the pool's choice of replica.
    pub prefix_bounds: Vec<u32>,
    /// Whether a rule matches on a request header (`Policy::rules_read_headers`): only then
    /// do the facts keep the request's headers.
    pub rule_headers: bool,
}

impl RequestFacts {
    /// What a `prefix` pool hashes over its replicas: the key of the prompt's first `bytes`
    /// bytes, else (no text) the conversation's or request's seed.
    pub fn prefix_key(&self, bytes: u32) -> u64 {
        self.prefix_keys
            .iter()
            .find(|(b, _)| *b == bytes)
            .map_or_else(|| self.spread_seed(), |(_, k)| *k)
    }

    /// What a weighted spread draws from: the conversation's key (one conversation stays on one
    /// provider), else the request id; the first 8 bytes of its SHA-256.
    pub fn spread_seed(&self) -> u64 {
        if let Some(s) = self.seed {
            return s;
        }
        use sha2::Digest as _;
        let id = self.affinity.as_deref().unwrap_or(&self.request_id);
        let d = sha2::Sha256::digest(id.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        u64::from_le_bytes(b)
    }
}

/// A conversation key scoped to the caller: two tenants' conversations never share a seed.
pub fn affinity_key(tenant: Option<&TenantId>, key: &str) -> String {
    format!("{}/{key}", tenant.map_or("anonymous", |t| t.as_str()))
}

/// The model a body names: a non-empty string of at most [`MAX_MODEL_BYTES`].
fn model_of(body: &Map<String, Value>) -> Result<String, FactsError> {
    match body.get("model") {
        Some(Value::String(m)) if m.len() > MAX_MODEL_BYTES => Err(bad(
            format!("`model` is longer than {MAX_MODEL_BYTES} bytes"),
            Some("model"),
            "invalid_model",
        )),
        Some(Value::String(m)) if !m.is_empty() => Ok(m.clone()),
        Some(_) => Err(bad(
            "`model` must be a non-empty string".into(),
            Some("model"),
            "invalid_model",
        )),
        None => Err(bad(
            "you must provide a model parameter".into(),
            Some("model"),
            "missing_model",
        )),
    }
}

/// Whether the body asks for a stream: a boolean, or absent.
fn stream_of(body: &Map<String, Value>) -> Result<bool, FactsError> {
    match body.get("stream") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(
            "`stream` must be a boolean".into(),
            Some("stream"),
            "invalid_type",
        )),
    }
}

/// Reads the facts from a parsed JSON body, removing the `provider` object (it is ours, not
/// the upstream's). The body must be a JSON object.
pub fn from_request(
    cx: Context<'_>,
    body: &mut Map<String, Value>,
) -> Result<RequestFacts, FactsError> {
    let model = model_of(body)?;
    let stream = stream_of(body)?;
    if stream && cx.endpoint == Endpoint::Embeddings {
        return Err(bad(
            "embeddings cannot be streamed".into(),
            Some("stream"),
            "invalid_value",
        ));
    }
    // The one reading of the body: fields and capabilities, text and media, output bounds, and
    // the personal-data scan over exactly the text the model reads.
    let scanner = cx.pii.map(crate::pii::Scanner::new);
    let mut found = crate::pii::Found::default();
    let mut detector = cx.injection.then(crate::guard::builtin::Detector::new);
    let mut prefix = (!cx.prefix_bounds.is_empty())
        .then(|| crate::request::prefix::PrefixHasher::new(cx.prefix_bounds.clone()));
    let reading = crate::request::read(
        cx.endpoint,
        body,
        cx.headers,
        cx.unknown_fields,
        &mut |kind, text| {
            if let Some(s) = &scanner {
                found.add_findings(s, text);
            }
            if let Some(d) = detector.as_mut() {
                d.scan(text, kind == crate::request::Text::ToolOutput);
            }
            if let Some(h) = prefix.as_mut() {
                h.text(kind, text);
            }
        },
    )
    .map_err(|e| bad(e.message, e.param, e.code))?;
    let mut privacy = PrivacyFlags::default();
    if let Some(v) = crate::headers::get(cx.headers, PRIVACY_HEADER) {
        privacy = privacy.union(privacy_from_header(v)?);
    }
    let mut prefs = ProviderPrefs::default();
    if let Some(p) = body.shift_remove("provider") {
        let (pp, flags) = provider_prefs(&p)?;
        prefs = pp;
        privacy = privacy.union(flags);
    }
    let pii = scanner.map(|_| found.with_unscannable(reading.media));
    let models = match body.shift_remove("models") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) => Some(
            list.into_iter()
                .map(|m| match m {
                    Value::String(s) if !s.is_empty() => Ok(s),
                    _ => Err(bad(
                        "`models` must be a list of model names".into(),
                        Some("models"),
                        "invalid_value",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => {
            return Err(bad(
                "`models` must be a list of model names".into(),
                Some("models"),
                "invalid_value",
            ))
        }
    };
    let input_tokens = reading.text_bytes.div_ceil(4).saturating_add(
        reading
            .media
            .saturating_mul(crate::request::TOKENS_PER_MEDIA_PART),
    );
    let affinity = body
        .get("prompt_cache_key")
        .and_then(Value::as_str)
        .or_else(|| body.get("user").and_then(Value::as_str))
        .filter(|k| !k.is_empty())
        .map(|k| affinity_key(cx.tenant.as_ref(), k));
    Ok(RequestFacts {
        pii,
        injection: detector.and_then(|d| d.finding()),
        forced_route: None,
        request_id: cx.request_id,
        endpoint: cx.endpoint,
        tenant: cx.tenant,
        country: cx.location.country,
        location: cx.location,
        edge_region: cx.edge_region,
        model,
        stream,
        privacy,
        prefs,
        output_tokens: reading.output_bound(),
        completions: reading.completions,
        unseen_media: reading.unseen_media,
        stored_history: reading.stored_history,
        tools: reading.tools,
        overhead_tokens: reading.overhead_tokens(),
        provider_tools: reading.provider_tools,
        model_reads: reading.model_reads(),
        media_parts: reading.media,
        capabilities: reading.capabilities,
        betas: reading.betas,
        dropped: reading.dropped,
        headers: if cx.rule_headers {
            cx.headers.to_vec()
        } else {
            Vec::new()
        },
        affinity,
        seed: None,
        prefix_keys: prefix.map(|h| h.finish()).unwrap_or_default(),
        input_tokens,
        models,
        measured_ms: Vec::new(),
    })
}

/// A request whose facts cannot be read is the client's to fix: a 400 naming the parameter.
impl From<FactsError> for crate::error::ApiError {
    fn from(fe: FactsError) -> Self {
        crate::error::ApiError::bad_request(fe.code, fe.message).with_param(fe.param)
    }
}
