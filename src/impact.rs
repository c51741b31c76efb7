//! What a policy change does to traffic, before it ships: both policies decide every request
//! the fact space can describe, with the component's own `decide`, and the cases whose
//! outcome differs are merged into readable changes. Pure: `meridian diff` prints it.
//!
//! The fact space: every country (ISO 3166-1, from the built-in table) and unknown (`XX`);
//! anonymous and every tenant either policy names; every public model either serves (routes
//! included); every combination of privacy flags (none, each alone, each pair, …); stream or
//! not; no edge region and each region a rule of either names; no personal data and each kind a
//! rule of either names; chat completions and each endpoint a rule of either names; and, for
//! the conditions a rule can state on a request's shape (a header, the edge secret, the
//! estimated input, tools, media), each rule's own conditions met and not met together, plus
//! each capability a rule or a grant of either policy names, and a `provider` preference naming
//! each provider only one policy has (see [`Extra`]). Callers
//! are authenticated first, as the component does: anonymous callers where a policy does not
//! allow them get 401, and a tenant a policy does not have is anonymous under it (or 401). A case's outcome is its first candidate (the provider that
//! will be tried first, and where it processes data) or its refusal; the rules that matched
//! are shown, marked `new` when the old policy has no rule of that id.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::decide::decide;
use crate::facts::{self, Endpoint, RequestFacts};
use crate::location::Location;
use crate::policy::{places, Capability, Country, Policy, When, PRIVACY_FLAG_NAMES};

/// What a request carries beyond the base product that a policy can tell apart: varied per
/// rule from the conditions it states ([`variants_of`]), and per capability and `provider`
/// preference either policy could treat differently.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Extra {
    /// Headers sent (a rule's `header` conditions).
    pub headers: Vec<(String, String)>,
    /// Whether the edge secret verified (`edge_verified`); `None`: the base (no secret).
    pub edge_verified: Option<bool>,
    /// The estimated input tokens (`input_tokens`); `None`: the base (a short prompt).
    pub input_tokens: Option<u64>,
    pub tools: bool,
    pub media: bool,
    /// A capability the request uses.
    pub capability: Option<&'static str>,
    /// The `provider` object sent, as JSON.
    pub prefs: Option<String>,
}

impl Extra {
    /// In words, for a change's line; `None` for a plain request.
    pub fn label(&self) -> Option<String> {
        let mut parts = Vec::new();
        for (k, v) in &self.headers {
            parts.push(format!("header {k}: {v}"));
        }
        if let Some(v) = self.edge_verified {
            parts.push(
                if v {
                    "edge verified"
                } else {
                    "edge not verified"
                }
                .to_string(),
            );
        }
        if let Some(n) = self.input_tokens {
            parts.push(format!("~{n} input tokens"));
        }
        if self.tools {
            parts.push("with tools".into());
        }
        if self.media {
            parts.push("with media".into());
        }
        if let Some(c) = self.capability {
            parts.push(format!("using {c}"));
        }
        if let Some(p) = &self.prefs {
            parts.push(format!("provider {p}"));
        }
        (!parts.is_empty()).then(|| parts.join(" and "))
    }

    fn apply(&self, f: &mut RequestFacts) -> Result<(), String> {
        f.headers.extend(self.headers.iter().cloned());
        if let Some(v) = self.edge_verified {
            f.location.edge = if v {
                crate::location::Edge::Verified
            } else {
                crate::location::Edge::Missing
            };
        }
        if let Some(n) = self.input_tokens {
            f.input_tokens = n;
        }
        f.tools |= self.tools;
        if self.media {
            f.media_parts = f.media_parts.max(1);
        }
        if let Some(c) = self.capability.and_then(Capability::from_name) {
            f.capabilities.insert(c);
        }
        if let Some(p) = &self.prefs {
            let v: Value = serde_json::from_str(p).map_err(|e| e.to_string())?;
            let (prefs, flags) = facts::provider_prefs(&v).map_err(|e| e.message)?;
            f.prefs = prefs;
            f.privacy = f.privacy.union(flags);
        }
        Ok(())
    }
}

/// The shapes of a request that meet a rule's conditions on it and that miss them, each
/// condition met and missed in every combination. Every condition a rule can state is named
/// here, without a rest pattern: a new one fails the build until the diff says how to vary it.
pub fn variants_of(w: &When) -> Vec<Extra> {
    let When {
        // The base product varies these: countries, edge regions, tenants (and so anonymous
        // callers and browser keys, a tenant with `origins`), models, privacy flags, stream,
        // endpoints and personal data.
        client_countries: _,
        edge_regions: _,
        tenants: _,
        anonymous: _,
        models: _,
        privacy: _,
        stream: _,
        endpoints: _,
        pii: _,
        browser: _,
        // Varied here.
        headers,
        edge_verified,
        input_tokens,
        tools,
        media,
    } = w;
    type Set = Box<dyn Fn(&mut Extra)>;
    let mut axes: Vec<Vec<Set>> = Vec::new();
    for (name, want) in headers.iter() {
        let (name, value) = (
            name.to_string(),
            want.as_deref().unwrap_or("present").to_string(),
        );
        axes.push(vec![
            Box::new(|_: &mut Extra| {}),
            Box::new(move |e: &mut Extra| e.headers.push((name.clone(), value.clone()))),
        ]);
    }
    if edge_verified.is_some() {
        axes.push(vec![
            Box::new(|e: &mut Extra| e.edge_verified = Some(true)),
            Box::new(|e: &mut Extra| e.edge_verified = Some(false)),
        ]);
    }
    if let Some(r) = input_tokens {
        let mut points: BTreeSet<u64> = BTreeSet::new();
        for b in [r.min, r.max].into_iter().flatten() {
            points.extend([b.saturating_sub(1), b, b.saturating_add(1)]);
        }
        axes.push(
            points
                .into_iter()
                .map(|n| Box::new(move |e: &mut Extra| e.input_tokens = Some(n)) as Set)
                .collect(),
        );
    }
    if tools.is_some() {
        axes.push(vec![
            Box::new(|_: &mut Extra| {}),
            Box::new(|e: &mut Extra| e.tools = true),
        ]);
    }
    if media.is_some() {
        axes.push(vec![
            Box::new(|_: &mut Extra| {}),
            Box::new(|e: &mut Extra| e.media = true),
        ]);
    }
    let mut out = vec![Extra::default()];
    for axis in &axes {
        out = out
            .iter()
            .flat_map(|e| {
                axis.iter().map(move |set| {
                    let mut e = e.clone();
                    set(&mut e);
                    e
                })
            })
            .collect();
    }
    out
}

/// Every request shape beyond the base the two policies may treat differently.
fn extras(both: [&Policy; 2]) -> Vec<Extra> {
    let mut set: BTreeSet<Extra> = BTreeSet::new();
    set.insert(Extra::default());
    for p in both {
        for r in p.rules.iter() {
            set.extend(variants_of(&r.when));
        }
    }
    // Capabilities a rule narrows to, or a grant that differs between the policies.
    let mut caps = crate::policy::CapSet::EMPTY;
    for p in both {
        for r in p.rules.iter() {
            if r.require.capabilities.is_some() {
                caps = caps.union(crate::policy::CapSet::of(&Capability::ALL));
            }
        }
    }
    for a in both[0].providers.iter() {
        match both[1].providers.iter().find(|b| b.id == a.id) {
            Some(b) if a.capabilities != b.capabilities => {
                caps = caps.union(a.capabilities.union(b.capabilities));
            }
            _ => {}
        }
    }
    for c in caps.iter() {
        set.insert(Extra {
            capability: Some(c.name()),
            ..Extra::default()
        });
    }
    // The `provider` preferences that name a provider one policy has and the other has not (a
    // request's `only` or `order` can reach a provider that is not first for anyone).
    let ids = |p: &Policy| -> BTreeSet<String> {
        p.providers.iter().map(|x| x.id.0.to_string()).collect()
    };
    let (a, b) = (ids(both[0]), ids(both[1]));
    let mut prefs: Vec<String> = Vec::new();
    for id in a.symmetric_difference(&b) {
        prefs.push(format!(r#"{{"only":["{id}"]}}"#));
    }
    for p in prefs {
        set.insert(Extra {
            prefs: Some(p),
            ..Extra::default()
        });
    }
    set.into_iter().collect()
}

/// One request the fact space describes (everything but the country).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Shape {
    /// `None`: anonymous.
    pub tenant: Option<String>,
    pub model: String,
    /// Flags as the `x-meridian-privacy` header takes them (`zdr, no-training`).
    pub privacy: Option<String>,
    pub stream: bool,
    pub edge_region: Option<String>,
    pub pii: Option<String>,
    pub endpoint: Endpoint,
    /// What the request carries beyond these (a plain request by default).
    pub extra: Extra,
}

/// What a policy does with one request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Served {
        provider: String,
        location: String,
        /// Where it keeps what it retains, when not where it processes.
        #[serde(skip_serializing_if = "Option::is_none")]
        storage: Option<String>,
        rules: Vec<String>,
        /// The guards that judge it (`guard:side`; `(skipped)` when the text may not go to one
        /// that fails open).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        guards: Vec<String>,
    },
    Refused {
        status: u16,
        code: String,
        rules: Vec<String>,
    },
    /// The request is invalid under this policy (e.g. the model is unknown to it).
    Invalid { reason: String },
    /// The tenant is not in this policy: its keys name no one, and the caller is anonymous.
    AsAnonymous { then: Box<Outcome> },
}

impl Outcome {
    /// The same outcome whichever rules led to it: what a change to traffic is judged by.
    fn without_rules(&self) -> Outcome {
        let mut o = self.clone();
        match &mut o {
            Outcome::Served { rules, .. } | Outcome::Refused { rules, .. } => rules.clear(),
            Outcome::Invalid { .. } => {}
            Outcome::AsAnonymous { then } => **then = then.without_rules(),
        }
        o
    }

    fn render(&self, old: Option<&Policy>) -> String {
        let rules = |rules: &[String]| -> String {
            if rules.is_empty() {
                return String::new();
            }
            let shown: Vec<String> = rules
                .iter()
                .map(|r| match old {
                    Some(o) if !o.rules.iter().any(|x| x.id.0.as_ref() == r.as_str()) => {
                        format!("rule `{r}`, new")
                    }
                    _ => format!("rule `{r}`"),
                })
                .collect();
            format!(" ({})", shown.join("; "))
        };
        match self {
            Outcome::Served {
                provider,
                location,
                storage,
                rules: r,
                guards,
            } => {
                let judged = if guards.is_empty() {
                    String::new()
                } else {
                    format!(", judged by {}", guards.join(", "))
                };
                let kept = storage
                    .as_ref()
                    .map_or_else(String::new, |s| format!("; keeps data in {s}"));
                format!(
                    "served by {provider} ({location}{kept}){}{judged}",
                    rules(r)
                )
            }
            Outcome::Refused {
                status,
                code,
                rules: r,
            } => {
                format!("refused {status} {code}{}", rules(r))
            }
            Outcome::Invalid { reason } => format!("invalid: {reason}"),
            Outcome::AsAnonymous { then } => {
                format!("as anonymous (no such tenant): {}", then.render(old))
            }
        }
    }
}

/// One merged change: the cases it covers (`None` in a dimension: every value) and the two
/// outcomes.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The countries it covers (`XX`: unknown).
    pub countries: Vec<String>,
    /// `any country`, a jurisdiction's name, or the countries.
    pub clients: String,
    pub tenant: Dim<Option<String>>,
    pub model: Dim<String>,
    pub privacy: Dim<Option<String>>,
    pub stream: Dim<bool>,
    pub edge_region: Dim<Option<String>>,
    pub pii: Dim<Option<String>>,
    pub endpoint: Dim<Endpoint>,
    /// What the requests carry beyond the base (`null`: a plain request).
    pub request: Dim<Option<String>>,
    pub old: Outcome,
    pub new: Outcome,
    /// Cases (one country of one shape each) it covers.
    pub cases: usize,
    pub line: String,
}

/// A dimension's value in a merged change: one value, some of them (a JSON array), or all of
/// them (`"*"` in JSON); `null` is no value: anonymous, no flag, no region, no personal data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dim<T> {
    Any,
    One(T),
    Some(Vec<T>),
}

impl<T: Serialize> Serialize for Dim<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Dim::Any => s.serialize_str("*"),
            Dim::One(v) => v.serialize(s),
            Dim::Some(vs) => vs.serialize(s),
        }
    }
}

/// The values of one dimension several changes cover together: all of them (`size`), or the
/// set.
fn union<'a, T: Ord + Clone + 'a>(dims: impl Iterator<Item = &'a Dim<T>>, size: usize) -> Dim<T> {
    let mut set = BTreeSet::new();
    for d in dims {
        match d {
            Dim::Any => return Dim::Any,
            Dim::One(v) => {
                set.insert(v.clone());
            }
            Dim::Some(vs) => set.extend(vs.iter().cloned()),
        }
    }
    if set.len() >= size {
        Dim::Any
    } else if set.len() == 1 {
        set.into_iter().next().map_or(Dim::Any, Dim::One)
    } else {
        Dim::Some(set.into_iter().collect())
    }
}

/// A dimension in words: nothing when it covers every value, `one` of a single value, else
/// `many` and each value's `name`.
fn words<T>(
    d: &Dim<T>,
    one: impl Fn(&T) -> String,
    many: &str,
    name: impl Fn(&T) -> String,
) -> Option<String> {
    match d {
        Dim::Any => None,
        Dim::One(v) => Some(one(v)),
        Dim::Some(vs) => Some(format!(
            "{many} {}",
            vs.iter().map(name).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Several privacy combinations in words: "privacy flags without local-only" when they are
/// exactly the combinations without one flag (or with it), else each combination.
fn privacy_words(set: &[Option<String>], all: &[Option<String>]) -> String {
    let has = |combo: &Option<String>, f: &str| {
        combo
            .as_deref()
            .is_some_and(|c| c.split(", ").any(|x| x == f))
    };
    for f in PRIVACY_FLAG_NAMES {
        for with in [false, true] {
            let want: Vec<&Option<String>> = all.iter().filter(|c| has(c, f) == with).collect();
            if want.len() == set.len() && want.iter().all(|w| set.contains(w)) {
                return if with {
                    format!("privacy flags with {f}")
                } else {
                    format!("privacy flags without {f}")
                };
            }
        }
    }
    let name = |c: &Option<String>| c.as_deref().unwrap_or("none").to_string();
    if set.len() * 2 > all.len() {
        let rest: Vec<String> = all.iter().filter(|c| !set.contains(c)).map(name).collect();
        return format!("privacy flags other than {}", rest.join(" | "));
    }
    let shown: Vec<String> = set.iter().map(name).collect();
    format!("privacy {}", shown.join(" | "))
}

#[derive(Debug, Serialize)]
pub struct Diff {
    pub old: String,
    pub new: String,
    /// Cases decided under each policy.
    pub cases: usize,
    /// Cases whose outcome differs.
    pub changed: usize,
    pub changes: Vec<Change>,
}

/// The values of each dimension the two policies can tell apart.
pub struct Space {
    pub countries: Vec<Country>,
    pub shapes: Vec<Shape>,
    pub tenants: Vec<Option<String>>,
    pub models: Vec<String>,
    pub edge_regions: Vec<Option<String>>,
    pub pii: Vec<Option<String>>,
    pub privacy: Vec<Option<String>>,
    pub endpoints: Vec<Endpoint>,
    pub extras: Vec<Extra>,
}

pub fn space(old: &Policy, new: &Policy) -> Space {
    let mut countries: Vec<Country> = places::COUNTRIES
        .iter()
        .filter_map(|(c, _, _)| Country::parse_assigned(c))
        .collect();
    countries.push(Country::UNKNOWN);
    let both = [old, new];
    let mut tenants: Vec<Option<String>> = vec![None];
    let names: BTreeSet<String> = both
        .iter()
        .flat_map(|p| p.tenants.iter().map(|t| t.id.0.to_string()))
        .collect();
    tenants.extend(names.into_iter().map(Some));
    let models: Vec<String> = both
        .iter()
        .flat_map(|p| p.model_names())
        .map(str::to_string)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut edge_regions: Vec<Option<String>> = vec![None];
    let regions: BTreeSet<String> = both
        .iter()
        .flat_map(|p| p.rules.iter())
        .filter_map(|r| r.when.edge_regions.as_ref())
        .flat_map(|l| l.iter().map(|t| t.to_string()))
        .collect();
    edge_regions.extend(regions.into_iter().map(Some));
    let mut pii: Vec<Option<String>> = vec![None];
    let kinds: BTreeSet<String> = both
        .iter()
        .flat_map(|p| {
            p.rules.iter().filter_map(|r| match &r.when.pii {
                Some(crate::policy::pii::PiiWhen::Found(set)) => Some(
                    set.iter()
                        .map(|k| p.pii.kind_name(k).to_string())
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
        })
        .flatten()
        .collect();
    pii.extend(kinds.into_iter().map(Some));
    // Every combination of flags: none first, then by the bits of their index.
    let privacy: Vec<Option<String>> = (0..1usize << PRIVACY_FLAG_NAMES.len())
        .map(|bits| {
            let names: Vec<&str> = PRIVACY_FLAG_NAMES
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, n)| *n)
                .collect();
            (!names.is_empty()).then(|| names.join(", "))
        })
        .collect();
    let mut endpoints = vec![Endpoint::Chat];
    for e in [
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Messages,
        Endpoint::Responses,
    ] {
        let named = both.iter().flat_map(|p| p.rules.iter()).any(|r| {
            r.when
                .endpoints
                .as_ref()
                .is_some_and(|l| l.iter().any(|n| n.as_ref() == e.name()))
        });
        if named {
            endpoints.push(e);
        }
    }
    let extras = extras(both);
    let mut shapes = Vec::new();
    for tenant in &tenants {
        for model in &models {
            for p in &privacy {
                for stream in [false, true] {
                    for edge in &edge_regions {
                        for k in &pii {
                            for e in &endpoints {
                                for x in &extras {
                                    shapes.push(Shape {
                                        tenant: tenant.clone(),
                                        model: model.clone(),
                                        privacy: p.clone(),
                                        stream,
                                        edge_region: edge.clone(),
                                        pii: k.clone(),
                                        endpoint: *e,
                                        extra: x.clone(),
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Space {
        countries,
        shapes,
        tenants,
        models,
        edge_regions,
        pii,
        privacy,
        endpoints,
        extras,
    }
}

/// The facts of a shape under a policy (the country is set per case), or why it is invalid.
pub fn facts_of(policy: &Policy, s: &Shape) -> Result<RequestFacts, String> {
    let mut headers = Vec::new();
    if let Some(p) = &s.privacy {
        headers.push((facts::PRIVACY_HEADER.to_string(), p.clone()));
    }
    let mut body = Map::new();
    body.insert("model".into(), Value::String(s.model.clone()));
    if s.stream || s.endpoint != Endpoint::Embeddings {
        body.insert("stream".into(), Value::Bool(s.stream));
    }
    let cx = facts::Context {
        location: Location::given(None),
        request_id: "diff".into(),
        endpoint: s.endpoint,
        tenant: s
            .tenant
            .as_deref()
            .map(|t| crate::policy::TenantId(t.to_string().into())),
        edge_region: s.edge_region.clone(),
        headers: &headers,
        pii: None,
        unknown_fields: policy.settings.unknown_fields,
        injection: policy.guards.builtin_used,
        rule_headers: policy.rules_read_headers(),
        prefix_bounds: policy.prefix_bounds(),
    };
    let mut f = facts::from_request(cx, &mut body).map_err(|e| e.message)?;
    s.extra.apply(&mut f)?;
    if let Some(kind) = &s.pii {
        // A kind this policy does not know is no finding under it.
        if let Some(k) = policy.pii.kind_of(kind) {
            f.pii = Some(crate::pii::Found {
                counts: vec![(k, 1)],
            });
        }
    }
    Ok(f)
}

/// What `policy` does with the shape from `country`.
pub fn outcome(policy: &Policy, facts: &Result<RequestFacts, String>, country: Country) -> Outcome {
    let f = match facts {
        Ok(f) => f,
        Err(e) => return Outcome::Invalid { reason: e.clone() },
    };
    let mut f = f.clone();
    f.country = country;
    let edge = f.location.edge;
    f.location = Location::given((country != Country::UNKNOWN).then_some(country));
    f.location.edge = edge;
    // Authentication, as the component does it before deciding.
    match crate::auth::named(policy, f.tenant.as_ref().map(|t| t.as_str())) {
        crate::auth::Named::Same => {}
        crate::auth::Named::AsAnonymous => {
            f.tenant = None;
            return Outcome::AsAnonymous {
                then: Box::new(decided(policy, &f)),
            };
        }
        crate::auth::Named::Refused(code) => {
            return Outcome::Refused {
                status: 401,
                code: code.into(),
                rules: Vec::new(),
            }
        }
    }
    decided(policy, &f)
}

fn decided(policy: &Policy, f: &RequestFacts) -> Outcome {
    let d = decide(policy, f);
    let rules: Vec<String> = d.matched_rules.iter().map(|r| r.0.to_string()).collect();
    if let Some(r) = &d.refusal {
        return Outcome::Refused {
            status: r.status,
            code: r.code.to_string(),
            rules,
        };
    }
    // A guard that fails closed and may not be sent the text refuses every such request.
    if d.guards.iter().any(|g| !g.allowed() && !g.usage.fail_open) {
        return Outcome::Refused {
            status: 403,
            code: "guardrail_not_allowed".into(),
            rules,
        };
    }
    let guards = d
        .guards
        .iter()
        .map(|g| {
            let skipped = if g.allowed() { "" } else { " (skipped)" };
            format!("{}:{}{skipped}", g.guard.id, g.usage.on.name())
        })
        .collect();
    match d.candidates.first() {
        Some(c) => Outcome::Served {
            provider: c.provider.0.to_string(),
            location: policy
                .provider(c.provider.as_str())
                .map_or_else(String::new, |p| p.location.to_string()),
            storage: (c.storage != c.location).then(|| c.storage.to_string()),
            rules,
            guards,
        },
        None => Outcome::Refused {
            status: 0,
            code: "no_candidate".into(),
            rules,
        },
    }
}

/// Every case whose outcome differs (another provider first, a refusal instead of an answer or
/// the other way, another refusal; not only other rules matching): (shape, country, old,
/// new). The raw list the merged changes cover.
pub fn changed_cases(
    old: &Policy,
    new: &Policy,
    sp: &Space,
) -> Vec<(Shape, Country, Outcome, Outcome)> {
    let mut out = Vec::new();
    for s in &sp.shapes {
        let (fo, fn_) = (facts_of(old, s), facts_of(new, s));
        for c in &sp.countries {
            let (a, b) = (outcome(old, &fo, *c), outcome(new, &fn_, *c));
            if a.without_rules() != b.without_rules() {
                out.push((s.clone(), *c, a, b));
            }
        }
    }
    out
}

fn clients(countries: &BTreeSet<Country>, all: usize, policies: [&Policy; 2]) -> String {
    if countries.len() == all {
        return "any country".into();
    }
    let names: Vec<&str> = countries.iter().map(|c| c.as_str()).collect();
    if names.len() <= 2 {
        return format!("clients in {}", names.join(", "));
    }
    for p in policies {
        for (name, set) in p.jurisdictions.iter() {
            let members: BTreeSet<Country> = countries
                .iter()
                .copied()
                .filter(|c| set.contains(*c))
                .collect();
            if members.len() == countries.len()
                && places::COUNTRIES
                    .iter()
                    .filter_map(|(c, _, _)| Country::parse_assigned(c))
                    .filter(|c| set.contains(*c))
                    .count()
                    == countries.len()
            {
                return format!("clients in {name}");
            }
        }
    }
    // The complement of a jurisdiction (unknown included).
    for p in policies {
        for (name, set) in p.jurisdictions.iter() {
            let outside = places::COUNTRIES
                .iter()
                .filter_map(|(c, _, _)| Country::parse_assigned(c))
                .chain([Country::UNKNOWN])
                .filter(|c| !set.contains(*c))
                .count();
            if outside == countries.len() && countries.iter().all(|c| !set.contains(*c)) {
                return format!("clients outside {name}");
            }
        }
    }
    if names.len() <= 8 {
        format!("clients in {}", names.join(", "))
    } else {
        format!(
            "clients in {} countries ({}, …)",
            names.len(),
            names[..6].join(", ")
        )
    }
}

/// The whole diff: every case decided under both policies, the differing ones merged.
pub fn diff(old: &Policy, new: &Policy) -> Diff {
    let sp = space(old, new);
    let raw = changed_cases(old, new, &sp);
    let changed = raw.len();
    // Merge the countries of each (shape, old, new).
    let mut by: BTreeMap<(Shape, Outcome, Outcome), BTreeSet<Country>> = BTreeMap::new();
    for (s, c, a, b) in raw {
        by.entry((s, a, b)).or_default().insert(c);
    }
    type Key = (
        Dim<Option<String>>,
        Dim<String>,
        Dim<Option<String>>,
        Dim<bool>,
        Dim<Option<String>>,
        Dim<Option<String>>,
        Dim<Endpoint>,
        Dim<Option<String>>,
    );
    let mut merged: BTreeMap<(Key, Vec<Country>, Outcome, Outcome), usize> = BTreeMap::new();
    for ((s, a, b), cs) in by {
        let key: Key = (
            Dim::One(s.tenant),
            Dim::One(s.model),
            Dim::One(s.privacy),
            Dim::One(s.stream),
            Dim::One(s.edge_region),
            Dim::One(s.pii),
            Dim::One(s.endpoint),
            Dim::One(s.extra.label()),
        );
        let n = cs.len();
        merged.insert((key, cs.into_iter().collect(), a, b), n);
    }
    // Then each dimension in turn: changes equal but for that dimension become one. First only
    // where they cover every value of it (`any`), then, once every dimension had that chance,
    // wherever several do (a set of values).
    type Group = (Key, Vec<Country>, Outcome, Outcome);
    macro_rules! merge {
        ($field:tt, $size:expr, $partial:expr) => {{
            let mut groups: BTreeMap<Group, Vec<(Key, usize)>> = BTreeMap::new();
            for ((k, cs, a, b), n) in std::mem::take(&mut merged) {
                let mut blank = k.clone();
                blank.$field = Dim::Any;
                groups.entry((blank, cs, a, b)).or_default().push((k, n));
            }
            for ((blank, cs, a, b), members) in groups {
                let together = union(members.iter().map(|(k, _)| &k.$field), $size);
                if together == Dim::Any || ($partial && members.len() > 1) {
                    let mut k = blank;
                    k.$field = together;
                    merged.insert((k, cs, a, b), members.iter().map(|(_, n)| n).sum());
                } else {
                    for (k, n) in members {
                        merged.insert((k, cs.clone(), a.clone(), b.clone()), n);
                    }
                }
            }
        }};
    }
    for partial in [false, true] {
        merge!(0, sp.tenants.len(), partial);
        merge!(1, sp.models.len(), partial);
        merge!(2, sp.privacy.len(), partial);
        merge!(3, 2, partial);
        merge!(4, sp.edge_regions.len(), partial);
        merge!(5, sp.pii.len(), partial);
        merge!(6, sp.endpoints.len(), partial);
        merge!(7, sp.extras.len(), partial);
    }
    let all = sp.countries.len();
    let mut changes: Vec<Change> = merged
        .into_iter()
        .map(|((k, cs, a, b), n)| {
            let set: BTreeSet<Country> = cs.iter().copied().collect();
            let who = clients(&set, all, [new, old]);
            let mut parts = vec![who.clone()];
            let anon = |t: &Option<String>| t.clone().unwrap_or_else(|| "anonymous".into());
            let none = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
            parts.extend(words(
                &k.0,
                |t| match t {
                    Some(t) => format!("tenant {t}"),
                    None => "anonymous".into(),
                },
                "tenants",
                anon,
            ));
            parts.extend(words(
                &k.1,
                |m| format!("model {m}"),
                "models",
                String::clone,
            ));
            parts.extend(match &k.2 {
                Dim::Any => None,
                Dim::One(Some(f)) => Some(format!("privacy {f}")),
                Dim::One(None) => Some("no privacy flag".into()),
                Dim::Some(set) => Some(privacy_words(set, &sp.privacy)),
            });
            parts.extend(words(
                &k.3,
                |s| if *s { "stream" } else { "not streamed" }.into(),
                "stream",
                bool::to_string,
            ));
            parts.extend(words(
                &k.4,
                |e| match e {
                    Some(e) => format!("edge {e}"),
                    None => "no edge region".into(),
                },
                "edge regions",
                none,
            ));
            parts.extend(words(
                &k.5,
                |p| match p {
                    Some(p) => format!("personal data {p}"),
                    None => "no personal data".into(),
                },
                "personal data",
                none,
            ));
            parts.extend(words(
                &k.6,
                |e| format!("endpoint {}", e.name()),
                "endpoints",
                |e| e.name().to_string(),
            ));
            parts.extend(words(
                &k.7,
                |x| match x {
                    Some(x) => format!("requests {x}"),
                    None => "plain requests".into(),
                },
                "requests",
                |x| x.clone().unwrap_or_else(|| "plain".into()),
            ));
            // The same answer for a caller who is now anonymous is still a change: who the
            // caller is decides its limits, privacy floor and audit.
            let why = match &b {
                Outcome::AsAnonymous { then } if then.without_rules() == a.without_rules() => {
                    " (the same answer, but the caller is now anonymous: the tenant's limits, privacy floor and name in the audit no longer apply)"
                }
                _ => "",
            };
            let line = format!(
                "{}: {} → {}{why}",
                parts.join(", "),
                a.render(None),
                b.render(Some(old))
            );
            Change {
                countries: cs.iter().map(|c| c.as_str().to_string()).collect(),
                clients: who,
                tenant: k.0,
                model: k.1,
                privacy: k.2,
                stream: k.3,
                edge_region: k.4,
                pii: k.5,
                endpoint: k.6,
                request: k.7,
                old: a,
                new: b,
                cases: n,
                line,
            }
        })
        .collect();
    changes.sort_by(|x, y| y.cases.cmp(&x.cases).then(x.line.cmp(&y.line)));
    Diff {
        old: old.version_label(),
        new: new.version_label(),
        cases: sp.shapes.len() * all,
        changed,
        changes,
    }
}
