//! The host adapter: the only file that touches `spin-sdk`. Request in → `api` → response out,
//! plus the outbound transport over `wasi:http` with timeouts, clocks, secrets and the log line.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use spin_executor::{push_waker_and_get_token, CancelOnDropToken};
use spin_sdk::http::{
    Fields, IncomingRequest, IncomingResponse, Method, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use spin_sdk::http_component;
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{ErrorCode, FutureIncomingResponse, RequestOptions};
use wasi::clocks::{monotonic_clock, wall_clock};

use crate::api::{self, ChunkSink, Env, Reply, Route, Served};
use crate::audit::{header_safe, LogLine, REQUEST_ID};
use crate::error::ApiError;
use crate::forward::{BodyStream, Failure, OutboundRequest, Transport, UpResponse};
use crate::policy::{self, Policy};

/// Largest upstream response Meridian buffers (non-stream answers and upstream errors).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

fn variable(name: &str) -> Option<String> {
    spin_sdk::variables::get(name)
        .ok()
        .filter(|v| !v.is_empty())
}

fn now_ms() -> u64 {
    monotonic_clock::now() / 1_000_000
}

/// Resolves when the monotonic clock passes `deadline_ns`.
struct Sleep {
    deadline_ns: u64,
    token: Option<CancelOnDropToken>,
}

fn sleep_ms(ms: u64) -> Sleep {
    Sleep {
        deadline_ns: monotonic_clock::now().saturating_add(ms.saturating_mul(1_000_000)),
        token: None,
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if monotonic_clock::now() >= self.deadline_ns {
            self.token = None;
            return Poll::Ready(());
        }
        let p = monotonic_clock::subscribe_instant(self.deadline_ns);
        self.token = Some(push_waker_and_get_token(p, cx.waker().clone()).into());
        Poll::Pending
    }
}

/// The response future of an outgoing request; dropping it cancels the request.
/// Field order matters: the pollable (in `token`) is a child of `fut` and must drop first.
struct Pending {
    token: Option<CancelOnDropToken>,
    fut: FutureIncomingResponse,
}

impl Future for Pending {
    type Output = Result<IncomingResponse, ErrorCode>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.fut.get() {
            Some(Ok(r)) => Poll::Ready(r),
            Some(Err(())) => Poll::Ready(Err(ErrorCode::InternalError(Some(
                "response already taken".into(),
            )))),
            None => {
                let p = self.fut.subscribe();
                self.token = Some(push_waker_and_get_token(p, cx.waker().clone()).into());
                Poll::Pending
            }
        }
    }
}

fn failure_of(e: &ErrorCode) -> Failure {
    match e {
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout
        | ErrorCode::DnsTimeout => Failure::Timeout("headers"),
        ErrorCode::HttpRequestDenied => {
            Failure::Config("its host is not in the component's allowed_outbound_hosts".into())
        }
        ErrorCode::ConnectionRefused
        | ErrorCode::DnsError(_)
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpUnroutable
        | ErrorCode::DestinationIpProhibited
        | ErrorCode::TlsProtocolError
        | ErrorCode::TlsCertificateError
        | ErrorCode::ConnectionTerminated
        | ErrorCode::ConnectionLimitReached => Failure::Connect(format!("{e:?}")),
        other => Failure::Transport(format!("{other:?}")),
    }
}

struct WasiTransport;

/// Field order matters: the body stream is a child of the response and must drop first;
/// the response is kept alive because dropping it cancels its body under wasmtime.
struct WasiBody {
    stream: BoxStream<'static, Result<Vec<u8>, wasi::io::streams::Error>>,
    _response: IncomingResponse,
}

impl BodyStream for WasiBody {
    async fn next_chunk(&mut self, timeout_ms: u64) -> Option<Result<Vec<u8>, Failure>> {
        let next = self.stream.next();
        let timer = sleep_ms(timeout_ms);
        futures::pin_mut!(timer);
        match futures::future::select(next, timer).await {
            futures::future::Either::Left((None, _)) => None,
            futures::future::Either::Left((Some(Ok(c)), _)) => Some(Ok(c)),
            futures::future::Either::Left((Some(Err(e)), _)) => {
                Some(Err(Failure::Transport(e.to_debug_string())))
            }
            futures::future::Either::Right(_) => Some(Err(Failure::Timeout("body"))),
        }
    }
}

impl Transport for WasiTransport {
    type Body = WasiBody;

    async fn send(
        &self,
        req: OutboundRequest,
        timeout_ms: u64,
    ) -> Result<UpResponse<WasiBody>, Failure> {
        let url = url::Url::parse(&req.url).map_err(|e| Failure::Config(e.to_string()))?;
        let headers = Fields::new();
        for (k, v) in &req.headers {
            // A header the host refuses is dropped rather than failing the request.
            let _ = headers.append(k, v.as_bytes());
        }
        let out = OutgoingRequest::new(headers);
        let _ = out.set_method(&Method::Post);
        let scheme = if url.scheme() == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let _ = out.set_scheme(Some(&scheme));
        let authority = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let _ = out.set_authority(Some(&authority));
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let _ = out.set_path_with_query(Some(&path));

        let options = RequestOptions::new();
        let ns = timeout_ms.saturating_mul(1_000_000);
        let _ = options.set_connect_timeout(Some(ns));
        let _ = options.set_first_byte_timeout(Some(ns));

        let mut body = out.take_body();
        let fut = outgoing_handler::handle(out, Some(options)).map_err(|e| failure_of(&e))?;
        let pending = Pending { token: None, fut };
        body.send(req.body)
            .await
            .map_err(|e| Failure::Transport(format!("{e:?}")))?;
        drop(body);

        let timer = sleep_ms(timeout_ms);
        futures::pin_mut!(pending, timer);
        let response = match futures::future::select(pending, timer).await {
            futures::future::Either::Left((r, _)) => r.map_err(|e| failure_of(&e))?,
            futures::future::Either::Right(_) => return Err(Failure::Timeout("headers")),
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        let stream = response.take_body_stream().boxed();
        Ok(UpResponse {
            status,
            headers,
            body: WasiBody {
                stream,
                _response: response,
            },
        })
    }

    async fn sleep(&self, ms: u64) {
        sleep_ms(ms).await
    }

    fn now_ms(&self) -> u64 {
        now_ms()
    }
}

struct ClientSink<S>(S);

impl<S: futures::Sink<Vec<u8>> + Unpin> ChunkSink for ClientSink<S> {
    async fn send(&mut self, chunk: Vec<u8>) -> Result<(), String> {
        self.0
            .send(chunk)
            .await
            .map_err(|_| "client gone".to_string())
    }
}

fn response(status: u16, headers: &[(String, String)]) -> OutgoingResponse {
    let fields = Fields::new();
    for (k, v) in headers {
        let _ = fields.append(k, v.as_bytes());
    }
    let r = OutgoingResponse::new(fields);
    let _ = r.set_status_code(status);
    r
}

async fn send_full(
    out: ResponseOutparam,
    status: u16,
    headers: &[(String, String)],
    body: Vec<u8>,
) {
    let _ = out.set_with_body(response(status, headers), body).await;
}

/// Reads the request body, refusing it past `limit` bytes.
async fn read_body(req: IncomingRequest, limit: u64) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            413,
            "request_too_large",
            format!("The request body is larger than this deployment's limit of {limit} bytes."),
        )
    };
    let mut body = Vec::new();
    let mut stream = req.into_body_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(
                "body_read_error",
                format!("could not read the request body: {}", e.to_debug_string()),
            )
        })?;
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn request_id(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .find(|(k, _)| k == REQUEST_ID)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(
            || format!("mrd-{:016x}", wasi::random::random::get_random_u64()),
            str::to_string,
        )
}

/// The policy in force: the `policy` variable (TOML text, parsed and validated on every request)
/// if set, else the policy compiled in at build time (decoded, no parsing).
fn load_policy() -> Result<Policy, ApiError> {
    match variable("policy") {
        Some(text) => policy::load(&text, "<variable policy>").map_err(|e| {
            ApiError::new(
                500,
                "invalid_policy",
                format!("the configured policy is invalid:\n{e}"),
            )
        }),
        None => crate::embedded::load().map_err(|e| {
            ApiError::new(
                500,
                "invalid_policy",
                format!(
                    "the embedded policy ({}) cannot be loaded: {e}",
                    crate::embedded::ORIGIN
                ),
            )
        }),
    }
}

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let started = now_ms();
    let method = req.method().to_string();
    let path = req.path_with_query().unwrap_or_else(|| "/".into());
    let headers: Vec<(String, String)> = req
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    let rid = request_id(&headers);
    let base = vec![(REQUEST_ID.to_string(), header_safe(&rid))];

    let policy = match load_policy() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}", e.message);
            let mut h = base.clone();
            h.push(("content-type".into(), "application/json".into()));
            send_full(out, e.status, &h, e.body()).await;
            return;
        }
    };
    let mut cors = api::cors_headers(&policy, &headers);
    // Every JSON answer, errors included, carries the CORS headers, so a browser script can read
    // why it was refused.
    let err_base: Vec<(String, String)> = base.iter().chain(&cors).cloned().collect();
    let mut served = Served::default();
    let mut stream_outcome = None;

    let route = api::route(&method, &path);
    let status = match route {
        Route::Health | Route::Models => {
            let listing = if route == Route::Health {
                Ok(api::health_body(&policy, crate::embedded::geoip().as_ref()))
            } else {
                api::models(&policy, &headers)
            };
            match listing {
                Ok(body) => {
                    let mut h = err_base.clone();
                    h.push(("content-type".into(), "application/json".into()));
                    let body = if method == "HEAD" { Vec::new() } else { body };
                    send_full(out, 200, &h, body).await;
                    200
                }
                Err(e) => error(out, &err_base, &e).await,
            }
        }
        Route::Preflight => match api::preflight(&policy, &headers) {
            Ok(mut h) => {
                h.extend(base.clone());
                send_full(out, 204, &h, Vec::new()).await;
                204
            }
            Err(e) => error(out, &base, &e).await,
        },
        Route::NotFound => error(out, &err_base, &api::not_found(&path)).await,
        Route::MethodNotAllowed(allowed) => {
            let e = api::method_not_allowed(&method, allowed);
            let mut h = base.clone();
            h.push(("allow".into(), allowed.into()));
            h.push(("content-type".into(), "application/json".into()));
            send_full(out, 405, &h, e.body()).await;
            405
        }
        Route::Explain => match read_body(req, policy.settings.max_body_bytes).await {
            Err(e) => error(out, &err_base, &e).await,
            Ok(body) => {
                let admin = variable("admin_key");
                let edge_secret = policy
                    .settings
                    .client
                    .edge_secret
                    .as_ref()
                    .and_then(|e| variable(&e.secret));
                let location = crate::location::locate(
                    &policy.settings.client,
                    &headers,
                    crate::embedded::geoip().as_ref(),
                    edge_secret.as_deref(),
                );
                match api::explain(
                    &policy,
                    &rid,
                    variable("edge_region"),
                    &headers,
                    &body,
                    admin.as_deref(),
                    location,
                ) {
                    Ok(v) => {
                        let mut h = base.clone();
                        h.push(("content-type".into(), "application/json".into()));
                        send_full(out, 200, &h, v.to_string().into_bytes()).await;
                        200
                    }
                    Err(e) => error(out, &err_base, &e).await,
                }
            }
        },
        Route::Inference(endpoint) => {
            let declared = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.trim().parse::<u64>().ok());
            let limit = policy.settings.max_body_bytes;
            let body = if declared.is_some_and(|n| n > limit) {
                Err(ApiError::new(
                    413,
                    "request_too_large",
                    format!(
                        "The request body is larger than this deployment's limit of {limit} bytes."
                    ),
                ))
            } else {
                read_body(req, limit).await
            };
            match body {
                Err(e) => {
                    served.error_code = Some(e.code);
                    error(out, &err_base, &e).await
                }
                Ok(body) => {
                    let secret = |name: &str| variable(name);
                    let env = Env {
                        policy: &policy,
                        request_id: rid.clone(),
                        edge_region: variable("edge_region"),
                        secret: &secret,
                        max_response_bytes: MAX_RESPONSE_BYTES,
                        geoip: crate::embedded::geoip(),
                    };
                    let (reply, s) =
                        api::inference(&env, &WasiTransport, endpoint, &headers, &body).await;
                    served = s;
                    match reply {
                        Reply::Full {
                            status,
                            mut headers,
                            body,
                        } => {
                            headers.append(&mut cors);
                            send_full(out, status, &headers, body).await;
                            status
                        }
                        Reply::Stream {
                            status,
                            mut headers,
                            first,
                            mut body,
                            provider,
                            idle_timeout_ms,
                        } => {
                            headers.append(&mut cors);
                            let resp = response(status, &headers);
                            let sink = resp.take_body();
                            out.set(resp);
                            let mut sink = ClientSink(sink);
                            let end = api::pump(
                                first,
                                &mut body,
                                &mut sink,
                                &provider,
                                &rid,
                                idle_timeout_ms,
                            )
                            .await;
                            served.usage = end.usage;
                            served.cost_usd = end
                                .usage
                                .and_then(|u| u.cost(served.prices.0, served.prices.1));
                            stream_outcome = Some(end.outcome);
                            status
                        }
                    }
                }
            }
        }
    };

    let line = LogLine {
        ts_ms: wall_clock::now().seconds * 1000
            + u64::from(wall_clock::now().nanoseconds / 1_000_000),
        request_id: &rid,
        method: &method,
        path: path.split('?').next().unwrap_or(&path),
        status,
        policy: &api::policy_label(&policy, crate::embedded::geoip().as_ref()),
        tenant: served.tenant.as_deref(),
        model: served.model.as_deref(),
        country: served.location.as_ref().map(|l| l.country.as_str()),
        country_source: served.location.as_ref().map(|l| l.source.to_string()),
        edge: served.location.as_ref().map(|l| l.edge),
        provider: served.provider.as_deref(),
        upstream_model: served.upstream_model.as_deref(),
        rules: served.rules.iter().map(String::as_str).collect(),
        candidates: served.candidates.iter().map(String::as_str).collect(),
        excluded: served.excluded.iter().map(String::as_str).collect(),
        attempts: served.attempts,
        error_code: served.error_code,
        stream_outcome,
        upstream_error: served.upstream_error.as_deref(),
        usage: served.usage,
        cost_usd: served.cost_usd,
        duration_ms: now_ms().saturating_sub(started),
    };
    println!("{}", line.to_line());
}

async fn error(out: ResponseOutparam, base: &[(String, String)], e: &ApiError) -> u16 {
    let mut h = base.to_vec();
    h.push(("content-type".into(), "application/json".into()));
    send_full(out, e.status, &h, e.body()).await;
    e.status
}
