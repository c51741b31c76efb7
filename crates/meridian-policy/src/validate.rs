//! Text → validated [`Policy`], collecting every problem with its position.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};
use toml_edit::{ImDocument, Item, Value};

use super::diag::{suggest, PolicyErrors, Sink};
use super::jurisdictions::builtins;
use super::model::*;
use super::reader::{Obj, Sp};

pub const TOP_KEYS: &[&str] = &[
    "version",
    "name",
    "revision",
    "settings",
    "jurisdictions",
    "providers",
    "tenants",
    "rules",
    "test",
];
pub const SETTINGS_KEYS: &[&str] = &[
    "client",
    "trusted_country_headers",
    "max_body_bytes",
    "allow_anonymous",
    "expose_ratelimit_headers",
    "plan",
];
pub const CLIENT_KEYS: &[&str] = &[
    "platform",
    "country_header",
    "address_header",
    "edge_secret",
];
pub const EDGE_SECRET_KEYS: &[&str] = &["header", "secret"];
pub const PROVIDER_KEYS: &[&str] = &[
    "id",
    "kind",
    "base_url",
    "key_secret",
    "location",
    "retention_days",
    "trains_on_inputs",
    "zdr",
    "self_hosted",
    "models",
    "latency_ms",
    "weight",
];
pub const MODEL_KEYS: &[&str] = &["id", "input_price", "output_price"];
pub const TENANT_KEYS: &[&str] = &[
    "id",
    "keys",
    "models",
    "jurisdictions",
    "privacy",
    "origins",
    "max_tokens",
];
pub const RULE_KEYS: &[&str] = &["id", "when", "require", "prefer", "plan"];
pub const WHEN_KEYS: &[&str] = &[
    "client_country",
    "client_jurisdiction",
    "edge_region",
    "tenant",
    "anonymous",
    "model",
    "privacy",
    "header",
    "stream",
    "endpoint",
    "edge_verified",
];
pub const REQUIRE_KEYS: &[&str] = &[
    "jurisdiction",
    "self_hosted",
    "privacy",
    "providers",
    "deny",
    "max_price",
];
pub const PRICE_KEYS: &[&str] = &["input", "output"];
pub const PREFER_KEYS: &[&str] = &["order", "sort", "weights"];
pub const PLAN_KEYS: &[&str] = &[
    "attempt_timeout_ms",
    "first_byte_timeout_ms",
    "idle_timeout_ms",
    "deadline_ms",
    "stream_deadline_ms",
    "retries",
    "backoff_ms",
    "fallback_on",
    "hedge_after_ms",
];
pub const TEST_KEYS: &[&str] = &[
    "name",
    "model",
    "country",
    "edge_region",
    "tenant",
    "privacy",
    "stream",
    "headers",
    "provider",
    "request_id",
    "expect",
    "expect_first",
    "expect_status",
];
pub const ENDPOINTS: &[&str] = &["chat", "completions", "embeddings"];
const KINDS: &[&str] = &["openai"];
const SORTS: &[&str] = &["price", "latency", "weighted"];
const FALLBACK_WORDS: &[&str] = &["connect", "timeout", "malformed"];

/// Parses and validates a policy. `origin` names the text in messages (a path, or `<embedded>`).
pub fn load(text: &str, origin: &str) -> Result<Policy, PolicyErrors> {
    let mut sink = Sink::new(text);
    let policy = match ImDocument::parse(text) {
        Ok(doc) => build(&mut sink, doc.as_table(), text),
        Err(e) => {
            let help = "check the TOML syntax at this place".to_string();
            sink.error_help(
                e.span().as_ref(),
                format!(
                    "invalid TOML: {}",
                    e.message().trim().lines().collect::<Vec<_>>().join("; ")
                ),
                help,
            );
            None
        }
    };
    match policy {
        Some(mut p) if sink.diagnostics.is_empty() => {
            p.warnings = sink.warnings;
            p.warnings.sort_by_key(|d| (d.line, d.column));
            Ok(p)
        }
        _ => {
            let mut diagnostics = sink.diagnostics;
            diagnostics.sort_by_key(|d| (d.line, d.column));
            Err(PolicyErrors {
                origin: origin.to_string(),
                diagnostics,
            })
        }
    }
}

struct Ctx {
    jurisdictions: BTreeMap<String, CountrySet>,
    provider_ids: Vec<String>,
    tenant_ids: Vec<String>,
    models: BTreeSet<String>,
    /// Whether `settings.client.edge_secret` is set (`when.edge_verified` needs it).
    edge_secret: bool,
}

fn build(sink: &mut Sink, root: &toml_edit::Table, text: &str) -> Option<Policy> {
    let top = Obj::root(root);
    top.deny_unknown(sink, TOP_KEYS);

    match top.int(sink, "version") {
        None if top.key_span("version").is_none() || root.get("version").is_none() => {
            sink.error_help(
                Some(&(0..0)),
                "the policy is missing the required key `version`",
                format!("add `version = {FORMAT_VERSION}` at the top of the file"),
            );
        }
        Some(v) if v.value != FORMAT_VERSION => sink.error_help(
            v.span.as_ref(),
            format!("unsupported policy format version `{}`", v.value),
            format!("this build of Meridian reads `version = {FORMAT_VERSION}`"),
        ),
        _ => {}
    }
    let name = top
        .str(sink, "name")
        .map_or_else(|| "policy".into(), |s| s.value);
    let revision = top
        .str(sink, "revision")
        .map_or_else(|| "0".into(), |s| s.value);

    let jurisdictions = read_jurisdictions(sink, &top);
    let mut cx = Ctx {
        jurisdictions,
        provider_ids: Vec::new(),
        tenant_ids: Vec::new(),
        models: BTreeSet::new(),
        edge_secret: false,
    };
    let settings = read_settings(sink, &top);
    cx.edge_secret = settings
        .as_ref()
        .is_some_and(|s| s.client.edge_secret.is_some());
    let providers = read_providers(sink, &top, &mut cx);
    let tenants = read_tenants(sink, &top, &mut cx);
    let rules = read_rules(sink, &top, &cx);
    // A request carries a country only through the deployment's location source.
    let countries_deliverable = settings.as_ref().is_none_or(|s| s.client.can_locate());
    let tests = read_tests(sink, &top, &cx, countries_deliverable);
    warn_unknown_country(sink, &top, &rules);

    let digest = hex::encode(Sha256::digest(text.as_bytes()));
    Some(Policy {
        name,
        revision,
        digest: digest[..12].to_string(),
        settings: settings?,
        jurisdictions: cx.jurisdictions,
        providers,
        tenants,
        rules,
        tests,
        warnings: Vec::new(),
    })
}

fn read_jurisdictions(sink: &mut Sink, top: &Obj) -> BTreeMap<String, CountrySet> {
    let mut map: BTreeMap<String, CountrySet> = builtins()
        .into_iter()
        .map(|(n, cs)| {
            (
                n.to_string(),
                cs.into_iter().filter_map(Country::parse).collect(),
            )
        })
        .collect();
    let Some(table) = top.table(sink, "jurisdictions") else {
        return map;
    };
    for (name, item) in table.entries() {
        if map.contains_key(&name.value) {
            sink.error_help(
                name.span.as_ref(),
                format!(
                    "jurisdiction `{}` is built in and cannot be redefined",
                    name.value
                ),
                "choose another name, e.g. `my-eu`",
            );
            continue;
        }
        if !is_id(&name.value) {
            sink.error(
                name.span.as_ref(),
                bad_id_message("jurisdiction", &name.value),
            );
        }
        let Some(arr) = item.as_array() else {
            sink.error(
                name.span.as_ref(),
                format!(
                    "jurisdiction `{}` must be an array of country codes",
                    name.value
                ),
            );
            continue;
        };
        let mut set = CountrySet::new();
        for v in arr.iter() {
            match v.as_str().map(|c| (c, Country::parse(c))) {
                Some((_, Some(code))) => {
                    set.insert(code);
                }
                Some((c, None)) => {
                    if let Some(existing) = map.get(c) {
                        set.union_with(existing);
                    } else {
                        sink.error_help(
                            v.span().as_ref(),
                            format!(
                                "`{c}` is not a country code or a jurisdiction defined before it"
                            ),
                            "use ISO 3166-1 alpha-2 codes in upper case, e.g. `DE`",
                        );
                    }
                }
                None => sink.error(v.span().as_ref(), "country codes must be strings"),
            }
        }
        map.insert(name.value, set);
    }
    map
}

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn bad_id_message(what: &str, id: &str) -> String {
    format!("{what} id `{id}` must be 1 to 64 letters, digits, `-`, `_` or `.`")
}

fn read_settings(sink: &mut Sink, top: &Obj) -> Option<Settings> {
    let mut s = Settings {
        client: ClientSource::default(),
        max_body_bytes: 1024 * 1024,
        anonymous: Anonymous::Deny,
        expose_ratelimit_headers: false,
        plan: Plan::default(),
    };
    let Some(t) = top.table(sink, "settings") else {
        return Some(s);
    };
    t.deny_unknown(sink, SETTINGS_KEYS);
    let client = t.table(sink, "client");
    if let Some(hs) = t.str_list(sink, "trusted_country_headers") {
        let span = t.key_span("trusted_country_headers");
        if client.is_some() {
            sink.error_help(
                span.as_ref(),
                "`trusted_country_headers` and `[settings.client]` both say where the client's country comes from",
                "remove `trusted_country_headers`: `[settings.client]` replaces it",
            );
        } else if hs.len() > 1 {
            sink.error_help(
                span.as_ref(),
                format!(
                    "`trusted_country_headers` lists {} headers: behind one platform a client can send the others itself, and the first one present wins",
                    hs.len()
                ),
                "name the one platform Meridian runs behind instead, e.g. `[settings.client]` with `platform = \"cloudflare\"` (or cloudfront, vercel, fastly, akamai, spin, custom)",
            );
        } else if let Some(h) = hs.first() {
            check_header_name(sink, h);
            sink.warn(
                span.as_ref(),
                "`trusted_country_headers` is deprecated",
                format!(
                    "write `[settings.client]` with `platform = \"custom\"` and `country_header = \"{}\"`, or the platform's own profile",
                    h.value
                ),
            );
            s.client = ClientSource {
                platform: Platform::Legacy,
                country: Some(CountryHeader {
                    name: h.value.to_ascii_lowercase(),
                    form: CountryForm::Iso,
                }),
                address: None,
                edge_secret: None,
            };
        }
    }
    if let Some(c) = client {
        s.client = read_client(sink, &c);
    }
    if let Some(n) = t.uint(sink, "max_body_bytes") {
        if n == 0 {
            sink.error(
                t.key_span("max_body_bytes").as_ref(),
                "`max_body_bytes` must be positive",
            );
        }
        s.max_body_bytes = n;
    }
    if let Some(item) = t.raw("allow_anonymous") {
        let span = t.key_span("allow_anonymous");
        match (item.as_bool(), item.as_str()) {
            (Some(false), _) => s.anonymous = Anonymous::Deny,
            (Some(true), _) => s.anonymous = Anonymous::Keyless,
            (_, Some("paid")) => {
                s.anonymous = Anonymous::Paid;
                sink.warn(
                    span.as_ref(),
                    "`allow_anonymous = \"paid\"` lets anyone who can reach Meridian spend the providers' keys",
                    "use tenant keys for paid providers; `allow_anonymous = true` serves anonymous callers only from keyless providers",
                );
            }
            _ => sink.error_help(
                span.as_ref(),
                "`allow_anonymous` must be `false`, `true` or `\"paid\"`",
                "`true` serves callers without a key from keyless providers only; `\"paid\"` also lets them spend provider keys",
            ),
        }
    }
    if let Some(b) = t.bool(sink, "expose_ratelimit_headers") {
        s.expose_ratelimit_headers = b;
    }
    if let Some(p) = t.table(sink, "plan") {
        let patch = read_plan(sink, &p);
        patch.apply(&mut s.plan, &mut BTreeSet::new());
    }
    Some(s)
}

fn check_header_name(sink: &mut Sink, h: &Sp<String>) {
    if http::HeaderName::from_bytes(h.value.as_bytes()).is_err() {
        sink.error(
            h.span.as_ref(),
            format!("`{}` is not a valid header name", h.value),
        );
    }
}

/// A Spin variable name: lower-case letters, digits and `_`, starting with a letter.
fn is_variable_name(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn read_client(sink: &mut Sink, c: &Obj) -> ClientSource {
    c.deny_unknown(sink, CLIENT_KEYS);
    let mut out = ClientSource::default();
    let Some(name) = c.req_str(sink, "platform") else {
        return out;
    };
    let Some(platform) = Platform::from_name(&name.value) else {
        sink.error_help(
            name.span.as_ref(),
            format!("unknown platform `{}`", name.value),
            suggest(&name.value, crate::PLATFORM_NAMES),
        );
        return out;
    };
    out.platform = platform;
    let country = c.str(sink, "country_header");
    let address = c.str(sink, "address_header");
    for h in country.iter().chain(address.iter()) {
        check_header_name(sink, h);
    }
    let lower = |h: &Sp<String>| h.value.to_ascii_lowercase();
    match platform.fixed() {
        Some((fixed_country, fixed_address)) => {
            for (h, key) in [(&country, "country_header"), (&address, "address_header")] {
                if h.is_some() {
                    sink.error_help(
                        c.key_span(key).as_ref(),
                        format!(
                            "the `{}` profile fixes its headers, so `{key}` cannot be set",
                            platform.name()
                        ),
                        "use `platform = \"custom\"` to name other headers",
                    );
                }
            }
            out.country = fixed_country;
            out.address = fixed_address;
        }
        None => {
            out.country = country.as_ref().map(|h| CountryHeader {
                name: lower(h),
                form: CountryForm::Iso,
            });
            out.address = address
                .as_ref()
                .map(lower)
                .or_else(|| (platform == Platform::Fastly).then(|| "fastly-client-ip".into()))
                .map(|name| AddressHeader {
                    name,
                    form: AddressForm::Ip,
                });
            if platform == Platform::Fastly && country.is_none() {
                sink.error_help(
                    c.span.as_ref(),
                    "the `fastly` profile needs `country_header`: Fastly sets no country header of its own",
                    "set one in VCL from `client.geo.country_code`, e.g. `country_header = \"fastly-geo-country\"`",
                );
            }
            if platform == Platform::Custom && !out.can_locate() {
                sink.error_help(
                    c.span.as_ref(),
                    "the `custom` profile needs `country_header`, `address_header` or both",
                    "name the headers your platform sets and strips from client requests",
                );
            }
            if platform == Platform::Custom {
                let owners: BTreeSet<&str> = [
                    &out.country.as_ref().map(|h| &h.name),
                    &out.address.as_ref().map(|h| &h.name),
                ]
                .into_iter()
                .flatten()
                .filter_map(|n| crate::platform_of_header(n))
                .map(Platform::name)
                .collect();
                if owners.len() > 1 {
                    sink.warn(
                        c.span.as_ref(),
                        format!(
                            "this source trusts headers of more than one platform ({})",
                            owners.into_iter().collect::<Vec<_>>().join(", ")
                        ),
                        "behind one platform, a client can send the other platform's headers itself: name the headers of the platform Meridian runs behind",
                    );
                }
            }
        }
    }
    if let Some(e) = c.table(sink, "edge_secret") {
        e.deny_unknown(sink, EDGE_SECRET_KEYS);
        let header = e.req_str(sink, "header");
        let secret = e.req_str(sink, "secret");
        if let Some(h) = &header {
            check_header_name(sink, h);
        }
        if let Some(v) = &secret {
            if !is_variable_name(&v.value) {
                sink.error_help(
                    v.span.as_ref(),
                    format!("`{}` is not a Spin variable name", v.value),
                    "use lower-case letters, digits and `_`, starting with a letter, e.g. `edge_secret`",
                );
            }
        }
        if let (Some(h), Some(v)) = (header, secret) {
            out.edge_secret = Some(EdgeSecret {
                header: lower(&h),
                secret: v.value,
            });
        }
    }
    out
}

fn resolve_residency(sink: &mut Sink, cx: &Ctx, names: &[Sp<String>]) -> Residency {
    let mut countries = CountrySet::new();
    for n in names {
        if let Some(cs) = cx.jurisdictions.get(&n.value) {
            countries.union_with(cs);
        } else if let Some(c) = Country::parse(&n.value) {
            countries.insert(c);
        } else {
            let known: Vec<&str> = cx.jurisdictions.keys().map(String::as_str).collect();
            sink.error_help(
                n.span.as_ref(),
                format!("unknown jurisdiction `{}`", n.value),
                format!(
                    "{}; or a country code such as `DE`",
                    suggest(&n.value, &known)
                ),
            );
        }
    }
    Residency {
        names: names.iter().map(|n| n.value.clone()).collect(),
        countries,
    }
}

fn read_providers(sink: &mut Sink, top: &Obj, cx: &mut Ctx) -> Vec<Provider> {
    let mut out = Vec::new();
    let tables = top.tables(sink, "providers");
    if tables.is_empty() && top.key_span("providers").is_some() {
        // An empty catalog is legal but serves nothing; nothing to add.
    }
    for t in tables {
        t.deny_unknown(sink, PROVIDER_KEYS);
        let id = t.req_str(sink, "id");
        if let Some(id) = &id {
            if !is_id(&id.value) {
                sink.error(id.span.as_ref(), bad_id_message("provider", &id.value));
            } else if cx.provider_ids.contains(&id.value) {
                sink.error_help(
                    id.span.as_ref(),
                    format!("duplicate provider id `{}`", id.value),
                    "each provider needs its own id",
                );
            }
        }
        let kind = match t.str(sink, "kind") {
            None => Some(WireKind::OpenAi),
            Some(k) => match k.value.as_str() {
                "openai" => Some(WireKind::OpenAi),
                "anthropic" => {
                    sink.error_help(
                        k.span.as_ref(),
                        "provider kind `anthropic` is not supported by this build yet",
                        "use an OpenAI-compatible endpoint (`kind = \"openai\"`), e.g. through your own translation proxy",
                    );
                    None
                }
                other => {
                    sink.error_help(
                        k.span.as_ref(),
                        format!("unknown provider kind `{other}`"),
                        suggest(other, KINDS),
                    );
                    None
                }
            },
        };
        let base_url = t
            .req_str(sink, "base_url")
            .and_then(|u| match url::Url::parse(&u.value) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                    if url.query().is_some() || url.fragment().is_some() {
                        sink.error(
                            u.span.as_ref(),
                            "`base_url` must not have a query or fragment",
                        );
                        None
                    } else {
                        Some(BaseUrl::new(&url))
                    }
                }
                Ok(_) => {
                    sink.error_help(
                        u.span.as_ref(),
                        format!(
                            "`base_url` `{}` must be an http or https URL with a host",
                            u.value
                        ),
                        "e.g. `https://api.openai.com/v1`",
                    );
                    None
                }
                Err(e) => {
                    sink.error(
                        u.span.as_ref(),
                        format!("`base_url` `{}` is not a URL: {e}", u.value),
                    );
                    None
                }
            });
        let key_secret = t.str(sink, "key_secret").and_then(|k| {
            let ok = !k.value.is_empty()
                && k.value.starts_with(|c: char| c.is_ascii_lowercase())
                && k.value
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if ok {
                Some(k.value)
            } else {
                sink.error_help(
                    k.span.as_ref(),
                    format!("`key_secret` `{}` is not a valid Spin variable name", k.value),
                    "use lower case letters, digits and `_`, starting with a letter, e.g. `openai_api_key`",
                );
                None
            }
        });
        let location = t.req_str(sink, "location");
        let countries = location
            .as_ref()
            .map(|l| resolve_residency(sink, cx, std::slice::from_ref(l)).countries);
        let models = read_models(sink, &t, cx);
        let weight = t.uint(sink, "weight").unwrap_or(1);
        let latency = t.uint(sink, "latency_ms");
        let retention = t.uint(sink, "retention_days").unwrap_or(30);
        let trains_on_inputs = t.bool(sink, "trains_on_inputs").unwrap_or(false);
        let zdr = t.bool(sink, "zdr").unwrap_or(false);
        let self_hosted = t.bool(sink, "self_hosted").unwrap_or(false);
        if let Some(id) = &id {
            cx.provider_ids.push(id.value.clone());
        }
        let (Some(id), Some(kind), Some(base_url), Some(location), Some(countries)) =
            (id, kind, base_url, location, countries)
        else {
            continue;
        };
        out.push(Provider {
            id: ProviderId(id.value),
            kind,
            base_url,
            key_secret,
            location: location.value,
            single_country: match (countries.len(), countries.iter().next()) {
                (1, Some(c)) => Some(c),
                _ => None,
            },
            countries,
            retention_days: u32::try_from(retention).unwrap_or(u32::MAX),
            trains_on_inputs,
            zdr,
            self_hosted,
            models,
            latency_ms: latency.map(|l| u32::try_from(l).unwrap_or(u32::MAX)),
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
        });
    }
    out
}

fn read_models(sink: &mut Sink, t: &Obj, cx: &mut Ctx) -> BTreeMap<String, ModelEntry> {
    let mut models = BTreeMap::new();
    let Some(m) = t.table(sink, "models") else {
        if t.key_span("models").is_some() && t.span.is_some() {
            // mistyped: already reported by `table`
        } else {
            t_missing_models(sink, t);
        }
        return models;
    };
    for (name, item) in m.entries() {
        let entry = if let Some(s) = item.as_str() {
            Some(ModelEntry {
                upstream: s.to_string(),
                input_price: None,
                output_price: None,
            })
        } else if item.is_table_like() {
            m.table(sink, &name.value).map(|e| {
                e.deny_unknown(sink, MODEL_KEYS);
                let upstream = e
                    .str(sink, "id")
                    .map_or_else(|| name.value.clone(), |s| s.value);
                ModelEntry {
                    upstream,
                    input_price: e.number(sink, "input_price").map(|v| v.value),
                    output_price: e.number(sink, "output_price").map(|v| v.value),
                }
            })
        } else {
            sink.error_help(
                name.span.as_ref(),
                format!("model `{}` must be a string or a table", name.value),
                "e.g. `\"gpt-4o-mini\" = \"gpt-4o-mini-2024-07-18\"` or `{ id = \"…\", input_price = 0.15, output_price = 0.6 }`",
            );
            None
        };
        if let Some(e) = entry {
            cx.models.insert(name.value.clone());
            models.insert(name.value, e);
        }
    }
    models
}

fn t_missing_models(sink: &mut Sink, t: &Obj) {
    sink.error_help(
        t.span.as_ref(),
        format!("`{}` is missing the required key `models`", t.path),
        "add `models = { \"public-name\" = \"provider-model-id\" }`",
    );
}

fn read_privacy(sink: &mut Sink, list: Option<Vec<Sp<String>>>) -> PrivacyFlags {
    let mut flags = PrivacyFlags::default();
    for f in list.unwrap_or_default() {
        if !flags.set(&f.value) {
            sink.error_help(
                f.span.as_ref(),
                format!("unknown privacy flag `{}`", f.value),
                suggest(&f.value, PRIVACY_FLAG_NAMES),
            );
        }
    }
    flags
}

fn check_model_globs(sink: &mut Sink, cx: &Ctx, globs: &[Sp<String>]) -> Vec<Glob> {
    globs
        .iter()
        .map(|g| {
            let glob = Glob::new(&g.value);
            if !cx.models.iter().any(|m| glob.matches(m)) {
                let known: Vec<&str> = cx.models.iter().map(String::as_str).collect();
                sink.error_help(
                    g.span.as_ref(),
                    format!("no provider serves a model matching `{}`", g.value),
                    suggest(&g.value, &known),
                );
            }
            glob
        })
        .collect()
}

/// The position of `id` among the `known` ids of a kind (`what`: "provider", "tenant"); an
/// unknown id is reported with a "did you mean".
fn find_ref(sink: &mut Sink, known: &[String], what: &str, id: &Sp<String>) -> Option<usize> {
    let at = known.iter().position(|k| *k == id.value);
    if at.is_none() {
        let names: Vec<&str> = known.iter().map(String::as_str).collect();
        sink.error_help(
            id.span.as_ref(),
            format!("unknown {what} `{}`", id.value),
            suggest(&id.value, &names),
        );
    }
    at
}

fn check_provider_ref(sink: &mut Sink, cx: &Ctx, id: &Sp<String>) -> ProviderId {
    find_ref(sink, &cx.provider_ids, "provider", id);
    ProviderId(id.value.clone())
}

/// Provider ids → their catalog positions; unknown ids are reported (and left out).
fn provider_set(sink: &mut Sink, cx: &Ctx, ids: &[Sp<String>]) -> ProviderSet {
    ids.iter()
        .filter_map(|id| find_ref(sink, &cx.provider_ids, "provider", id))
        .collect()
}

fn check_tenant_ref(sink: &mut Sink, cx: &Ctx, id: &Sp<String>) -> TenantId {
    find_ref(sink, &cx.tenant_ids, "tenant", id);
    TenantId(id.value.clone())
}

fn read_tenants(sink: &mut Sink, top: &Obj, cx: &mut Ctx) -> Vec<Tenant> {
    let mut out = Vec::new();
    let mut seen_keys: Vec<[u8; 32]> = Vec::new();
    for t in top.tables(sink, "tenants") {
        t.deny_unknown(sink, TENANT_KEYS);
        let id = t.req_str(sink, "id");
        if let Some(id) = &id {
            if !is_id(&id.value) {
                sink.error(id.span.as_ref(), bad_id_message("tenant", &id.value));
            } else if cx.tenant_ids.contains(&id.value) {
                sink.error(
                    id.span.as_ref(),
                    format!("duplicate tenant id `{}`", id.value),
                );
            }
        }
        let mut key_hashes = Vec::new();
        for k in t.str_list(sink, "keys").unwrap_or_default() {
            let decoded = k
                .value
                .strip_prefix("sha256:")
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| <[u8; 32]>::try_from(b).ok());
            match decoded {
                Some(h) if seen_keys.contains(&h) => sink.error_help(
                    k.span.as_ref(),
                    "this key hash is listed twice",
                    "a key must map to exactly one tenant",
                ),
                Some(h) => {
                    seen_keys.push(h);
                    key_hashes.push(h);
                }
                None => sink.error_help(
                    k.span.as_ref(),
                    "tenant keys must be written as `sha256:` and 64 hex digits",
                    "store keys hashed, never in clear: `meridian hash-key <key>` prints the line to paste",
                ),
            }
        }
        let models = t
            .str_list(sink, "models")
            .map(|g| check_model_globs(sink, cx, &g))
            .unwrap_or_default();
        let jurisdictions = t
            .str_list(sink, "jurisdictions")
            .map(|names| resolve_residency(sink, cx, &names));
        let privacy_list = t.str_list(sink, "privacy");
        let privacy = read_privacy(sink, privacy_list);
        let mut origins = Vec::new();
        for o in t.str_list(sink, "origins").unwrap_or_default() {
            match url::Url::parse(&o.value) {
                Ok(u)
                    if matches!(u.scheme(), "http" | "https")
                        && u.path() == "/"
                        && !o.value.ends_with('/') =>
                {
                    origins.push(u.origin().ascii_serialization())
                }
                _ => sink.error_help(
                    o.span.as_ref(),
                    format!("`{}` is not an origin", o.value),
                    "an origin is scheme, host and optional port with no path, e.g. `https://app.example.com`",
                ),
            }
        }
        let max_tokens = t.uint(sink, "max_tokens");
        let Some(id) = id else { continue };
        if !cx.tenant_ids.contains(&id.value) {
            cx.tenant_ids.push(id.value.clone());
        }
        out.push(Tenant {
            id: TenantId(id.value),
            key_hashes,
            models,
            jurisdictions,
            privacy,
            origins,
            max_tokens,
        });
    }
    out
}

fn read_plan(sink: &mut Sink, p: &Obj) -> PlanPatch {
    p.deny_unknown(sink, PLAN_KEYS);
    let mut patch = PlanPatch {
        attempt_timeout_ms: p.uint(sink, "attempt_timeout_ms"),
        first_byte_timeout_ms: p.uint(sink, "first_byte_timeout_ms"),
        idle_timeout_ms: p.uint(sink, "idle_timeout_ms"),
        deadline_ms: p.uint(sink, "deadline_ms"),
        stream_deadline_ms: p.uint(sink, "stream_deadline_ms"),
        retries: p
            .uint(sink, "retries")
            .map(|r| u32::try_from(r.min(10)).unwrap_or(10)),
        backoff_ms: p.uint(sink, "backoff_ms"),
        fallback_on: None,
        hedge_after_ms: p.uint(sink, "hedge_after_ms"),
    };
    if let Some(r) = p.int(sink, "retries") {
        if r.value > 10 {
            sink.error_help(
                r.span.as_ref(),
                "`retries` must be at most 10",
                "use fallbacks to other providers instead",
            );
        }
    }
    for key in [
        "attempt_timeout_ms",
        "first_byte_timeout_ms",
        "idle_timeout_ms",
        "deadline_ms",
        "stream_deadline_ms",
    ] {
        if let Some(v) = p.int(sink, key) {
            if v.value == 0 {
                sink.error(v.span.as_ref(), format!("`{key}` must be positive"));
            }
        }
    }
    if let Some(vals) = p.values(sink, "fallback_on") {
        let mut f = FallbackOn {
            connect: false,
            timeout: false,
            malformed: false,
            statuses: BTreeSet::new(),
        };
        for v in vals {
            match &v.value {
                Value::Integer(i) => match u16::try_from(*i.value()) {
                    Ok(code) if (400..600).contains(&code) => {
                        f.statuses.insert(code);
                    }
                    _ => sink.error(
                        v.span.as_ref(),
                        format!("`{}` is not an HTTP error status (400 to 599)", i.value()),
                    ),
                },
                Value::String(s) => match s.value().as_str() {
                    "connect" => f.connect = true,
                    "timeout" => f.timeout = true,
                    "malformed" => f.malformed = true,
                    "4xx" => f.statuses.extend(400..500),
                    "5xx" => f.statuses.extend(500..600),
                    other => sink.error_help(
                        v.span.as_ref(),
                        format!("unknown fallback trigger `{other}`"),
                        match super::diag::did_you_mean(other, FALLBACK_WORDS.iter().copied()) {
                            Some(k) => format!("did you mean `{k}`?"),
                            None => "use `connect`, `timeout`, `malformed`, `4xx`, `5xx` or a status code such as 503".into(),
                        },
                    ),
                },
                _ => sink.error(v.span.as_ref(), "fallback triggers are strings or status codes"),
            }
        }
        patch.fallback_on = Some(f);
    }
    patch
}

fn read_rules(sink: &mut Sink, top: &Obj, cx: &Ctx) -> Vec<Rule> {
    let mut out = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for t in top.tables(sink, "rules") {
        t.deny_unknown(sink, RULE_KEYS);
        let id = t.req_str(sink, "id");
        if let Some(id) = &id {
            if !is_id(&id.value) {
                sink.error(id.span.as_ref(), bad_id_message("rule", &id.value));
            } else if ids.contains(&id.value) {
                sink.error(
                    id.span.as_ref(),
                    format!("duplicate rule id `{}`", id.value),
                );
            }
        }
        let when = t
            .table(sink, "when")
            .map(|w| read_when(sink, &w, cx))
            .unwrap_or_default();
        let require = t
            .table(sink, "require")
            .map(|r| read_require(sink, &r, cx))
            .unwrap_or_default();
        let prefer = t
            .table(sink, "prefer")
            .map(|p| read_prefer(sink, &p, cx, &require))
            .unwrap_or_default();
        let plan = t
            .table(sink, "plan")
            .map(|p| read_plan(sink, &p))
            .unwrap_or_default();
        let Some(id) = id else { continue };
        ids.push(id.value.clone());
        out.push(Rule {
            id: RuleId(id.value),
            when,
            require,
            prefer,
            plan,
        });
    }
    out
}

fn read_when(sink: &mut Sink, w: &Obj, cx: &Ctx) -> When {
    w.deny_unknown(sink, WHEN_KEYS);
    let edge_verified = w.bool(sink, "edge_verified");
    if edge_verified.is_some() && !cx.edge_secret {
        sink.error_help(
            w.key_span("edge_verified").as_ref(),
            "`edge_verified` needs an edge secret to verify",
            "set `[settings.client] edge_secret = { header = \"x-edge-secret\", secret = \"edge_secret\" }`",
        );
    }
    let mut client_countries: Option<CountrySet> = None;
    if let Some(cs) = w.str_list(sink, "client_country") {
        let mut set = CountrySet::new();
        for c in cs {
            if let Some(code) = Country::parse(&c.value) {
                set.insert(code);
            } else {
                sink.error_help(
                    c.span.as_ref(),
                    format!("`{}` is not a country code", c.value),
                    "use ISO 3166-1 alpha-2 in upper case, e.g. `FR`; `XX` matches clients whose country is unknown",
                );
            }
        }
        client_countries = Some(set);
    }
    if let Some(js) = w.str_list(sink, "client_jurisdiction") {
        let r = resolve_residency(sink, cx, &js);
        client_countries
            .get_or_insert_with(CountrySet::new)
            .union_with(&r.countries);
    }
    let tenants = w
        .str_list(sink, "tenant")
        .map(|ts| ts.iter().map(|t| check_tenant_ref(sink, cx, t)).collect());
    let models = w
        .str_list(sink, "model")
        .map(|g| check_model_globs(sink, cx, &g));
    let privacy = w
        .str_list(sink, "privacy")
        .map(|l| read_privacy(sink, Some(l)));
    let mut headers = Vec::new();
    if let Some(h) = w.table(sink, "header") {
        for (name, item) in h.entries() {
            if http::HeaderName::from_bytes(name.value.as_bytes()).is_err() {
                sink.error(
                    name.span.as_ref(),
                    format!("`{}` is not a valid header name", name.value),
                );
            }
            let value = match item.as_value() {
                Some(Value::String(s)) => Some(s.value().clone()),
                Some(Value::Boolean(b)) if *b.value() => None,
                _ => {
                    sink.error_help(
                        name.span.as_ref(),
                        format!(
                            "header condition `{}` must be a string or `true`",
                            name.value
                        ),
                        "`true` matches any value; a string matches that exact value",
                    );
                    continue;
                }
            };
            headers.push((name.value.to_ascii_lowercase(), value));
        }
    }
    let endpoints = w.str_list(sink, "endpoint").map(|es| {
        es.into_iter()
            .filter_map(|e| {
                if ENDPOINTS.contains(&e.value.as_str()) {
                    Some(e.value)
                } else {
                    sink.error_help(
                        e.span.as_ref(),
                        format!("unknown endpoint `{}`", e.value),
                        suggest(&e.value, ENDPOINTS),
                    );
                    None
                }
            })
            .collect()
    });
    When {
        client_countries,
        edge_regions: w
            .str_list(sink, "edge_region")
            .map(|rs| rs.into_iter().map(|r| r.value).collect()),
        tenants,
        anonymous: w.bool(sink, "anonymous"),
        models,
        privacy,
        headers,
        stream: w.bool(sink, "stream"),
        endpoints,
        edge_verified,
    }
}

/// Warns when residency rules cover known client locations but none covers the unknown one
/// (`XX`): a client whose location is unknown would then be served without residency.
fn warn_unknown_country(sink: &mut Sink, top: &Obj, rules: &[Rule]) {
    let located_residency = rules.iter().any(|r| {
        r.require.jurisdiction.is_some()
            && r.when
                .client_countries
                .as_ref()
                .is_some_and(|cs| !cs.contains(Country::UNKNOWN))
    });
    let unknown_covered = rules.iter().any(|r| {
        r.when
            .client_countries
            .as_ref()
            .is_none_or(|cs| cs.contains(Country::UNKNOWN))
            && r.when.edge_regions.is_none()
            && r.when.tenants.is_none()
            && r.when.anonymous.is_none()
            && r.when.models.is_none()
            && r.when.privacy.is_none()
            && r.when.headers.is_empty()
            && r.when.stream.is_none()
            && r.when.endpoints.is_none()
            && r.when.edge_verified.is_none()
            && (r.require.jurisdiction.is_some()
                || r.require.self_hosted
                || r.require.providers.is_some())
    });
    if located_residency && !unknown_covered {
        sink.warn(
            top.key_span("rules").as_ref(),
            "residency rules apply to clients whose country is known, but no rule decides for clients whose country is unknown (`XX`): they are served without residency",
            "add a rule such as `when = { client_country = [\"XX\"] }` with `require = { jurisdiction = [\"eu\"] }` (or `self_hosted = true`)",
        );
    }
}

fn read_price(sink: &mut Sink, p: &Obj) -> MaxPrice {
    p.deny_unknown(sink, PRICE_KEYS);
    MaxPrice {
        input: p.number(sink, "input").map(|v| v.value),
        output: p.number(sink, "output").map(|v| v.value),
    }
}

fn read_require(sink: &mut Sink, r: &Obj, cx: &Ctx) -> Require {
    r.deny_unknown(sink, REQUIRE_KEYS);
    let privacy_list = r.str_list(sink, "privacy");
    Require {
        jurisdiction: r
            .str_list(sink, "jurisdiction")
            .map(|names| resolve_residency(sink, cx, &names)),
        self_hosted: r.bool(sink, "self_hosted").unwrap_or(false),
        privacy: read_privacy(sink, privacy_list),
        providers: r
            .str_list(sink, "providers")
            .map(|ps| provider_set(sink, cx, &ps)),
        deny: r
            .str_list(sink, "deny")
            .map(|ps| provider_set(sink, cx, &ps))
            .unwrap_or_default(),
        max_price: r
            .table(sink, "max_price")
            .map(|p| read_price(sink, &p))
            .unwrap_or_default(),
    }
}

fn read_prefer(sink: &mut Sink, p: &Obj, cx: &Ctx, require: &Require) -> Prefer {
    p.deny_unknown(sink, PREFER_KEYS);
    let order = p
        .str_list(sink, "order")
        .unwrap_or_default()
        .iter()
        .map(|id| check_provider_ref(sink, cx, id))
        .collect();
    let sort = p.str(sink, "sort").and_then(|s| match s.value.as_str() {
        "price" => Some(Sort::Price),
        "latency" => Some(Sort::Latency),
        "weighted" => Some(Sort::Weighted),
        other => {
            sink.error_help(
                s.span.as_ref(),
                format!("unknown sort `{other}`"),
                suggest(other, SORTS),
            );
            None
        }
    });
    let mut weights = BTreeMap::new();
    if let Some(w) = p.table(sink, "weights") {
        for (id, item) in w.entries() {
            let at = find_ref(sink, &cx.provider_ids, "provider", &id);
            let pid = ProviderId(id.value.clone());
            let Some(n) = item.as_integer().and_then(|n| u32::try_from(n).ok()) else {
                sink.error(
                    id.span.as_ref(),
                    format!("weight of `{}` must be a non-negative integer", id.value),
                );
                continue;
            };
            if at.is_some_and(|i| {
                require.deny.contains(i)
                    || require
                        .providers
                        .as_ref()
                        .is_some_and(|allow| !allow.contains(i))
            }) {
                sink.error_help(
                    id.span.as_ref(),
                    format!(
                        "weight for `{}` cannot apply: this rule's `require` excludes it",
                        id.value
                    ),
                    "remove the weight or the exclusion",
                );
            }
            weights.insert(pid, n);
        }
        if !weights.is_empty() && weights.values().all(|w| *w == 0) {
            sink.error_help(
                p.key_span("weights").as_ref(),
                "every weight is zero, so no weighted choice can be made",
                "give at least one provider a positive weight",
            );
        }
    }
    Prefer {
        order,
        sort,
        weights,
    }
}

fn toml_to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::String(s) => serde_json::Value::String(s.value().clone()),
        Value::Integer(i) => serde_json::Value::from(*i.value()),
        Value::Float(f) => serde_json::Number::from_f64(*f.value())
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Boolean(b) => serde_json::Value::Bool(*b.value()),
        Value::Datetime(d) => serde_json::Value::String(d.value().to_string()),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(toml_to_json).collect()),
        Value::InlineTable(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, v)| (k.to_string(), toml_to_json(v)))
                .collect(),
        ),
    }
}

fn read_tests(sink: &mut Sink, top: &Obj, cx: &Ctx, countries_deliverable: bool) -> Vec<TestCase> {
    let mut out = Vec::new();
    for (i, t) in top.tables(sink, "test").into_iter().enumerate() {
        t.deny_unknown(sink, TEST_KEYS);
        let line = sink.position(t.span.as_ref()).0;
        let name = t
            .str(sink, "name")
            .map_or_else(|| format!("test #{}", i + 1), |s| s.value);
        // An unknown model is a legitimate thing to test (expect_status = 404), so no check.
        let model = t.req_str(sink, "model");
        let country = t.str(sink, "country").and_then(|c| {
            if !countries_deliverable {
                sink.error_help(
                    c.span.as_ref(),
                    "this case gives a `country`, but the policy has no location source, so no request can carry one",
                    "name the platform Meridian runs behind, e.g. `[settings.client]` with `platform = \"cloudflare\"`",
                );
            }
            if let Some(code) = Country::parse(&c.value) {
                Some(code)
            } else {
                sink.error(
                    c.span.as_ref(),
                    format!("`{}` is not a country code", c.value),
                );
                None
            }
        });
        let tenant = t
            .str(sink, "tenant")
            .map(|id| check_tenant_ref(sink, cx, &id));
        let privacy_list = t.str_list(sink, "privacy");
        let privacy = read_privacy(sink, privacy_list);
        let mut headers = Vec::new();
        if let Some(h) = t.table(sink, "headers") {
            for (k, item) in h.entries() {
                match item.as_str() {
                    Some(v) => headers.push((k.value.to_ascii_lowercase(), v.to_string())),
                    None => sink.error(k.span.as_ref(), "header values must be strings"),
                }
            }
        }
        let provider = t
            .table(sink, "provider")
            .and_then(|_| t_value_json(&t, "provider"));
        let expect_order = t.str_list(sink, "expect");
        let expect_first = t.str(sink, "expect_first");
        let expect_status = t.uint(sink, "expect_status");
        let expect = match (expect_order, expect_first, expect_status) {
            (Some(o), None, None) => Some(Expectation::Order(
                o.iter().map(|p| check_provider_ref(sink, cx, p)).collect(),
            )),
            (None, Some(f), None) => Some(Expectation::First(check_provider_ref(sink, cx, &f))),
            (None, None, Some(s)) => match u16::try_from(s) {
                Ok(s) if (400..600).contains(&s) => Some(Expectation::Refusal(s)),
                _ => {
                    sink.error(
                        t.key_span("expect_status").as_ref(),
                        "`expect_status` must be 400 to 599",
                    );
                    None
                }
            },
            _ => {
                sink.error_help(
                    t.span.as_ref(),
                    format!("test `{name}` needs exactly one of `expect`, `expect_first`, `expect_status`"),
                    "`expect = [\"a\", \"b\"]` for the whole order, `expect_first = \"a\"`, or `expect_status = 451` for a refusal",
                );
                None
            }
        };
        let (Some(model), Some(expect)) = (model, expect) else {
            continue;
        };
        out.push(TestCase {
            request_id: t
                .str(sink, "request_id")
                .map_or_else(|| format!("test-{}", i + 1), |s| s.value),
            name,
            line,
            model: model.value,
            country,
            edge_region: t.str(sink, "edge_region").map(|s| s.value),
            tenant,
            privacy,
            stream: t.bool(sink, "stream").unwrap_or(false),
            headers,
            provider,
            expect,
        });
    }
    out
}

fn t_value_json(t: &Obj, key: &str) -> Option<serde_json::Value> {
    let item: &Item = t.raw(key)?;
    match item {
        Item::Value(v) => Some(toml_to_json(v)),
        Item::Table(tbl) => Some(serde_json::Value::Object(
            tbl.iter()
                .filter_map(|(k, v)| v.as_value().map(|v| (k.to_string(), toml_to_json(v))))
                .collect(),
        )),
        _ => None,
    }
}
