//! The HTTP API, independent of the host: one request's whole life in [`serve`] (dispatch,
//! limits, CORS, authentication, inference, streaming and the finished audit record). The Spin
//! adapter only moves bytes in and out, so every HTTP behaviour is testable natively with a
//! scripted transport.

mod explain;
mod guards;
mod inference;
mod stored;
mod stream;
#[cfg(test)]
mod tests;

pub use crate::routes::{method_not_allowed, not_found, route, Route};
pub use explain::{admit, explain_request, explain_text};
pub use stream::{ChunkSink, Stream};

use serde_json::json;

use crate::audit::{self, Caller, Record};
use crate::error::ApiError;
use crate::location::{self, Location};
use crate::policy::geoip::GeoTable;
use crate::policy::Policy;
use crate::request::Endpoint;
use crate::transport::Transport;

/// Longest request id accepted from a client; longer or non-visible-ASCII ids are replaced.
const MAX_REQUEST_ID: usize = 128;

/// A request as the host received it.
pub struct Request<R> {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Lower-case names, in arrival order (a repeated header appears repeatedly).
    pub headers: Vec<(String, String)>,
    pub body: R,
}

/// The request body, read chunk by chunk.
#[allow(async_fn_in_trait)]
pub trait RequestBody {
    async fn next_chunk(&mut self) -> Option<Result<Vec<u8>, String>>;
}

/// What the host supplies for one request.
pub struct Env<'a> {
    /// The policy in force, or why none could be loaded (every request is then refused, audited).
    pub policy: Result<&'a Policy, ApiError>,
    /// Reads a secret (a Spin variable) by name; `None` or empty when it is not set.
    pub secret: &'a dyn Fn(&str) -> Option<String>,
    pub edge_region: Option<String>,
    /// Largest upstream answer Meridian buffers (non-stream answers and upstream errors).
    pub max_response_bytes: usize,
    /// The IP-to-country table built into the component, if any.
    pub geoip: Option<GeoTable<'a>>,
    /// A fresh request id, for requests that bring none.
    pub fresh_id: &'a dyn Fn() -> String,
    /// The key-value store limits and provider health are kept in (`None`: the deployment has
    /// none, and a request that a limit applies to is treated as if the store were down).
    pub store: Option<&'a dyn crate::limits::Store>,
    /// The runtime's span for this request, when it traces requests (`wasi:otel`).
    pub host_span: Option<crate::trace::HostSpan>,
}

/// Largest upstream answer a deployed component buffers (non-stream answers and upstream errors).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

impl<'a> Env<'a> {
    /// What a deployed component supplies: the policy in force, secrets and the edge region
    /// from its runtime, fresh request ids; the IP table built into it and
    /// [`MAX_RESPONSE_BYTES`].
    pub fn deployed(
        policy: Result<&'a Policy, ApiError>,
        secret: &'a dyn Fn(&str) -> Option<String>,
        edge_region: Option<String>,
        fresh_id: &'a dyn Fn() -> String,
        store: Option<&'a dyn crate::limits::Store>,
    ) -> Env<'a> {
        Env {
            policy,
            secret,
            edge_region,
            max_response_bytes: MAX_RESPONSE_BYTES,
            geoip: crate::embedded::geoip(),
            fresh_id,
            store,
            host_span: None,
        }
    }
}

/// The answer to one request.
pub struct Reply<B> {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body<B>,
    /// Finished for a whole body; a stream's pump adds its outcome.
    pub record: Record,
}

impl<B> Reply<B> {
    /// Frames a whole body by its length (no chunked encoding); a 204 carries no length
    /// (RFC 9110, 8.6). A stream is left as it is.
    pub fn frame_by_length(&mut self) {
        if let Body::Full(bytes) = &self.body {
            if self.status != 204 {
                self.headers.push((
                    "content-length".into(),
                    itoa::Buffer::new().format(bytes.len()).into(),
                ));
            }
        }
    }
}

pub enum Body<B> {
    Full(Vec<u8>),
    /// Pass the rest through with [`Stream::pump`].
    Stream(Stream<B>),
}

/// What a route produces: status, its own headers and body, or an error to render.
type Outcome<B> = Result<(u16, Vec<(String, String)>, Body<B>), ApiError>;

fn json_header() -> (String, String) {
    ("content-type".into(), "application/json".into())
}

/// A request id of Meridian's own from a random number: `mrd-` and its 16 hex digits (what an
/// adapter's `fresh_id` gives).
pub fn fresh_request_id(random: u64) -> String {
    let mut id = String::with_capacity(20);
    id.push_str("mrd-");
    crate::trace::hex_into(&mut id, &random.to_be_bytes());
    id
}

/// The request's id (the client's, if it is a usable one) and a fresh random id: the same
/// string when the request id is Meridian's own, so the common case asks the runtime once.
fn request_id(headers: &[(String, String)], fresh: &dyn Fn() -> String) -> (String, String) {
    match crate::headers::get(headers, audit::REQUEST_ID)
        .map(str::trim)
        .filter(|v| {
            !v.is_empty() && v.len() <= MAX_REQUEST_ID && v.bytes().all(|b| b.is_ascii_graphic())
        }) {
        Some(given) => (given.to_string(), fresh()),
        None => {
            let id = fresh();
            (id.clone(), id)
        }
    }
}

/// Serves one request: every response, success or error, carries the audit headers that apply
/// and the CORS headers, and its record is ready for the log line.
pub async fn serve<T: Transport, R: RequestBody>(
    env: &Env<'_>,
    t: &T,
    req: Request<R>,
) -> Reply<crate::wire::WireBody<T::Body>> {
    let (id, seed) = request_id(&req.headers, env.fresh_id);
    let mut record = Record {
        trace: Some(crate::trace::Trace::under(
            env.host_span,
            &req.headers,
            &id,
            &seed,
        )),
        request_id: id,
        method: req.method.clone(),
        path: req.path.split('?').next().unwrap_or(&req.path).to_string(),
        started_ms: t.now_ms(),
        ..Record::default()
    };
    let route = route(&req.method, &req.path);
    // Anthropic's SDKs read errors in Anthropic's shape.
    let anthropic = matches!(
        route,
        Route::Inference(Endpoint::Messages) | Route::CountTokens
    );
    let (outcome, cors) = match &env.policy {
        Err(e) => (Err(e.clone()), vec![("vary".into(), "Origin".into())]),
        Ok(policy) => {
            record.policy = Some(policy_label(policy, env.geoip.as_ref()));
            let cors = cors_headers(policy, &req.headers);
            match seal(env, policy, seed) {
                Ok(s) => {
                    record.seal = s;
                    // Boxed, as the inference stage is below: a future holds every future it
                    // awaits, and each `.await` of one not yet started copies all of it, so
                    // unboxed the request's whole state (tens of KiB) was copied at each level.
                    (
                        Box::pin(dispatch(env, t, policy, route, req, &mut record)).await,
                        cors,
                    )
                }
                Err(e) => (Err(e), cors),
            }
        }
    };
    let (status, own, body) = match outcome {
        Ok(x) => x,
        Err(mut e) => {
            record.error_code = Some(e.code);
            // An error's own detail for the log; else what a stage already noted stays.
            if let Some(d) = e.log_detail.take() {
                record.error_detail = Some(*d);
            }
            let mut h = vec![json_header()];
            if let Some(allow) = e.allow {
                h.push(("allow".into(), allow.into()));
            }
            let body = if anthropic {
                crate::wire::anthropic::error_body(e.status, &e.message, e.details.as_deref())
            } else {
                e.body()
            };
            (e.status, h, Body::Full(body))
        }
    };
    record.status = status;
    let style = env
        .policy
        .as_ref()
        .map_or(crate::policy::AuditHeaders::Each, |p| {
            p.settings.audit_headers
        });
    let mut headers = record.headers(style);
    if let Some(seal) = record.seal.as_ref().filter(|s| s.header) {
        // A stream's answer, usage and cost come after its headers: its receipt says so
        // (`final: false`), and the log line's receipt attests the whole.
        let done = matches!(body, Body::Full(_));
        let line = record.log_object(t.unix_ms(), t.now_ms());
        let jws = seal.signer.sign(&crate::receipt::claims(&line, done));
        headers.push((audit::RECEIPT.to_string(), jws));
    }
    headers.extend(cors);
    match record.limits.as_ref().map(|l| &l.headers) {
        // Meridian's own limits speak for the caller: the provider's (the operator's account)
        // never share their names.
        Some(ours) if !ours.is_empty() => {
            headers.extend(own.into_iter().filter(|(k, _)| {
                !k.starts_with("x-ratelimit-")
                    && !k.starts_with("anthropic-ratelimit-")
                    && !ours.iter().any(|(o, _)| o == k)
            }));
            headers.extend(ours.iter().cloned());
        }
        _ => headers.extend(own),
    }
    let body = match (body, record.method.as_str()) {
        (Body::Full(_), "HEAD") => Body::Full(Vec::new()),
        (b, _) => b,
    };
    Reply {
        status,
        headers,
        body,
        record,
    }
}

/// `GET /.well-known/jwks.json`: the public keys receipts are signed with, the current one
/// first; 404 when the policy signs none.
fn keys<B>(policy: &Policy, record: &Record) -> Outcome<B> {
    let (Some(seal), Some(r)) = (&record.seal, &policy.settings.receipts) else {
        return Err(ApiError::new(
            404,
            "receipts_not_enabled",
            "This deployment signs no receipts (its policy has no `[settings.receipts]`), so it publishes no keys.",
        ));
    };
    let body = crate::json::to_vec(&crate::receipt::jwks(&seal.signer, &r.retired_keys))
        .unwrap_or_default();
    Ok((
        200,
        vec![
            ("content-type".into(), "application/jwk-set+json".into()),
            ("cache-control".into(), "public, max-age=300".into()),
        ],
        Body::Full(body),
    ))
}

/// How this request's receipts are signed, when the policy asks for them. A deployment whose
/// policy asks for receipts and that cannot sign them serves nothing (nothing unattested).
fn seal(
    env: &Env<'_>,
    policy: &Policy,
    seed: String,
) -> Result<Option<crate::receipt::Sealing>, ApiError> {
    let Some(r) = &policy.settings.receipts else {
        return Ok(None);
    };
    match crate::receipt::signer(env.secret, r) {
        Ok(signer) => Ok(Some(crate::receipt::Sealing {
            signer,
            sequence: r.sequence,
            header: r.header,
            seed,
        })),
        Err(why) => {
            let mut e = ApiError::new(
                503,
                "receipts_unavailable",
                "This deployment signs a receipt for every request and cannot sign now, so nothing was served. The operator finds why in Meridian's log under this request id.",
            )
            .with_kind("server_error");
            e.log_detail = Some(Box::new(why));
            Err(e)
        }
    }
}

/// Settles the request's reservation against its limits to what it actually used. The adapter
/// calls it when the answer is known and before the log line: under WASI 0.2 before the last
/// bytes go out (the host may stop the instance once they have), under WASI 0.3 after a whole
/// body is written (its task outlives the response), so that client does not wait for the
/// store. Once per request; nothing when no limit applied.
/// Runs `work` while keeping the request's in-flight counts alive ([`crate::limits::Lease`]):
/// each new slot of the in-flight counter gets them, so they stop counting within seconds of
/// an instance that ends mid-request (as a WASI 0.2 instance does when its client hangs up),
/// and never while the request runs.
pub(crate) async fn leased<T: Transport, F: std::future::Future>(
    t: &T,
    store: Option<&dyn crate::limits::Store>,
    lease: Option<&mut crate::limits::Lease>,
    work: F,
) -> F::Output {
    use futures::future::{select, Either};
    let (Some(store), Some(lease)) = (store, lease) else {
        return work.await;
    };
    let keep = async {
        // Bounded: a request's own deadline ends it long before (600 s is 200 slots).
        for _ in 0..100_000u32 {
            let now = t.unix_ms();
            t.sleep(lease.next_renewal_ms(now).saturating_sub(now))
                .await;
            lease.renew(store, t.unix_ms() / 1000).await;
        }
    };
    futures::pin_mut!(work, keep);
    match select(work, keep).await {
        Either::Left((out, _)) => out,
        Either::Right(((), work)) => work.await,
    }
}

/// The request's lease on its in-flight counts, if a `concurrent` limit holds it.
fn lease_of(record: &Record) -> Option<crate::limits::Lease> {
    record.limits.as_ref()?.hold.as_ref()?.lease()
}

/// Gives a lease back to the request's hold (the settlement releases the slot it ends in).
fn end_lease(record: &mut Record, lease: Option<crate::limits::Lease>) {
    if let (Some(l), Some(h)) = (lease, record.limits.as_mut().and_then(|a| a.hold.as_mut())) {
        h.end_lease(l);
    }
}

/// Pumps a stream to its end (see [`Stream::pump`]) while keeping the request's in-flight
/// counts alive; returns the stream's last bytes, for the adapter to send with the body's end.
pub async fn pump<T: Transport, S: ChunkSink>(
    stream: Stream<crate::wire::WireBody<T::Body>>,
    t: &T,
    sink: &mut S,
    record: &mut Record,
    store: Option<&dyn crate::limits::Store>,
) -> Vec<u8> {
    let mut lease = lease_of(record);
    let tail = leased(t, store, lease.as_mut(), stream.pump(t, sink, record)).await;
    end_lease(record, lease);
    tail
}

/// The one end of every request, in both builds: settles what it reserved and renders its log
/// line. The adapter writes the line before the body's last bytes (a host may end the instance
/// once the body is done). A stream also has an opening line ([`Record::opening_line`]),
/// written before its first byte: under WASI 0.2 a client that hangs up ends the instance, and
/// the opening line is then all the log has of it (its reservation stays, as `kept`).
pub async fn end(
    store: Option<&dyn crate::limits::Store>,
    record: &mut Record,
    wall_ms: u64,
    mono_ms: u64,
) -> String {
    settle(store, record).await;
    let Some(seal) = record.seal.clone() else {
        return record.log_line(wall_ms, mono_ms);
    };
    // The log line's receipt: the whole request, numbered by the store's sequence when the
    // policy asks, and the next link of this instance's chain.
    let seq = match (seal.sequence, store) {
        (true, Some(s)) => s.increment(&crate::receipt::sequence_key(), 1).await.ok(),
        _ => None,
    };
    let mut line = record.log_object(wall_ms, mono_ms);
    let mut claims = crate::receipt::claims(&line, true);
    if let Some(n) = seq {
        claims.insert("seq".into(), n.into());
    }
    let jws = crate::receipt::sign_chained(&seal.signer, claims, &|| seal.seed.clone());
    line.insert("receipt".into(), jws.into());
    crate::json::to_string(&line).unwrap_or_else(|_| "{\"log\":\"unserialisable\"}".into())
}

pub async fn settle(store: Option<&dyn crate::limits::Store>, record: &mut Record) {
    // The in-flight count at a pool's replica, given back once, whatever happened.
    if let (Some(key), Some(s)) = (record.inflight.take(), store) {
        let _ = s.increment(&key, -1).await;
    }
    let guards_micro = (record.guards_usd() * 1e6).ceil() as u64;
    let Some(audit) = record.limits.as_mut() else {
        return;
    };
    if audit.hold.is_none() || audit.settlement.is_some() {
        return;
    }
    let mut extra = audit.unanswered(&record.attempts);
    // The guards' calls, at their catalog prices.
    extra.micro_usd = extra.micro_usd.saturating_add(guards_micro);
    let actual = if record.provider.is_none() {
        Some(extra)
    } else {
        match record.usage {
            Some(u) => {
                let cost = crate::limits::cost_micro(&u, record.prices);
                Some(crate::limits::Actual {
                    tokens: u
                        .prompt_tokens
                        .saturating_add(u.completion_tokens)
                        .saturating_add(extra.tokens),
                    micro_usd: cost.saturating_add(extra.micro_usd),
                })
            }
            // An error answer is not billed; a success without usage (a stream cut short, an
            // engine that reports none) keeps its whole reservation.
            None if !(200..300).contains(&record.status) => Some(extra),
            None => None,
        }
    };
    audit.settle(store, actual).await;
}

async fn dispatch<T: Transport, R: RequestBody>(
    env: &Env<'_>,
    t: &T,
    policy: &Policy,
    route: Route,
    req: Request<R>,
    record: &mut Record,
) -> Outcome<crate::wire::WireBody<T::Body>> {
    let Request {
        method,
        path,
        headers,
        body,
    } = req;
    let headers = &headers;
    match route {
        Route::Preflight => preflight(policy, headers).map(|h| (204, h, Body::Full(Vec::new()))),
        Route::NotFound => Err(not_found(&path)),
        Route::CountTokens => Err(ApiError::new(
            404,
            "count_tokens_not_supported",
            "Meridian does not count tokens before routing: send the request to /v1/messages, whose `usage.input_tokens` reports them.",
        )),
        Route::MethodNotAllowed(allowed) => Err(method_not_allowed(&method, allowed)),
        Route::Keys => keys(policy, record),
        Route::Health => Ok((
            200,
            vec![json_header()],
            Body::Full(health_body(policy, env.geoip.as_ref())),
        )),
        Route::Models => {
            let location = locate(env, policy, headers, record);
            let tenant = authenticate(policy, headers, record)?;
            let caller = Asker {
                tenant,
                location: &location,
                headers,
                edge_region: env.edge_region.as_deref(),
            };
            let body = models(policy, &caller)?;
            Ok((200, vec![json_header()], Body::Full(body)))
        }
        Route::Explain => {
            // The operator's endpoint: the admin key before the body is read.
            explain::admit(headers, (env.secret)("admin_key").as_deref())?;
            let body = read_json_body(policy, headers, body).await?;
            let location = locate(env, policy, headers, record);
            // The measured latencies a request at this edge would be ordered by.
            let measured = match env.store {
                Some(store) if policy.rules.iter().any(|r| r.prefer.sort == Some(crate::policy::Sort::Latency)) => {
                    let key = crate::limits::latency::key(env.edge_region.as_deref());
                    crate::limits::latency::Measured::parse(
                        store.get(&key).await.ok().flatten().as_deref(),
                    )
                    .usable()
                }
                _ => Vec::new(),
            };
            let v = explain::explain_request(
                policy,
                &record.request_id,
                env.edge_region.clone(),
                headers,
                &body,
                location,
                measured,
            )?;
            Ok((
                200,
                vec![json_header()],
                Body::Full(v.to_string().into_bytes()),
            ))
        }
        Route::StoredResponse => {
            let tenant = authenticate(policy, headers, record)?;
            let location = locate(env, policy, headers, record);
            let caller = Asker {
                tenant,
                location: &location,
                headers,
                edge_region: env.edge_region.as_deref(),
            };
            stored::stored(env, t, policy, &method, &path, &caller, record).await
        }
        Route::Inference(endpoint) => {
            // Who calls is known from the headers: a caller without a valid key is refused
            // before its body is read.
            let tenant = authenticate(policy, headers, record)?;
            let body = read_json_body(policy, headers, body).await?;
            let location = locate(env, policy, headers, record);
            let cx = inference::Cx {
                env,
                t,
                policy,
                endpoint,
                headers,
                tenant,
                record,
            };
            // Boxed: see `serve`.
            Box::pin(inference::inference(cx, &body, location)).await
        }
    }
}

/// Where the client is, by the policy's one source (with the edge secret's value, if any).
fn locate(
    env: &Env<'_>,
    policy: &Policy,
    headers: &[(String, String)],
    record: &mut Record,
) -> Location {
    let edge_secret = policy
        .settings
        .client
        .edge_secret
        .as_ref()
        .and_then(|e| (env.secret)(&e.secret));
    let l = location::locate(
        &policy.settings.client,
        headers,
        env.geoip.as_ref(),
        edge_secret.as_deref(),
    );
    record.country_source = Some(l.source.text());
    record.location = Some(l.clone());
    l
}

fn authenticate<'p>(
    policy: &'p Policy,
    headers: &[(String, String)],
    record: &mut Record,
) -> Result<Option<&'p crate::policy::Tenant>, ApiError> {
    let tenant = crate::auth::authenticate(policy, headers)?;
    record.caller = Some(match tenant {
        Some(t) => Caller::Tenant(t.id.0.to_string()),
        None => Caller::Anonymous,
    });
    Ok(tenant)
}

/// The body of a POST: it must say it is JSON (a cross-site form post cannot, so it cannot skip
/// the CORS preflight) and fit the policy's limit, declared or not.
async fn read_json_body<R: RequestBody>(
    policy: &Policy,
    headers: &[(String, String)],
    mut stream: R,
) -> Result<Vec<u8>, ApiError> {
    let content_type = crate::headers::get(headers, "content-type");
    let media = content_type
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    if media.as_deref() != Some("application/json") {
        return Err(ApiError::new(
            415,
            "unsupported_media_type",
            format!(
                "The request body must be JSON, sent with `content-type: application/json` (got {}).",
                content_type.map_or("none".to_string(), |c| format!("`{}`", audit::header_safe(c)))
            ),
        ));
    }
    let limit = policy.settings.max_body_bytes;
    let too_large = || {
        ApiError::new(
            413,
            "request_too_large",
            format!("The request body is larger than this deployment's limit of {limit} bytes."),
        )
    };
    let declared =
        crate::headers::get(headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let exact = declared.filter(|_| crate::headers::get(headers, "transfer-encoding").is_none());
    let mut body = Vec::new();
    while let Some(chunk) = stream.next_chunk().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(
                "body_read_error",
                format!("could not read the request body: {e}"),
            )
        })?;
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        if body.is_empty() {
            body = chunk;
        } else {
            body.extend_from_slice(&chunk);
        }
        // The body the client declared is all there: its end is not waited for (a read that
        // only says "closed" is a host call, two under WASI 0.3). HTTP's framing ends such a
        // body at its length (HTTP/1.1: what follows is the connection's next request; HTTP/2
        // refuses a longer one). Not with `transfer-encoding`, whose framing wins over a length.
        if exact == Some(body.len() as u64) {
            break;
        }
    }
    Ok(body)
}

/// A caller, as the decisions made without a request body see it: its tenant, where it is,
/// its headers (the privacy header) and the edge region.
pub(super) struct Asker<'a> {
    pub tenant: Option<&'a crate::policy::Tenant>,
    pub location: &'a Location,
    pub headers: &'a [(String, String)],
    pub edge_region: Option<&'a str>,
}

/// The decision for a bare request of `model` on `endpoint` by this caller (a body with the
/// model alone): what `GET /v1/models` lists and what a stored response's operations check.
pub(super) fn decide_bare<'p>(
    policy: &'p Policy,
    caller: &Asker<'_>,
    endpoint: Endpoint,
    model: &str,
) -> Result<crate::decide::Decision<'p>, ApiError> {
    let mut body = serde_json::Map::new();
    body.insert("model".into(), model.into());
    let cx = crate::facts::Context {
        location: caller.location.clone(),
        request_id: endpoint.name().into(),
        endpoint,
        tenant: caller.tenant.map(|t| t.id.clone()),
        edge_region: caller.edge_region.map(str::to_string),
        headers: caller.headers,
        pii: None,
        unknown_fields: policy.settings.unknown_fields,
        injection: policy.guards.builtin_used,
        rule_headers: policy.rules_read_headers(),
        prefix_bounds: policy.prefix_bounds(),
    };
    let facts = crate::facts::from_request(cx, &mut body).map_err(ApiError::from)?;
    Ok(crate::decide::decide(policy, &facts))
}

/// `GET /v1/models`: exactly the models for which this caller's decision (its tenant, where it
/// is, its privacy header) would leave at least one provider, in OpenAI's list shape.
fn models(policy: &Policy, caller: &Asker<'_>) -> Result<Vec<u8>, ApiError> {
    let mut data = Vec::new();
    for m in policy.model_names() {
        let d = decide_bare(policy, caller, Endpoint::Chat, m)?;
        if d.candidates.is_empty() {
            continue;
        }
        let providers: Vec<&str> = d.candidates.iter().map(|c| c.provider.as_str()).collect();
        // Which of them serve /v1/responses themselves (the rest get it translated to chat).
        let responses: Vec<&str> = d
            .candidates
            .iter()
            .filter(|c| policy.providers[c.index].responses)
            .map(|c| c.provider.as_str())
            .collect();
        data.push(json!({
            "id": m,
            "object": "model",
            "created": 0,
            "owned_by": "meridian",
            "meridian": { "providers": providers, "responses_native": responses },
        }));
    }
    Ok(json!({ "object": "list", "data": data })
        .to_string()
        .into_bytes())
}

/// The policy's version as reported on every response and log line; with the IP-to-country
/// table's date when the build has one, since the table decides countries too.
pub fn policy_label(policy: &Policy, geoip: Option<&GeoTable<'_>>) -> String {
    match geoip {
        Some(t) => format!("{} ip-table {}", policy.version_label(), t.date),
        None => policy.version_label(),
    }
}

/// `GET /healthz`: the policy in force and where client locations come from. Serialized from
/// typed data (no JSON tree is built on the per-request path).
pub fn health_body(policy: &Policy, geoip: Option<&GeoTable<'_>>) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Health<'a> {
        status: &'static str,
        policy: String,
        providers: usize,
        rules: usize,
        client_location: ClientLocation<'a>,
    }
    #[derive(serde::Serialize)]
    struct ClientLocation<'a> {
        platform: &'static str,
        country_header: Option<&'a str>,
        address_header: Option<&'a str>,
        edge_secret: bool,
        ip_table: Option<IpTable<'a>>,
    }
    #[derive(serde::Serialize)]
    struct IpTable<'a> {
        date: &'a str,
        source: &'a str,
        ipv4_ranges: usize,
        ipv6_ranges: usize,
    }
    let c = &policy.settings.client;
    let health = Health {
        status: "ok",
        policy: policy_label(policy, geoip),
        providers: policy.providers.len(),
        rules: policy.rules.len(),
        client_location: ClientLocation {
            platform: c.platform.name(),
            country_header: c.country.as_ref().map(|h| h.name.as_ref()),
            address_header: c.address.as_ref().map(|h| h.name.as_ref()),
            edge_secret: c.edge_secret.is_some(),
            ip_table: geoip.map(|t| IpTable {
                date: t.date,
                source: t.source,
                ipv4_ranges: t.len().0,
                ipv6_ranges: t.len().1,
            }),
        },
    };
    crate::json::to_vec(&health).unwrap_or_default()
}

/// Origins allowed to call from a browser: the union of every browser key's origins.
pub fn origin_allowed(policy: &Policy, origin: &str) -> bool {
    policy
        .tenants
        .iter()
        .any(|t| t.origins.iter().any(|o| o == origin))
}

/// CORS headers for a response: `Vary: Origin` always (the answer depends on it, so no cache
/// may serve one origin's answer to another), and the allow/expose headers for an allowed origin.
pub fn cors_headers(policy: &Policy, headers: &[(String, String)]) -> Vec<(String, String)> {
    let mut out = vec![("vary".to_string(), "Origin".to_string())];
    if let Some(origin) = crate::headers::get(headers, "origin") {
        if origin_allowed(policy, origin) {
            out.push(("access-control-allow-origin".into(), origin.to_string()));
            out.push((
                "access-control-expose-headers".into(),
                audit::ALL.join(", "),
            ));
        }
    }
    out
}

/// Answers a CORS preflight (on any path): 204 with the allowed methods and headers for an
/// allowed origin, else 403.
pub fn preflight(
    policy: &Policy,
    headers: &[(String, String)],
) -> Result<Vec<(String, String)>, ApiError> {
    let allowed = crate::headers::get(headers, "origin").is_some_and(|o| origin_allowed(policy, o));
    if !allowed {
        return Err(ApiError::new(
            403,
            "origin_not_allowed",
            "This origin may not call Meridian from a browser.",
        ));
    }
    Ok(vec![
        (
            "access-control-allow-methods".into(),
            "GET, POST, DELETE, OPTIONS".into(),
        ),
        (
            "access-control-allow-headers".into(),
            "authorization, content-type, x-api-key, x-request-id, x-meridian-privacy, traceparent, tracestate".into(),
        ),
        ("access-control-max-age".into(), "600".into()),
    ])
}
