//! meridian-host: serves the Meridian component on wasmtime 48 the way `spin up` does, for
//! machines without Spin (development, CI, benchmarks).
//!
//! - reads `spin.toml`: the component's `source`, `allowed_outbound_hosts` and variables;
//! - resolves application variables from `SPIN_VARIABLE_<NAME>` or their defaults, refusing to
//!   start when a required one is missing, exactly as Spin does;
//! - provides `fermyon:spin/variables@2.0.0` to the component;
//! - enforces `allowed_outbound_hosts` on every outgoing request (HttpRequestDenied otherwise);
//! - a WASI 0.2 component gets one fresh instance per request, like Spin, from a pooling
//!   instance allocator (as Spin configures wasmtime); a WASI 0.3 component
//!   (`wasi:http/handler@0.3.0`, Spin 4.1+) gets instances that each serve many requests,
//!   concurrently, through wasmtime's `ProxyHandler` as Spin's trigger does (up to 128 requests
//!   per instance, 16 at a time, dropped after 1 s idle: `wasmtime serve`'s defaults);
//! - plain-HTTP outbound connections are kept alive and reused, as Spin's outbound HTTP does;
//!   HTTPS goes through wasmtime-wasi-http's default sender;
//! - sockets as Spin leaves them: no `TCP_NODELAY` on accepted or outbound connections, so
//!   Nagle's algorithm and the peer's delayed ACKs shape timing as they do under `spin up` and
//!   SpinKube (`--tcp-nodelay` turns it on for both, as a tuned proxy would);
//! - the request headers Spin's WASI HTTP executor gives a component: the client's own, then
//!   `spin-full-url`, `spin-path-info`, `spin-matched-route`, `spin-base-path`,
//!   `spin-raw-component-route`, `spin-component-route` and `spin-client-addr` appended after
//!   them (a client's value under one of those names stays beside Spin's, as under Spin); a
//!   header value that is not UTF-8 fails the request with an empty 500, as under Spin;
//! - a guest that fails before setting a response gets an empty 500, and the guest's task is
//!   aborted as soon as the response body is finished or dropped, as Spin does, so nothing a
//!   component does after ending its body is guaranteed to run.
//!
//! - limits that hold under abuse (`--help` lists the flags): request headers must arrive within
//!   30 s (hyper's default `header_read_timeout`, which also ends a kept-alive connection that
//!   sends nothing more), at most 1,024 connections at once (more wait in the listen backlog),
//!   at most 128 MiB of linear memory per instance (Akamai Functions' limit; growing past it
//!   fails the allocation, and the guest traps), guest code that yields to other requests every
//!   10 ms (wasmtime's epoch interruption with a 10 ms ticker thread, as spin-core's default
//!   `Config` enables it; guest code pays for its epoch checks here as under Spin), and at most
//!   600 s per request (WASI 0.2: the
//!   instance's epoch deadline traps its code and the guest task is aborted; WASI 0.3: the
//!   request is cancelled).
//!
//! `MERIDIAN_HOST_PERFMAP=1` writes /tmp/perf-PID.map so `perf report` names the guest's functions.

mod manifest;
mod pool;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use tokio::net::TcpListener;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance as HandlerInstance, Proxy, ProxyHandler, ShouldAccept, WorkerExpiration,
    WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use manifest::AllowedHost;

mod kv;
mod otel;

mod vars {
    wasmtime::component::bindgen!({
        path: "../wit/fermyon-variables.wit",
        world: "host",
    });
}

use vars::fermyon::spin::variables;

struct Hooks {
    allowed: Arc<Vec<AllowedHost>>,
    pool: pool::Pool,
}

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn std::future::Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<
                            dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                                + Send,
                        >,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        let allowed = self.allowed.iter().any(|a| a.allows(request.uri()));
        let pool = self.pool.clone();
        Box::new(async move {
            if !allowed {
                eprintln!(
                    "meridian-host: denied outbound request to {} (not in allowed_outbound_hosts)",
                    request.uri()
                );
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            if request.uri().scheme() == Some(&http::uri::Scheme::HTTP) {
                return pool.send(request, options).await;
            }
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io)
                    as Box<
                        dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                            + Send,
                    >,
            ))
        })
    }
}

struct State {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: Hooks,
    vars: Arc<HashMap<String, String>>,
    limits: wasmtime::StoreLimits,
    kv: Arc<kv::Stores>,
    otel: otel::Guest,
}

impl otel::HasOtel for State {
    fn otel(&mut self) -> &mut otel::Guest {
        &mut self.otel
    }
}

impl kv::HasKv for State {
    fn kv(&mut self) -> kv::KvView<'_> {
        kv::KvView {
            stores: &self.kv,
            table: &mut self.table,
        }
    }
}

/// The limits every instance runs under.
#[derive(Clone, Copy)]
struct Limits {
    max_memory_bytes: usize,
    /// Longest request, headers to the end of the body.
    max_request: std::time::Duration,
}

/// How often the engine's epoch advances: the guest yields (and is checked) this often.
const EPOCH_TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// A store for one instance, under the limits: its memory capped; its guest code yields to
/// other requests at every epoch tick and, with `deadline`, traps once that has passed (a
/// WASI 0.2 instance lives for one request: its deadline is the request's time limit).
fn new_store(engine: &Engine, state: State, deadline: Option<std::time::Instant>) -> Store<State> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    store.epoch_deadline_callback(move |_| {
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Err(wasmtime::Error::msg(
                "the guest ran past the request's time limit",
            ));
        }
        // Let other requests run; look again next tick.
        Ok(wasmtime::UpdateDeadline::Yield(1))
    });
    store.set_epoch_deadline(1);
    store
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl variables::Host for State {
    fn get(&mut self, name: String) -> Result<String, variables::Error> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(variables::Error::InvalidName(name));
        }
        self.vars
            .get(&name)
            .cloned()
            .ok_or(variables::Error::Undefined(name))
    }
}

impl State {
    fn new(
        allowed: &Arc<Vec<AllowedHost>>,
        pool: &pool::Pool,
        vars: &Arc<HashMap<String, String>>,
        limits: Limits,
        kv: &Arc<kv::Stores>,
        otel: otel::Guest,
    ) -> State {
        State {
            table: ResourceTable::new(),
            wasi: WasiCtx::builder().inherit_stdout().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            hooks: Hooks {
                allowed: allowed.clone(),
                pool: pool.clone(),
            },
            vars: vars.clone(),
            limits: wasmtime::StoreLimitsBuilder::new()
                .memory_size(limits.max_memory_bytes)
                .build(),
            kv: kv.clone(),
            otel,
        }
    }
}

/// Instances of a WASI 0.3 component, each reused for up to `max_reuse` requests, at most
/// `max_concurrent` at a time, and dropped after `idle` without requests.
struct P3Handler {
    pre: wasmtime_wasi_http::p3::bindings::ServicePre<State>,
    allowed: Arc<Vec<AllowedHost>>,
    pool: pool::Pool,
    vars: Arc<HashMap<String, String>>,
    max_reuse: usize,
    max_concurrent: usize,
    idle: std::time::Duration,
    limits: Limits,
    kv: Arc<kv::Stores>,
    /// Where the component's `wasi:otel` telemetry goes (`--experimental-wasi-otel`).
    exporter: Option<Arc<otel::Exporter>>,
}

struct P3Worker {
    max_reuse: usize,
    max_concurrent: usize,
    max_request: std::time::Duration,
}

/// Ends an instance once it has been idle for the configured time.
struct IdleExpiry {
    idle: std::time::Duration,
    timer: Option<(std::time::Instant, std::pin::Pin<Box<tokio::time::Sleep>>)>,
}

impl WorkerExpiration for IdleExpiry {
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        state: WorkerStatus,
        start: std::time::Instant,
    ) -> std::task::Poll<()> {
        let this = self.get_mut();
        if state != WorkerStatus::Idle {
            this.timer = None;
            return std::task::Poll::Pending;
        }
        let idle = this.idle;
        let timer = match &mut this.timer {
            Some((s, t)) if *s == start => t,
            slot => {
                let deadline = tokio::time::Instant::from_std(start + idle);
                &mut slot
                    .insert((start, Box::pin(tokio::time::sleep_until(deadline))))
                    .1
            }
        };
        std::future::Future::poll(timer.as_mut(), cx)
    }
}

impl WorkerState for P3Worker {
    type StoreData = State;
    type RequestData = ();

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.max_reuse {
            ShouldAccept::Never
        } else if concurrent >= self.max_concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _store: wasmtime::StoreContextMut<'_, State>,
        _data: (),
        _task: wasmtime::component::GuestTaskId,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>> {
        // The request is cancelled when this finishes: the per-request time limit.
        Box::pin(tokio::time::sleep(self.max_request))
    }

    fn drop(&self, _store: Store<State>, result: wasmtime::Result<()>) {
        if let Err(e) = result {
            eprintln!("meridian-host: instance ended with an error: {e:?}");
        }
    }
}

impl HandlerState for P3Handler {
    type StoreData = State;
    type WorkerExpiration = IdleExpiry;
    type WorkerState = P3Worker;

    async fn instantiate(&self) -> wasmtime::Result<HandlerInstance<State, IdleExpiry, P3Worker>> {
        // Instances serve many requests: each request has its own time limit
        // (`on_request_start`); the instance's code yields every tick.
        let mut store = new_store(
            self.pre.engine(),
            State::new(
                &self.allowed,
                &self.pool,
                &self.vars,
                self.limits,
                &self.kv,
                // An instance serves many requests: its component's spans have no one request
                // span of the host's to sit under.
                otel::Guest::new(self.exporter.clone(), None),
            ),
            None,
        );
        let proxy = self.pre.instantiate_async(&mut store).await?;
        // Tests count instances by this line.
        println!("meridian-host: instance started (WASI 0.3)");
        Ok(HandlerInstance {
            store,
            proxy: Proxy::P3(proxy),
            view: |s: &mut State| s.http(),
            expiration: IdleExpiry {
                idle: self.idle,
                timer: None,
            },
            state: P3Worker {
                max_reuse: self.max_reuse,
                max_concurrent: self.max_concurrent,
                max_request: self.limits.max_request,
            },
        })
    }
}

/// wasmtime 48 has its own error type; keep its full chain when turning it into anyhow's.
fn w<T>(r: wasmtime::Result<T>) -> Result<T> {
    r.map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// How the component is served: a WASI 0.2 component gets a fresh instance per request, as
/// under every Spin; a WASI 0.3 component (`wasi:http/handler@0.3.0`) gets instances that each
/// serve many requests, concurrently, as under Spin 4.1+ (wasmtime's `ProxyHandler`, which
/// Spin's HTTP trigger and `wasmtime serve` use).
enum Mode {
    P2(ProxyPre<State>),
    P3(ProxyHandler<P3Handler>),
}

struct Server {
    mode: Mode,
    engine: Engine,
    allowed: Arc<Vec<AllowedHost>>,
    pool: pool::Pool,
    vars: Arc<HashMap<String, String>>,
    limits: Limits,
    kv: Arc<kv::Stores>,
    /// Where telemetry goes (the host's request spans; the component's with
    /// `--experimental-wasi-otel`).
    exporter: Option<Arc<otel::Exporter>>,
    wasi_otel: bool,
    /// Tests only (`--test-peer-header`): take the connection's address from this request
    /// header, so a test on 127.0.0.1 can stand in for a client anywhere.
    test_peer_header: Option<hyper::header::HeaderName>,
}

/// The route every request matches: spin.toml's `[[trigger.http]] route = "/..."`.
const ROUTE: &str = "/...";

/// The headers Spin's WASI HTTP executor gives the component: the client's own, then Spin's,
/// appended (not replacing a client value under the same name), as `prepare_request` in Spin's
/// `trigger-http` does. Fails, as Spin does, when a header value is not UTF-8.
fn spin_request_headers<B>(req: &mut hyper::Request<B>, client_addr: SocketAddr) -> Result<()> {
    for v in req.headers().values() {
        std::str::from_utf8(v.as_bytes()).context("a request header value is not UTF-8")?;
    }
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let path_info = req.uri().path().to_string();
    let added = [
        ("spin-path-info", path_info),
        ("spin-full-url", format!("http://{host}{path_and_query}")),
        ("spin-matched-route", ROUTE.to_string()),
        ("spin-base-path", "/".to_string()),
        ("spin-raw-component-route", ROUTE.to_string()),
        ("spin-component-route", String::new()),
        ("spin-client-addr", client_addr.to_string()),
    ];
    for (name, value) in added {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
            req.headers_mut().append(name, v);
        }
    }
    Ok(())
}

/// An empty response with this status, as Spin answers when the component fails.
fn empty(status: u16) -> hyper::Response<HyperOutgoingBody> {
    let mut r = hyper::Response::new(
        http_body_util::Empty::new()
            .map_err(
                |never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} },
            )
            .boxed_unsync(),
    );
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    r
}

/// A response body that aborts the guest's task when hyper drops it (finished, or the client
/// gone), as Spin's `AbortOnDropBody` does.
struct AbortOnDrop {
    body: HyperOutgoingBody,
    task: tokio::task::AbortHandle,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl http_body::Body for AbortOnDrop {
    type Data = bytes::Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Server {
    async fn handle(
        self: Arc<Self>,
        mut req: hyper::Request<hyper::body::Incoming>,
        client_addr: SocketAddr,
    ) -> Result<hyper::Response<HyperOutgoingBody>> {
        let mut client_addr = client_addr;
        if let Some(name) = &self.test_peer_header {
            if let Some(peer) = req
                .headers_mut()
                .remove(name)
                .and_then(|v| v.to_str().ok()?.parse::<SocketAddr>().ok())
            {
                client_addr = peer;
            }
        }
        let span = self
            .exporter
            .as_ref()
            .map(|_| otel::RequestSpan::start(&req));
        spin_request_headers(&mut req, client_addr)?;
        let exporter = self.exporter.clone();
        let end_span = move |span: Option<otel::RequestSpan>, status: Option<u16>| {
            if let (Some(span), Some(e)) = (span, &exporter) {
                span.end(e, status);
            }
        };
        let pre = match &self.mode {
            Mode::P2(pre) => pre.clone(),
            Mode::P3(handler) => {
                let req = req.map(|b| b.map_err(wasmtime_wasi_http::Error::from).boxed_unsync());
                let resp = w(handler.handle((), req).await);
                end_span(span, resp.as_ref().ok().map(|r| r.status().as_u16()));
                return resp;
            }
        };
        let guest = otel::Guest::new(
            self.exporter.clone().filter(|_| self.wasi_otel),
            span.as_ref().map(|s| s.context),
        );
        let mut store = new_store(
            &self.engine,
            State::new(
                &self.allowed,
                &self.pool,
                &self.vars,
                self.limits,
                &self.kv,
                guest,
            ),
            Some(std::time::Instant::now() + self.limits.max_request),
        );
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = w(store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req))?;
        let out = w(store.data_mut().http().new_response_outparam(sender))?;
        let task = tokio::task::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });
        let abort = task.abort_handle();
        // The per-request time limit: the guest's task is aborted then, whatever it is doing
        // (its response, if started, ends there).
        let limit = abort.clone();
        let max_request = self.limits.max_request;
        tokio::task::spawn(async move {
            tokio::time::sleep(max_request).await;
            limit.abort();
        });
        match receiver.await {
            Ok(Ok(resp)) => {
                let status = resp.status().as_u16();
                tokio::task::spawn(async move {
                    let ended = task.await;
                    // The host's span lasts until the component is done (or aborted).
                    end_span(span, Some(status));
                    match ended {
                        Ok(Err(e)) => eprintln!(
                            "meridian-host: component error after the response started: {e:?}"
                        ),
                        Err(e) if !e.is_cancelled() => {
                            eprintln!("meridian-host: component task failed: {e}")
                        }
                        _ => {}
                    }
                });
                Ok(resp.map(|body| AbortOnDrop { body, task: abort }.boxed_unsync()))
            }
            Ok(Err(e)) => {
                end_span(span, None);
                Err(e.into())
            }
            Err(_) => {
                end_span(span, None);
                let e = match task.await {
                    Ok(Ok(())) => anyhow::anyhow!("guest never set a response"),
                    Ok(Err(e)) => anyhow::anyhow!("{e:?}"),
                    Err(e) => e.into(),
                };
                Err(e.context("guest trapped before setting a response"))
            }
        }
    }
}

struct Args {
    manifest: PathBuf,
    listen: SocketAddr,
    component: Option<PathBuf>,
    extra_allowed: Vec<String>,
    test_peer_header: Option<String>,
    tcp_nodelay: bool,
    max_instance_reuse: usize,
    max_instance_concurrent: usize,
    idle_instance_ms: u64,
    header_read_timeout_ms: u64,
    max_connections: usize,
    max_instance_memory_mb: usize,
    max_request_ms: u64,
    runtime_config: Option<PathBuf>,
    experimental_wasi_otel: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: meridian-host [--manifest spin.toml] [--listen 127.0.0.1:3000] [--component path.wasm] [--allow-outbound URL]... [--tcp-nodelay] [--test-peer-header NAME]\n\
         [--max-instance-reuse-count 128] [--max-instance-concurrent-reuse-count 16] [--idle-instance-timeout-ms 1000]\n\
         [--header-read-timeout-ms 30000] [--max-connections 1024] [--max-instance-memory-mb 128] [--max-request-ms 600000]\n\
         [--runtime-config-file runtime-config.toml] [--experimental-wasi-otel]\n\
         Variables come from SPIN_VARIABLE_<NAME> environment variables, as with `spin up`.\n\
         --tcp-nodelay: set TCP_NODELAY on accepted and outbound connections (Spin does not).\n\
         --test-peer-header (tests only): the client address Spin reports comes from this header.\n\
         The --max-instance-*-count and --idle-instance-* options apply to WASI 0.3 components (wasmtime serve's defaults).\n\
         Limits: request headers within --header-read-timeout-ms (also ends an idle kept-alive connection), at most\n\
         --max-connections at once, --max-instance-memory-mb of linear memory per instance, --max-request-ms per\n\
         request (guest code yields every 10 ms and, in a WASI 0.2 instance, traps past it).\n\
         --runtime-config-file: Spin's runtime config; `[key_value_store.<label>]` with `type = \"spin\"` (a SQLite\n\
         file, `path`) or `type = \"redis\"` (`url`). Without it the store `default` is .spin/sqlite_key_value.db next to\n\
         spin.toml, as with `spin up`.\n\
         Telemetry as Spin exports it, when OTEL_EXPORTER_OTLP_ENDPOINT (or a signal's own endpoint) is set: the\n\
         host's span for each request over OTLP http/protobuf; --experimental-wasi-otel (Spin's flag) links\n\
         wasi:otel@0.2.0-rc.2, so a component built with it (spin-otel.toml) adds its spans and metrics."
    );
    std::process::exit(2)
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        manifest: PathBuf::from("spin.toml"),
        listen: "127.0.0.1:3000".parse()?,
        component: None,
        extra_allowed: Vec::new(),
        test_peer_header: None,
        tcp_nodelay: false,
        max_instance_reuse: 128,
        max_instance_concurrent: 16,
        idle_instance_ms: 1000,
        header_read_timeout_ms: 30_000,
        max_connections: 1024,
        max_instance_memory_mb: 128,
        max_request_ms: 600_000,
        runtime_config: None,
        experimental_wasi_otel: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--manifest" => args.manifest = value().into(),
            "--listen" => args.listen = value().parse().context("--listen takes ip:port")?,
            "--component" => args.component = Some(value().into()),
            "--allow-outbound" => args.extra_allowed.push(value()),
            "--test-peer-header" => args.test_peer_header = Some(value()),
            "--tcp-nodelay" => args.tcp_nodelay = true,
            "--max-instance-reuse-count" => {
                args.max_instance_reuse = value().parse().context("a number of requests")?
            }
            "--max-instance-concurrent-reuse-count" => {
                args.max_instance_concurrent = value().parse().context("a number of requests")?
            }
            "--idle-instance-timeout-ms" => {
                args.idle_instance_ms = value().parse().context("milliseconds")?
            }
            "--header-read-timeout-ms" => {
                args.header_read_timeout_ms = value().parse().context("milliseconds")?
            }
            "--max-connections" => {
                args.max_connections = value().parse().context("a number of connections")?
            }
            "--max-instance-memory-mb" => {
                args.max_instance_memory_mb = value().parse().context("MiB")?
            }
            "--max-request-ms" => args.max_request_ms = value().parse().context("milliseconds")?,
            "--runtime-config-file" => args.runtime_config = Some(value().into()),
            "--experimental-wasi-otel" => args.experimental_wasi_otel = true,
            "-h" | "--help" => usage(),
            other => bail!("unknown argument `{other}`"),
        }
    }
    Ok(args)
}

/// Sends pending telemetry (at most 5 s), then stops.
async fn shut_down(exporter: Option<&otel::Exporter>) -> Result<()> {
    println!("meridian-host: shutting down");
    if let Some(e) = exporter {
        e.flush(std::time::Duration::from_secs(5)).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let m = manifest::load(&args.manifest)?;
    let env: HashMap<String, String> = std::env::vars().collect();
    let resolved = m.resolve(&env)?;
    let mut allowed = resolved.allowed_outbound_hosts;
    for extra in &args.extra_allowed {
        allowed
            .push(AllowedHost::parse(extra).with_context(|| format!("--allow-outbound {extra}"))?);
    }
    let component_path = args.component.unwrap_or(resolved.source);

    let mut config = Config::new();
    // The component model's async ABI, which WASI 0.3 components use (Spin 4.1+ enables it).
    config.wasm_component_model_async(true);
    // Guest code checks the engine's epoch, so a loop yields and can be ended (new_store).
    config.epoch_interruption(true);
    // Compiled code is cached on disk, so restarts (every e2e test starts a host) are fast.
    config.cache(wasmtime::Cache::from_file(None).ok());
    // Instances come from a pool of pre-reserved slots (reset, not re-mapped, per request).
    // As Spin (spin-core) configures it, with the same environment overrides: the first 2 MiB of
    // linear memory and 512 KiB of tables are reset in place between instances instead of being
    // handed back to the kernel.
    let env_usize = |name: &str, default: usize| -> Result<usize> {
        match std::env::var(name) {
            Ok(v) => v
                .parse()
                .with_context(|| format!("{name}={v} is not a number")),
            Err(_) => Ok(default),
        }
    };
    let mut pooling = wasmtime::PoolingAllocationConfig::default();
    pooling
        .total_component_instances(256)
        .linear_memory_keep_resident(env_usize(
            "SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT",
            2 << 20,
        )?)
        .table_keep_resident(env_usize("SPIN_WASMTIME_TABLE_KEEP_RESIDENT", 512 << 10)?);
    if std::env::var_os("MERIDIAN_HOST_UNDER_VALGRIND").is_some() {
        // For instruction counts under callgrind, which can neither reserve the pool's address
        // space nor follow guard-page traps: on-demand instances, explicit bounds checks.
        // Counts compare components with each other; they are not production figures.
        config
            .memory_reservation(0)
            .memory_guard_size(0)
            .memory_reservation_for_growth(1 << 20)
            .signals_based_traps(false);
    } else {
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling));
    }
    if std::env::var_os("MERIDIAN_HOST_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config);
    let engine = w(engine)?;
    {
        let engine = engine.clone();
        // Under callgrind the guest runs some 50 times slower against the same wall clock, so a
        // 10 ms tick would make it yield (and the host schedule) far more often than in
        // production, by an amount that depends on the machine's load: instruction counts would
        // drift. There a tick is a second; the guest's epoch checks are counted as they are.
        let tick = if std::env::var_os("MERIDIAN_HOST_UNDER_VALGRIND").is_some() {
            std::time::Duration::from_secs(1)
        } else {
            EPOCH_TICK
        };
        std::thread::spawn(move || loop {
            std::thread::sleep(tick);
            engine.increment_epoch();
        });
    }
    let limits = Limits {
        max_memory_bytes: args.max_instance_memory_mb.saturating_mul(1 << 20),
        max_request: std::time::Duration::from_millis(args.max_request_ms),
    };
    let component = w(Component::from_file(&engine, &component_path))
        .with_context(|| format!("loading {}", component_path.display()))?;
    let mut linker: Linker<State> = Linker::new(&engine);
    w(wasmtime_wasi::p2::add_to_linker_async(&mut linker))?;
    w(wasmtime_wasi_http::p2::add_only_http_to_linker_async(
        &mut linker,
    ))?;
    w(variables::add_to_linker::<State, HasSelf<State>>(
        &mut linker,
        |s| s,
    ))?;
    w(kv::add_to_linker(&mut linker))?;
    if args.experimental_wasi_otel {
        w(otel::add_to_linker(&mut linker))?;
    }
    // WASI 0.3 interfaces too, as Spin 4.1+ provides them: a component may import both.
    w(wasmtime_wasi::p3::add_to_linker(&mut linker))?;
    w(wasmtime_wasi_http::p3::add_to_linker(&mut linker))?;
    let instance_pre = w(linker.instantiate_pre(&component)).with_context(|| {
        if args.experimental_wasi_otel {
            String::new()
        } else {
            "a component built with wasi:otel (spin-otel.toml) needs --experimental-wasi-otel, as with `spin up`".into()
        }
    })?;
    let exporter = otel::Exporter::from_env()?;
    let allowed = Arc::new(allowed);
    let pool = pool::Pool::new(args.tcp_nodelay);
    let vars = Arc::new(resolved.variables);
    let kv = Arc::new(kv::Stores::new(
        resolved.key_value_stores.clone(),
        args.runtime_config.as_deref(),
        &resolved.dir,
    )?);
    let mode = match wasmtime_wasi_http::p3::bindings::ServicePre::new(instance_pre.clone()) {
        Ok(pre) => Mode::P3(ProxyHandler::new(P3Handler {
            pre,
            allowed: allowed.clone(),
            pool: pool.clone(),
            vars: vars.clone(),
            max_reuse: args.max_instance_reuse,
            max_concurrent: args.max_instance_concurrent,
            idle: std::time::Duration::from_millis(args.idle_instance_ms),
            limits,
            kv: kv.clone(),
            exporter: exporter.clone().filter(|_| args.experimental_wasi_otel),
        })),
        Err(_) => Mode::P2(w(ProxyPre::new(instance_pre))?),
    };
    let wasi_version = match &mode {
        Mode::P2(_) => "WASI 0.2, one instance per request".to_string(),
        Mode::P3(_) => format!(
            "WASI 0.3, each instance serves up to {} requests, {} at a time",
            args.max_instance_reuse, args.max_instance_concurrent
        ),
    };

    let server = Arc::new(Server {
        mode,
        engine: engine.clone(),
        allowed,
        pool,
        vars,
        limits,
        kv: kv.clone(),
        exporter: exporter.clone(),
        wasi_otel: args.experimental_wasi_otel,
        test_peer_header: args
            .test_peer_header
            .map(|n| hyper::header::HeaderName::from_bytes(n.as_bytes()))
            .transpose()
            .context("--test-peer-header takes a header name")?,
    });
    let listener = TcpListener::bind(args.listen).await?;
    println!(
        "meridian-host: serving {} on http://{} ({wasi_version}; {}; {}; {})",
        component_path.display(),
        listener.local_addr()?,
        kv.describe(),
        match &exporter {
            Some(e) if args.experimental_wasi_otel => format!("{}, wasi:otel linked", e.describe()),
            Some(e) => e.describe(),
            None if args.experimental_wasi_otel => "wasi:otel linked, no OTLP endpoint set".into(),
            None => "no telemetry export".into(),
        },
        if args.tcp_nodelay {
            "TCP_NODELAY on"
        } else {
            "TCP_NODELAY off, as Spin"
        }
    );

    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
        }
    };
    tokio::pin!(shutdown);
    let connections = Arc::new(tokio::sync::Semaphore::new(args.max_connections.max(1)));
    let header_read_timeout = std::time::Duration::from_millis(args.header_read_timeout_ms);
    loop {
        // At most --max-connections at once: the next is accepted when one closes.
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => p?,
            _ = &mut shutdown => { return shut_down(exporter.as_deref()).await; }
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut shutdown => { return shut_down(exporter.as_deref()).await; }
        };
        // A failed accept is not the server's end (as hyper's and axum's servers treat it): a
        // connection that went away before it was accepted is skipped; anything else (out of
        // file descriptors, EMFILE/ENFILE, or memory) is logged, and the loop pauses briefly so
        // that it does not spin while the process has no descriptor to spare, then goes on.
        let (client, client_addr) = match accepted {
            Ok(c) => c,
            Err(e) => {
                use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
                if !matches!(
                    e.kind(),
                    ConnectionAborted | ConnectionRefused | ConnectionReset
                ) {
                    eprintln!("meridian-host: accept failed: {e}; pausing 100 ms");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        if args.tcp_nodelay {
            let _ = client.set_nodelay(true);
        }
        let server = server.clone();
        tokio::task::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move {
                    // As Spin: a request the component cannot answer gets an empty 500.
                    Ok::<_, std::convert::Infallible>(match server.handle(req, client_addr).await {
                        Ok(r) => r,
                        Err(e) => {
                            eprintln!("meridian-host: request failed: {e:?}");
                            empty(500)
                        }
                    })
                }
            });
            let _permit = permit;
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(client), service)
                .await
            {
                if !e.is_incomplete_message() {
                    eprintln!("meridian-host: connection error: {e}");
                }
            }
        });
    }
}
