//! A fuzz run of the request path, natively: arbitrary bytes and near-valid JSON into the body
//! parser, the `provider` object, the headers (location, keys, privacy, lengths, ids) and the
//! SSE guard, and arbitrary upstream answers, through `api::serve` with the scripted transport.
//! Nothing may panic (in Wasm a panic is a trap: a 500 with no explanation), and every answer
//! must be a well-formed response with its audit record.
//!
//! `FUZZ_CASES` sets the number of cases (CI: 2,000 per target; `FUZZ_CASES=1000000 cargo test
//! --release --lib fuzz` for the long run).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

use crate::api::{serve, Body, ChunkSink, Env, Request, RequestBody};
use crate::policy::{self, Policy};
use crate::sse::SseGuard;
use crate::testing::{Fake, Step};
use crate::transport::Failure;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

/// JSON values of any shape, biased towards the fields the request path reads.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-zA-Z0-9 _.:/-]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("chat-model"),
            Just("deny"),
            Just("allow"),
            Just("price"),
            Just("latency"),
            Just("throughput"),
            Just("alpha"),
            Just("beta"),
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            Just("model".to_string()),
            Just("stream".to_string()),
            Just("provider".to_string()),
            Just("order".to_string()),
            Just("only".to_string()),
            Just("ignore".to_string()),
            Just("allow_fallbacks".to_string()),
            Just("data_collection".to_string()),
            Just("zdr".to_string()),
            Just("sort".to_string()),
            Just("max_price".to_string()),
            Just("prompt".to_string()),
            Just("max_tokens".to_string()),
            Just("n".to_string()),
            Just("best_of".to_string()),
            Just("messages".to_string()),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((key, inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A request body: mostly a chat request (streamed or not, sometimes with a `provider` object
/// or token limits of any shape), else raw bytes or any JSON.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let chat = (
        proptest::option::weighted(0.3, json()),
        any::<bool>(),
        proptest::option::weighted(0.3, (json(), json())),
        proptest::option::weighted(0.2, json()),
    )
        .prop_map(|(provider, stream, limits, extra)| {
            let mut m = serde_json::Map::new();
            m.insert("model".into(), "chat-model".into());
            m.insert("stream".into(), stream.into());
            m.insert(
                "messages".into(),
                serde_json::json!([{"role": "user", "content": "hi"}]),
            );
            if let Some(p) = provider {
                m.insert("provider".into(), p);
            }
            if let Some((max_tokens, n)) = limits {
                m.insert("max_tokens".into(), max_tokens);
                m.insert("n".into(), n);
            }
            if let Some(e) = extra {
                m.insert("extra".into(), e);
            }
            Value::Object(m).to_string().into_bytes()
        });
    // A Responses request: any input (string, items or anything), maybe a follow-up id and
    // tools.
    let responses = (
        any::<bool>(),
        json(),
        proptest::option::weighted(0.3, json()),
        proptest::option::weighted(0.3, json()),
    )
        .prop_map(|(stream, input, previous, tools)| {
            let mut m = serde_json::Map::new();
            m.insert("model".into(), "chat-model".into());
            m.insert("stream".into(), stream.into());
            m.insert("input".into(), input);
            if let Some(p) = previous {
                m.insert("previous_response_id".into(), p);
            }
            if let Some(t) = tools {
                m.insert("tools".into(), t);
            }
            Value::Object(m).to_string().into_bytes()
        });
    prop_oneof![
        6 => chat,
        2 => responses,
        1 => proptest::collection::vec(any::<u8>(), 0..300),
        1 => json().prop_map(|v| v.to_string().into_bytes()),
    ]
}

fn header() -> impl Strategy<Value = (String, String)> {
    let name = prop_oneof![
        Just("cf-ipcountry"),
        Just("cf-ipcountry"),
        Just("authorization"),
        Just("cf-connecting-ip"),
        Just("x-edge"),
        Just("authorization"),
        Just("x-api-key"),
        Just("x-meridian-privacy"),
        Just("origin"),
        Just("content-length"),
        Just("x-request-id"),
        Just("accept"),
        Just("x-meridian-admin-key"),
    ];
    let value = prop_oneof![
        "[ -~]{0,40}",
        Just("application/json".to_string()),
        Just("Bearer sk-acme".to_string()),
        Just("DE".to_string()),
        Just("zdr, no-training".to_string()),
        Just("https://app.example".to_string()),
        proptest::collection::vec(any::<char>(), 0..12).prop_map(|c| c.into_iter().collect()),
    ];
    (name, value).prop_map(|(n, v)| (n.to_string(), v))
}

/// What the upstream answers: status, and body chunks (or a failure) that may be anything.
fn upstream() -> impl Strategy<Value = Step> {
    let chunk = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(Ok),
        json().prop_map(|v| Ok(format!("data: {v}\n\n").into_bytes())),
        Just(Ok(b"data: [DONE]\n\n".to_vec())),
        Just(Err(Failure::Transport("reset".into()))),
    ];
    (
        prop_oneof![
            Just(200u16),
            Just(400),
            Just(401),
            Just(429),
            Just(500),
            100u16..600
        ],
        proptest::collection::vec((0u64..50, chunk), 0..5),
        proptest::option::of("[ -~]{0,20}"),
    )
        .prop_map(|(status, chunks, retry_after)| Step::Answer {
            after_ms: 0,
            status,
            headers: retry_after
                .map(|r| vec![("retry-after".to_string(), r)])
                .unwrap_or_default(),
            chunks,
        })
}

fn policy() -> Policy {
    let h = hex::encode(policy::hash_key("sk-acme"));
    let text = format!(
        "version = 1\n[settings]\nallow_anonymous = true\nmax_body_bytes = 4096\n\
         [settings.client]\nplatform = \"cloudflare\"\nedge_secret = {{ header = \"x-edge\", secret = \"edge\" }}\n\
         [settings.plan]\nretries = 1\nbackoff_ms = 5\n\
         [[providers]]\nid = \"alpha\"\nbase_url = \"http://alpha/v1\"\nlocation = \"DE\"\nmodels = {{ \"chat-model\" = {{ id = \"a\", input_price = 1.0, output_price = 1.0 }} }}\n\
         [[providers]]\nid = \"beta\"\nbase_url = \"http://beta/v1\"\nlocation = \"US\"\nkey_secret = \"k\"\nmodels = {{ \"chat-model\" = \"b\" }}\n\
         [[tenants]]\nid = \"acme\"\nkeys = [\"sha256:{h}\"]\nmax_tokens = 50\n\
         [[tenants]]\nid = \"web\"\nkeys = []\norigins = [\"https://app.example\"]\n\
         [pii.custom]\nticket = 'T-[0-9]+'\n\
         [[rules]]\nid = \"bank-data-in-de\"\nwhen = {{ pii = [\"iban\", \"card\"] }}\nrequire = {{ providers = [\"alpha\"] }}\n\
         [[rules]]\nid = \"no-ssn\"\nwhen = {{ pii = [\"us_ssn\"] }}\nrefuse = true\n\
         [[rules]]\nid = \"redact-the-rest\"\nredact = [\"email\", \"phone\", \"ipv4\", \"ipv6\", \"uk_nino\", \"eu_vat\", \"ticket\"]\nrestore = true\n"
    );
    policy::load(&text, "fuzz").unwrap_or_else(|e| panic!("{e}"))
}

struct Bytes(Option<Vec<u8>>);

impl RequestBody for Bytes {
    async fn next_chunk(&mut self) -> Option<Result<Vec<u8>, String>> {
        self.0.take().map(Ok)
    }
}

struct Sink(Vec<u8>);

impl ChunkSink for Sink {
    async fn send(&mut self, chunk: Vec<u8>) -> Result<(), String> {
        self.0.extend_from_slice(&chunk);
        Ok(())
    }
}

#[test]
fn fuzz_the_request_path_through_serve() {
    let p = policy();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let any_method = prop_oneof![
        Just("POST"),
        Just("GET"),
        Just("OPTIONS"),
        Just("HEAD"),
        Just("PUT")
    ];
    let any_path = prop_oneof![
        Just("/v1/chat/completions".to_string()),
        Just("/v1/embeddings".to_string()),
        Just("/v1/models".to_string()),
        Just("/v1/route/explain".to_string()),
        Just("/v1/responses".to_string()),
        Just("/v1/responses/resp_mrd1~alpha~-~resp_1~00".to_string()),
        Just("/healthz".to_string()),
        "/[ -~]{0,30}",
    ];
    let target = prop_oneof![
        6 => Just(("POST", "/v1/chat/completions".to_string())),
        1 => Just(("POST", "/v1/embeddings".to_string())),
        1 => Just(("GET", "/v1/models".to_string())),
        2 => Just(("POST", "/v1/responses".to_string())),
        2 => (any_method, any_path),
    ];
    let strategy = (
        target,
        proptest::collection::vec(header(), 0..8),
        body(),
        upstream(),
        upstream(),
    );
    runner()
        .run(&strategy, |((method, path), mut headers, body, a, b)| {
            if !headers.iter().any(|(k, _)| k == "content-type") {
                headers.push(("content-type".into(), "application/json".into()));
            }
            let t = Fake::new(vec![("alpha", vec![a]), ("beta", vec![b])]);
            let secret = |n: &str| match n {
                "k" => Some("sk-provider".to_string()),
                "edge" => Some("edge-value".to_string()),
                "admin_key" => Some("adm".to_string()),
                "response_id_key" => Some("sealing".to_string()),
                _ => None,
            };
            let fresh = || "fuzz".to_string();
            let env = Env {
                policy: Ok(&p),
                secret: &secret,
                edge_region: None,
                max_response_bytes: 1 << 16,
                geoip: None,
                fresh_id: &fresh,
                store: None,
                host_span: None,
            };
            let req = Request {
                method: method.to_string(),
                path,
                headers,
                body: Bytes(Some(body)),
            };
            rt.block_on(async {
                let mut reply = serve(&env, &t, req).await;
                assert!((100..600).contains(&reply.status), "{}", reply.status);
                assert!(reply.headers.iter().any(|(k, _)| k == "x-request-id"));
                if let Body::Stream(s) = reply.body {
                    let mut sink = Sink(Vec::new());
                    let tail = s.pump(&t, &mut sink, &mut reply.record).await;
                    sink.0.extend(tail);
                    let text = String::from_utf8_lossy(&sink.0);
                    // Never a fake clean end: an error event is the last thing, never followed
                    // by `[DONE]`.
                    if let Some(at) = text.find("event: error") {
                        assert!(!text[at..].contains("[DONE]"), "{text}");
                    }
                    assert!(reply.record.stream_outcome.is_some());
                }
                let line: Value =
                    serde_json::from_str(&reply.record.log_line(0, 0)).expect("log line is JSON");
                assert_eq!(line["status"], reply.status);
            });
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_the_sse_guard() {
    let chunk = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..100),
        json().prop_map(|v| format!("data: {v}\n\n").into_bytes()),
        Just(b"data: [DONE]\n\n".to_vec()),
        Just(b"event: error\n".to_vec()),
        "[ -~\n\r]{0,60}".prop_map(String::into_bytes),
    ];
    runner()
        .run(
            &(proptest::collection::vec(chunk, 0..8), any::<bool>()),
            |(chunks, framed)| {
                let mut g = SseGuard::new();
                if framed {
                    g.check_framing_only();
                }
                let mut sent = Vec::new();
                let mut input = Vec::new();
                for c in &chunks {
                    input.extend_from_slice(c);
                    let fed = g.feed(c.as_slice());
                    sent.extend_from_slice(&fed.send);
                    if fed.fault.is_some() {
                        break;
                    }
                }
                let _ = g.finish();
                // What goes out is whole lines, in order, each one taken from the input.
                assert!(sent.is_empty() || sent.ends_with(b"\n"));
                let mut rest = &input[..];
                for line in sent.split_inclusive(|b| *b == b'\n') {
                    let at = rest
                        .windows(line.len())
                        .position(|w| w == line)
                        .unwrap_or_else(|| panic!("{line:?} not in the input, in order"));
                    rest = &rest[at + line.len()..];
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn fuzz_the_provider_object_and_privacy_header() {
    runner()
        .run(&(json(), "[ -~]{0,40}"), |(v, header)| {
            let _ = crate::facts::provider_prefs(&v);
            let _ = crate::facts::privacy_from_header(&header);
            Ok(())
        })
        .unwrap();
}
