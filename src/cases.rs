//! Runs the `[[test]]` cases a policy file carries. Used by `meridian test` and the test suite.

use serde_json::{Map, Value};

use crate::decide::{decide, Decision};
use crate::facts::{self, Endpoint};
use crate::location::Location;
use crate::policy::{Case, Expectation, Policy};

#[derive(Debug, Clone)]
pub struct CaseResult<'p> {
    pub name: String,
    pub line: usize,
    /// `None` when the case passed; otherwise what differed.
    pub failure: Option<String>,
    pub decision: Option<Decision<'p>>,
}

fn run_one<'p>(policy: &'p Policy, case: &Case) -> Result<Decision<'p>, String> {
    let mut headers = case.headers.clone();
    if !case.privacy.names().is_empty() {
        headers.push((
            facts::PRIVACY_HEADER.into(),
            case.privacy.names().join(", "),
        ));
    }
    let mut body = Map::new();
    body.insert("model".into(), Value::String(case.model.clone()));
    body.insert("stream".into(), Value::Bool(case.stream));
    if let Some(p) = &case.provider {
        body.insert("provider".into(), p.clone());
    }
    if let Some(text) = &case.prompt {
        body.insert(
            "messages".into(),
            serde_json::json!([{"role": "user", "content": text}]),
        );
    }
    let cx = facts::Context {
        location: Location::given(case.country),
        request_id: case.request_id.clone(),
        endpoint: Endpoint::Chat,
        tenant: case.tenant.clone(),
        edge_region: case.edge_region.clone(),
        headers: &headers,
        pii: policy.pii.used.then_some(&policy.pii),
        unknown_fields: policy.settings.unknown_fields,
        injection: policy.guards.builtin_used,
        rule_headers: policy.rules_read_headers(),
        prefix_bounds: policy.prefix_bounds(),
    };
    let facts = facts::from_request(cx, &mut body)
        .map_err(|e| format!("the request is invalid: {}", e.message))?;
    if let Some(want) = &case.expect_pii {
        let found: Vec<&str> = facts
            .pii
            .as_ref()
            .map(|f| {
                f.counts
                    .iter()
                    .map(|(k, _)| policy.pii.kind_name(*k))
                    .collect()
            })
            .unwrap_or_default();
        let mut want: Vec<&str> = want.iter().map(String::as_str).collect();
        want.sort_by_key(|k| policy.pii.kind_of(k));
        if found != want {
            return Err(format!(
                "expected personal data {want:?} in the prompt, found {found:?}"
            ));
        }
    }
    let d = decide(policy, &facts);
    if let Some(want) = &case.expect_replicas {
        let got: Vec<String> = d
            .candidates
            .iter()
            .filter_map(|c| {
                let pool = policy.providers[c.index].pool.as_ref()?;
                Some(
                    pool.in_mask(c.replicas)
                        .map(move |r| format!("{}@{}", c.provider, r.name)),
                )
            })
            .flatten()
            .collect();
        if &got != want {
            return Err(format!("expected replicas {want:?}, got {got:?}"));
        }
    }
    Ok(d)
}

fn check(expect: &Expectation, d: &Decision) -> Option<String> {
    let order: Vec<&str> = d.candidates.iter().map(|c| c.provider.as_str()).collect();
    let got = match &d.refusal {
        Some(r) => format!("refusal {} ({})", r.status, r.code),
        None => format!("{order:?}"),
    };
    match expect {
        Expectation::Order(want) => {
            let want: Vec<&str> = want.iter().map(|p| p.as_str()).collect();
            (d.refusal.is_some() || order != want).then(|| format!("expected {want:?}, got {got}"))
        }
        Expectation::First(want) => (order.first() != Some(&want.as_str()))
            .then(|| format!("expected `{want}` first, got {got}")),
        Expectation::Refusal(status) => (d.refusal.as_ref().map(|r| r.status) != Some(*status))
            .then(|| format!("expected refusal {status}, got {got}")),
    }
}

pub fn run(policy: &Policy) -> Vec<CaseResult<'_>> {
    policy
        .cases
        .iter()
        .map(|case| match run_one(policy, case) {
            Ok(d) => CaseResult {
                name: case.name.clone(),
                line: case.line,
                failure: check(&case.expect, &d),
                decision: Some(d),
            },
            Err(e) => CaseResult {
                name: case.name.clone(),
                line: case.line,
                failure: Some(e),
                decision: None,
            },
        })
        .collect()
}
