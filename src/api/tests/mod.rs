//! Whole requests through `serve`, natively: the scripted transport plays the providers on a
//! paused clock, so every route, status, CORS case and fault is checked without Wasm or sockets.
//! The shared policy, callers and answers are here; the tests are in one file per topic, and
//! long upstream answers in `fixtures/`.

use super::*;
use crate::policy::{self, Policy};
use crate::testing::{ok_json, status, Fake, Step};
use crate::transport::Failure;

/// Two providers: `alpha` (DE, keyless) and `beta` (US, its key in `beta_key`), both serving
/// `chat-model`; `beta` also `us-model`. Tenants: `acme` (server key `sk-acme`), `eu-only`
/// (key `sk-eu`, jurisdiction eu) and `web` (browser key `pk-web` from https://app.example,
/// max 100 tokens).
fn policy_text(extra: &str) -> String {
    let h = |k: &str| hex::encode(policy::hash_key(k));
    format!(
        "version = 1\nname = \"api\"\nrevision = \"1\"\n[settings]\nallow_anonymous = true\nmax_body_bytes = 2048\n\
         [settings.client]\nplatform = \"cloudflare\"\n{extra}\n\
         [[providers]]\nid = \"alpha\"\nbase_url = \"http://alpha/v1\"\nlocation = \"DE\"\nmodels = {{ \"chat-model\" = {{ id = \"a-m\", input_price = 1.0, output_price = 2.0 }} }}\n\
         [[providers]]\nid = \"beta\"\nbase_url = \"http://beta/v1\"\nlocation = \"US\"\nkey_secret = \"beta_key\"\nmodels = {{ \"chat-model\" = \"b-m\", \"us-model\" = \"b-us\" }}\n\
         [[tenants]]\nid = \"acme\"\nkeys = [\"sha256:{}\"]\n\
         [[tenants]]\nid = \"eu-only\"\nkeys = [\"sha256:{}\"]\njurisdictions = [\"eu\"]\n\
         [[tenants]]\nid = \"web\"\nkeys = [\"sha256:{}\"]\norigins = [\"https://app.example\"]\nmax_tokens = 100\n",
        h("sk-acme"),
        h("sk-eu"),
        h("pk-web")
    )
}

/// A policy's text with `[settings] stream_events = "framed"`.
fn framed(text: String) -> String {
    text.replacen(
        "allow_anonymous = true\n",
        "allow_anonymous = true\nstream_events = \"framed\"\n",
        1,
    )
}

/// An OpenAI chunk whose data has an object's outline but is not JSON (`[` closed by `}`),
/// with this text where its content would be.
fn garbled_event(text: &str) -> String {
    format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{text}\"}}}}}}\n\n")
}

fn load(extra: &str) -> Policy {
    policy::load(&policy_text(extra), "api").unwrap_or_else(|e| panic!("{e}"))
}

struct Bytes(Option<Vec<u8>>);

impl RequestBody for Bytes {
    async fn next_chunk(&mut self) -> Option<Result<Vec<u8>, String>> {
        self.0.take().map(Ok)
    }
}

#[derive(Default)]
struct Sink(Vec<u8>);

impl ChunkSink for Sink {
    async fn send(&mut self, chunk: Vec<u8>) -> Result<(), String> {
        self.0.extend_from_slice(&chunk);
        Ok(())
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    record: Record,
    /// The log line `end` rendered.
    log: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn call_env(
    policy: Result<&Policy, ApiError>,
    t: &Fake,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let secret = |name: &str| match name {
        "beta_key" => Some("sk-beta-provider".to_string()),
        "admin_key" => Some("adm".to_string()),
        _ => None,
    };
    call_with(policy, &secret, t, method, path, headers, body).await
}

/// A request through `serve` with these secrets; checks that its record renders a log line.
async fn call_with(
    policy: Result<&Policy, ApiError>,
    secret: &dyn Fn(&str) -> Option<String>,
    t: &Fake,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    call_store(policy, secret, None, t, method, path, headers, body).await
}

thread_local! {
    /// The runtime's span the next requests run under (a test's stand-in for `wasi:otel`).
    static HOST_SPAN: std::cell::Cell<Option<crate::trace::HostSpan>> =
        const { std::cell::Cell::new(None) };
}

/// As [`call_with`], with a key-value store for limits; a stream is settled after its pump, as
/// the adapters do.
#[allow(clippy::too_many_arguments)]
async fn call_store(
    policy: Result<&Policy, ApiError>,
    secret: &dyn Fn(&str) -> Option<String>,
    store: Option<&dyn crate::limits::Store>,
    t: &Fake,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let fresh = || "fresh-id".to_string();
    let env = Env {
        policy,
        secret,
        edge_region: None,
        max_response_bytes: 1 << 20,
        geoip: None,
        fresh_id: &fresh,
        store,
        host_span: HOST_SPAN.with(std::cell::Cell::get),
    };
    let req = Request {
        method: method.into(),
        path: path.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: Bytes(Some(body.as_bytes().to_vec())),
    };
    let mut reply = serve(&env, t, req).await;
    let body = match reply.body {
        Body::Full(b) => b,
        Body::Stream(s) => {
            let mut sink = Sink::default();
            let tail = pump(s, t, &mut sink, &mut reply.record, store).await;
            sink.0.extend(tail);
            sink.0
        }
    };
    // Every request ends in one place, and its record renders a log line, whatever happened.
    let log = end(store, &mut reply.record, 1, t.now_ms()).await;
    let line: serde_json::Value = serde_json::from_str(&log).unwrap();
    assert_eq!(line["status"], reply.status);
    assert_eq!(line["request_id"], reply.record.request_id.as_str());
    Answer {
        status: reply.status,
        headers: reply.headers,
        body,
        record: reply.record,
        log,
    }
}

/// `POST /v1/chat/completions`.
async fn chat(p: &Policy, t: &Fake, headers: &[(&str, &str)], body: &str) -> Answer {
    call(p, t, "POST", "/v1/chat/completions", headers, body).await
}

async fn call(
    p: &Policy,
    t: &Fake,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    call_env(Ok(p), t, method, path, headers, body).await
}

const JSON: (&str, &str) = ("content-type", "application/json");
/// A JSON request from the `acme` tenant's client in Germany.
const ACME_DE: [(&str, &str); 3] = [
    JSON,
    ("authorization", "Bearer sk-acme"),
    ("cf-ipcountry", "DE"),
];
const CHAT: &str = r#"{"model":"chat-model","messages":[{"role":"user","content":"hi"}]}"#;

/// A caller's W3C trace context (the specification's example).
const GIVEN_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// `alpha` first (a rule), failing with a fallback status; `beta` answers. The acme tenant's
/// chat with the caller's trace context and these headers besides.
async fn alpha_fails_over_to_beta(extra: &[(&str, &str)]) -> (Policy, Fake, Answer) {
    let p = load("[[rules]]\nid = \"a-first\"\nprefer = { order = [\"alpha\", \"beta\"] }\n");
    let t = Fake::new(vec![
        ("alpha", vec![status(503, None)]),
        ("beta", vec![ok_json(0)]),
    ]);
    let mut h = vec![
        JSON,
        ("authorization", "Bearer sk-acme"),
        ("traceparent", GIVEN_TRACEPARENT),
    ];
    h.extend_from_slice(extra);
    let a = chat(&p, &t, &h, CHAT).await;
    (p, t, a)
}

/// A single-threaded runtime with its clock paused, for a property test's case (a
/// `#[tokio::test]` cannot be one).
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

fn chat_body(extra: &str) -> String {
    format!(r#"{{"model":"chat-model","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#)
}

fn no_script() -> Fake {
    Fake::new(vec![])
}

/// An SSE answer: each chunk after its delay.
fn sse(chunks: &[(u64, &str)]) -> Step {
    Step::Answer {
        after_ms: 0,
        status: 200,
        headers: vec![("content-type".into(), "text/event-stream".into())],
        chunks: chunks
            .iter()
            .map(|(d, c)| (*d, Ok(c.as_bytes().to_vec())))
            .collect(),
    }
}

const EV1: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n";
const EV2: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n";
const DONE: &str = "data: [DONE]\n\n";

/// A whole answer with this status and body.
fn answer(status: u16, body: &str) -> Step {
    Step::Answer {
        after_ms: 0,
        status,
        headers: vec![],
        chunks: vec![(0, Ok(body.as_bytes().to_vec()))],
    }
}

mod audit;
mod boundary;
mod cors;
mod guards;
mod inference;
mod limits;
mod models;
mod otel;
mod pii;
mod pools;
mod receipts;
mod replay;
mod responses;
mod routes;
mod streams;
mod trace;
mod wires;
