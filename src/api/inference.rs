//! One inference request, in the stages a newcomer can read in order: [`prepare`] (parse the
//! body, apply the tenant's caps, read the facts: fields, capabilities, location, privacy,
//! personal data) → [`decide_for`] (the pure decision, recorded; a refusal ends here) →
//! [`redact`] (placeholders for personal data the rules redact) → [`forward_to`] (each
//! candidate's request on its own wire, the attempt loop) → [`respond`] (the answer, restored
//! and translated, or an explained error). Each stage takes the one [`Cx`] of the request.
//! Authentication, limits, CORS and the audit headers are `serve`'s.

use serde_json::{json, Map, Value};

use super::guards::{Ask, Stop};
use super::stream::{NativeEvents, ToClient};
use super::{json_header, Body, Env, Outcome, Stream};
use crate::audit::{self, Record};
use crate::decide::{decide, Candidate};
use crate::error::ApiError;
use crate::facts::{self, Endpoint};
use crate::forward::{self, Limits};
use crate::location::Location;
use crate::pii;
use crate::policy::{GuardOn, Policy, Tenant, WireKind};
use crate::transport::{Failure, OutboundRequest, Transport};
use crate::wire::translate::{messages_from_chat, responses_from_chat};
use crate::wire::{self, Outgoing, WireBody, WireTransport};

/// Headers from the upstream response that reach the client: an allowlist. `content-type` and
/// `retry-after` always; the provider's `x-ratelimit-*` only when the policy says so (they
/// describe the operator's account, not the caller's). Everything else (cookies, the provider's
/// request ids and organisation names, framing) stays behind.
fn passthrough_headers(up: &[(String, String)], ratelimit: bool) -> Vec<(String, String)> {
    up.iter()
        .filter(|(k, _)| {
            k == "content-type"
                || k == "retry-after"
                || (ratelimit && k.starts_with("x-ratelimit-"))
        })
        .cloned()
        .collect()
}

/// An identifier-like value from an upstream error (`type`, `code`, `param`), safe to repeat.
fn ident(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    })
}

/// What an upstream error answer says it is, safe to repeat to the client and the log: the
/// identifiers it reports (`, type `…`, code `…`, param `…``), never its text (which can echo
/// the prompt or a fragment of the operator's key); `None` when the body is not JSON.
fn error_idents(body: &[u8]) -> Option<String> {
    let parsed: Value = serde_json::from_slice(body).ok()?;
    let err = &parsed["error"];
    let mut out = String::new();
    for field in ["type", "code", "param"] {
        if let Some(v) = ident(&err[field]) {
            out.push_str(&format!(", {field} `{v}`"));
        }
    }
    Some(out)
}

/// Meridian's own error for an upstream error answer: the provider, its status and what kind of
/// error it reported (`kind`, from [`error_idents`]), never the provider's text.
pub(super) fn upstream_error(provider: &str, status: u16, kind: &str) -> ApiError {
    let (out_status, code, what) = match status {
        401 | 403 | 407 => (
            502,
            "upstream_auth_failed",
            "refused Meridian's credentials for it; the operator must check the provider's key",
        ),
        400 | 404 | 409 | 413 | 415 | 422 => {
            (status, "upstream_rejected_request", "rejected the request")
        }
        429 => (
            429,
            "upstream_rate_limited",
            "is rate limiting this deployment",
        ),
        _ => (502, "upstream_error", "answered with an error"),
    };
    ApiError::new(
        out_status,
        code,
        format!(
            "The provider `{provider}` {what} (HTTP {status}{kind}). Its own message is in Meridian's log under this request id."
        ),
    )
}

/// The field that bounds a request's output in its protocol.
fn output_field(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Responses => "max_output_tokens",
        _ => "max_tokens",
    }
}

/// Applies a tenant's `max_tokens` cap to what the request may generate in all: the output
/// bound the reading found (`max_tokens` or its kin, the largest when several are set) times
/// the completions asked for. Absent: set so the total fits.
fn cap_max_tokens(
    body: &mut Map<String, Value>,
    facts: &mut facts::RequestFacts,
    cap: u64,
    endpoint: Endpoint,
) -> Result<(), ApiError> {
    let k = facts.completions.max(1);
    if k > cap {
        return Err(ApiError::bad_request(
            "max_tokens_above_limit",
            format!("this key may generate at most {cap} tokens per request, fewer than the {k} completions asked for"),
        )
        .with_param(Some("n")));
    }
    match facts.output_tokens {
        Some(total) if total > cap => Err(ApiError::bad_request(
            "max_tokens_above_limit",
            format!("`max_tokens` × completions ({k}) must be at most {cap} for this key"),
        )
        .with_param(Some("max_tokens"))),
        Some(_) => Ok(()),
        None => {
            let each = cap / k;
            body.insert(output_field(endpoint).into(), Value::from(each));
            facts.output_tokens = Some(each.saturating_mul(k));
            Ok(())
        }
    }
}

fn attempts_json(attempts: &[forward::Attempt]) -> Value {
    Value::Array(
        attempts
            .iter()
            .map(|a| {
                json!({
                    "provider": a.provider,
                    "error": a.failure.as_ref().map(Failure::label),
                    "ms": a.ms,
                    "hedge": a.hedge,
                })
            })
            .collect(),
    )
}

/// Records the candidate that answered.
fn served_by(policy: &Policy, record: &mut Record, c: &Candidate) {
    if let Some(p) = policy.providers.get(c.index) {
        record.retention_days = p.retention_days;
        record.zdr = Some(p.zdr);
    }
    record.provider = Some(c.provider.0.to_string());
    record.served_model = Some(c.model.to_string());
    record.upstream_model = Some(c.upstream_model.to_string());
    record.jurisdiction = Some(c.location.to_string());
    record.storage = Some(c.storage.to_string());
    record.replica = c.replica.map(|(r, _)| r.to_string());
    record.prices = crate::usage::Prices {
        input: c.input_price,
        output: c.output_price,
        cache_read: c.cache_read_price,
        cache_write: c.cache_write_price,
    };
}

/// One request's context, passed to every stage.
pub(super) struct Cx<'a, 'e, T> {
    pub env: &'a Env<'e>,
    pub t: &'a T,
    pub policy: &'a Policy,
    pub endpoint: Endpoint,
    pub headers: &'a [(String, String)],
    pub tenant: Option<&'a Tenant>,
    pub record: &'a mut Record,
}

/// Serves one inference request for an authenticated caller.
pub(super) async fn inference<T: Transport>(
    mut cx: Cx<'_, '_, T>,
    raw_body: &[u8],
    location: Location,
) -> Outcome<WireBody<T::Body>> {
    let (mut body, mut facts) = prepare(&mut cx, raw_body, location)?;
    let measured = read_latency(&cx, &mut facts).await;
    let pinned = follow_up(&cx, &mut body)?;
    let mut decision = decide_for(&mut cx, &facts, pinned.as_deref())?;
    if let Some(provider) = &pinned {
        pin(&mut cx, &mut decision, provider)?;
    }
    route_pools(&mut cx, &mut decision, &facts).await?;
    skip_cooling(&mut cx, &mut decision, &facts.model).await?;
    count_in_flight(&mut cx, &decision).await;
    let restorer = redact(&mut cx, &decision, &mut body);
    reserve_for(&mut cx, &decision, &facts, &mut body, raw_body.len()).await?;
    let Guarding {
        beside,
        outputs,
        text,
    } = guard_input(&mut cx, &mut decision, &facts, &mut body).await?;
    let builtin = Some(facts.injection);
    // What a Responses object made from a chat answer repeats from the request.
    let echo = if cx.endpoint == Endpoint::Responses {
        responses_from_chat::Echo::new(
            &cx.record.request_id,
            &facts.model,
            cx.t.unix_ms() / 1000,
            &body,
        )
    } else {
        responses_from_chat::Echo::default()
    };
    let mut lease = super::lease_of(cx.record);
    let mut gate = LimitGate {
        store: cx.env.store,
        audit: cx.record.limits.take(),
    };
    let log = forward::Log::default();
    let native = restorer.is_none();
    let (mut outcome, verdicts) = {
        let fwd = forward_leased(
            &cx,
            &decision,
            &facts,
            &body,
            native,
            &mut gate,
            &log,
            lease.as_mut(),
        );
        judged(
            &cx,
            fwd,
            &beside,
            &text,
            builtin,
            (&log, &decision.candidates),
        )
        .await
    };
    let stop = super::guards::consequence(&beside, &verdicts, &cx.record.request_id);
    cx.record.guards.extend(verdicts);
    if stop.is_some() {
        // The answer is not the client's: its attempt is counted as stopped (what a provider may
        // bill for it stays reserved), and nothing of it was sent.
        if outcome.take().is_some() {
            log.stop_answered();
        }
    }
    let refused = match stop {
        Some(Stop::Refuse(e)) => {
            cx.record.refused_by = Some("guard");
            Some(e)
        }
        Some(Stop::Route(r)) => match reroute(&mut cx, &facts, &r) {
            Ok(d) => {
                decision = d;
                let fwd = forward_leased(
                    &cx,
                    &decision,
                    &facts,
                    &body,
                    native,
                    &mut gate,
                    &log,
                    lease.as_mut(),
                );
                outcome = Some(fwd.await);
                None
            }
            Err(e) => Some(e),
        },
        None => None,
    };
    // The limits, the lease and the attempts back in the record, whatever happened.
    cx.record.limits = gate.audit;
    super::end_lease(cx.record, lease);
    cx.record.attempts = log.take();
    if let Some(e) = refused {
        return Err(e);
    }
    let outcome = outcome.unwrap_or(forward::Outcome::Exhausted {
        timed_out: false,
        gated: false,
    });
    learn_load(&cx, &decision, &outcome);
    note_failures(&mut cx, facts.input_tokens).await;
    if let Some(m) = measured {
        note_latency(&cx, m).await;
    }
    judge_answer(&mut cx, &decision, &outputs, &outcome).await?;
    respond(&mut cx, &decision, &facts, outcome, restorer, echo, outputs)
}

/// A Responses request that continues a stored response (`previous_response_id`): the sealed
/// id is opened (forged or altered: 400; another tenant's: 404, as an unknown id), the
/// provider's own id put in its place, and the provider that holds it returned, so the request
/// goes there or nowhere.
fn follow_up<T>(
    cx: &Cx<'_, '_, T>,
    body: &mut Map<String, Value>,
) -> Result<Option<String>, ApiError> {
    if cx.endpoint != Endpoint::Responses {
        return Ok(None);
    }
    let Some(given) = body.get("previous_response_id").and_then(Value::as_str) else {
        return Ok(None);
    };
    let bad = |code: &'static str, msg: String| {
        ApiError::bad_request(code, msg).with_param(Some("previous_response_id"))
    };
    let Some(key) = crate::responses::key(cx.env.secret) else {
        return Err(bad(
            "follow_up_not_supported",
            "This deployment does not continue stored responses (the operator has not set the `response_id_key` secret): send the whole conversation in `input` instead.".into(),
        ));
    };
    let sealed = match crate::responses::open(key.as_bytes(), given) {
        Ok(s) => s,
        Err(crate::responses::Unsealed::Stateless) => {
            return Err(bad(
                "response_not_stored",
                "That response was made by a provider that keeps nothing (Meridian translated it from chat): send the whole conversation in `input` instead of `previous_response_id`.".into(),
            ))
        }
        Err(crate::responses::Unsealed::Forged) => {
            return Err(bad(
                "invalid_response_id",
                "`previous_response_id` is not an id this deployment issued, or it was altered.".into(),
            ))
        }
    };
    if sealed.tenant.as_deref() != cx.tenant.map(|t| t.id.as_str()) {
        return Err(ApiError::new(
            404,
            "response_not_found",
            "No response with that id exists for this caller.",
        )
        .with_param(Some("previous_response_id")));
    }
    body.insert("previous_response_id".into(), Value::String(sealed.id));
    Ok(Some(sealed.provider))
}

/// Only the provider holding the previous response may serve its follow-up, and only while the
/// policy still allows this request there.
fn pin<T>(
    cx: &mut Cx<'_, '_, T>,
    decision: &mut crate::decide::Decision<'_>,
    provider: &str,
) -> Result<(), ApiError> {
    if !decision
        .candidates
        .iter()
        .any(|c| c.provider.as_str() == provider)
    {
        cx.record.refused_by = Some("policy");
        return Err(not_allowed_there(decision, provider));
    }
    decision
        .candidates
        .retain(|c| c.provider.as_str() == provider);
    cx.record.candidates.retain(|p| p == provider);
    Ok(())
}

/// A follow-up whose provider the policy no longer allows this request: why, from the
/// exclusion.
fn not_allowed_there(decision: &crate::decide::Decision<'_>, provider: &str) -> ApiError {
    let why = decision
        .excluded
        .iter()
        .find(|e| e.provider.as_str() == provider)
        .map(|e| {
            e.reasons
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_else(|| "it does not serve this model for this caller".into());
    ApiError::new(
        403,
        "previous_response_not_allowed",
        format!(
            "The previous response is kept by `{provider}`, where the policy does not allow this request now ({why}). Send the whole conversation in `input` instead."
        ),
    )
    .with_param(Some("previous_response_id"))
}

/// Providers that every node is cooling down after repeated failures (`[settings.health]`)
/// are skipped, with the reason in the audit; when none is left, a 503 says until when.
async fn skip_cooling<T: Transport>(
    cx: &mut Cx<'_, '_, T>,
    decision: &mut crate::decide::Decision<'_>,
    model: &str,
) -> Result<(), ApiError> {
    use crate::decide::{Exclusion, Message, Reason, ReasonKind, Who};
    let (Some(h), Some(store)) = (cx.policy.settings.health, cx.env.store) else {
        return Ok(());
    };
    let now_s = cx.t.unix_ms() / 1000;
    let Ok(cooling) = crate::limits::health::cooling(store, now_s).await else {
        return Ok(());
    };
    if cooling.is_empty() {
        return Ok(());
    }
    // A provider cools as a whole, or one model of it (`provider/model`, the model it was
    // asked for): see `limits::health::blame`.
    let cooling_until = |c: &crate::decide::Candidate<'_>| {
        cooling.get(c.provider.as_str()).copied().or_else(|| {
            let key = match c.replica {
                Some((r, _)) => crate::limits::health::replica_key(c.provider.as_str(), r),
                None => crate::limits::health::model_key(c.provider.as_str(), c.upstream_model),
            };
            cooling.get(&key).copied()
        })
    };
    let (keep, cooled): (Vec<_>, Vec<_>) = std::mem::take(&mut decision.candidates)
        .into_iter()
        .partition(|c| cooling_until(c).is_none());
    decision.candidates = keep;
    let mut soonest = u64::MAX;
    for c in cooled {
        let until_s = cooling_until(&c).unwrap_or(now_s);
        soonest = soonest.min(until_s);
        decision.excluded.push(Exclusion {
            provider: c.provider,
            reasons: vec![Reason {
                by: Who::Health,
                kind: ReasonKind::Health,
                message: Message::CoolingDown {
                    until_s,
                    failures: h.failures,
                    window_s: h.window_s,
                },
            }],
        });
        cx.record.excluded.push(c.provider.0.to_string());
        cx.record.excluded_kinds.push("health");
        cx.record.cooling.push(match c.replica {
            Some((r, _)) => format!(
                "{}@{r} cooling down until {}",
                c.provider,
                crate::limits::rfc3339(until_s)
            ),
            None => format!(
                "{} ({}) cooling down until {}",
                c.provider,
                c.upstream_model,
                crate::limits::rfc3339(until_s)
            ),
        });
    }
    keep_candidates(cx.record, decision);
    if !decision.candidates.is_empty() || soonest == u64::MAX {
        return Ok(());
    }
    let wait = soonest.saturating_sub(now_s).max(1);
    Err(unavailable_for_now(
        cx,
        decision,
        wait,
        "health",
        "providers_cooling_down",
        format!(
            "Every provider allowed for `{model}` failed repeatedly and is cooling down; the first comes back at {} (in {wait} s).",
            crate::limits::rfc3339(soonest)
        ),
    ))
}

/// The record's candidates, cut to the providers the decision still has.
fn keep_candidates(record: &mut Record, decision: &crate::decide::Decision<'_>) {
    let left: Vec<&str> = decision
        .candidates
        .iter()
        .map(|c| c.provider.as_str())
        .collect();
    record.candidates.retain(|p| left.contains(&p.as_str()));
}

/// Every allowed provider skipped for now (cooling down, or a pool full): a 503 with
/// `Retry-After`, what skipped them in the log's `refused_by`, and every exclusion with its
/// reason.
fn unavailable_for_now<T>(
    cx: &mut Cx<'_, '_, T>,
    decision: &crate::decide::Decision<'_>,
    wait_s: u64,
    by: &'static str,
    code: &'static str,
    message: String,
) -> ApiError {
    cx.record
        .limits
        .get_or_insert_with(Default::default)
        .headers
        .push(("retry-after".into(), wait_s.to_string()));
    cx.record.refused_by = Some(by);
    ApiError::new(503, code, message).with_details(json!({
        "request_id": cx.record.request_id,
        "excluded": decision.excluded,
    }))
}

/// Pools among the candidates (`[providers.pool]`): one store read for every pool's load, then
/// each pool's candidate becomes its replicas in the order to try them ([`crate::pool::choose`]),
/// each processing data where that replica is. A pool whose allowed replicas are all over
/// `max_queue` or down is skipped, with the reason; when that leaves nothing, 503 with
/// `Retry-After`: never a queue the client cannot see.
async fn route_pools<'p, T: Transport>(
    cx: &mut Cx<'p, '_, T>,
    decision: &mut crate::decide::Decision<'p>,
    facts: &facts::RequestFacts,
) -> Result<(), ApiError> {
    use crate::decide::{Exclusion, Message, Reason, ReasonKind, Who};
    let policy = cx.policy;
    if !decision
        .candidates
        .iter()
        .any(|c| policy.providers[c.index].pool.is_some())
    {
        return Ok(());
    }
    let mut summary = match cx.env.store {
        Some(store) => {
            crate::pool::parse(store.get(crate::pool::KEY).await.ok().flatten().as_deref())
        }
        None => crate::pool::Summary::new(),
    };
    // What this instance learned from replicas' answers since the summary was measured.
    let now_ms = cx.t.unix_ms();
    let mut learned: Vec<(&str, Vec<String>)> = Vec::new();
    for c in &decision.candidates {
        let p = &policy.providers[c.index];
        let (Some(pool), Some(load)) = (&p.pool, summary.get_mut(p.id.as_str())) else {
            continue;
        };
        if learned.iter().any(|(id, _)| *id == p.id.as_str()) {
            continue;
        }
        let changed = crate::pool::overlay(p.id.as_str(), load, now_ms, pool.stale_after_s);
        learned.push((p.id.as_str(), changed));
    }
    let (candidates, chosen) = crate::pool::expand(
        policy,
        std::mem::take(&mut decision.candidates),
        facts,
        &summary,
        now_ms,
    );
    decision.candidates = candidates;
    let mut full = false;
    let mut stale_after_s = 0;
    for crate::pool::Chosen {
        provider,
        pool,
        choice,
    } in chosen
    {
        if cx.record.pool.is_none() {
            cx.record.pool = Some(crate::audit::PoolChoice {
                provider: provider.to_string(),
                why: choice.describe(),
                load: choice.measured.describe(),
                queued: crate::pool::names(pool, &choice.queued),
                down: crate::pool::names(pool, &choice.down),
                learned: learned
                    .iter()
                    .find(|(id, _)| *id == provider.as_str())
                    .map(|(_, r)| r.clone())
                    .unwrap_or_default(),
            });
        }
        if !choice.order.is_empty() {
            continue;
        }
        full = true;
        stale_after_s = stale_after_s.max(pool.stale_after_s);
        decision.excluded.push(Exclusion {
            provider,
            reasons: vec![Reason {
                by: Who::Pool,
                kind: ReasonKind::Load,
                message: Message::PoolFull {
                    queued: choice.queued.len(),
                    down: choice.down.len(),
                    max_queue: pool.max_queue.unwrap_or(0),
                },
            }],
        });
        cx.record.excluded.push(provider.0.to_string());
        cx.record.excluded_kinds.push("load");
    }
    keep_candidates(cx.record, decision);
    if !decision.candidates.is_empty() || !full {
        return Ok(());
    }
    // The scraper measures again within `stale_after_s`; a client may try again after a
    // second or two, when a queue may have moved.
    let wait = u64::from(stale_after_s).clamp(1, 2);
    Err(unavailable_for_now(
        cx,
        decision,
        wait,
        "load",
        "pool_saturated",
        format!(
            "Every engine allowed for `{}` is at its queue bound or down; try again in {wait} s.",
            facts.model
        ),
    ))
}

/// The load a pool's replica reported on its answer ([`crate::transport::LOAD_HEADER`]), kept
/// by this instance for the requests it serves next ([`crate::pool::overlay`]).
fn learn_load<T: Transport, B>(
    cx: &Cx<'_, '_, T>,
    decision: &crate::decide::Decision<'_>,
    outcome: &forward::Outcome<B>,
) {
    let (candidate, headers) = match outcome {
        forward::Outcome::Complete {
            candidate, headers, ..
        }
        | forward::Outcome::Stream {
            candidate, headers, ..
        } => (*candidate, headers),
        forward::Outcome::Exhausted { .. } => return,
    };
    let Some(c) = decision.candidates.get(candidate) else {
        return;
    };
    let Some((replica, _)) = c.replica else {
        return;
    };
    let report = crate::headers::get(headers, crate::transport::LOAD_HEADER)
        .and_then(crate::pool::parse_load_report);
    if let Some(report) = report {
        crate::pool::learn(c.provider.as_str(), replica, cx.t.unix_ms(), report);
    }
}

/// A replica whose engine exposes no metrics (`engine = "none"`, Ollama) is measured by
/// Meridian itself: the request is counted in flight at the replica it goes to first (one
/// increment; given back at its end, in `settle`), and `meridian pool-scrape` writes the count as
/// the replica's `running`. A store that fails leaves the count out: it never refuses.
async fn count_in_flight<T: Transport>(
    cx: &mut Cx<'_, '_, T>,
    decision: &crate::decide::Decision<'_>,
) {
    let Some(store) = cx.env.store else { return };
    let Some(c) = decision.candidates.first() else {
        return;
    };
    let Some((replica, _)) = c.replica else {
        return;
    };
    let counted = cx.policy.providers[c.index]
        .pool
        .as_ref()
        .is_some_and(|p| p.engine == crate::policy::Engine::None);
    if !counted {
        return;
    }
    let key = crate::pool::inflight_key(c.provider.as_str(), replica, cx.t.unix_ms() / 1000);
    if store.increment(&key, 1).await.is_ok() {
        cx.record.inflight = Some(key);
    }
}

/// Where a latency sort may apply (a matched rule's or the request's), the measured times to
/// the first byte from this edge region: one store read.
async fn read_latency<T: Transport>(
    cx: &Cx<'_, '_, T>,
    facts: &mut facts::RequestFacts,
) -> Option<crate::limits::latency::Measured> {
    use crate::policy::Sort;
    let store = cx.env.store?;
    let wanted = facts.prefs.sort == Some(Sort::Latency)
        || cx
            .policy
            .rules
            .iter()
            .any(|r| r.prefer.sort == Some(Sort::Latency));
    if !wanted {
        return None;
    }
    let key = crate::limits::latency::key(cx.env.edge_region.as_deref());
    let m = crate::limits::latency::Measured::parse(store.get(&key).await.ok()?.as_deref());
    facts.measured_ms = m.usable();
    Some(m)
}

/// Records the answering attempt's time to the first byte: one store write.
async fn note_latency<T: Transport>(cx: &Cx<'_, '_, T>, mut m: crate::limits::latency::Measured) {
    let Some(store) = cx.env.store else { return };
    let Some(ok) = cx.record.attempts.iter().find(|a| a.failure.is_none()) else {
        return;
    };
    m.record(&ok.provider, ok.ms);
    if let Ok(bytes) = crate::json::to_vec(&m) {
        let key = crate::limits::latency::key(cx.env.edge_region.as_deref());
        let _ = store.set(&key, bytes).await;
    }
}

/// Counts this request's failed attempts towards each provider's cool-down.
async fn note_failures<T: Transport>(cx: &mut Cx<'_, '_, T>, input_tokens: u64) {
    let (Some(h), Some(store)) = (cx.policy.settings.health, cx.env.store) else {
        return;
    };
    if cx.record.attempts.iter().all(|a| a.failure.is_none()) {
        return;
    }
    let now_s = cx.t.unix_ms() / 1000;
    let cooled =
        crate::limits::health::record(store, &h, &cx.record.attempts, input_tokens, now_s).await;
    if !cooled.is_empty() {
        cx.record.cooled = cooled;
    }
}

/// Meridian's own limits (the tenant's and the matched rules'): the most this request can cost
/// is reserved in the shared store before any provider is called, or the request is refused
/// with a 429 naming the limit (a 503 when the store cannot be reached, unless the policy fails
/// open for this caller). Settled by [`super::settle`] when the answer is over.
async fn reserve_for<T: Transport>(
    cx: &mut Cx<'_, '_, T>,
    decision: &crate::decide::Decision<'_>,
    facts: &facts::RequestFacts,
    body: &mut Map<String, Value>,
    body_bytes: usize,
) -> Result<(), ApiError> {
    use crate::limits;
    let policy = cx.policy;
    let applicable = limits::applicable(policy, cx.tenant, &decision.matched_rules);
    if applicable.is_empty() {
        return Ok(());
    }
    let counts_usage = applicable.iter().any(|(_, l)| l.counts_usage());
    if counts_usage {
        unpriced(decision)?;
    }
    // The reservation must bound the output: a request that sets no bound gets one.
    let output = if cx.endpoint == Endpoint::Embeddings {
        0
    } else {
        // The facts read the bound (after the tenant's cap) and the media parts already.
        match facts.output_tokens {
            Some(n) => n,
            None if counts_usage => {
                let n = policy.settings.limits.default_max_tokens;
                body.insert(output_field(cx.endpoint).into(), Value::from(n));
                n
            }
            None => 0,
        }
    };
    let priced: Vec<limits::Priced> = decision
        .candidates
        .iter()
        .map(|c| limits::Priced {
            provider: c.provider.0.to_string(),
            input: [c.input_price, c.cache_write_price, c.cache_read_price]
                .into_iter()
                .flatten()
                .reduce(f64::max),
            output: c.output_price,
        })
        .collect();
    let media = if counts_usage { facts.media_parts } else { 0 };
    let hedging = decision.plan.hedge_after_ms.is_some() && decision.candidates.len() > 1;
    // What the provider adds to the body (the tool-use prompt, its own tools' definitions).
    let overhead = if counts_usage {
        facts.overhead_tokens
    } else {
        0
    };
    let shown = body_bytes.saturating_add(usize::try_from(overhead).unwrap_or(usize::MAX));
    let mut need = limits::need(shown, media, output, &priced, hedging);
    need.micro_usd =
        need.micro_usd
            .saturating_add(guards_micro_usd(decision, facts.stream, output));
    if counts_usage {
        if let Some(unseen) = unseen_input(cx.policy, decision, facts)? {
            need = limits::need_at_least(need, unseen, output, &priced);
        }
    }
    let caller = limits::Caller {
        tenant: cx.tenant,
        key_hash: crate::auth::presented_key(cx.headers).map(crate::policy::hash_key),
    };
    let now_ms = cx.t.unix_ms();
    let counters = limits::counters(&applicable, caller, &need, now_ms);
    let anthropic = cx.endpoint == Endpoint::Messages;
    let mut audit = limits::Audit {
        priced,
        ..limits::Audit::default()
    };
    let result = match cx.env.store {
        Some(store) => limits::reserve(store, counters, need).await,
        None => Err(limits::Refusal::Unavailable(
            "this deployment has no key-value store (spin.toml: `key_value_stores = [\"default\"]`)".into(),
        )),
    };
    let now_s = now_ms / 1000;
    match result {
        Ok(hold) => {
            audit.headers = limits::headers(&hold.counters, now_s, anthropic);
            audit.hold = Some(hold);
            cx.record.limits = Some(audit);
            Ok(())
        }
        Err(limits::Refusal::Exceeded { counter, used }) => {
            let e = exceeded(
                &mut audit,
                &counter,
                used,
                now_s,
                anthropic,
                &cx.record.request_id,
            );
            audit.refused = Some(counter);
            cx.record.limits = Some(audit);
            cx.record.refused_by = Some("limits");
            Err(e)
        }
        Err(limits::Refusal::Unavailable(why)) => {
            let who = cx.tenant.map(|t| t.id.as_str());
            if policy.settings.limits.fails_open(who) {
                audit.uncounted = Some(format!("the key-value store could not be reached ({why}); `fail_open` serves this caller"));
                cx.record.limits = Some(audit);
                return Ok(());
            }
            cx.record.error_detail = Some(format!("limits store: {why}"));
            audit.headers.push(("retry-after".into(), "1".into()));
            audit.unavailable = Some(why);
            cx.record.limits = Some(audit);
            cx.record.refused_by = Some("limits");
            Err(ApiError::new(
                503,
                "limits_unavailable",
                "Meridian could not reach the store that keeps this caller's limits, and the policy does not serve uncounted requests. Try again shortly.",
            )
            .with_kind("server_error"))
        }
    }
}

/// The 429 for a limit a request would go over, in words a caller can act on, with the
/// rate-limit headers and `Retry-After` (seconds to the window's end; 1 for `concurrent`).
fn exceeded(
    audit: &mut crate::limits::Audit,
    counter: &crate::limits::Counter,
    used: u64,
    now_s: u64,
    anthropic: bool,
    request_id: &str,
) -> ApiError {
    use crate::limits;
    let retry = counter.reset_s.saturating_sub(now_s).max(1);
    let held = limits::Held {
        after: used,
        counter: counter.clone(),
    };
    audit.headers = limits::headers(std::slice::from_ref(&held), now_s, anthropic);
    audit
        .headers
        .push(("retry-after".into(), retry.to_string()));
    let (max, asked, left) = match counter.metric {
        limits::CounterKind::Usd => (
            format!("${}", crate::policy::limits::micro_usd_display(counter.max)),
            format!(
                "${}",
                crate::policy::limits::micro_usd_display(counter.reserve)
            ),
            format!(
                "${}",
                crate::policy::limits::micro_usd_display(counter.max.saturating_sub(used))
            ),
        ),
        _ => (
            counter.max.to_string(),
            counter.reserve.to_string(),
            counter.max.saturating_sub(used).to_string(),
        ),
    };
    let what = match counter.metric {
        limits::CounterKind::Concurrent => format!(
            "{} already has {used} requests in flight, its limit of `concurrent = {max}`",
            counter.scope
        ),
        limits::CounterKind::Requests => format!(
            "{} has used its `{} = {max}`",
            counter.scope, counter.limit
        ),
        _ => format!(
            "{} has {left} left of its `{} = {max}` and this request may use up to {asked} (its input and `max_tokens` at the dearest allowed provider's prices)",
            counter.scope, counter.limit
        ),
    };
    let e = ApiError::new(
        429,
        "rate_limit_exceeded",
        format!("{what}. Try again in {retry} s, or ask for less (a lower `max_tokens`)."),
    )
    .with_details(json!({
        "request_id": request_id,
        "limit": counter.limit,
        "scope": counter.scope,
        "retry_after_s": retry,
    }));
    e
}

/// A limited request that chose a dearer way of billing (`priced_options`) to a model whose
/// catalog entry states no `option_price_factor`: no price bounds it, so it is refused.
fn unpriced(decision: &crate::decide::Decision<'_>) -> Result<(), ApiError> {
    match decision.candidates.iter().find(|c| c.unpriced) {
        None => Ok(()),
        Some(c) => Err(ApiError::bad_request(
            "unpriced_option",
            format!("This request chooses a dearer way of billing (`service_tier: \"priority\"` or `\"scale\"`, audio output, or the `context-1m` or `extended-cache-ttl` beta), and the model `{}` of `{}` states no `option_price_factor` in the policy: Meridian cannot bound what it may bill against this caller's limits. Leave the option out, or ask the operator to set `option_price_factor` for the model.", c.model, c.provider.0),
        )),
    }
}

/// The most input the body does not show that a provider may bill, if there is any: a file
/// or image by URL or id, stored history, what a provider-run tool brings back, each billed by
/// what the provider reads, at most the model's whole context window each time the model reads
/// the conversation. `Err` where nothing bounds it.
fn unseen_input(
    policy: &Policy,
    decision: &crate::decide::Decision<'_>,
    facts: &facts::RequestFacts,
) -> Result<Option<u64>, ApiError> {
    if facts.unseen_media == 0 && !facts.stored_history && facts.provider_tools == 0 {
        return Ok(None);
    }
    let window = unseen_input_bound(policy, decision)?;
    let reads = facts
        .model_reads
        .ok_or_else(|| unbounded_tool_calls(facts))?;
    Ok(Some(window.saturating_mul(reads)))
}

/// A limited request that lets the provider run tools without a bound on their calls: each
/// call bills its results as input and has the model read the conversation again, so nothing
/// bounds what it may bill.
fn unbounded_tool_calls(facts: &facts::RequestFacts) -> ApiError {
    let how = match facts.endpoint {
        Endpoint::Messages => "set `max_uses` on each server tool",
        _ => "set `max_tool_calls`",
    };
    ApiError::bad_request(
        "unbounded_input",
        format!("This request lets the provider run tools (web search or fetch, file search, code execution, MCP) with no bound on how many calls it makes; each call bills its results as input and reads the conversation again, so Meridian cannot bound what it may bill against this caller's limits. To send it, {how} (a tool with no such setting cannot be bounded: leave it out)."),
    )
}

/// The most input a provider can bill for a request whose input the body does not show: the
/// largest `context_window` among the models it may go to, or a 400 naming the model whose
/// catalog entry states none (without it there is no bound to reserve).
fn unseen_input_bound(
    policy: &Policy,
    decision: &crate::decide::Decision<'_>,
) -> Result<u64, ApiError> {
    let mut most = 0u64;
    for c in &decision.candidates {
        let window = policy.providers[c.index]
            .models
            .get(c.model)
            .and_then(|m| m.context_window);
        match window {
            Some(w) => most = most.max(w),
            None => {
                return Err(ApiError::bad_request(
                    "unbounded_input",
                    format!(
                        "This request has the provider read input its body does not show (a file or image by URL or id, or a stored conversation), and the model `{}` of `{}` states no `context_window` in the policy: Meridian cannot bound what it may bill against this caller's limits. Send the content in the body, or ask the operator to set `context_window` for the model.",
                        c.model, c.provider
                    ),
                ))
            }
        }
    }
    Ok(most)
}

/// Parses the body, applies the tenant's token cap and reads the facts (the field tables and
/// capabilities, privacy flags, the `provider` object, personal data).
fn prepare<T>(
    cx: &mut Cx<'_, '_, T>,
    raw_body: &[u8],
    location: Location,
) -> Result<(Map<String, Value>, facts::RequestFacts), ApiError> {
    let mut body = match serde_json::from_slice::<Value>(raw_body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return Err(ApiError::bad_request(
                "invalid_json",
                "The request body must be a JSON object.",
            ))
        }
        Err(err) => {
            return Err(ApiError::bad_request(
                "invalid_json",
                format!(
                    "We could not parse the JSON body of your request: {err}. The OpenAI API expects a JSON payload."
                ),
            ))
        }
    };
    let policy = cx.policy;
    let fcx = facts::Context {
        location,
        request_id: cx.record.request_id.clone(),
        endpoint: cx.endpoint,
        tenant: cx.tenant.map(|t| t.id.clone()),
        edge_region: cx.env.edge_region.clone(),
        headers: cx.headers,
        pii: policy.pii.used.then_some(&policy.pii),
        unknown_fields: policy.settings.unknown_fields,
        injection: policy.guards.builtin_used,
        rule_headers: policy.rules_read_headers(),
        prefix_bounds: policy.prefix_bounds(),
    };
    let mut facts = facts::from_request(fcx, &mut body).map_err(ApiError::from)?;
    if let Some(cap) = cx.tenant.and_then(|t| t.max_tokens) {
        if cx.endpoint != Endpoint::Embeddings {
            cap_max_tokens(&mut body, &mut facts, cap, cx.endpoint)?;
        }
    }
    // The policy's conversation header, when the request sends it, names the conversation.
    if let Some(key) = policy
        .settings
        .affinity_header
        .as_deref()
        .and_then(|h| crate::headers::get(cx.headers, h))
        .filter(|k| !k.is_empty())
    {
        facts.affinity = Some(facts::affinity_key(facts.tenant.as_ref(), key));
    }
    cx.record.model = Some(facts.model.clone());
    cx.record.capabilities = facts.capabilities.names();
    cx.record.dropped = facts.dropped.clone();
    Ok((body, facts))
}

/// The decision, recorded; a refusal is the request's answer.
fn decide_for<'p, T>(
    cx: &mut Cx<'p, '_, T>,
    facts: &facts::RequestFacts,
    pinned: Option<&str>,
) -> Result<crate::decide::Decision<'p>, ApiError> {
    let policy = cx.policy;
    let decision = decide(policy, facts);
    let record = &mut *cx.record;
    // The first choice, a follow-up's pinned provider when the policy allows it there.
    let first = match pinned {
        Some(p) => decision
            .candidates
            .iter()
            .find(|c| c.provider.as_str() == p),
        None => decision.candidates.first(),
    }
    .filter(|_| decision.refusal.is_none())
    .map(|c| crate::audit::facts::First {
        provider: c.provider.0.to_string(),
        location: crate::pool::places(policy, c),
        storage: (c.storage != c.location).then(|| c.storage.to_string()),
    });
    record.facts = Some(crate::audit::facts::Inputs::of(
        policy, facts, first, pinned,
    ));
    if let (Some(outcome), Some(found)) = (&decision.pii, &facts.pii) {
        record.pii = Some(audit::PiiRecord {
            found: found.to_json(&policy.pii),
            summary: found.describe(&policy.pii),
            action: outcome.action,
            redacted: 0,
            restored: false,
        });
    }
    record.rules = Some(
        decision
            .matched_rules
            .iter()
            .map(|r| r.0.to_string())
            .collect(),
    );
    record.candidates = decision
        .candidates
        .iter()
        .map(|c| c.provider.0.to_string())
        .collect();
    record.excluded = decision
        .excluded
        .iter()
        .map(|e| e.provider.0.to_string())
        .collect();
    record.excluded_kinds = decision
        .excluded
        .iter()
        .map(|e| e.reasons.first().map_or("excluded", |r| r.kind.name()))
        .collect();
    if let Some(r) = &decision.refusal {
        record.refused_by = Some("policy");
        // A follow-up whose provider was excluded: that is the answer, whatever else refused.
        if let Some(p) =
            pinned.filter(|p| decision.excluded.iter().any(|e| e.provider.as_str() == *p))
        {
            return Err(not_allowed_there(&decision, p));
        }
        return Err(
            ApiError::new(r.status, r.code, r.message.clone()).with_details(json!({
                "request_id": record.request_id,
                "client_country": decision.client_country,
                "client_country_source": facts.location.source,
                "matched_rules": decision.matched_rules,
                "excluded": decision.excluded,
            })),
        );
    }
    Ok(decision)
}

/// Personal data the matched rules redact is replaced before any provider sees the body; the
/// restorer, when the rules put the originals back into the answer.
fn redact<T>(
    cx: &mut Cx<'_, '_, T>,
    decision: &crate::decide::Decision<'_>,
    body: &mut Map<String, Value>,
) -> Option<Box<pii::Restorer>> {
    let outcome = decision.pii.as_ref().filter(|o| !o.redact.is_empty())?;
    let scanner = pii::Scanner::new(&cx.policy.pii);
    let redaction = pii::redact_body(&scanner, body, cx.endpoint, outcome.redact);
    let restore = outcome.restore && !redaction.pairs.is_empty();
    if let Some(r) = cx.record.pii.as_mut() {
        r.redacted = redaction.replaced;
        r.restored = restore;
    }
    restore.then(|| Box::new(pii::Restorer::new(redaction.pairs)))
}

/// Runs the attempt loop: each candidate's request built on its own wire, with the operator's
/// key from its secret and never the client's credentials.
async fn forward_to<T: Transport>(
    cx: &Cx<'_, '_, T>,
    decision: &crate::decide::Decision<'_>,
    facts: &facts::RequestFacts,
    body: &Map<String, Value>,
    native_streams: bool,
    gate: &mut LimitGate<'_>,
    log: &forward::Log,
) -> forward::Outcome<WireBody<T::Body>> {
    let accept = crate::headers::get(cx.headers, "accept").unwrap_or("application/json");
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    // Each attempt (a retry, a fallback, a hedge) is a child span of the request's: siblings.
    let trace = cx.record.trace.as_ref();
    let build = |c: &Candidate, n: u32| -> Result<OutboundRequest, Failure> {
        let provider = &cx.policy.providers[c.index];
        let key = wire::provider_key(provider, cx.env.secret).map_err(Failure::Config)?;
        let mut req = wire::request(&Outgoing {
            endpoint: cx.endpoint,
            body,
            provider,
            replica: c.replica.map(|(_, i)| i),
            upstream_model: c.upstream_model,
            key,
            client_headers: cx.headers,
            accept,
            request_id: &cx.record.request_id,
            stream: facts.stream,
            native_streams,
            include_usage,
            traceparent: trace.map(|t| t.traceparent_for(t.attempt_span(n))),
            tracestate: trace.and_then(|t| t.state.as_deref()),
        })?;
        // The provider's rate-limit headers are passed on only when the policy says so; else
        // the transport need not hand over more than Meridian reads.
        req.all_headers = cx.policy.settings.expose_ratelimit_headers;
        Ok(req)
    };
    let wt = WireTransport {
        inner: cx.t,
        max_response_bytes: cx.env.max_response_bytes,
    };
    forward::forward_logged(
        &wt,
        decision,
        build,
        facts.stream,
        Limits {
            max_response_bytes: cx.env.max_response_bytes,
        },
        gate,
        log,
    )
    .await
}

/// The guards a request meets once decided: those that run beside the first attempt, those on
/// its answer, and the text input guards are sent.
struct Guarding<'p> {
    beside: Vec<Ask<'p>>,
    outputs: Vec<Ask<'p>>,
    text: String,
}

/// The guards stage: the input guards whose verdict comes before any provider is called (the
/// built-in detector, `before_send`, and an output guard that may never see the answer and
/// fails closed) run now; a refusal is the request's answer, a route replaces the decision.
async fn guard_input<'p, T: Transport>(
    cx: &mut Cx<'p, '_, T>,
    decision: &mut crate::decide::Decision<'p>,
    facts: &facts::RequestFacts,
    body: &mut Map<String, Value>,
) -> Result<Guarding<'p>, ApiError> {
    // The input guards: the built-in detector and those a rule asks to finish first before any
    // provider is called; the others beside the first attempt.
    let guard_steps = std::mem::take(&mut decision.guards);
    let steps: Vec<&crate::decide::GuardStep> = guard_steps
        .iter()
        .filter(|s| s.usage.on == GuardOn::Input)
        .collect();
    let text = if steps.iter().any(|s| !s.guard.is_builtin() && s.allowed()) {
        super::guards::input_text(cx.endpoint, body)
    } else {
        String::new()
    };
    let (before, beside): (Vec<Ask>, Vec<Ask>) = steps
        .into_iter()
        .map(|s| Ask::of(s, cx.env.secret))
        .partition(|a| a.usage.before_send || a.guard.is_builtin());
    let outputs: Vec<Ask> = guard_steps
        .iter()
        .filter(|s| s.usage.on == GuardOn::Output)
        .map(|s| Ask::of(s, cx.env.secret))
        .collect();
    // An output guard the answer may not be sent to, failing closed: no answer could be given.
    let blocked: Vec<Ask> = outputs
        .iter()
        .filter(|a| a.excluded.is_some() && !a.usage.fail_open)
        .cloned()
        .collect();
    if let Some(Stop::Refuse(e)) = judge_now(cx, &blocked, "", None).await {
        return Err(e);
    }
    let mut route = None;
    match judge_now(cx, &before, &text, Some(facts.injection)).await {
        Some(Stop::Refuse(e)) => return Err(e),
        Some(Stop::Route(r)) => route = Some(r),
        None => {}
    }
    if let Some(r) = &route {
        *decision = reroute(cx, facts, r)?;
    }
    let beside: Vec<_> = if route.is_some() { Vec::new() } else { beside };
    Ok(Guarding {
        beside,
        outputs,
        text,
    })
}

/// A whole answer's output guards judge it before the client gets any of it; a refusal keeps
/// what the provider billed for it (counted, and not sent).
async fn judge_answer<T: Transport>(
    cx: &mut Cx<'_, '_, T>,
    decision: &crate::decide::Decision<'_>,
    outputs: &[Ask<'_>],
    outcome: &forward::Outcome<WireBody<T::Body>>,
) -> Result<(), ApiError> {
    let forward::Outcome::Complete {
        candidate,
        status,
        body,
        usage,
        ..
    } = outcome
    else {
        return Ok(());
    };
    if outputs.is_empty() || !(200..300).contains(status) {
        return Ok(());
    }
    let text = crate::guard::answer_text(body);
    if let Some(Stop::Refuse(e)) = judge_now(cx, outputs, &text, None).await {
        served_by(cx.policy, cx.record, &decision.candidates[*candidate]);
        cx.record.usage = *usage;
        return Err(e);
    }
    Ok(())
}

/// Runs guards whose verdict is needed now (nothing waits beside them), records their verdicts,
/// and says what they do; a refusal is recorded as the guards'.
async fn judge_now<T: Transport>(
    cx: &mut Cx<'_, '_, T>,
    asks: &[Ask<'_>],
    text: &str,
    builtin: Option<Option<crate::guard::builtin::Finding>>,
) -> Option<Stop> {
    if asks.is_empty() {
        return None;
    }
    let v = super::guards::run(cx.t, asks, text, builtin, false).await;
    let stop = super::guards::consequence(asks, &v, &cx.record.request_id);
    cx.record.guards.extend(v);
    if matches!(stop, Some(Stop::Refuse(_))) {
        cx.record.refused_by = Some("guard");
    }
    stop
}

/// The attempt loop for a decision, with the request's lease kept alive while it runs.
#[allow(clippy::too_many_arguments)]
async fn forward_leased<T: Transport>(
    cx: &Cx<'_, '_, T>,
    decision: &crate::decide::Decision<'_>,
    facts: &facts::RequestFacts,
    body: &Map<String, Value>,
    native_streams: bool,
    gate: &mut LimitGate<'_>,
    log: &forward::Log,
    lease: Option<&mut crate::limits::Lease>,
) -> forward::Outcome<WireBody<T::Body>> {
    // Boxed: `leased` keeps the attempt loop in several of its states, and its callers move it
    // (`judged`), each a copy of all of it.
    let fwd = Box::pin(forward_to(
        cx,
        decision,
        facts,
        body,
        native_streams,
        gate,
        log,
    ));
    super::leased(cx.t, cx.env.store, lease, fwd).await
}

/// The attempt loop with the input guards that run beside it: nothing is answered before every
/// verdict is in, and a verdict that stops the request (or routes it) while an attempt runs
/// drops the loop, whose attempts in flight are recorded as stopped. `None`: no answer to use.
async fn judged<T: Transport, F>(
    cx: &Cx<'_, '_, T>,
    fwd: F,
    beside: &[Ask<'_>],
    text: &str,
    builtin: Option<Option<crate::guard::builtin::Finding>>,
    (log, cands): (&forward::Log, &[Candidate<'_>]),
) -> (Option<F::Output>, Vec<crate::guard::Verdict>)
where
    F: std::future::Future,
{
    use futures::future::{select, Either};
    use futures::FutureExt;
    if beside.is_empty() {
        return (Some(fwd.await), Vec::new());
    }
    let judging = super::guards::run(cx.t, beside, text, builtin, true).fuse();
    let fwd = fwd.fuse();
    futures::pin_mut!(judging, fwd);
    match select(judging, fwd).await {
        Either::Left((v, fwd)) => {
            if super::guards::consequence(beside, &v, &cx.record.request_id).is_some() {
                log.stop(cx.t.now_ms(), cands);
                (None, v)
            } else {
                (Some(fwd.await), v)
            }
        }
        Either::Right((out, judging)) => (Some(out), judging.await),
    }
}

/// A guard's verdict sends the request along a `[[routes]]`: decided again with that route, under
/// every constraint, and recorded.
fn reroute<'p, T>(
    cx: &mut Cx<'p, '_, T>,
    facts: &facts::RequestFacts,
    route: &str,
) -> Result<crate::decide::Decision<'p>, ApiError> {
    let mut routed = facts.clone();
    routed.forced_route = Some(route.to_string());
    decide_for(cx, &routed, None)
}

/// What the guards the decision runs may cost, in millionths of a dollar: each input guard's
/// call, and each output guard's calls (one for a whole answer; for a stream one per window of
/// [`crate::guard::OUTPUT_WINDOW_CHARS`] characters at four characters a token of the output
/// bound, and one more for its end). Guards the text may not go to are never called.
fn guards_micro_usd(decision: &crate::decide::Decision<'_>, stream: bool, output: u64) -> u64 {
    let windows = if stream {
        output
            .saturating_mul(4)
            .div_ceil(crate::guard::OUTPUT_WINDOW_CHARS as u64)
            .saturating_add(1)
    } else {
        1
    };
    decision
        .guards
        .iter()
        .filter(|s| s.allowed())
        .filter_map(|s| s.guard.price_per_call.map(|p| (s, p)))
        .map(|(s, p)| {
            let calls = if s.usage.on == GuardOn::Output {
                windows
            } else {
                1
            };
            ((p * 1e6).ceil() as u64).saturating_mul(calls)
        })
        .fold(0u64, u64::saturating_add)
}

/// Meridian's limits before each attempt after the first: the reservation covers every attempt
/// a provider may bill ([`crate::limits::may_bill`]) and the next, or is extended to, or the
/// attempt does not start ([`crate::limits::extend`]). Holds the request's limits record while
/// the attempts run.
struct LimitGate<'s> {
    store: Option<&'s dyn crate::limits::Store>,
    audit: Option<crate::limits::Audit>,
}

impl forward::Gate for LimitGate<'_> {
    async fn admit(&mut self, attempts: &[crate::transport::Attempt], next: u64) -> bool {
        use crate::limits::Refusal;
        let Some(audit) = self.audit.as_mut() else {
            return true;
        };
        let Some(hold) = audit.hold.as_mut().filter(|h| h.counts_usage()) else {
            return true;
        };
        let needs = hold.needs_cover(attempts, next);
        if needs <= hold.covered {
            return true;
        }
        let more = needs - hold.covered;
        let refusal = match self.store {
            Some(store) => match crate::limits::extend(store, hold, more).await {
                Ok(()) => return true,
                Err(r) => r,
            },
            None => Refusal::Unavailable("no key-value store".into()),
        };
        audit.stopped = Some(match refusal {
            Refusal::Exceeded { counter, used } => format!(
                "{} `{}` has no room to cover another attempt ({} of {} used or reserved)",
                counter.scope, counter.limit, used, counter.max
            ),
            Refusal::Unavailable(why) => {
                format!("the key-value store could not be reached to cover another attempt ({why})")
            }
        });
        false
    }
}

/// The answer: a whole body (restored, translated for Anthropic clients), a stream ready to
/// pump, an upstream error summarised, or why every attempt failed.
fn respond<T: Transport>(
    cx: &mut Cx<'_, '_, T>,
    decision: &crate::decide::Decision<'_>,
    facts: &facts::RequestFacts,
    outcome: forward::Outcome<WireBody<T::Body>>,
    restorer: Option<Box<pii::Restorer>>,
    echo: responses_from_chat::Echo,
    outputs: Vec<Ask<'_>>,
) -> Outcome<WireBody<T::Body>> {
    let ratelimit = cx.policy.settings.expose_ratelimit_headers;
    match outcome {
        forward::Outcome::Exhausted { timed_out, .. } => {
            Err(exhausted(cx.record, facts, timed_out))
        }
        forward::Outcome::Complete {
            candidate,
            status,
            headers: up,
            body,
            usage,
        } => {
            let c = &decision.candidates[candidate];
            served_by(cx.policy, cx.record, c);
            if !(200..300).contains(&status) {
                return Ok(upstream_failed(cx.record, c, status, &up, &body, ratelimit));
            }
            cx.record.usage = usage;
            let body = whole(cx, c, body, restorer.as_deref(), &echo);
            Ok((
                status,
                passthrough_headers(&up, ratelimit),
                Body::Full(body),
            ))
        }
        forward::Outcome::Stream {
            candidate,
            status,
            headers: up,
            first,
            guard,
            body,
        } => {
            let c = &decision.candidates[candidate];
            served_by(cx.policy, cx.record, c);
            let mut stream = stream(cx, decision, c, (first, guard, body), restorer, echo);
            if !outputs.is_empty() {
                stream.output = Some(Box::new(super::guards::Windows::new(
                    outputs,
                    &cx.record.request_id,
                )));
            }
            if cx.policy.settings.stream_events == crate::policy::StreamEvents::Framed
                && stream.events_go_on_unread()
            {
                stream.guard.check_framing_only();
            }
            Ok((
                status,
                passthrough_headers(&up, ratelimit),
                Body::Stream(stream),
            ))
        }
    }
}

/// Why every attempt failed: a 400 when every allowed provider's wire cannot express part of
/// the request (the client's to change, never a silent drop), else a 502 or a 504 listing them.
fn exhausted(record: &Record, facts: &facts::RequestFacts, timed_out: bool) -> ApiError {
    let untranslatable = !record.attempts.is_empty()
        && record
            .attempts
            .iter()
            .all(|a| matches!(a.failure, Some(Failure::Untranslatable(_))));
    if untranslatable {
        let list = record
            .attempts
            .iter()
            .filter_map(|a| {
                a.failure
                    .as_ref()
                    .map(|f| format!("`{}` {}", a.provider, f.label()))
            })
            .collect::<Vec<_>>()
            .join("; ");
        return ApiError::bad_request(
            "unsupported_parameter",
            format!("No allowed provider can take this request as sent: {list}. Remove or change those fields."),
        );
    }
    let (status, code, what) = if timed_out {
        (504, "upstream_timeout", "timed out")
    } else {
        (502, "upstream_unavailable", "failed")
    };
    let list = record
        .attempts
        .iter()
        .map(|a| {
            let why = a
                .failure
                .as_ref()
                .map_or_else(|| "?".into(), Failure::label);
            format!("`{}`: {why}", a.provider)
        })
        .collect::<Vec<_>>()
        .join("; ");
    let stopped = match record.limits.as_ref().and_then(|l| l.stopped.as_deref()) {
        Some(why) => format!(". No further attempt was made: {why}"),
        None => String::new(),
    };
    let what = if stopped.is_empty() {
        format!("Every allowed upstream {what}")
    } else {
        format!("The upstream {what}")
    };
    ApiError::new(
        status,
        code,
        format!("{what} for `{}`. Attempts: {list}{stopped}", facts.model),
    )
    .with_details(
        json!({ "request_id": record.request_id, "attempts": attempts_json(&record.attempts) }),
    )
}

/// A provider's error answer. Its own body can carry what nobody should read back (a fragment
/// of the operator's key, account names, an echo of the prompt): the client gets a summary, the
/// log its identifiers only.
fn upstream_failed<B>(
    record: &mut Record,
    c: &Candidate,
    status: u16,
    up: &[(String, String)],
    body: &[u8],
    ratelimit: bool,
) -> (u16, Vec<(String, String)>, Body<B>) {
    let idents = error_idents(body);
    record.upstream_error = Some(match &idents {
        Some(i) => format!("HTTP {status}{i}"),
        None => format!("HTTP {status}, {} bytes that are not JSON", body.len()),
    });
    let e = upstream_error(c.provider.as_str(), status, idents.as_deref().unwrap_or(""))
        .with_details(json!({
            "request_id": record.request_id,
            "provider": c.provider,
            "upstream_status": status,
        }));
    let mut h: Vec<(String, String)> = passthrough_headers(up, ratelimit)
        .into_iter()
        .filter(|(k, _)| k != "content-type")
        .collect();
    h.push(json_header());
    record.error_code = Some(e.code);
    (e.status, h, Body::Full(e.body()))
}

/// A whole answer in the client's protocol: restored, and translated or passed through (an
/// Anthropic or Responses answer passed through has its usage read in its own shape, and a
/// Responses id sealed).
fn whole<T>(
    cx: &mut Cx<'_, '_, T>,
    c: &Candidate,
    body: Vec<u8>,
    restorer: Option<&pii::Restorer>,
    echo: &responses_from_chat::Echo,
) -> Vec<u8> {
    let mut body = match restorer {
        Some(r) => r.restore_body(&body),
        None => body,
    };
    let provider = &cx.policy.providers[c.index];
    let record = &mut *cx.record;
    if cx.endpoint == Endpoint::Messages {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if provider.kind == WireKind::Anthropic {
            // Passed through: only its usage is read, for the audit and the cost.
            record.usage = Some(crate::usage::Usage::from_anthropic(&v["usage"]));
        } else {
            body = messages_from_chat::response(&v).to_string().into_bytes();
        }
    }
    if cx.endpoint == Endpoint::Responses {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if provider.responses && restorer.is_none() {
            // Passed through: its usage read in the Responses shape, its id sealed.
            record.usage = serde_json::from_value::<crate::sse::ResponsesUsage>(v["usage"].clone())
                .ok()
                .map(|u| u.usage());
            if let (Some(key), Some(id)) = (
                crate::responses::key(cx.env.secret),
                crate::responses::response_id(&v),
            ) {
                let sealed = crate::responses::seal(
                    key.as_bytes(),
                    c.provider.as_str(),
                    cx.tenant.map(|t| t.id.as_str()),
                    id,
                );
                body = crate::responses::replace_id(&body, id, &sealed);
            }
        } else {
            body = responses_from_chat::response(&v, echo)
                .to_string()
                .into_bytes();
        }
    }
    body
}

/// A stream ready to pump: passed through in the client's own protocol where the provider
/// speaks it (the guard read the events as such), else translated from chat's events.
fn stream<T: Transport>(
    cx: &mut Cx<'_, '_, T>,
    decision: &crate::decide::Decision<'_>,
    c: &Candidate,
    (first, guard, body): (Vec<u8>, crate::sse::SseGuard, WireBody<T::Body>),
    restorer: Option<Box<pii::Restorer>>,
    echo: responses_from_chat::Echo,
) -> Stream<WireBody<T::Body>> {
    let provider = &cx.policy.providers[c.index];
    let native = match cx.endpoint {
        Endpoint::Messages if restorer.is_none() && provider.kind == WireKind::Anthropic => {
            Some(NativeEvents::Anthropic)
        }
        Endpoint::Responses if restorer.is_none() && provider.responses => {
            Some(NativeEvents::Responses)
        }
        _ => None,
    };
    let to_client = match (cx.endpoint, native) {
        (Endpoint::Messages, None) => Some(ToClient::Messages(Box::new(
            messages_from_chat::StreamTranslator::new(),
        ))),
        (Endpoint::Responses, None) => Some(ToClient::Responses(Box::new(
            responses_from_chat::StreamTranslator::new(echo),
        ))),
        _ => None,
    };
    Stream {
        first,
        guard,
        body,
        provider: c.provider.0.to_string(),
        request_id: cx.record.request_id.clone(),
        idle_timeout_ms: decision.plan.idle_timeout_ms,
        deadline_at_ms: cx
            .record
            .started_ms
            .saturating_add(decision.plan.stream_deadline_ms),
        restore: restorer,
        to_client,
        native,
        seal: (native == Some(NativeEvents::Responses))
            .then(|| crate::responses::key(cx.env.secret))
            .flatten()
            .map(|key| {
                Box::new(crate::responses::IdSealer::new(
                    key,
                    c.provider.0.to_string(),
                    cx.tenant.map(|t| t.id.0.to_string()),
                ))
            }),
        output: None,
    }
}
