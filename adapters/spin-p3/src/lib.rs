//! Meridian's WASI 0.3 build: the same core (`meridian::api::serve`) behind a spin-sdk 7
//! adapter, for Spin 4.1 and later, where one instance serves many requests, concurrently.
//!
//! What differs from the WASI 0.2 adapter (`src/spin_adapter.rs`):
//! - the policy is decoded (built-in) or parsed and validated (the `policy` variable) once per
//!   instance, not per request; a changed `policy` variable is noticed on the next request;
//! - bodies are WASI 0.3 streams: the response is returned to the host first, and its body is
//!   written by a task that keeps running after the handler returns;
//! - timers are `monotonic-clock.wait-for`, started only when a read actually has to wait.
//!
//! Nothing about one request is kept in instance state: the request id, tenant, facts, decision
//! and audit record live in that request's own task (see docs/deploying.md on what one instance shares
//! and `tests/e2e_instances.rs`, which interleaves tenants in one instance).

use std::cell::RefCell;
use std::rc::Rc;

use meridian::api::{self, Body, ChunkSink, Env, Request, RequestBody};
use meridian::error::ApiError;
use meridian::policy::{self, Policy};
use meridian::runtime::Target;
use meridian::transport::{BodyStream, Failure, OutboundRequest, Transport, UpResponse};
use spin_sdk::wasip3;
use wasip3::clocks::{monotonic_clock, system_clock};
use wasip3::http::types::{self as wt, ErrorCode, Fields, Method, Scheme};
use wasip3::wit_bindgen::{FutureReader, StreamReader, StreamResult, StreamWriter};

/// The allocator: free lists by size class (`meridian_alloc::Bins`) in front of wasi-libc's
/// malloc. An instance here serves many requests, so memory is freed; a freed block is kept for
/// the next allocation of its size class, where dlmalloc's `malloc` and `free` cost about 200
/// and 270 instructions a call (docs/performance.md).
struct Allocator(std::cell::UnsafeCell<meridian_alloc::Bins>);

// SAFETY: wasm32 without threads: one thread, so no allocator call runs while another does.
unsafe impl Sync for Allocator {}

// SAFETY: `Bins` hands out blocks of the system allocator with room for the layout at its
// alignment, or blocks freed to it that were; every block it is given back came from it.
unsafe impl std::alloc::GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: one thread (above); the caller's contract, passed on.
        unsafe { (*self.0.get()).alloc(layout, &std::alloc::System) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: one thread (above); the caller's contract, passed on.
        unsafe { (*self.0.get()).dealloc(ptr, layout, &std::alloc::System) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: one thread (above); the caller's contract, passed on.
        unsafe { (*self.0.get()).realloc(ptr, layout, new_size, &std::alloc::System) }
    }
}

#[global_allocator]
static ALLOCATOR: Allocator = Allocator(std::cell::UnsafeCell::new(meridian_alloc::Bins::new()));

/// How much one read of a body asks for.
const READ_BYTES: usize = 16 * 1024;

/// Spin's variables, through the synchronous `fermyon:spin/variables@2.0.0` interface every
/// Spin 2.x-4.x host provides (the core reads secrets synchronously).
mod spin_variables {
    wit_bindgen::generate!({
        path: "../../wit/fermyon-variables.wit",
        world: "host",
    });
}

/// `wasi:keyvalue@0.2.0-draft2` (Spin 3.0+): the store limits are kept in.
mod keyvalue {
    wit_bindgen::generate!({
        path: "../../wit/wasi-keyvalue",
        world: "wasi:keyvalue/imports",
    });
}

use keyvalue::wasi::keyvalue as kv;

// `WasiStore`: the store limits are kept in (see `meridian::wasi_key_value_store!`).
meridian::wasi_key_value_store!();

fn variable(name: &str) -> Option<String> {
    spin_variables::fermyon::spin::variables::get(name)
        .ok()
        .filter(|v| !v.is_empty())
}

fn now_ms() -> u64 {
    monotonic_clock::now() / 1_000_000
}

fn wall_ms() -> u64 {
    let now = system_clock::now();
    u64::try_from(now.seconds).unwrap_or_default() * 1000 + u64::from(now.nanoseconds / 1_000_000)
}

fn sleep_ms(ms: u64) -> impl std::future::Future<Output = ()> {
    monotonic_clock::wait_for(ms.saturating_mul(1_000_000))
}

/// The policy a request uses: the built-in one (static data), or one parsed from the `policy`
/// variable and shared by this instance's requests.
enum InForce {
    BuiltIn(&'static Policy),
    Variable(Rc<Policy>),
}

impl std::ops::Deref for InForce {
    type Target = Policy;
    fn deref(&self) -> &Policy {
        match self {
            InForce::BuiltIn(p) => p,
            InForce::Variable(p) => p,
        }
    }
}

/// A policy parsed from the `policy` variable, and the text it came from.
type Parsed = (String, Result<Rc<Policy>, ApiError>);

thread_local! {
    /// Per instance, shared by its concurrent requests: immutable once parsed, replaced only when
    /// the `policy` variable changes. Requests hold their own `Rc`, so a replacement never
    /// changes the policy under a request in flight.
    static PARSED: RefCell<Option<Parsed>> = const { RefCell::new(None) };
}

/// The policy in force: the built-in one, or the `policy` variable's, parsed and validated on
/// the instance's first request that sees that text, then reused.
fn load_policy() -> Result<InForce, ApiError> {
    let Some(text) = variable("policy") else {
        return Ok(InForce::BuiltIn(meridian::embedded::load()));
    };
    PARSED.with(|cell| {
        if let Some((source, parsed)) = cell.borrow().as_ref() {
            if *source == text {
                return parsed.clone().map(InForce::Variable);
            }
        }
        let parsed = policy::compiled::load_any(&text, "<variable policy>")
            .map(Rc::new)
            .map_err(ApiError::invalid_policy);
        *cell.borrow_mut() = Some((text, parsed.clone()));
        parsed.map(InForce::Variable)
    })
}

/// Header fields in one host call; if the host refuses the list, field by field, dropping the
/// ones it refuses.
fn fields(headers: Vec<(String, String)>) -> Fields {
    let list = meridian::runtime::field_list(headers);
    Fields::from_list(&list).unwrap_or_else(|_| {
        let fields = Fields::new();
        for (k, v) in &list {
            let _ = fields.append(k, v);
        }
        fields
    })
}

fn failure_of(e: &ErrorCode) -> Failure {
    meridian::failure_of_error_code!(ErrorCode, e)
}

/// A body being read: the stream, then the trailers future, which says whether the body ended
/// cleanly or was cut off (a stream that just stops is not a complete body).
struct Incoming {
    stream: Option<StreamReader<u8>>,
    trailers: Option<FutureReader<Result<Option<wt::Trailers>, ErrorCode>>>,
}

impl Incoming {
    fn new(
        stream: StreamReader<u8>,
        trailers: FutureReader<Result<Option<wt::Trailers>, ErrorCode>>,
    ) -> Incoming {
        Incoming {
            stream: Some(stream),
            trailers: Some(trailers),
        }
    }

    /// The next non-empty chunk, `None` at a clean end, the error when the body was cut off.
    async fn read(&mut self) -> Option<Result<Vec<u8>, ErrorCode>> {
        while let Some(stream) = self.stream.as_mut() {
            let (result, chunk) = stream.read(Vec::with_capacity(READ_BYTES)).await;
            match result {
                StreamResult::Complete(_) if !chunk.is_empty() => return Some(Ok(chunk)),
                StreamResult::Complete(_) => {}
                StreamResult::Dropped | StreamResult::Cancelled => self.stream = None,
            }
        }
        match self.trailers.take()?.await {
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

struct ClientBody(Incoming);

impl RequestBody for ClientBody {
    async fn next_chunk(&mut self) -> Option<Result<Vec<u8>, String>> {
        self.0.read().await.map(|r| r.map_err(|e| format!("{e:?}")))
    }
}

struct P3Transport;

struct P3Body {
    body: Incoming,
    /// The between-bytes timeout the runtime enforces on this body (0: none).
    runtime_idle_ms: u64,
}

fn chunk_of(r: Option<Result<Vec<u8>, ErrorCode>>) -> Option<Result<Vec<u8>, Failure>> {
    match r {
        None => None,
        Some(Ok(c)) => Some(Ok(c)),
        // The runtime's between-bytes timeout.
        Some(Err(ErrorCode::ConnectionReadTimeout)) => Some(Err(Failure::Timeout("body"))),
        Some(Err(e)) => Some(Err(Failure::Transport(format!("{e:?}")))),
    }
}

impl BodyStream for P3Body {
    async fn next_chunk(&mut self, timeout_ms: u64) -> Option<Result<Vec<u8>, Failure>> {
        // A wait as long as the runtime's own between-bytes timeout needs no timer here.
        if self.runtime_idle_ms > 0 && timeout_ms >= self.runtime_idle_ms {
            return chunk_of(self.body.read().await);
        }
        // The timer is an `async fn`: it starts (a host call) only if the read has to wait.
        let read = std::pin::pin!(self.body.read());
        let timer = std::pin::pin!(sleep_ms(timeout_ms));
        match futures_select(read, timer).await {
            Either::Left(r) => chunk_of(r),
            Either::Right(()) => Some(Err(Failure::Timeout("body"))),
        }
    }
}

enum Either<A, B> {
    Left(A),
    Right(B),
}

/// The first of two futures to finish; the other is dropped (a pending stream read is
/// cancelled, a pending timer forgotten). `a` is polled first.
async fn futures_select<A, B>(
    mut a: std::pin::Pin<&mut A>,
    mut b: std::pin::Pin<&mut B>,
) -> Either<A::Output, B::Output>
where
    A: std::future::Future,
    B: std::future::Future,
{
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
            return std::task::Poll::Ready(Either::Left(v));
        }
        if let std::task::Poll::Ready(v) = b.as_mut().poll(cx) {
            return std::task::Poll::Ready(Either::Right(v));
        }
        std::task::Poll::Pending
    })
    .await
}

impl Transport for P3Transport {
    type Body = P3Body;

    async fn send(
        &self,
        mut req: OutboundRequest,
        timeout_ms: u64,
    ) -> Result<UpResponse<P3Body>, Failure> {
        let target = Target::parse(&req.url)
            .ok_or_else(|| Failure::Config(format!("`{}` is not an http(s) URL", req.url)))?;
        let all_headers = req.all_headers;
        let read_load = req.read_load;
        let (mut body_tx, body_rx) = wasip3::wit_stream::new::<u8>();
        let (trailers_tx, trailers_rx) = wasip3::wit_future::new(|| Ok(None));
        let options = wt::RequestOptions::new();
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
        let (out, _transmitted) = wt::Request::new(
            fields(std::mem::take(&mut req.headers)),
            Some(body_rx),
            trailers_rx,
            Some(options),
        );
        let _ = out.set_method(&match req.method {
            meridian::transport::UpMethod::Post => Method::Post,
            meridian::transport::UpMethod::Get => Method::Get,
            meridian::transport::UpMethod::Delete => Method::Delete,
        });
        let _ = out.set_scheme(Some(&if target.https {
            Scheme::Https
        } else {
            Scheme::Http
        }));
        let _ = out.set_authority(Some(&target.authority));
        let _ = out.set_path_with_query(Some(&target.path_and_query));
        // The body is written by its own task while the host sends the request; a request that
        // is cancelled (hedging, a timeout) drops the reader and the task ends.
        let body = std::mem::take(&mut req.body);
        wasip3::spawn(async move {
            let unwritten = body_tx.write_all(body).await;
            drop(body_tx);
            if unwritten.is_empty() {
                let _ = trailers_tx.write(Ok(None)).await;
            }
        });
        let send = std::pin::pin!(wasip3::http::client::send(out));
        let timer = std::pin::pin!(sleep_ms(timeout_ms));
        let response = match futures_select(send, timer).await {
            Either::Left(r) => r.map_err(|e| failure_of(&e))?,
            Either::Right(()) => return Err(Failure::Timeout("headers")),
        };
        let status = response.get_status_code();
        let fields = response.get_headers();
        // Only the headers Meridian reads, a host call each, unless the policy passes the
        // provider's rate-limit headers on: a provider sends twenty or more.
        let headers = meridian::runtime::header_pairs(if all_headers {
            fields.copy_all()
        } else {
            let load = read_load.then_some(meridian::transport::LOAD_HEADER);
            meridian::transport::READ_HEADERS
                .iter()
                .copied()
                .chain(load)
                .flat_map(|name| {
                    let name = name.to_string();
                    fields
                        .get(&name)
                        .into_iter()
                        .map(move |v| (name.clone(), v))
                })
                .collect()
        });
        let (_done, done_rx) = wasip3::wit_future::new(|| Ok(()));
        let (stream, trailers) = wt::Response::consume_body(response, done_rx);
        Ok(UpResponse {
            status,
            headers,
            body: P3Body {
                body: Incoming::new(stream, trailers),
                runtime_idle_ms,
            },
            dialect: meridian::sse::Dialect::OpenAi,
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

/// The client's response body.
struct ClientSink(StreamWriter<u8>);

impl ChunkSink for ClientSink {
    async fn send(&mut self, chunk: Vec<u8>) -> Result<(), String> {
        if self.0.write_all(chunk).await.is_empty() {
            Ok(())
        } else {
            Err("client gone".into())
        }
    }
}

fn log_line(line: String) {
    use std::io::Write;
    let mut line = line.into_bytes();
    line.push(b'\n');
    let _ = std::io::stdout().lock().write_all(&line);
}

struct Meridian;

wasip3::http::service::export!(Meridian);

impl wasip3::exports::http::handler::Guest for Meridian {
    async fn handle(request: wt::Request) -> Result<wt::Response, ErrorCode> {
        let method = meridian::method_name!(Method, request.get_method());
        let path = request.get_path_with_query().unwrap_or_else(|| "/".into());
        let headers = meridian::runtime::header_pairs(request.get_headers().copy_all());
        let (_done, done_rx) = wasip3::wit_future::new(|| Ok(()));
        let (stream, trailers) = wt::Request::consume_body(request, done_rx);
        let body = ClientBody(Incoming::new(stream, trailers));
        let loaded = load_policy();
        if let Err(e) = &loaded {
            eprintln!("{}", e.message);
        }
        let secret = |name: &str| variable(name);
        let fresh_id = || api::fresh_request_id(wasip3::random::random::get_random_u64());
        let store = WasiStore::default();
        let env = Env::deployed(
            loaded.as_deref().map_err(Clone::clone),
            &secret,
            variable("edge_region"),
            &fresh_id,
            Some(&store),
        );
        let request = Request {
            method,
            path,
            headers,
            body,
        };
        let mut reply = api::serve(&env, &P3Transport, request).await;
        reply.frame_by_length();
        let (tx, rx) = wasip3::wit_stream::new::<u8>();
        let (trailers_tx, trailers_rx) = wasip3::wit_future::new(|| Ok(None));
        let (response, _transmitted) = wt::Response::new(
            fields(std::mem::take(&mut reply.headers)),
            Some(rx),
            trailers_rx,
        );
        let _ = response.set_status_code(reply.status);
        // The body is written by a task that outlives this call: the host starts sending the
        // response when it is returned, and reads the body as the task writes it. The log line
        // is written before the body ends, as in the WASI 0.2 build.
        let mut record = reply.record;
        let body = reply.body;
        wasip3::spawn(async move {
            let mut sink = ClientSink(tx);
            let store = WasiStore::default();
            let tail = match body {
                Body::Full(bytes) if record.unsettled() => {
                    // The client has the whole answer before the settlement's store calls.
                    let _ = sink.send(bytes).await;
                    Vec::new()
                }
                Body::Full(bytes) => bytes,
                Body::Stream(stream) => {
                    log_line(record.opening_line(wall_ms()));
                    api::pump(stream, &P3Transport, &mut sink, &mut record, Some(&store)).await
                }
            };
            log_line(api::end(Some(&store), &mut record, wall_ms(), now_ms()).await);
            let sent = tail.is_empty() || sink.send(tail).await.is_ok();
            drop(sink);
            if sent {
                let _ = trailers_tx.write(Ok(None)).await;
            }
        });
        Ok(response)
    }
}
