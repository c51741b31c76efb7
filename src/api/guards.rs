//! Running the guards a decision names: each allowed guard asked (the built-in detector's
//! finding read from the facts), each excluded one recorded, every call bounded by its rule's
//! timeout, and what the verdicts do to the request ([`Stop`]).

use serde_json::{json, Map, Value};

use crate::decide::GuardStep;
use crate::error::ApiError;
use crate::guard::{self, Label, Verdict};
use crate::policy::{GuardAction, GuardOn};
use crate::request::Endpoint;
use crate::transport::{next_within, Failure, Transport, Waits};

/// What the verdicts do to a request.
pub(super) enum Stop<'p> {
    /// Refused: the error the client gets.
    Refuse(ApiError),
    /// Served by this `[[routes]]` instead.
    Route(&'p str),
}

/// The text the guards of a request are sent: every text the model reads, in the order the
/// walk finds it (after redaction: a guard sees what a provider sees), a blank line between.
pub(super) fn input_text(endpoint: Endpoint, body: &mut Map<String, Value>) -> String {
    let mut out = String::new();
    crate::request::texts(endpoint, body, &mut |_, t| {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(t);
    });
    out
}

/// Runs `steps` together on `text` and gives their verdicts in the order of the steps.
/// `builtin`: the built-in detector's finding on this text, when it was read already.
pub(super) async fn run<T: Transport>(
    t: &T,
    secret: &dyn Fn(&str) -> Option<String>,
    steps: &[&GuardStep<'_>],
    text: &str,
    builtin: Option<Option<guard::builtin::Finding>>,
    beside: bool,
) -> Vec<Verdict> {
    let calls = steps
        .iter()
        .map(|s| one(t, secret, s, text, builtin, beside));
    futures::future::join_all(calls).await
}

async fn one<T: Transport>(
    t: &T,
    secret: &dyn Fn(&str) -> Option<String>,
    step: &GuardStep<'_>,
    text: &str,
    builtin: Option<Option<guard::builtin::Finding>>,
    beside: bool,
) -> Verdict {
    let (g, u) = (step.guard, step.usage);
    let mut v = Verdict {
        guard: g.id.to_string(),
        rule: step.rule.0.to_string(),
        on: u.on,
        label: None,
        score: None,
        outcome: "passed",
        why: None,
        ms: 0,
        beside,
        usd: 0.0,
    };
    let labels: Result<Vec<Label>, String> = if g.is_builtin() {
        let finding = builtin.unwrap_or_else(|| guard::builtin::scan(text));
        Ok(finding
            .map(|f| Label {
                name: f.signature.to_string(),
                score: f.score,
                flagged: true,
            })
            .into_iter()
            .collect())
    } else if !step.allowed() {
        let why: Vec<String> = step.excluded.iter().map(|r| r.to_string()).collect();
        v.why = Some(format!(
            "guard `{}` processes data in `{}`, where this request's text may not go: {}",
            g.id,
            g.location,
            why.join("; ")
        ));
        v.outcome = if u.fail_open {
            "skipped"
        } else {
            "not-allowed"
        };
        return v;
    } else {
        let started = t.now_ms();
        let asked = ask(t, secret, step, text).await;
        v.ms = t.now_ms().saturating_sub(started);
        v.usd = g.price_per_call.unwrap_or(0.0);
        asked
    };
    match labels {
        Err(why) => {
            v.why = Some(why);
            v.outcome = if u.fail_open {
                "failed-open"
            } else {
                "failed-closed"
            };
        }
        Ok(labels) => match guard::hit(g, u, &labels) {
            Some(l) => {
                v.label = Some(l.name.clone());
                v.score = Some(l.score);
                v.outcome = guard::outcome_of(&u.action);
            }
            None => {
                if let Some(top) = labels.iter().max_by(|a, b| a.score.total_cmp(&b.score)) {
                    v.label = Some(top.name.clone());
                    v.score = Some(top.score);
                }
            }
        },
    }
    v
}

/// One call to an external guard, within its rule's timeout: its labels, or why not.
async fn ask<T: Transport>(
    t: &T,
    secret: &dyn Fn(&str) -> Option<String>,
    step: &GuardStep<'_>,
    text: &str,
) -> Result<Vec<Label>, String> {
    let (g, u) = (step.guard, step.usage);
    if text.len() > g.max_input_bytes as usize {
        return Err(format!(
            "the text ({} bytes) is longer than the guard's `max_input_bytes` ({})",
            text.len(),
            g.max_input_bytes
        ));
    }
    let key = match &g.key_secret {
        None => None,
        Some(name) => match secret(name).filter(|k| !k.is_empty()) {
            Some(k) => Some(k),
            None => {
                return Err(format!(
                    "its key is not set: give the Spin variable `{name}` a value"
                ))
            }
        },
    };
    let req = guard::request(g, key.as_deref(), text, u.on);
    let start = t.now_ms();
    let deadline = start.saturating_add(u.timeout_ms);
    let mut resp = t.send(req, u.timeout_ms).await.map_err(|f| failure(&f))?;
    let mut body = Vec::new();
    let mut waits = Waits::new(deadline, u.timeout_ms);
    loop {
        let Some(wait) = waits.next(|| t.now_ms()) else {
            return Err("timeout".into());
        };
        match next_within(|| t.now_ms(), &mut resp.body, wait, waits.read_ms()).await {
            None => break,
            Some(Err(f)) => return Err(failure(&f)),
            Some(Ok(c)) => {
                if body.len() + c.len() > guard::MAX_ANSWER_BYTES {
                    return Err("the answer is larger than 1 MiB".into());
                }
                body.extend_from_slice(&c);
            }
        }
    }
    if !(200..300).contains(&resp.status) {
        return Err(format!("status {}", resp.status));
    }
    guard::labels(g, &body)
}

fn failure(f: &Failure) -> String {
    match f {
        Failure::Timeout(_) => "timeout".into(),
        other => other.detail().unwrap_or_else(|| other.label()),
    }
}

/// What the verdicts do: the first that stops the request (a refusal, a guard failing closed,
/// or one the text may not be sent to), else the first that routes.
pub(super) fn consequence<'p>(
    steps: &[&GuardStep<'p>],
    verdicts: &[Verdict],
    request_id: &str,
) -> Option<Stop<'p>> {
    for v in verdicts {
        if !v.stops() {
            continue;
        }
        let details = json!({ "request_id": request_id, "guards": verdicts.iter().map(Verdict::to_json).collect::<Vec<_>>() });
        let on = match v.on {
            GuardOn::Input => "request",
            GuardOn::Output => "answer",
        };
        let e = match v.outcome {
            "refused" => ApiError::new(
                422,
                "guardrail_refused",
                format!(
                    "The {on} was refused by guard `{}` (rule `{}`): it was judged `{}`.",
                    v.guard,
                    v.rule,
                    v.label.as_deref().unwrap_or("unsafe")
                ),
            ),
            "not-allowed" => ApiError::new(
                403,
                "guardrail_not_allowed",
                format!(
                    "Rule `{}` requires guard `{}` to judge this {on}, but the policy does not allow sending it there ({}), and the rule fails closed.",
                    v.rule,
                    v.guard,
                    v.why.as_deref().unwrap_or("excluded")
                ),
            ),
            _ => ApiError::new(
                503,
                "guardrail_unavailable",
                format!(
                    "Guard `{}` (rule `{}`) could not judge this {on} and the rule fails closed: try again later.",
                    v.guard, v.rule
                ),
            ),
        };
        return Some(Stop::Refuse(e.with_details(details)));
    }
    steps
        .iter()
        .zip(verdicts)
        .find_map(|(s, v)| match (&s.usage.action, v.outcome) {
            (GuardAction::Route(r), "routed") => Some(Stop::Route(r.as_ref())),
            _ => None,
        })
}
