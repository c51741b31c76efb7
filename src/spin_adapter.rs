//! The Spin adapter: the only file that touches `spin-sdk`. It moves bytes (request in →
//! `api::serve` → response out) and provides the outbound transport over `wasi:http` with
//! timeouts, clocks and secrets, and the log line's output.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use futures::StreamExt;
use spin_executor::{push_waker_and_get_token, CancelOnDropToken};
use spin_sdk::http::{
    Fields, IncomingRequest, IncomingResponse, Method, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use spin_sdk::http_component;
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{
    ErrorCode, FutureIncomingResponse, OutgoingBody, RequestOptions,
};
use wasi::clocks::{monotonic_clock, wall_clock};
use wasi::io::streams::{OutputStream, StreamError};

use crate::api::{self, Body, ChunkSink, Env, Request, RequestBody};
use crate::arena::Arena;
use crate::error::ApiError;
use crate::policy::{self, Policy};
use crate::transport::{BodyStream, Failure, OutboundRequest, Transport, UpResponse};

fn variable(name: &str) -> Option<String> {
    spin_sdk::variables::get(name)
        .ok()
        .filter(|v| !v.is_empty())
}

fn now_ms() -> u64 {
    monotonic_clock::now() / 1_000_000
}

/// Resolves `ms` milliseconds after it is first polled. The host's timer is registered only
/// when something actually waits on it (a timer raced against data that is already there, a
/// stream's next chunk usually, costs no host call at all), as a duration: the clock is never
/// read. The executor wakes the timer's own waker when the host says the timer is due, which
/// marks it fired and wakes the task.
struct Sleep {
    ms: u64,
    armed: Option<(std::sync::Arc<Fired>, CancelOnDropToken)>,
}

/// Set when the host's timer is due. `task` is the waker of the poll that armed the timer and
/// is not replaced by later polls: spin's executor runs a request as one task, so every poll of
/// its futures has that waker. A `Sleep` moved to another task would have to keep it current.
struct Fired {
    due: std::sync::atomic::AtomicBool,
    task: std::task::Waker,
}

impl std::task::Wake for Fired {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.due.store(true, std::sync::atomic::Ordering::Release);
        self.task.wake_by_ref();
    }
}

fn sleep_ms(ms: u64) -> Sleep {
    Sleep { ms, armed: None }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some((fired, _)) = &self.armed {
            if fired.due.load(std::sync::atomic::Ordering::Acquire) {
                self.armed = None;
                return Poll::Ready(());
            }
            return Poll::Pending;
        }
        if self.ms == 0 {
            return Poll::Ready(());
        }
        let fired = std::sync::Arc::new(Fired {
            due: std::sync::atomic::AtomicBool::new(false),
            task: cx.waker().clone(),
        });
        let p = monotonic_clock::subscribe_duration(self.ms.saturating_mul(1_000_000));
        let token = push_waker_and_get_token(p, std::task::Waker::from(fired.clone()));
        self.armed = Some((fired, token.into()));
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
    crate::failure_of_error_code!(ErrorCode, e)
}

fn header_list(fields: Fields) -> Vec<(String, String)> {
    crate::runtime::header_pairs(fields.entries())
}

/// The response headers Meridian reads ([`crate::transport::READ_HEADERS`]), a host call each,
/// rather than all of them (a provider sends twenty or more; each costs the host as much).
fn read_headers(fields: Fields, read_load: bool) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let load = read_load.then_some(crate::transport::LOAD_HEADER);
    for name in crate::transport::READ_HEADERS.iter().copied().chain(load) {
        for v in fields.get(name) {
            found.push((name.to_string(), v));
        }
    }
    crate::runtime::header_pairs(found)
}

/// An outgoing body (a response's or a request's), written here rather than through spin-sdk's
/// sink so that the adapter decides when bytes go and when the body ends. Spin sets no
/// `TCP_NODELAY`, so a small write that follows unacknowledged data waits for the peer's delayed
/// ACK (about 40 ms): headers, body and end must reach the host together wherever they can.
struct BodyWriter {
    /// Field order matters: the pollable (in `token`) is a child of `stream`, which is a child
    /// of `body`; each must drop before its parent.
    token: Option<CancelOnDropToken>,
    stream: Option<OutputStream>,
    body: Option<OutgoingBody>,
}

impl BodyWriter {
    fn new(body: OutgoingBody) -> Option<BodyWriter> {
        let stream = body.write().ok()?;
        Some(BodyWriter {
            token: None,
            stream: Some(stream),
            body: Some(body),
        })
    }

    /// Writes all of `bytes` if the host takes them now without waiting (before the message is
    /// handed over, nothing drains the body, so waiting could never end); `false`, and nothing
    /// written, otherwise.
    fn write_now(&mut self, bytes: &[u8]) -> bool {
        let Some(stream) = &self.stream else {
            return false;
        };
        if bytes.is_empty() {
            return true;
        }
        match stream.check_write() {
            Ok(n) if n >= bytes.len() as u64 => {
                let ok = stream.write(bytes).is_ok();
                let _ = stream.flush();
                ok
            }
            _ => false,
        }
    }

    /// Writes all of `bytes`, waiting whenever the host has no room; never waits after the last
    /// write, so the end can follow at once.
    async fn write_all(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        let mut offset = 0;
        while offset < bytes.len() {
            let room = futures::future::poll_fn(|cx| {
                let Some(stream) = &self.stream else {
                    return Poll::Ready(Err(StreamError::Closed));
                };
                match stream.check_write() {
                    Ok(0) => {
                        self.token = Some(
                            push_waker_and_get_token(stream.subscribe(), cx.waker().clone()).into(),
                        );
                        Poll::Pending
                    }
                    other => Poll::Ready(other),
                }
            })
            .await?;
            self.token = None;
            let n = usize::try_from(room)
                .unwrap_or(usize::MAX)
                .min(bytes.len() - offset);
            if let Some(stream) = &self.stream {
                stream.write(&bytes[offset..offset + n])?;
            }
            offset += n;
        }
        if let Some(stream) = &self.stream {
            let _ = stream.flush();
        }
        Ok(())
    }

    /// Ends the body (no trailers). Idempotent.
    fn finish(&mut self) {
        self.token = None;
        drop(self.stream.take());
        if let Some(body) = self.body.take() {
            let _ = OutgoingBody::finish(body, None);
        }
    }
}

impl Drop for BodyWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The client's response. Its headers are handed to the host together with the first bytes of
/// the body (and with the end, when those bytes are the last), so the host can send them in one
/// write.
struct ClientResponse {
    /// Field order matters: the writer (a child of the response's body) drops first.
    writer: Option<BodyWriter>,
    unsent: Option<(OutgoingResponse, ResponseOutparam)>,
}

impl ClientResponse {
    fn new(status: u16, headers: Vec<(String, String)>, out: ResponseOutparam) -> ClientResponse {
        let resp = response(status, headers);
        ClientResponse {
            writer: resp.body().ok().and_then(BodyWriter::new),
            unsent: Some((resp, out)),
        }
    }

    /// Sends `bytes`, and ends the body after them when `end`.
    async fn put(&mut self, bytes: &[u8], end: bool) -> Result<(), String> {
        let Some(writer) = &mut self.writer else {
            if let Some((resp, out)) = self.unsent.take() {
                ResponseOutparam::set(out, resp);
            }
            return Err("the response body cannot be written".into());
        };
        if let Some((resp, out)) = self.unsent.take() {
            let written = writer.write_now(bytes);
            if written && end {
                writer.finish();
            }
            ResponseOutparam::set(out, resp);
            if written {
                return Ok(());
            }
        }
        let r = writer.write_all(bytes).await;
        if end {
            writer.finish();
        }
        r.map_err(|_| "client gone".to_string())
    }
}

impl ChunkSink for ClientResponse {
    async fn send(&mut self, chunk: Vec<u8>) -> Result<(), String> {
        self.put(&chunk, false).await
    }
}

struct WasiTransport;

/// Field order matters: the body stream is a child of the response and must drop first;
/// the response is kept alive because dropping it cancels its body under wasmtime.
struct WasiBody {
    stream: BoxStream<'static, Result<Vec<u8>, wasi::io::streams::Error>>,
    _response: IncomingResponse,
    /// The between-bytes timeout the runtime enforces on this body (0: none).
    runtime_idle_ms: u64,
}

impl BodyStream for WasiBody {
    async fn next_chunk(&mut self, timeout_ms: u64) -> Option<Result<Vec<u8>, Failure>> {
        let read = |r: Option<Result<Vec<u8>, wasi::io::streams::Error>>| match r {
            None => None,
            Some(Ok(c)) => Some(Ok(c)),
            Some(Err(e)) => Some(Err(match wasi::http::types::http_error_code(&e) {
                // The runtime's between-bytes timeout.
                Some(wasi::http::types::ErrorCode::ConnectionReadTimeout) => {
                    Failure::Timeout("body")
                }
                _ => Failure::Transport(e.to_debug_string()),
            })),
        };
        // A wait as long as the runtime's own between-bytes timeout needs no timer here: the
        // runtime ends the read itself. Only a shorter wait (the deadline is nearer) gets one.
        if self.runtime_idle_ms > 0 && timeout_ms >= self.runtime_idle_ms {
            return read(self.stream.next().await);
        }
        let next = self.stream.next();
        let timer = sleep_ms(timeout_ms);
        futures::pin_mut!(timer);
        match futures::future::select(next, timer).await {
            futures::future::Either::Left((r, _)) => read(r),
            futures::future::Either::Right(_) => Some(Err(Failure::Timeout("body"))),
        }
    }
}

impl Transport for WasiTransport {
    type Body = WasiBody;

    async fn send(
        &self,
        mut req: OutboundRequest,
        timeout_ms: u64,
    ) -> Result<UpResponse<WasiBody>, Failure> {
        let target = crate::runtime::Target::parse(&req.url)
            .ok_or_else(|| Failure::Config(format!("`{}` is not an http(s) URL", req.url)))?;
        let all_headers = req.all_headers;
        let read_load = req.read_load;
        // One host call for all the headers; a header the host refuses is dropped rather than
        // failing the request.
        let out = OutgoingRequest::new(fields(std::mem::take(&mut req.headers)));
        let _ = out.set_method(&match req.method {
            crate::transport::UpMethod::Post => Method::Post,
            crate::transport::UpMethod::Get => Method::Get,
            crate::transport::UpMethod::Delete => Method::Delete,
        });
        let _ = out.set_scheme(Some(if target.https {
            &Scheme::Https
        } else {
            &Scheme::Http
        }));
        let _ = out.set_authority(Some(&target.authority));
        let _ = out.set_path_with_query(Some(&target.path_and_query));

        let options = RequestOptions::new();
        let ns = timeout_ms.saturating_mul(1_000_000);
        let _ = options.set_connect_timeout(Some(ns));
        let _ = options.set_first_byte_timeout(Some(ns));
        let runtime_idle_ms = if req.idle_timeout_ms > 0
            && options
                .set_between_bytes_timeout(Some(req.idle_timeout_ms.saturating_mul(1_000_000)))
                .is_ok()
        {
            req.idle_timeout_ms
        } else {
            0
        };

        // The body is written and ended before the request is handed over, when the host takes
        // it whole, so request line, headers and body leave in one write.
        let mut body = out
            .body()
            .ok()
            .and_then(BodyWriter::new)
            .ok_or_else(|| Failure::Transport("the request body cannot be written".into()))?;
        let whole = body.write_now(&req.body);
        if whole {
            body.finish();
        }
        let fut = outgoing_handler::handle(out, Some(options)).map_err(|e| failure_of(&e))?;
        let pending = Pending { token: None, fut };
        if !whole {
            body.write_all(&req.body)
                .await
                .map_err(|e| Failure::Transport(format!("{e:?}")))?;
            body.finish();
        }
        drop(body);

        let timer = sleep_ms(timeout_ms);
        futures::pin_mut!(pending, timer);
        let response = match futures::future::select(pending, timer).await {
            futures::future::Either::Left((r, _)) => r.map_err(|e| failure_of(&e))?,
            futures::future::Either::Right(_) => return Err(Failure::Timeout("headers")),
        };
        let status = response.status();
        let headers = if all_headers {
            header_list(response.headers())
        } else {
            read_headers(response.headers(), read_load)
        };
        let stream = response.take_body_stream().boxed();
        Ok(UpResponse {
            status,
            headers,
            body: WasiBody {
                stream,
                _response: response,
                runtime_idle_ms,
            },
            dialect: crate::sse::Dialect::OpenAi,
        })
    }

    async fn sleep(&self, ms: u64) {
        sleep_ms(ms).await
    }

    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn unix_ms(&self) -> u64 {
        wall_ms()
    }
}

/// The incoming body as chunks.
struct WasiRequestBody(BoxStream<'static, Result<Vec<u8>, wasi::io::streams::Error>>);

impl RequestBody for WasiRequestBody {
    async fn next_chunk(&mut self) -> Option<Result<Vec<u8>, String>> {
        self.0
            .next()
            .await
            .map(|r| r.map_err(|e| e.to_debug_string()))
    }
}

/// Header fields from (name, value) pairs in one host call; if the host refuses the list (a
/// forbidden or malformed header), field by field, dropping the ones it refuses.
fn fields(headers: Vec<(String, String)>) -> Fields {
    let list = crate::runtime::field_list(headers);
    Fields::from_list(&list).unwrap_or_else(|_| {
        let fields = Fields::new();
        for (k, v) in &list {
            let _ = fields.append(k, v);
        }
        fields
    })
}

fn response(status: u16, headers: Vec<(String, String)>) -> OutgoingResponse {
    let r = OutgoingResponse::new(fields(headers));
    let _ = r.set_status_code(status);
    r
}

/// The policy in force: the `policy` variable if set (its compiled form, `meridian compile`, read
/// as it is; or TOML text, parsed and validated on every request: under WASI 0.2 every request
/// has a fresh instance), else the policy built in (static data: nothing decoded or allocated).
fn load_policy() -> Result<Cow<'static, Policy>, ApiError> {
    match variable("policy") {
        Some(text) => policy::compiled::load_any(&text, "<variable policy>")
            .map(Cow::Owned)
            .map_err(ApiError::invalid_policy),
        None => Ok(Cow::Borrowed(crate::embedded::load())),
    }
}

/// Writes one log line to stdout, as `println!` would, in as few host calls as WASI allows (its
/// blocking write takes at most 4096 bytes at a time) instead of through std's line buffer.
fn log_line(mut line: String) {
    line.push('\n');
    let out = wasi::cli::stdout::get_stdout();
    for chunk in line.as_bytes().chunks(4096) {
        if out.blocking_write_and_flush(chunk).is_err() {
            break;
        }
    }
}

use spin_sdk::wit::wasi::keyvalue as kv;

/// `wasi:otel@0.2.0-rc.2` (`--features otel`): the host's span and where spans and metrics go.
#[cfg(feature = "otel")]
mod otel_bindings {
    spin_sdk::wit_bindgen::generate!({
        runtime_path: "spin_sdk::wit_bindgen::rt",
        inline: "package meridian:telemetry;\nworld otel {\n  import wasi:otel/tracing@0.2.0-rc.2;\n  import wasi:otel/metrics@0.2.0-rc.2;\n}\n",
        path: "wit/wasi-otel",
        world: "meridian:telemetry/otel",
        generate_all,
    });
}
#[cfg(feature = "otel")]
use otel_bindings::wasi::clocks::wall_clock::Datetime as OtelDatetime;
#[cfg(feature = "otel")]
use otel_bindings::wasi::otel::{
    metrics as otel_metrics, tracing as otel_tracing, types as otel_types,
};
#[cfg(feature = "otel")]
crate::wasi_otel!();

/// The host's span for this request: only a build with `wasi:otel` can ask.
fn host_span() -> Option<crate::trace::HostSpan> {
    #[cfg(feature = "otel")]
    return otel_host_span();
    #[cfg(not(feature = "otel"))]
    None
}

/// The request's end in the core ([`api::end`]: settled, its log line), written out and, in a
/// build with `wasi:otel`, its spans and metrics handed to the host.
async fn finish(store: &WasiStore, record: &mut crate::audit::Record, policy: Option<&Policy>) {
    let (wall, mono) = (wall_ms(), now_ms());
    log_line(api::end(Some(store), record, wall, mono).await);
    #[cfg(feature = "otel")]
    otel_emit(&crate::otel::render(record, policy, wall, mono));
    #[cfg(not(feature = "otel"))]
    let _ = policy;
}

// `WasiStore`: the store limits are kept in (see `meridian::wasi_key_value_store!`).
crate::wasi_key_value_store!();

fn wall_ms() -> u64 {
    let now = wall_clock::now();
    now.seconds * 1000 + u64::from(now.nanoseconds / 1_000_000)
}

/// Moves bytes: the request into `api::serve`, its reply out, a stream through its pump, and the
/// audit record to the log.
#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let method = crate::method_name!(Method, req.method());
    let path = req.path_with_query().unwrap_or_else(|| "/".into());
    let headers = header_list(req.headers());
    let body = WasiRequestBody(req.into_body_stream().boxed());
    let loaded = load_policy();
    if let Err(e) = &loaded {
        eprintln!("{}", e.message);
    }
    let secret = |name: &str| variable(name);
    let fresh_id = || crate::api::fresh_request_id(wasi::random::random::get_random_u64());
    let store = WasiStore::default();
    let mut env = Env::deployed(
        loaded.as_deref().map_err(Clone::clone),
        &secret,
        variable("edge_region"),
        &fresh_id,
        Some(&store),
    );
    env.host_span = host_span();
    let request = Request {
        method,
        path,
        headers,
        body,
    };
    let mut reply = api::serve(&env, &WasiTransport, request).await;
    // A whole body is framed by its length (no chunked terminator), so headers, body and end
    // are handed over in one step.
    reply.frame_by_length();
    // The log line is written before the body ends: Spin stops the component as soon as the
    // host has finished sending the response, so anything after the end may never run.
    match reply.body {
        Body::Full(bytes) => {
            // Settled before any byte goes out: the host ends the instance as soon as a body
            // framed by its length has been sent, so nothing after it may be relied on.
            let mut client =
                ClientResponse::new(reply.status, std::mem::take(&mut reply.headers), out);
            finish(&store, &mut reply.record, loaded.as_deref().ok()).await;
            let _ = client.put(&bytes, true).await;
        }
        Body::Stream(stream) => {
            // The host ends the instance when the client hangs up: the opening line is written
            // before the first byte, so every stream leaves a line.
            log_line(reply.record.opening_line(wall_ms()));
            let mut client =
                ClientResponse::new(reply.status, std::mem::take(&mut reply.headers), out);
            let tail = api::pump(
                stream,
                &WasiTransport,
                &mut client,
                &mut reply.record,
                Some(&store),
            )
            .await;
            finish(&store, &mut reply.record, loaded.as_deref().ok()).await;
            let _ = client.put(&tail, true).await;
        }
    }
    // Under WASI 0.2 (this adapter) every request runs in a fresh instance that is discarded
    // when it returns, so freeing a policy parsed from the variable one allocation at a time is
    // wasted work (the built-in policy is static and owns nothing). An adapter that reuses
    // instances (WASI 0.3) keeps its policy per instance instead, and must not do this.
    std::mem::forget(loaded);
}

/// The allocator of the WASI 0.2 build: a per-request arena ([`crate::arena`]) in front of the
/// system allocator. The instance serves one request and is thrown away (Spin, SpinKube and
/// meridian-host instantiate a WASI 0.2 component per request), so the arena never frees what
/// it handed out; it takes at most `CHUNKS` chunks from the system allocator, and what does not
/// fit goes to the system allocator as before. The WASI 0.3 build, whose instances serve many
/// requests, keeps the system allocator.
struct PerRequest;

/// The arena. A WASI 0.2 component has one thread: nothing else can reach it while an
/// allocator call runs.
struct One(std::cell::UnsafeCell<Arena>);
// SAFETY: wasm32 without threads: there is one thread, so no concurrent access.
unsafe impl Sync for One {}
static ARENA: One = One(std::cell::UnsafeCell::new(Arena::new()));

/// A chunk of the arena from the system allocator.
fn chunk() -> Option<usize> {
    let layout = std::alloc::Layout::from_size_align(crate::arena::CHUNK, 16).ok()?;
    // SAFETY: a non-zero size; the chunk is never freed (the instance ends with the request).
    let p = unsafe { std::alloc::System.alloc(layout) };
    (!p.is_null()).then_some(p as usize)
}

use std::alloc::GlobalAlloc;

// SAFETY: every address the arena hands out lies in a chunk the system allocator gave it, with
// room for the layout's size at its alignment, and is never handed out twice while live (the
// arena only moves forward, except over the latest allocation once it is freed).
unsafe impl GlobalAlloc for PerRequest {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: one thread (see `One`).
        let arena = unsafe { &mut *ARENA.0.get() };
        match arena.alloc(layout.size(), layout.align(), chunk) {
            Some(at) => at as *mut u8,
            // SAFETY: the caller's layout, passed on.
            None => unsafe { std::alloc::System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: one thread (see `One`).
        let arena = unsafe { &mut *ARENA.0.get() };
        if arena.owns(ptr as usize) {
            arena.free(ptr as usize);
        } else {
            // SAFETY: not the arena's, so the system allocator's, with this layout.
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: one thread (see `One`).
        let arena = unsafe { &mut *ARENA.0.get() };
        if !arena.owns(ptr as usize) {
            // SAFETY: the system allocator's block, with its layout.
            return unsafe { std::alloc::System.realloc(ptr, layout, new_size) };
        }
        if arena.resize_in_place(ptr as usize, new_size) {
            return ptr;
        }
        // SAFETY: the new layout has the old alignment and a size the caller vouches for.
        let fresh = unsafe {
            self.alloc(std::alloc::Layout::from_size_align_unchecked(
                new_size,
                layout.align(),
            ))
        };
        if !fresh.is_null() {
            // SAFETY: both blocks are live and distinct; the copy is within both.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        fresh
    }
}

#[global_allocator]
static ALLOCATOR: PerRequest = PerRequest;
