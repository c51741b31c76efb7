//! (policy, facts) → decision. Pure and deterministic: same inputs, same decision.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::facts::RequestFacts;
use crate::policy::{
    MaxPrice, Plan, Policy, PrivacyFlags, Provider, ProviderId, Residency, Rule, RuleId, Sort,
    TenantId,
};

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub request_id: String,
    pub model: String,
    pub tenant: Option<TenantId>,
    pub client_country: String,
    pub client_jurisdictions: Vec<String>,
    pub edge_region: Option<String>,
    /// Privacy flags in force: request ∪ tenant floor ∪ matched rules.
    pub privacy: Vec<&'static str>,
    pub matched_rules: Vec<RuleId>,
    /// In the order they will be tried.
    pub candidates: Vec<Candidate>,
    pub excluded: Vec<Exclusion>,
    pub plan: Plan,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub provider: ProviderId,
    /// Index into `policy.providers`.
    #[serde(skip)]
    pub index: usize,
    pub upstream_model: String,
    /// Where the provider processes data, as the policy writes it.
    pub location: String,
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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    /// What imposed the constraint: "rule `x`", "tenant `y`" or "request".
    pub by: String,
    pub kind: ReasonKind,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exclusion {
    pub provider: ProviderId,
    pub reasons: Vec<Reason>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

/// One set of hard constraints and who imposed it.
struct Constraint<'a> {
    by: String,
    residency: Option<&'a Residency>,
    self_hosted: bool,
    privacy: PrivacyFlags,
    allow: Option<BTreeSet<&'a str>>,
    deny: BTreeSet<&'a str>,
    max_price: MaxPrice,
}

impl<'a> Constraint<'a> {
    fn new(by: String) -> Self {
        Constraint {
            by,
            residency: None,
            self_hosted: false,
            privacy: PrivacyFlags::default(),
            allow: None,
            deny: BTreeSet::new(),
            max_price: MaxPrice::default(),
        }
    }

    fn check(&self, p: &Provider, model: &str, out: &mut Vec<Reason>) {
        let mut push = |kind, message: String| {
            out.push(Reason {
                by: self.by.clone(),
                kind,
                message,
            })
        };
        if let Some(r) = self.residency {
            if !p.within(&r.countries) {
                push(
                    ReasonKind::Residency,
                    format!(
                        "processes data in `{}`, outside the allowed `{}`",
                        p.location,
                        r.names.join(", ")
                    ),
                );
            }
        }
        if (self.self_hosted || self.privacy.local_only) && !p.self_hosted {
            push(
                ReasonKind::Privacy,
                "is not self-hosted (local-only)".into(),
            );
        }
        if self.privacy.zdr && !p.zdr {
            push(
                ReasonKind::Privacy,
                "does not offer zero data retention".into(),
            );
        }
        if self.privacy.no_training && p.trains_on_inputs {
            push(ReasonKind::Privacy, "may train on inputs".into());
        }
        if self.privacy.no_data_collection && p.collects_data() {
            push(
                ReasonKind::Privacy,
                format!(
                    "collects data (retention {} days, trains on inputs: {})",
                    p.retention_days, p.trains_on_inputs
                ),
            );
        }
        if let Some(allow) = &self.allow {
            if !allow.contains(p.id.as_str()) {
                push(ReasonKind::Scope, "is not in the allowed providers".into());
            }
        }
        if self.deny.contains(p.id.as_str()) {
            push(ReasonKind::Scope, "is denied".into());
        }
        if self.max_price.is_set() {
            if let Some(m) = p.models.get(model) {
                for (limit, price, what) in [
                    (self.max_price.input, m.input_price, "input"),
                    (self.max_price.output, m.output_price, "output"),
                ] {
                    match (limit, price) {
                        (Some(l), Some(pr)) if pr > l => push(
                            ReasonKind::Price,
                            format!("{what} price {pr} USD/M tokens is above the maximum {l}"),
                        ),
                        (Some(_), None) => push(
                            ReasonKind::Price,
                            format!("has no {what} price, so the maximum price cannot be proven"),
                        ),
                        _ => {}
                    }
                }
            }
        }
    }
}

fn rule_matches(rule: &Rule, facts: &RequestFacts, privacy: PrivacyFlags) -> bool {
    let w = &rule.when;
    w.client_countries
        .as_ref()
        .is_none_or(|cs| cs.contains(&facts.country))
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
fn weighted_order(
    items: Vec<Candidate>,
    weight: impl Fn(&Candidate) -> u32,
    id: &str,
) -> Vec<Candidate> {
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

fn sort_by(cands: &mut [Candidate], sort: Sort, policy: &Policy) {
    match sort {
        Sort::Price => cands.sort_by(|a, b| {
            let pa = a.input_price.unwrap_or(f64::INFINITY) + a.output_price.unwrap_or(0.0);
            let pb = b.input_price.unwrap_or(f64::INFINITY) + b.output_price.unwrap_or(0.0);
            pa.total_cmp(&pb)
        }),
        Sort::Latency => {
            cands.sort_by_key(|c| policy.providers[c.index].latency_ms.unwrap_or(u32::MAX))
        }
        Sort::Weighted => {}
    }
}

fn move_to_front<'a>(cands: &mut Vec<Candidate>, order: impl IntoIterator<Item = &'a str>) {
    let mut front = Vec::new();
    for id in order {
        if let Some(pos) = cands.iter().position(|c| c.provider.as_str() == id) {
            front.push(cands.remove(pos));
        }
    }
    front.append(cands);
    *cands = front;
}

/// Decides where a request may go and in which order to try.
pub fn decide(policy: &Policy, facts: &RequestFacts) -> Decision {
    let tenant = facts
        .tenant
        .as_ref()
        .and_then(|t| policy.tenant(t.as_str()));
    let tenant_privacy = tenant.map(|t| t.privacy).unwrap_or_default();
    let base_privacy = facts.privacy.union(tenant_privacy);

    let matched: Vec<&Rule> = policy
        .rules
        .iter()
        .filter(|r| rule_matches(r, facts, base_privacy))
        .collect();

    let mut plan = policy.settings.plan.clone();
    let mut taken = BTreeSet::new();
    for r in &matched {
        r.plan.apply(&mut plan, &mut taken);
    }

    let mut decision = Decision {
        request_id: facts.request_id.clone(),
        model: facts.model.clone(),
        tenant: facts.tenant.clone(),
        client_country: facts.country.clone(),
        client_jurisdictions: policy.jurisdictions_of(&facts.country),
        edge_region: facts.edge_region.clone(),
        privacy: Vec::new(),
        matched_rules: matched.iter().map(|r| r.id.clone()).collect(),
        candidates: Vec::new(),
        excluded: Vec::new(),
        plan,
        refusal: None,
    };

    // Constraints: every matched rule, the tenant, the request. All must hold (intersection).
    let mut constraints: Vec<Constraint> = matched
        .iter()
        .map(|r| {
            let q = &r.require;
            Constraint {
                residency: q.jurisdiction.as_ref(),
                self_hosted: q.self_hosted,
                privacy: q.privacy,
                allow: q
                    .providers
                    .as_ref()
                    .map(|s| s.iter().map(ProviderId::as_str).collect()),
                deny: q.deny.iter().map(ProviderId::as_str).collect(),
                max_price: q.max_price,
                ..Constraint::new(format!("rule `{}`", r.id))
            }
        })
        .collect();
    if let Some(t) = tenant {
        constraints.push(Constraint {
            residency: t.jurisdictions.as_ref(),
            privacy: t.privacy,
            ..Constraint::new(format!("tenant `{}`", t.id))
        });
    }
    let prefs = &facts.prefs;
    constraints.push(Constraint {
        privacy: facts.privacy,
        allow: prefs
            .only
            .as_ref()
            .map(|o| o.iter().map(String::as_str).collect()),
        deny: prefs.ignore.iter().map(String::as_str).collect(),
        max_price: prefs.max_price,
        ..Constraint::new("request".into())
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

    let serving: Vec<(usize, &Provider)> = policy
        .providers
        .iter()
        .enumerate()
        .filter(|(_, p)| p.models.contains_key(&facts.model))
        .collect();
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

    let mut allowed = Vec::new();
    for (index, p) in serving {
        let mut reasons = Vec::new();
        for c in &constraints {
            c.check(p, &facts.model, &mut reasons);
        }
        if reasons.is_empty() {
            let m = &p.models[&facts.model];
            allowed.push(Candidate {
                provider: p.id.clone(),
                index,
                upstream_model: m.upstream.clone(),
                location: p.location.clone(),
                input_price: m.input_price,
                output_price: m.output_price,
            });
        } else {
            decision.excluded.push(Exclusion {
                provider: p.id.clone(),
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
                .map(|r| format!("{} {}", r.by, r.message))
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
