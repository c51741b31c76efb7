//! (policy, facts) → decision. Pure and deterministic: same inputs, same decision.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::facts::RequestFacts;
use crate::policy::{
    Anonymous, Country, MaxPrice, ModelEntry, Plan, Policy, PrivacyFlags, Provider, ProviderId,
    ProviderSet, Residency, Rule, RuleId, Sort, TenantId,
};

/// A decision borrows the policy it was made from: ids, model names and locations are not copied.
#[derive(Debug, Clone, Serialize)]
pub struct Decision<'p> {
    pub request_id: String,
    pub model: String,
    pub tenant: Option<&'p TenantId>,
    pub client_country: Country,
    pub client_jurisdictions: Vec<&'p str>,
    pub edge_region: Option<String>,
    /// Privacy flags in force: request ∪ tenant floor ∪ matched rules.
    pub privacy: Vec<&'static str>,
    pub matched_rules: Vec<&'p RuleId>,
    /// In the order they will be tried.
    pub candidates: Vec<Candidate<'p>>,
    pub excluded: Vec<Exclusion<'p>>,
    pub plan: Plan,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate<'p> {
    pub provider: &'p ProviderId,
    /// Index into `policy.providers`.
    #[serde(skip)]
    pub index: usize,
    pub upstream_model: &'p str,
    /// Where the provider processes data, as the policy writes it.
    pub location: &'p str,
    pub input_price: Option<f64>,
    pub output_price: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonKind {
    Residency,
    Privacy,
    Scope,
    Price,
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
}

impl fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Rule(id) => write!(f, "rule `{id}`"),
            Who::Tenant(id) => write!(f, "tenant `{id}`"),
            Who::Request => f.write_str("request"),
            Who::Anonymous => f.write_str("anonymous access"),
        }
    }
}

/// What is wrong with the provider, in words when displayed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Message<'p> {
    Outside {
        location: &'p str,
        allowed: &'p [String],
    },
    NotSelfHosted,
    NoZdr,
    TrainsOnInputs,
    CollectsData {
        retention_days: u32,
        trains_on_inputs: bool,
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
}

impl fmt::Display for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Message::Outside { location, allowed } => write!(
                f,
                "processes data in `{location}`, outside the allowed `{}`",
                allowed.join(", ")
            ),
            Message::NotSelfHosted => f.write_str("is not self-hosted (local-only)"),
            Message::NoZdr => f.write_str("does not offer zero data retention"),
            Message::TrainsOnInputs => f.write_str("may train on inputs"),
            Message::CollectsData {
                retention_days,
                trains_on_inputs,
            } => write!(
                f,
                "collects data (retention {retention_days} days, trains on inputs: {trains_on_inputs})"
            ),
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

/// Providers a constraint names: the policy's own set (catalog positions), or the request's ids.
#[derive(Clone, Copy)]
enum Ids<'a> {
    Policy(&'a ProviderSet),
    Request(&'a [String]),
}

impl Ids<'_> {
    #[inline]
    fn contains(&self, index: usize, p: &Provider) -> bool {
        match self {
            Ids::Policy(s) => s.contains(index),
            Ids::Request(v) => v.contains(&p.id.0),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Ids::Policy(s) => s.is_empty(),
            Ids::Request(v) => v.is_empty(),
        }
    }
}

/// One set of hard constraints and who imposed it (`'p`: the policy, `'f`: the request's facts).
struct Constraint<'p, 'f> {
    by: Who<'p>,
    residency: Option<&'p Residency>,
    self_hosted: bool,
    privacy: PrivacyFlags,
    allow: Option<Ids<'f>>,
    deny: Ids<'f>,
    max_price: MaxPrice,
    /// Only providers without a `key_secret`.
    keyless: bool,
}

impl<'p, 'f> Constraint<'p, 'f> {
    fn new(by: Who<'p>) -> Self {
        Constraint {
            by,
            residency: None,
            self_hosted: false,
            privacy: PrivacyFlags::default(),
            allow: None,
            deny: Ids::Request(&[]),
            max_price: MaxPrice::default(),
            keyless: false,
        }
    }

    /// Whether this constraint can exclude anything at all (most rules only route).
    fn binds(&self) -> bool {
        self.residency.is_some()
            || self.self_hosted
            || self.privacy != PrivacyFlags::default()
            || self.allow.is_some()
            || !self.deny.is_empty()
            || self.max_price.is_set()
            || self.keyless
    }

    /// Appends to `reasons[k]` a reason for every way `serving[k]` breaks this constraint.
    ///
    /// One pass per kind of test over all providers, so each pass is a tight, predictable loop.
    fn check_all(&self, serving: &[Serving<'p>], reasons: &mut [Vec<Reason<'p>>]) {
        macro_rules! each {
            () => {
                serving.iter().zip(reasons.iter_mut())
            };
        }
        let reason = |kind, message| Reason {
            by: self.by,
            kind,
            message,
        };
        if let Some(r) = self.residency {
            for ((_, p, _), out) in each!() {
                if !p.within(&r.countries) {
                    out.push(reason(
                        ReasonKind::Residency,
                        Message::Outside {
                            location: &p.location,
                            allowed: &r.names,
                        },
                    ));
                }
            }
        }
        let q = self.privacy;
        if self.self_hosted || q.local_only || q.zdr || q.no_training || q.no_data_collection {
            for ((_, p, _), out) in each!() {
                if (self.self_hosted || q.local_only) && !p.self_hosted {
                    out.push(reason(ReasonKind::Privacy, Message::NotSelfHosted));
                }
                if q.zdr && !p.zdr {
                    out.push(reason(ReasonKind::Privacy, Message::NoZdr));
                }
                if q.no_training && p.trains_on_inputs {
                    out.push(reason(ReasonKind::Privacy, Message::TrainsOnInputs));
                }
                if q.no_data_collection && p.collects_data() {
                    out.push(reason(
                        ReasonKind::Privacy,
                        Message::CollectsData {
                            retention_days: p.retention_days,
                            trains_on_inputs: p.trains_on_inputs,
                        },
                    ));
                }
            }
        }
        if let Some(allow) = &self.allow {
            for ((index, p, _), out) in each!() {
                if !allow.contains(*index, p) {
                    out.push(reason(ReasonKind::Scope, Message::NotAllowed));
                }
            }
        }
        if !self.deny.is_empty() {
            for ((index, p, _), out) in each!() {
                if self.deny.contains(*index, p) {
                    out.push(reason(ReasonKind::Scope, Message::Denied));
                }
            }
        }
        if self.keyless {
            for ((_, p, _), out) in each!() {
                if p.key_secret.is_some() {
                    out.push(reason(ReasonKind::Scope, Message::SpendsKey));
                }
            }
        }
        if self.max_price.is_set() {
            let cap = self.max_price;
            for ((_, _, m), out) in each!() {
                if let Some(why) = over_price(cap.input, m.input_price, "input") {
                    out.push(reason(ReasonKind::Price, why));
                }
                if let Some(why) = over_price(cap.output, m.output_price, "output") {
                    out.push(reason(ReasonKind::Price, why));
                }
            }
        }
    }
}

/// Why a price breaks a maximum: above it, or unknown (so it cannot be proven below).
#[inline]
fn over_price(
    limit: Option<f64>,
    price: Option<f64>,
    what: &'static str,
) -> Option<Message<'static>> {
    match (limit, price) {
        (Some(limit), Some(price)) if price > limit => {
            Some(Message::AbovePrice { what, price, limit })
        }
        (Some(_), None) => Some(Message::NoPrice { what }),
        _ => None,
    }
}

/// A provider that serves the requested model: catalog position, entry, model entry.
type Serving<'p> = (usize, &'p Provider, &'p ModelEntry);

fn rule_matches(rule: &Rule, facts: &RequestFacts, privacy: PrivacyFlags) -> bool {
    let w = &rule.when;
    w.client_countries
        .as_ref()
        .is_none_or(|cs| cs.contains(facts.country))
        && w.edge_regions.as_ref().is_none_or(|rs| {
            facts
                .edge_region
                .as_ref()
                .is_some_and(|r| rs.iter().any(|x| x == r))
        })
        && w.tenants
            .as_ref()
            .is_none_or(|ts| facts.tenant.as_ref().is_some_and(|t| ts.contains(t)))
        && w.anonymous.is_none_or(|a| a == facts.tenant.is_none())
        && w.models
            .as_ref()
            .is_none_or(|gs| gs.iter().any(|g| g.matches(&facts.model)))
        && w.privacy.is_none_or(|need| need.satisfied_by(privacy))
        && w.headers.iter().all(|(name, want)| {
            facts
                .headers
                .iter()
                .any(|(n, v)| n == name && want.as_ref().is_none_or(|w| w == v))
        })
        && w.stream.is_none_or(|s| s == facts.stream)
        && w.endpoints
            .as_ref()
            .is_none_or(|es| es.iter().any(|e| e == facts.endpoint.name()))
        && w.edge_verified
            .is_none_or(|want| facts.location.edge.verified() == Some(want))
}

/// A small deterministic generator seeded from the request id (splitmix64).
struct Seeded(u64);

impl Seeded {
    fn from_id(id: &str) -> Self {
        let d = Sha256::digest(id.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        Seeded(u64::from_le_bytes(b))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Weighted order without replacement; zero weights keep their order at the end.
fn weighted_order<'p>(
    items: Vec<Candidate<'p>>,
    weight: impl Fn(&Candidate) -> u32,
    id: &str,
) -> Vec<Candidate<'p>> {
    let (mut pool, zero): (Vec<Candidate>, Vec<Candidate>) =
        items.into_iter().partition(|c| weight(c) > 0);
    let mut rng = Seeded::from_id(id);
    let mut out = Vec::with_capacity(pool.len() + zero.len());
    while !pool.is_empty() {
        let total: u64 = pool.iter().map(|c| u64::from(weight(c))).sum();
        let mut pick = rng.next() % total;
        let mut idx = 0;
        for (i, c) in pool.iter().enumerate() {
            let w = u64::from(weight(c));
            if pick < w {
                idx = i;
                break;
            }
            pick -= w;
        }
        out.push(pool.remove(idx));
    }
    out.extend(zero);
    out
}

/// An f64 ordered by `total_cmp`, for sort keys.
struct TotalF64(f64);

impl PartialEq for TotalF64 {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o).is_eq()
    }
}

impl Eq for TotalF64 {}

impl PartialOrd for TotalF64 {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for TotalF64 {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

fn sort_by(cands: &mut [Candidate], sort: Sort, policy: &Policy) {
    match sort {
        Sort::Price => cands.sort_by_cached_key(|c| {
            TotalF64(ModelEntry::blended_price(c.input_price, c.output_price))
        }),
        Sort::Latency => {
            cands.sort_by_key(|c| policy.providers[c.index].latency_ms.unwrap_or(u32::MAX))
        }
        Sort::Weighted => {}
    }
}

/// Moves the named candidates to the front, in the order named; the rest keep their order.
fn move_to_front<'a>(cands: &mut [Candidate], order: impl IntoIterator<Item = &'a str>) {
    let mut next = 0;
    for id in order {
        if let Some(pos) = cands[next..].iter().position(|c| c.provider.as_str() == id) {
            cands[next..=next + pos].rotate_right(1);
            next += 1;
        }
    }
}

/// Decides where a request may go and in which order to try.
pub fn decide<'p>(policy: &'p Policy, facts: &RequestFacts) -> Decision<'p> {
    let tenant = facts
        .tenant
        .as_ref()
        .and_then(|t| policy.tenant(t.as_str()));
    let tenant_privacy = tenant.map(|t| t.privacy).unwrap_or_default();
    let base_privacy = facts.privacy.union(tenant_privacy);

    let mut matched: Vec<&'p Rule> = Vec::with_capacity(policy.rules.len());
    matched.extend(
        policy
            .rules
            .iter()
            .filter(|r| rule_matches(r, facts, base_privacy)),
    );

    let mut plan = policy.settings.plan.clone();
    let mut taken = BTreeSet::new();
    for r in &matched {
        r.plan.apply(&mut plan, &mut taken);
    }

    let mut decision = Decision {
        request_id: facts.request_id.clone(),
        model: facts.model.clone(),
        tenant: tenant.map(|t| &t.id),
        client_country: facts.country,
        client_jurisdictions: policy.jurisdictions_of(facts.country),
        edge_region: facts.edge_region.clone(),
        privacy: Vec::new(),
        matched_rules: matched.iter().map(|r| &r.id).collect(),
        candidates: Vec::new(),
        excluded: Vec::new(),
        plan,
        refusal: None,
    };

    // Constraints: every matched rule, the tenant, the request. All must hold (intersection).
    let mut constraints: Vec<Constraint> = Vec::with_capacity(matched.len() + 2);
    constraints.extend(matched.iter().map(|r| {
        let q = &r.require;
        Constraint {
            residency: q.jurisdiction.as_ref(),
            self_hosted: q.self_hosted,
            privacy: q.privacy,
            allow: q.providers.as_ref().map(Ids::Policy),
            deny: Ids::Policy(&q.deny),
            max_price: q.max_price,
            ..Constraint::new(Who::Rule(&r.id))
        }
    }));
    if let Some(t) = tenant {
        constraints.push(Constraint {
            residency: t.jurisdictions.as_ref(),
            privacy: t.privacy,
            ..Constraint::new(Who::Tenant(&t.id))
        });
    }
    if tenant.is_none() && policy.settings.anonymous != Anonymous::Paid {
        constraints.push(Constraint {
            keyless: true,
            ..Constraint::new(Who::Anonymous)
        });
    }
    let prefs = &facts.prefs;
    constraints.push(Constraint {
        privacy: facts.privacy,
        allow: prefs.only.as_deref().map(Ids::Request),
        deny: Ids::Request(&prefs.ignore),
        max_price: prefs.max_price,
        ..Constraint::new(Who::Request)
    });
    decision.privacy = constraints
        .iter()
        .fold(PrivacyFlags::default(), |acc, c| {
            let mut p = c.privacy;
            p.local_only |= c.self_hosted;
            acc.union(p)
        })
        .names();

    if let Some(t) = tenant {
        if !t.models.is_empty() && !t.models.iter().any(|g| g.matches(&facts.model)) {
            decision.refusal = Some(Refusal {
                status: 403,
                code: "model_not_allowed",
                message: format!(
                    "tenant `{}` may not use model `{}`; allowed: {}",
                    t.id,
                    facts.model,
                    t.models
                        .iter()
                        .map(|g| format!("`{}`", g.text))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
            return decision;
        }
    }

    let mut serving: Vec<Serving> = Vec::with_capacity(policy.providers.len());
    serving.extend(
        policy
            .providers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.models.get(&facts.model).map(|m| (i, p, m))),
    );
    if serving.is_empty() {
        let names = policy.model_names();
        let hint = crate::policy::did_you_mean(&facts.model, names.iter().copied())
            .map(|m| format!(" Did you mean `{m}`?"))
            .unwrap_or_default();
        decision.refusal = Some(Refusal {
            status: 404,
            code: "model_not_found",
            message: format!(
                "The model `{}` does not exist or no provider in this policy serves it.{hint} See GET /v1/models.",
                facts.model
            ),
        });
        return decision;
    }

    // Reasons per serving provider, in constraint order. Constraints that cannot exclude anything
    // (most rules only route) are skipped; the privacy in force was taken from them above.
    let mut reasons: Vec<Vec<Reason>> = Vec::with_capacity(serving.len());
    reasons.resize_with(serving.len(), Vec::new);
    for c in constraints.iter().filter(|c| c.binds()) {
        c.check_all(&serving, &mut reasons);
    }
    let mut allowed = Vec::with_capacity(serving.len());
    for ((index, p, m), reasons) in serving.into_iter().zip(reasons) {
        if reasons.is_empty() {
            allowed.push(Candidate {
                provider: &p.id,
                index,
                upstream_model: &m.upstream,
                location: &p.location,
                input_price: m.input_price,
                output_price: m.output_price,
            });
        } else {
            decision.excluded.push(Exclusion {
                provider: &p.id,
                reasons,
            });
        }
    }

    if allowed.is_empty() {
        decision.refusal = Some(refusal_for(&decision, &facts.model));
        return decision;
    }

    // Preferences: the first matched rule that states any; the request's own override it.
    let rule_pref = matched.iter().map(|r| &r.prefer).find(|p| !p.is_empty());
    let sort = prefs.sort.or(rule_pref.and_then(|p| p.sort));
    if let Some(s) = sort {
        sort_by(&mut allowed, s, policy);
    }
    let rule_weights: BTreeMap<&str, u32> = rule_pref
        .map(|p| p.weights.iter().map(|(k, v)| (k.as_str(), *v)).collect())
        .unwrap_or_default();
    if sort == Some(Sort::Weighted) || !rule_weights.is_empty() {
        let weight = |c: &Candidate| {
            rule_weights.get(c.provider.as_str()).copied().unwrap_or(
                if sort == Some(Sort::Weighted) {
                    policy.providers[c.index].weight
                } else {
                    0
                },
            )
        };
        allowed = weighted_order(allowed, weight, &facts.request_id);
    }
    if let Some(p) = rule_pref {
        move_to_front(&mut allowed, p.order.iter().map(ProviderId::as_str));
    }
    move_to_front(&mut allowed, prefs.order.iter().map(String::as_str));
    if !prefs.allow_fallbacks {
        allowed.truncate(1);
    }
    decision.candidates = allowed;
    decision
}

fn refusal_for(d: &Decision, model: &str) -> Refusal {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{self, Context, Endpoint};
    use serde_json::{json, Map, Value};

    const POLICY: &str = r#"
version = 1
name = "reasons"
revision = "1"
[settings]
trusted_country_headers = ["cf-ipcountry"]
allow_anonymous = true
[[providers]]
id = "us"
base_url = "https://us.example/v1"
location = "US"
retention_days = 30
trains_on_inputs = true
models = { "m" = { id = "m-us", input_price = 5.0, output_price = 1.0 } }
[[providers]]
id = "eu"
base_url = "https://eu.example/v1"
location = "DE"
retention_days = 0
zdr = true
models = { "m" = { id = "m-eu", input_price = 1.0 } }
[[providers]]
id = "local"
base_url = "http://127.0.0.1:11434/v1"
location = "DE"
self_hosted = true
retention_days = 0
zdr = true
models = { "m" = { id = "m-local", input_price = 0.0, output_price = 0.0 } }
[[rules]]
id = "r"
require = { jurisdiction = ["eu"], providers = ["eu", "local"], deny = ["local"], max_price = { input = 2.0, output = 0.5 } }
"#;

    fn decision_for<'p>(p: &'p Policy, headers: &[(&str, &str)], body: Value) -> Decision<'p> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut body: Map<String, Value> = match body {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let cx = Context {
            location: crate::location::locate(&p.settings.client, &headers, None, None),
            request_id: "t".into(),
            endpoint: Endpoint::Chat,
            tenant: None,
            edge_region: None,
            headers: &headers,
        };
        let f = facts::from_request(cx, &mut body).expect("facts");
        decide(p, &f)
    }

    /// Every reason, rendered: the texts and JSON that explain output and refusals carry.
    #[test]
    fn reasons_render_in_constraint_then_test_order() {
        let p = crate::policy::load(POLICY, "reasons.toml").expect("valid");
        let d = decision_for(
            &p,
            &[
                ("cf-ipcountry", "FR"),
                (
                    facts::PRIVACY_HEADER,
                    "local-only, zdr, no-training, no-data-collection",
                ),
            ],
            json!({"model": "m", "provider": {"ignore": ["eu"]}}),
        );
        let shown: Vec<(String, Vec<String>)> = d
            .excluded
            .iter()
            .map(|e| {
                let rs = e.reasons.iter().map(Reason::to_string).collect();
                (e.provider.to_string(), rs)
            })
            .collect();
        let expect =
            |p: &str, rs: &[&str]| (p.to_string(), rs.iter().map(|r| r.to_string()).collect());
        assert_eq!(
            shown,
            vec![
                expect(
                    "us",
                    &[
                        "rule `r` processes data in `US`, outside the allowed `eu`",
                        "rule `r` is not in the allowed providers",
                        "rule `r` input price 5 USD/M tokens is above the maximum 2",
                        "rule `r` output price 1 USD/M tokens is above the maximum 0.5",
                        "request is not self-hosted (local-only)",
                        "request does not offer zero data retention",
                        "request may train on inputs",
                        "request collects data (retention 30 days, trains on inputs: true)",
                    ]
                ),
                expect(
                    "eu",
                    &[
                        "rule `r` has no output price, so the maximum price cannot be proven",
                        "request is not self-hosted (local-only)",
                        "request is denied",
                    ]
                ),
                expect("local", &["rule `r` is denied"]),
            ]
        );
        let v = serde_json::to_value(&d.excluded[2]).expect("json");
        assert_eq!(
            v,
            json!({"provider": "local", "reasons": [
                {"by": "rule `r`", "kind": "scope", "message": "is denied"}
            ]})
        );
        let r = d.refusal.expect("nothing left");
        assert_eq!((r.status, r.code), (403, "no_allowed_provider"));
        assert!(
            r.message.contains("`local`: rule `r` is denied")
                && r.message.contains("`eu`: rule `r` has no output price"),
            "{}",
            r.message
        );
    }

    /// 451 when some provider was excluded for residency alone, else 403; the request's own
    /// `only`/`ignore` lists (ids, not catalog positions) apply.
    #[test]
    fn residency_refusal_and_request_lists() {
        let text = POLICY.replace(
            r#"require = { jurisdiction = ["eu"], providers = ["eu", "local"], deny = ["local"], max_price = { input = 2.0, output = 0.5 } }"#,
            "when = { client_jurisdiction = [\"eu\"] }\nrequire = { jurisdiction = [\"eu\"] }",
        );
        let p = crate::policy::load(&text, "residency.toml").expect("valid");
        let fr = [("cf-ipcountry", "FR")];
        let refusal = |prefs: Value| {
            let d = decision_for(&p, &fr, json!({"model": "m", "provider": prefs}));
            d.refusal.map(|r| (r.status, r.code))
        };
        let d = decision_for(&p, &fr, json!({"model": "m"}));
        assert_eq!(d.client_country.as_str(), "FR");
        assert_eq!(d.client_jurisdictions, ["eea", "eu"]);
        assert_eq!(d.matched_rules.len(), 1);
        let ids: Vec<&str> = d.candidates.iter().map(|c| c.provider.as_str()).collect();
        assert_eq!(ids, ["eu", "local"]);
        assert_eq!(
            refusal(json!({"only": ["us"]})),
            Some((451, "residency_violation"))
        );
        assert_eq!(
            refusal(json!({"ignore": ["eu", "local"]})),
            Some((451, "residency_violation"))
        );
        assert_eq!(
            refusal(json!({"only": ["eu"], "ignore": ["eu"]})),
            Some((403, "no_allowed_provider"))
        );
        let d = decision_for(
            &p,
            &fr,
            json!({"model": "m", "provider": {"only": ["us", "local"]}}),
        );
        let ids: Vec<&str> = d.candidates.iter().map(|c| c.provider.as_str()).collect();
        assert_eq!(ids, ["local"]);
        // A US client matches no rule: everything serves, cheapest first is not asked for.
        let d = decision_for(&p, &[("cf-ipcountry", "US")], json!({"model": "m"}));
        assert!(d.matched_rules.is_empty() && d.candidates.len() == 3);
    }
}
