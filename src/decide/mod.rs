//! (policy, facts) → decision. Pure and deterministic: same inputs, same decision.
//!
//! The stages, in `decide`: match rules → gather constraints (rules, tenant or anonymous access,
//! request) → exclude providers, keeping each reason as data (`reasons`) → order what remains
//! (`ordering`).

mod constraints;
mod ordering;
mod reasons;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::facts::RequestFacts;
use crate::policy::{
    Anonymous, Country, Guard, GuardAction, GuardUse, KindSet, PiiWhen, Plan, Policy, PrivacyFlags,
    ProviderId, Rule, RuleId, Sort, TenantId,
};

use constraints::{check_capabilities, Constraint, Ids, Serving};
use ordering::{move_to_front, sort_by, weighted_order};
use reasons::refusal_for;
pub use reasons::{Exclusion, Message, Reason, ReasonKind, Refusal, Who};

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
    /// Personal data in the prompt and what the policy does about it (when it has such rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pii: Option<PiiOutcome<'p>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    /// The guards the matched rules run, each with whether the request's text may be sent to
    /// it (a guard is a recipient: the same constraints as a provider).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub guards: Vec<GuardStep<'p>>,
}

/// A guard a matched rule runs, and why the request's text may not be sent to it (none: it may).
#[derive(Debug, Clone)]
pub struct GuardStep<'p> {
    pub rule: &'p RuleId,
    pub usage: &'p GuardUse,
    pub guard: &'p Guard,
    pub excluded: Vec<Reason<'p>>,
}

impl GuardStep<'_> {
    /// Whether the text may be sent to the guard.
    pub fn allowed(&self) -> bool {
        self.excluded.is_empty()
    }
}

impl Serialize for GuardStep<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let u = self.usage;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("guard", self.guard.id.as_ref())?;
        m.serialize_entry("rule", self.rule.0.as_ref())?;
        m.serialize_entry("on", u.on.name())?;
        m.serialize_entry("action", u.action.name())?;
        if let GuardAction::Route(r) = &u.action {
            m.serialize_entry("route", r.as_ref())?;
        }
        m.serialize_entry("fail", if u.fail_open { "open" } else { "closed" })?;
        m.serialize_entry("before_send", &u.before_send)?;
        m.serialize_entry("location", self.guard.location.as_ref())?;
        m.serialize_entry("allowed", &self.allowed())?;
        if !self.excluded.is_empty() {
            m.serialize_entry("reasons", &self.excluded)?;
        }
        m.end()
    }
}

/// The guards the matched rules run, each checked against every binding constraint.
fn guard_steps<'p>(
    policy: &'p Policy,
    matched: &[&'p Rule],
    constraints: &[Constraint<'p, '_>],
) -> Vec<GuardStep<'p>> {
    let mut steps = Vec::new();
    for u in policy.guards.uses.iter() {
        let Some(rule) = policy.rules.get(u.rule as usize) else {
            continue;
        };
        if !matched.iter().any(|m| std::ptr::eq(*m, rule)) {
            continue;
        }
        let Some(guard) = policy.guards.get(u.guard) else {
            continue;
        };
        let mut excluded = Vec::new();
        if !guard.is_builtin() {
            for c in constraints.iter().filter(|c| c.binds()) {
                c.recipient_reasons(guard, false, &mut excluded);
            }
        }
        steps.push(GuardStep {
            rule: &rule.id,
            usage: u,
            guard,
            excluded,
        });
    }
    steps
}

/// What the prompt contains (kinds and counts, never values) and what the matched rules do.
#[derive(Debug, Clone, PartialEq)]
pub struct PiiOutcome<'p> {
    pub found: Vec<(&'p str, u32)>,
    /// The kinds found that are replaced with placeholders before forwarding.
    pub redact: KindSet,
    pub redact_names: Vec<&'p str>,
    /// Whether the originals are put back into the answer.
    pub restore: bool,
    /// `refused`, `redacted`, `routed` (a rule matched on what was found), `detected` (found,
    /// no rule acted on it) or `none`.
    pub action: &'static str,
}

impl Serialize for PiiOutcome<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Counts<'a>(&'a [(&'a str, u32)]);
        impl Serialize for Counts<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (k, n) in self.0 {
                    m.serialize_entry(k, n)?;
                }
                m.end()
            }
        }
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("found", &Counts(&self.found))?;
        m.serialize_entry("action", self.action)?;
        m.serialize_entry("redact", &self.redact_names)?;
        m.serialize_entry("restore", &self.restore)?;
        m.end()
    }
}

/// Matched rules' personal-data actions for what was found; a refusal when one refuses.
fn pii_outcome<'p>(
    policy: &'p Policy,
    matched: &[&'p Rule],
    found: &crate::pii::Found,
) -> (PiiOutcome<'p>, Option<Refusal>) {
    let kinds = found.kinds();
    let mut redact = KindSet::EMPTY;
    let mut restore = false;
    let mut routed = false;
    let mut refused_by = None;
    for r in matched {
        redact = redact.union(r.pii.redact);
        restore |= r.pii.restore;
        routed |= matches!(r.when.pii, Some(PiiWhen::Found(_)));
        if r.pii.refuse && refused_by.is_none() {
            refused_by = Some(r);
        }
    }
    let redact = KindSet(redact.0 & kinds.0);
    let action = if refused_by.is_some() {
        "refused"
    } else if !redact.is_empty() {
        "redacted"
    } else if routed {
        "routed"
    } else if !found.is_empty() {
        "detected"
    } else {
        "none"
    };
    let config = &policy.pii;
    let refusal = refused_by.map(|r| {
        let named = match r.when.pii {
            Some(PiiWhen::Found(set)) => set,
            _ => kinds,
        };
        let what: Vec<&str> = config.names(KindSet(named.0 & kinds.0));
        Refusal {
            status: 422,
            code: "personal_data_refused",
            message: format!(
                "The request contains personal data that this deployment does not accept ({}; rule `{}`). Remove it and send the request again.",
                what.join(", "),
                r.id
            ),
        }
    });
    let outcome = PiiOutcome {
        found: found
            .counts
            .iter()
            .map(|(k, n)| (config.kind_name(*k), *n))
            .collect(),
        redact,
        redact_names: config.names(redact),
        restore: restore && !redact.is_empty(),
        action,
    };
    (outcome, refusal)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate<'p> {
    pub provider: &'p ProviderId,
    /// Index into `policy.providers`.
    #[serde(skip)]
    pub index: usize,
    /// The public model this candidate serves: the requested one, or a step of its route.
    pub model: &'p str,
    pub upstream_model: &'p str,
    /// Where the provider processes data, as the policy writes it.
    pub location: &'p str,
    /// Where it keeps what it retains: its `storage`, else `location`.
    pub storage: &'p str,
    pub input_price: Option<f64>,
    pub output_price: Option<f64>,
    #[serde(skip)]
    pub cache_read_price: Option<f64>,
    #[serde(skip)]
    pub cache_write_price: Option<f64>,
    /// The request chose a billing option (`priced_options`) and the model states no
    /// `option_price_factor`: its prices are the catalog's, a lower bound.
    #[serde(skip)]
    pub unpriced: bool,
    /// A pool's replicas the constraints allow (bit `i`: `pool.replicas[i]`); 0 for a provider
    /// without a pool.
    #[serde(skip)]
    pub replicas: u64,
    /// The replica this attempt goes to, once the pool has chosen ([`crate::pool`]): its name
    /// and its position in `pool.replicas`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "replica_name"
    )]
    pub replica: Option<(&'p str, usize)>,
}

fn replica_name<S: serde::Serializer>(r: &Option<(&str, usize)>, s: S) -> Result<S::Ok, S::Error> {
    match r {
        Some((name, _)) => s.serialize_str(name),
        None => s.serialize_none(),
    }
}

fn rule_matches(rule: &Rule, facts: &RequestFacts, privacy: PrivacyFlags, browser: bool) -> bool {
    let w = &rule.when;
    w.browser.is_none_or(|b| b == browser)
        && w.input_tokens
            .is_none_or(|r| r.contains(facts.input_tokens))
        && w.tools.is_none_or(|t| t == facts.tools)
        && w.media.is_none_or(|m| m == (facts.media_parts > 0))
        && w.client_countries
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
        && w.pii.is_none_or(|p| {
            let kinds = facts.pii.as_ref().map(|f| f.kinds()).unwrap_or_default();
            match p {
                PiiWhen::Found(set) => set.intersects(kinds),
                PiiWhen::None => kinds.detected().is_empty(),
            }
        })
}

/// Every hard constraint on this request, each with who set it: every matched rule, the
/// tenant, anonymous access, the request itself. All must hold (intersection).
fn constraints_for<'p: 'f, 'f>(
    policy: &'p Policy,
    facts: &'f RequestFacts,
    tenant: Option<&'p crate::policy::Tenant>,
    matched: &[&'p Rule],
) -> Vec<Constraint<'p, 'f>> {
    let stores = facts
        .capabilities
        .contains(crate::policy::Capability::Store);
    let mut constraints: Vec<Constraint> = Vec::with_capacity(matched.len() + 2);
    constraints.extend(matched.iter().map(|r| {
        let q = &r.require;
        Constraint {
            residency: q.jurisdiction.as_ref(),
            storage: q.storage.as_ref(),
            self_hosted: q.self_hosted,
            privacy: q.privacy,
            allow: q.providers.as_ref().map(Ids::Policy),
            deny: Ids::Policy(&q.deny),
            max_price: q.max_price,
            stores,
            ..Constraint::new(Who::Rule(&r.id))
        }
    }));
    if let Some(t) = tenant {
        constraints.push(Constraint {
            residency: t.jurisdictions.as_ref(),
            privacy: t.privacy,
            stores,
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
        stores,
        ..Constraint::new(Who::Request)
    });
    constraints
}

/// The models tried, in order: the route a matched rule names, or the route the request names,
/// or the model it names; the client's `models` narrows a route or adds fallbacks (each still
/// under every constraint); a tenant's model scope binds every step.
fn steps_for<'a>(
    policy: &'a Policy,
    facts: &'a RequestFacts,
    tenant: Option<&crate::policy::Tenant>,
    matched: &[&'a Rule],
) -> Vec<&'a str> {
    let forced = facts
        .forced_route
        .as_deref()
        .and_then(|id| policy.route(id));
    let mut steps: Vec<&str> = match forced
        .or_else(|| {
            matched
                .iter()
                .find_map(|r| r.route.as_deref())
                .and_then(|id| policy.route(id))
        })
        .or_else(|| policy.route(&facts.model))
    {
        Some(route) => {
            let listed: Vec<&str> = route.models.iter().map(|m| m.as_ref()).collect();
            match &facts.models {
                Some(asked) => {
                    let mut narrowed: Vec<&str> = Vec::new();
                    for a in asked {
                        if let Some(m) = listed.iter().find(|m| **m == a.as_str()) {
                            if !narrowed.contains(m) {
                                narrowed.push(m);
                            }
                        }
                    }
                    if narrowed.is_empty() {
                        listed
                    } else {
                        narrowed
                    }
                }
                None => listed,
            }
        }
        None => {
            let mut v = vec![facts.model.as_str()];
            for m in facts.models.iter().flatten() {
                if !v.contains(&m.as_str()) {
                    v.push(m.as_str());
                }
            }
            v
        }
    };
    // A tenant's model scope binds every step.
    if let Some(t) = tenant {
        if !t.models.is_empty() {
            steps.retain(|m| t.models.iter().any(|g| g.matches(m)));
        }
    }
    steps
}

/// Decides where a request may go and in which order to try.
pub fn decide<'p>(policy: &'p Policy, facts: &RequestFacts) -> Decision<'p> {
    let tenant = facts
        .tenant
        .as_ref()
        .and_then(|t| policy.tenant(t.as_str()));
    let tenant_privacy = tenant.map(|t| t.privacy).unwrap_or_default();
    let base_privacy = facts.privacy.union(tenant_privacy);
    // A browser (publishable) key: its tenant lists the origins that may use it.
    let browser = tenant.is_some_and(|t| !t.origins.is_empty());

    let mut matched: Vec<&'p Rule> = Vec::with_capacity(policy.rules.len());
    matched.extend(
        policy
            .rules
            .iter()
            .filter(|r| rule_matches(r, facts, base_privacy, browser)),
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
        pii: None,
        refusal: None,
        guards: Vec::new(),
    };
    if let Some(found) = &facts.pii {
        let (outcome, refusal) = pii_outcome(policy, &matched, found);
        decision.pii = Some(outcome);
        if refusal.is_some() {
            decision.refusal = refusal;
            return decision;
        }
    }

    let constraints = constraints_for(policy, facts, tenant, &matched);
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

    let steps = steps_for(policy, facts, tenant, &matched);
    let any_served = steps
        .iter()
        .any(|m| policy.providers.iter().any(|p| p.models.get(m).is_some()));
    if !any_served {
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
    let rule_pref = matched.iter().map(|r| &r.prefer).find(|p| !p.is_empty());
    let mut all = Vec::new();
    for model in steps {
        let (allowed, excluded) = step(policy, facts, model, &constraints, &matched, rule_pref);
        all.extend(allowed);
        decision.excluded.extend(excluded);
    }
    if all.is_empty() {
        decision.refusal = Some(refusal_for(&decision, &facts.model));
        return decision;
    }
    if !facts.prefs.allow_fallbacks {
        all.truncate(1);
    }
    decision.candidates = all;
    if !policy.guards.is_empty() {
        decision.guards = guard_steps(policy, &matched, &constraints);
    }
    decision
}

/// One model's allowed providers, in the order they will be tried, and the others with why.
fn step<'p>(
    policy: &'p Policy,
    facts: &RequestFacts,
    model: &str,
    constraints: &[Constraint<'p, '_>],
    matched: &[&'p Rule],
    rule_pref: Option<&'p crate::policy::Prefer>,
) -> (Vec<Candidate<'p>>, Vec<Exclusion<'p>>) {
    let prefs = &facts.prefs;
    let mut excluded = Vec::new();
    let mut serving: Vec<Serving> = Vec::with_capacity(policy.providers.len());
    serving.extend(
        policy
            .providers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.models.get(model).map(|m| (i, p, m))),
    );
    let mut reasons: Vec<Vec<Reason>> = Vec::with_capacity(serving.len());
    reasons.resize_with(serving.len(), Vec::new);
    for c in constraints.iter().filter(|c| c.binds()) {
        c.check_all(&serving, &mut reasons);
    }
    check_capabilities(facts, matched, &serving, &mut reasons);
    // A pool's replicas each in their own place: the replicas every constraint allows; none
    // left excludes the provider, for the constraint that took the last.
    let mut replicas: Vec<u64> = Vec::with_capacity(serving.len());
    for ((_, p, _), r) in serving.iter().zip(reasons.iter_mut()) {
        let Some(pool) = &p.pool else {
            replicas.push(0);
            continue;
        };
        let mut mask = pool.all();
        for c in constraints
            .iter()
            .filter(|c| c.residency.is_some() || c.storage.is_some())
        {
            let within = mask & c.replicas_within(p, pool);
            if within == 0 && mask != 0 {
                r.push(c.pool_reason(p));
            }
            mask = within;
        }
        replicas.push(mask);
    }
    // Context size: a model that cannot take the request is skipped.
    for ((_, p, m), r) in serving.iter().zip(reasons.iter_mut()) {
        let name = || {
            p.models
                .keys()
                .find(|k| k.as_ref() == model)
                .map_or("", |k| k.as_ref())
        };
        let output = facts.output_tokens.or(m.max_output).unwrap_or(0);
        if let Some(window) = m.context_window {
            let need = facts.input_tokens.saturating_add(output);
            if need > window {
                r.push(Reason {
                    by: Who::Request,
                    kind: ReasonKind::Context,
                    message: Message::ContextTooSmall {
                        model: name(),
                        window,
                        input: facts.input_tokens,
                        output,
                    },
                });
            }
        }
        if let (Some(asked), Some(most)) = (facts.output_tokens, m.max_output) {
            if asked > most {
                r.push(Reason {
                    by: Who::Request,
                    kind: ReasonKind::Context,
                    message: Message::OutputTooLong {
                        model: name(),
                        asked,
                        most,
                    },
                });
            }
        }
    }
    // A billing option the request chose prices every candidate at its model's factor.
    let priced = facts
        .capabilities
        .contains(crate::policy::Capability::PricedOptions);
    let mut allowed = Vec::with_capacity(serving.len());
    for (((index, p, m), reasons), replicas) in serving.into_iter().zip(reasons).zip(replicas) {
        let factor = if priced {
            m.option_price_factor
        } else {
            Some(1.0)
        };
        let times = |price: Option<f64>| price.map(|p| p * factor.unwrap_or(1.0));
        if reasons.is_empty() {
            allowed.push(Candidate {
                provider: &p.id,
                index,
                model: policy.providers[index]
                    .models
                    .keys()
                    .find(|k| k.as_ref() == model)
                    .map_or("", |k| k.as_ref()),
                upstream_model: &m.upstream,
                location: &p.location,
                storage: crate::policy::Recipient::stored_in(p),
                input_price: times(m.input_price),
                output_price: times(m.output_price),
                cache_read_price: times(m.cache_read_price),
                cache_write_price: times(m.cache_write_price),
                unpriced: factor.is_none(),
                replicas,
                replica: None,
            });
        } else {
            excluded.push(Exclusion {
                provider: &p.id,
                reasons,
            });
        }
    }
    if allowed.is_empty() {
        return (allowed, excluded);
    }
    // Preferences: the first matched rule that states any; the request's own override it.
    let sort = prefs.sort.or(rule_pref.and_then(|p| p.sort));
    if let Some(s) = sort {
        sort_by(&mut allowed, s, policy, facts);
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
        // One conversation stays on one provider (its prompt cache keeps hitting); without a
        // conversation key, the request id decides.
        allowed = weighted_order(allowed, weight, facts.spread_seed());
    }
    if let Some(p) = rule_pref {
        move_to_front(&mut allowed, p.order.iter().map(ProviderId::as_str));
    }
    move_to_front(&mut allowed, prefs.order.iter().map(String::as_str));
    (allowed, excluded)
}

#[cfg(test)]
mod tests;
