//! Text → validated [`Policy`], collecting every problem with its position. One module per
//! policy section; shared reference checks here.

mod cases;
mod guards;
mod jurisdictions;
mod limits;
mod pii;
mod plan;
mod pools;
mod providers;
mod rules;
mod settings;
mod tenants;

use cases::read_cases;
pub use guards::{GUARD_KEYS, GUARD_USE_KEYS};
use jurisdictions::read_jurisdictions;
pub use limits::{HEALTH_KEYS, LIMIT_SETTINGS_KEYS};
use pii::read_pii;
pub use pii::PII_KEYS;
mod evidence;
pub use evidence::{RECEIPTS_KEYS, RECORD_KEYS};
use plan::read_plan;
use providers::read_providers;
use rules::{read_rules, warn_unknown_country};
use settings::read_settings;
use tenants::read_tenants;

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};
use toml_edit::{ImDocument, Item, Value};

use crate::diag::{suggest, PolicyErrors, Sink};
use crate::guards::*;
use crate::jurisdictions::builtins;
use crate::model::*;
use crate::reader::{Obj, Sp};

pub const TOP_KEYS: &[&str] = &[
    "version",
    "name",
    "revision",
    "settings",
    "jurisdictions",
    "providers",
    "tenants",
    "routes",
    "rules",
    "guards",
    "pii",
    "test",
];
pub const SETTINGS_KEYS: &[&str] = &[
    "client",
    "trusted_country_headers",
    "max_body_bytes",
    "allow_anonymous",
    "expose_ratelimit_headers",
    "audit_headers",
    "stream_events",
    "plan",
    "request",
    "limits",
    "health",
    "receipts",
    "record",
];
pub const REQUEST_KEYS: &[&str] = &["unknown_fields", "affinity_header"];
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
    "api_version",
    "max_tokens",
    "capabilities",
    "anthropic_beta",
    "responses",
    "storage",
    "transfer_safeguard",
    "pool",
];
pub const POOL_KEYS: &[&str] = &[
    "balance",
    "engine",
    "max_queue",
    "load_bound",
    "prefix_bytes",
    "stale_after_s",
    "replicas",
];
pub const REPLICA_KEYS: &[&str] = &["name", "base_url", "location", "metrics_url"];
pub const MODEL_KEYS: &[&str] = &[
    "id",
    "input_price",
    "output_price",
    "cache_read_price",
    "cache_write_price",
    "context_window",
    "max_output",
    "option_price_factor",
];
pub const ROUTE_KEYS: &[&str] = &["id", "models"];
pub const TENANT_KEYS: &[&str] = &[
    "id",
    "keys",
    "models",
    "jurisdictions",
    "privacy",
    "origins",
    "max_tokens",
    "limits",
    "purposes",
];
pub const RULE_KEYS: &[&str] = &[
    "id", "when", "require", "prefer", "plan", "redact", "restore", "refuse", "limits", "route",
    "guards",
];
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
    "browser",
    "input_tokens",
    "tools",
    "media",
    "pii",
];
pub const REQUIRE_KEYS: &[&str] = &[
    "jurisdiction",
    "self_hosted",
    "privacy",
    "providers",
    "deny",
    "max_price",
    "capabilities",
    "storage",
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
    "prompt",
    "expect_pii",
    "expect_replicas",
    "expect",
    "expect_first",
    "expect_status",
];
pub const ENDPOINTS: &[&str] = &["chat", "completions", "embeddings", "messages", "responses"];
const KINDS: &[&str] = &["openai", "azure", "anthropic"];
const SORTS: &[&str] = &["price", "latency", "weighted", "nearest"];
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
    /// Every pool's replicas, as `provider@replica`.
    replicas: Vec<String>,
    tenant_ids: Vec<String>,
    models: BTreeSet<String>,
    /// Whether `settings.client.edge_secret` is set (`when.edge_verified` needs it).
    edge_secret: bool,
    /// The edge secret's header, a credential no rule may match on.
    edge_secret_header: Option<String>,
    /// The personal-data kinds rules may name.
    pii: PiiConfig,
    /// Route ids (`[[routes]]`), for rules' `route`.
    routes: BTreeSet<String>,
    /// The guards' catalog, for rules' `[[rules.guards]]`.
    guards: Vec<guards::GuardRef>,
    /// `[settings.record] home`: its name and countries (a recipient outside is a transfer).
    home: (String, CountrySet),
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
        replicas: Vec::new(),
        tenant_ids: Vec::new(),
        models: BTreeSet::new(),
        edge_secret: false,
        edge_secret_header: None,
        pii: read_pii(sink, &top),
        routes: BTreeSet::new(),
        guards: Vec::new(),
        home: (String::new(), CountrySet::new()),
    };
    let mut settings = read_settings(sink, &top);
    let (receipts, record) = evidence::read_evidence_settings(sink, &top, &mut cx);
    if let Some(s) = settings.as_mut() {
        s.receipts = receipts;
        s.record = record;
    }
    cx.edge_secret_header = settings
        .as_ref()
        .and_then(|s| s.client.edge_secret.as_ref())
        .map(|e| e.header.to_string());
    cx.edge_secret = cx.edge_secret_header.is_some();
    let providers = read_providers(sink, &top, &mut cx);
    // Routes before tenants and rules: their ids are model names both may use.
    let routes = read_routes(sink, &top, &mut cx);
    let tenants = read_tenants(sink, &top, &mut cx);
    let catalog = guards::read_guards(sink, &top, &mut cx);
    let (rules, uses) = read_rules(sink, &top, &cx);
    let builtin_used = uses
        .iter()
        .any(|u| catalog.get(u.guard as usize).is_some_and(Guard::is_builtin));
    if let Some(s) = &settings {
        limits::check_fail_open(sink, &top, &s.limits, &cx);
        limits::warn_unlimited(sink, &top, &tenants, &rules, s);
    }
    let mut pii = cx.pii.clone();
    pii.used = rules
        .iter()
        .any(|r| r.when.pii.is_some() || !r.pii.is_empty());
    // A request carries a country only through the deployment's location source.
    let countries_deliverable = settings.as_ref().is_none_or(|s| s.client.can_locate());
    let cases = read_cases(sink, &top, &cx, countries_deliverable);
    warn_unknown_country(sink, &top, &rules);

    let digest = hex::encode(Sha256::digest(text.as_bytes()));
    Some(Policy {
        name: name.into(),
        revision: revision.into(),
        digest: digest[..12].to_string().into(),
        settings: settings?,
        jurisdictions: cx
            .jurisdictions
            .into_iter()
            .map(|(k, v)| (Text::from(k), v))
            .collect(),
        providers: providers.into(),
        tenants: tenants.into(),
        routes: routes.into(),
        rules: rules.into(),
        pii,
        guards: Guards {
            catalog: catalog.into(),
            uses: uses.into(),
            builtin_used,
        },
        cases,
        warnings: Vec::new(),
    })
}

/// `[[routes]]`: a public model name for an ordered list of catalog models. Its id joins the
/// model names rules and clients may use.
fn read_routes(sink: &mut Sink, top: &Obj, cx: &mut Ctx) -> Vec<ModelRoute> {
    let mut out: Vec<ModelRoute> = Vec::new();
    for t in top.tables(sink, "routes") {
        t.deny_unknown(sink, ROUTE_KEYS);
        let id = t.req_str(sink, "id");
        let models = t.str_list(sink, "models").unwrap_or_default();
        let Some(id) = id else { continue };
        if cx.models.contains(&id.value) || out.iter().any(|r| r.id == id.value) {
            sink.error_help(
                id.span.as_ref(),
                format!(
                    "route `{}` has the name of a model or another route",
                    id.value
                ),
                "a route is a public model name of its own: give it a name no provider serves",
            );
            continue;
        }
        if models.is_empty() {
            sink.error(
                id.span.as_ref(),
                format!("route `{}` lists no `models`", id.value),
            );
            continue;
        }
        for m in &models {
            if !cx.models.contains(&m.value) {
                sink.error_help(
                    m.span.as_ref(),
                    format!(
                        "route `{}` names `{}`, which no provider serves",
                        id.value, m.value
                    ),
                    suggest(
                        &m.value,
                        &cx.models.iter().map(String::as_str).collect::<Vec<_>>(),
                    ),
                );
            }
        }
        out.push(ModelRoute {
            id: id.value.into(),
            models: models.into_iter().map(|m| Text::from(m.value)).collect(),
        });
    }
    for r in &out {
        cx.models.insert(r.id.to_string());
        cx.routes.insert(r.id.to_string());
    }
    out
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

/// A `key_secret`: the name of the Spin variable that holds an operator's key.
fn read_key_secret(sink: &mut Sink, t: &Obj) -> Option<String> {
    let k = t.str(sink, "key_secret")?;
    let ok = k.value.starts_with(|c: char| c.is_ascii_lowercase())
        && k.value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        sink.error_help(
            k.span.as_ref(),
            format!(
                "`key_secret` `{}` is not a valid Spin variable name",
                k.value
            ),
            "use lower case letters, digits and `_`, starting with a letter, e.g. `openai_api_key`",
        );
    }
    ok.then_some(k.value)
}

/// A `route` that must name a `[[routes]]` id.
fn check_route(sink: &mut Sink, cx: &Ctx, r: &Sp<String>) -> Option<Text> {
    if cx.routes.contains(&r.value) {
        return Some(Text::from(r.value.clone()));
    }
    sink.error_help(
        r.span.as_ref(),
        format!(
            "`route` names `{}`, which is not a `[[routes]]` id",
            r.value
        ),
        "define it as `[[routes]]` with `id` and `models`",
    );
    None
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
        names: names.iter().map(|n| Text::from(n.value.clone())).collect(),
        countries,
    }
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

/// A list of capability names; unknown names are reported with a "did you mean".
fn read_capabilities(sink: &mut Sink, list: &[Sp<String>]) -> CapSet {
    let mut set = CapSet::EMPTY;
    for n in list {
        match Capability::from_name(&n.value) {
            Some(c) => set.insert(c),
            None => sink.error_help(
                n.span.as_ref(),
                format!("unknown capability `{}`", n.value),
                suggest(&n.value, CAPABILITY_NAMES),
            ),
        }
    }
    set
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
    ProviderId(id.value.clone().into())
}

/// Provider ids → their catalog positions; unknown ids are reported (and left out).
fn provider_set(sink: &mut Sink, cx: &Ctx, ids: &[Sp<String>]) -> ProviderSet {
    ids.iter()
        .filter_map(|id| find_ref(sink, &cx.provider_ids, "provider", id))
        .collect()
}

fn check_tenant_ref(sink: &mut Sink, cx: &Ctx, id: &Sp<String>) -> TenantId {
    find_ref(sink, &cx.tenant_ids, "tenant", id);
    TenantId(id.value.clone().into())
}
