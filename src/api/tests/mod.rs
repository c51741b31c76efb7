//! Whole requests through `serve`, natively: the scripted transport plays the providers on a
//! paused clock, so every route, status, CORS case and fault is checked without Wasm or sockets.

use super::*;
use crate::forward::Failure;
use crate::policy::{self, Policy};
use crate::testing::{ok_json, status, Fake, Step};

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
    let fresh = || "fresh-id".to_string();
    let env = Env {
        policy,
        secret,
        edge_region: None,
        max_response_bytes: 1 << 20,
        geoip: None,
        fresh_id: &fresh,
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
            let tail = s.pump(t, &mut sink, &mut reply.record).await;
            sink.0.extend(tail);
            sink.0
        }
    };
    // Every request's record renders a log line, whatever happened.
    let line: serde_json::Value =
        serde_json::from_str(&reply.record.log_line(1, t.now_ms())).unwrap();
    assert_eq!(line["status"], reply.status);
    assert_eq!(line["request_id"], reply.record.request_id.as_str());
    Answer {
        status: reply.status,
        headers: reply.headers,
        body,
        record: reply.record,
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

#[test]
fn routes() {
    assert_eq!(
        route("POST", "/v1/chat/completions"),
        Route::Inference(Endpoint::Chat)
    );
    assert_eq!(
        route("POST", "/v1/embeddings?x=1"),
        Route::Inference(Endpoint::Embeddings)
    );
    assert_eq!(
        route("GET", "/v1/chat/completions"),
        Route::MethodNotAllowed("POST")
    );
    assert_eq!(route("GET", "/v1/models/"), Route::Models);
    assert_eq!(route("HEAD", "/healthz"), Route::Health);
    assert_eq!(route("POST", "/v1/models"), Route::MethodNotAllowed("GET"));
    assert_eq!(route("GET", "/nope"), Route::NotFound);
    assert_eq!(route("OPTIONS", "/v1/chat/completions"), Route::Preflight);
    assert_eq!(route("OPTIONS", "/anything/at/all"), Route::Preflight);
    assert_eq!(route("GET", "/healthz"), Route::Health);
}

#[tokio::test(start_paused = true)]
async fn every_route_and_status_carries_the_audit_headers_that_apply() {
    let p = load("");
    let t = Fake::new(vec![("alpha", vec![ok_json(0), ok_json(0), ok_json(0)])]);
    // (method, path, headers, body, status)
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str, u16);
    let cases: Vec<Case> = vec![
        ("GET", "/healthz", vec![], "", 200),
        ("GET", "/v1/models", vec![], "", 200),
        ("POST", "/v1/chat/completions", vec![JSON], CHAT, 200),
        (
            "POST",
            "/v1/completions",
            vec![JSON],
            r#"{"model":"chat-model","prompt":"hi"}"#,
            200,
        ),
        (
            "POST",
            "/v1/embeddings",
            vec![JSON],
            r#"{"model":"chat-model","input":"hi"}"#,
            200,
        ),
        (
            "POST",
            "/v1/embeddings",
            vec![JSON],
            r#"{"model":"chat-model","input":"hi","stream":true}"#,
            400,
        ),
        ("GET", "/nope", vec![], "", 404),
        ("DELETE", "/v1/models", vec![], "", 405),
        ("GET", "/v1/chat/completions", vec![], "", 405),
        (
            "POST",
            "/v1/chat/completions",
            vec![("content-type", "text/plain")],
            CHAT,
            415,
        ),
        ("POST", "/v1/chat/completions", vec![], CHAT, 415),
        (
            "POST",
            "/v1/chat/completions",
            vec![JSON, ("content-length", "99999")],
            CHAT,
            413,
        ),
        ("POST", "/v1/chat/completions", vec![JSON], "{not json", 400),
        (
            "POST",
            "/v1/chat/completions",
            vec![JSON, ("authorization", "Bearer sk-acme")],
            r#"{"model":"nope","messages":[]}"#,
            404,
        ),
        ("POST", "/v1/route/explain", vec![JSON], CHAT, 401),
        (
            "OPTIONS",
            "/v1/chat/completions",
            vec![("origin", "https://app.example")],
            "",
            204,
        ),
        (
            "OPTIONS",
            "/nope",
            vec![("origin", "https://evil.example")],
            "",
            403,
        ),
    ];
    for (method, path, headers, body, want) in cases {
        let a = call(&p, &t, method, path, &headers, body).await;
        assert_eq!(a.status, want, "{method} {path}: {}", a.text());
        assert_eq!(
            a.header("x-request-id"),
            Some("fresh-id"),
            "{method} {path}"
        );
        assert!(
            a.header("x-meridian-policy")
                .is_some_and(|v| v.starts_with("api@1+")),
            "{method} {path}"
        );
        assert_eq!(a.header("vary"), Some("Origin"), "{method} {path}");
        if want >= 400 {
            assert!(!a.code().is_empty(), "{method} {path}: {}", a.text());
            assert_eq!(a.record.error_code.map(str::to_string), Some(a.code()));
        }
    }
    // Each endpoint went to its own upstream path.
    let paths: Vec<String> = t.requests.borrow().iter().map(|r| r.url.clone()).collect();
    assert_eq!(
        paths,
        [
            "http://alpha/v1/chat/completions",
            "http://alpha/v1/completions",
            "http://alpha/v1/embeddings"
        ]
    );
    // The 405 says what is allowed; HEAD has the headers and no body.
    let a = call(&p, &t, "DELETE", "/healthz", &[], "").await;
    assert_eq!(a.header("allow"), Some("GET"));
    let a = call(&p, &t, "HEAD", "/healthz", &[], "").await;
    assert_eq!((a.status, a.body.len()), (200, 0));
    // A chat answer names the tenant, the client's country and the serving provider.
    let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
    let a = chat(
        &p,
        &t,
        &[JSON, ("cf-ipcountry", "DE"), ("x-request-id", "mine-1")],
        CHAT,
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-request-id"), Some("mine-1"));
    assert_eq!(a.header("x-meridian-tenant"), Some("anonymous"));
    assert_eq!(
        a.header("x-meridian-client-country"),
        Some("DE; header cf-ipcountry")
    );
    assert_eq!(a.header("x-meridian-provider"), Some("alpha"));
    assert_eq!(a.header("x-meridian-model"), Some("a-m"));
    assert_eq!(a.header("x-meridian-attempts"), Some("1"));
    assert_eq!(a.header("x-meridian-cost-usd"), Some("0.00000500"));
}

#[tokio::test(start_paused = true)]
async fn a_policy_that_fails_to_load_is_refused_and_audited() {
    let t = no_script();
    let errors = policy::load(
        "version = 1\n[[providers]]\nid = \"x\"\nbase_ur = \"http://secret-host\"\n",
        "p",
    )
    .unwrap_err();
    let a = call_env(
        Err(ApiError::invalid_policy(errors)),
        &t,
        "POST",
        "/v1/chat/completions",
        &[JSON],
        CHAT,
    )
    .await;
    assert_eq!(a.status, 500);
    assert_eq!(a.code(), "invalid_policy");
    assert_eq!(a.header("x-request-id"), Some("fresh-id"));
    assert_eq!(a.header("vary"), Some("Origin"));
    assert_eq!(a.record.error_code, Some("invalid_policy"));
    // The caller learns that the policy is invalid, not what it says; the log has every error.
    assert!(
        !a.text().contains("base_ur") && !a.text().contains("secret-host"),
        "{}",
        a.text()
    );
    let line: serde_json::Value = serde_json::from_str(&a.record.log_line(0, 0)).unwrap();
    let logged = line["error_detail"].as_str().unwrap();
    assert!(logged.contains("unknown key `base_ur`"), "{logged}");
}

#[tokio::test(start_paused = true)]
async fn cors_for_allowed_unknown_and_missing_origins() {
    let p = load("");
    let t = Fake::new(vec![("alpha", vec![ok_json(0), ok_json(0)])]);
    let web = [
        JSON,
        ("authorization", "Bearer pk-web"),
        ("origin", "https://app.example"),
    ];
    let a = chat(&p, &t, &web, CHAT).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(a.header("access-control-expose-headers").is_some_and(|v| v
        .contains("x-meridian-provider")
        && v.contains("x-meridian-client-country")));
    // The browser key from another origin, or with none: refused, and no CORS grant.
    for origin in [Some("https://evil.example"), None] {
        let mut h = vec![JSON, ("authorization", "Bearer pk-web")];
        if let Some(o) = origin {
            h.push(("origin", o));
        }
        let a = chat(&p, &t, &h, CHAT).await;
        assert_eq!(a.status, 403, "{origin:?}");
        assert_eq!(a.header("access-control-allow-origin"), None);
        assert_eq!(a.header("vary"), Some("Origin"));
    }
    // Preflight on every path: allowed origin 204 with methods and headers; others 403.
    for path in [
        "/v1/chat/completions",
        "/v1/models",
        "/healthz",
        "/no/such/path",
    ] {
        let a = call(
            &p,
            &t,
            "OPTIONS",
            path,
            &[("origin", "https://app.example")],
            "",
        )
        .await;
        assert_eq!(a.status, 204, "{path}");
        assert_eq!(
            a.header("access-control-allow-origin"),
            Some("https://app.example")
        );
        assert!(a
            .header("access-control-allow-headers")
            .unwrap()
            .contains("content-type"));
        for origin in [Some("https://evil.example"), None] {
            let h: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
            let a = call(&p, &t, "OPTIONS", path, &h, "").await;
            assert_eq!(
                (a.status, a.code().as_str()),
                (403, "origin_not_allowed"),
                "{path} {origin:?}"
            );
            assert_eq!(a.header("access-control-allow-origin"), None);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn bodies_must_be_json_and_fit() {
    let p = load("");
    let t = no_script();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let a = chat(&p, &t, &[("content-type", ct)], CHAT).await;
        assert_eq!(
            (a.status, a.code().as_str()),
            (415, "unsupported_media_type"),
            "{ct}"
        );
    }
    let a = chat(
        &p,
        &t,
        &[("content-type", "Application/JSON; charset=utf-8")],
        "[]",
    )
    .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (400, "invalid_json"),
        "a JSON media type with parameters passes"
    );
    // Larger than the limit without saying so: 413 all the same.
    let big = format!(r#"{{"model":"chat-model","pad":"{}"}}"#, "x".repeat(3000));
    let a = chat(&p, &t, &[JSON], &big).await;
    assert_eq!((a.status, a.code().as_str()), (413, "request_too_large"));
    // A model name past 256 bytes is refused before any lookup.
    let long = format!(r#"{{"model":"{}"}}"#, "m".repeat(257));
    let a = chat(&p, &t, &[JSON], &long).await;
    assert_eq!((a.status, a.code().as_str()), (400, "invalid_model"));
    assert_eq!(a.record.model, None);
    // Sort values the decision does not implement are refused, not treated as another.
    let a = chat(
        &p,
        &t,
        &[JSON],
        &chat_body(r#","provider":{"sort":"throughput"}"#),
    )
    .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (400, "unsupported_provider_preference")
    );
    assert!(t.sent_to().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_tenant_token_cap_counts_every_completion() {
    let p = load("");
    let web = [
        JSON,
        ("authorization", "Bearer pk-web"),
        ("origin", "https://app.example"),
    ];
    for (extra, want) in [
        (r#","max_tokens":100"#, 200),
        (r#","max_tokens":60,"n":2"#, 400),
        (r#","max_tokens":50,"n":2"#, 200),
        (r#","max_tokens":30,"best_of":4"#, 400),
        (r#","n":200"#, 400),
        (r#","n":0"#, 400),
    ] {
        let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
        let a = chat(&p, &t, &web, &chat_body(extra)).await;
        assert_eq!(a.status, want, "{extra}: {}", a.text());
    }
    // Absent: set so that all completions together fit the cap.
    let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
    let a = chat(&p, &t, &web, &chat_body(r#","n":4"#)).await;
    assert_eq!(a.status, 200);
    let sent: serde_json::Value = serde_json::from_slice(&t.requests.borrow()[0].body).unwrap();
    assert_eq!(sent["max_tokens"], 25);
}

#[tokio::test(start_paused = true)]
async fn models_lists_exactly_what_the_caller_could_be_served() {
    let p = load("[[rules]]\nid = \"eu\"\nwhen = { client_jurisdiction = [\"eu\"] }\nrequire = { jurisdiction = [\"eu\"] }\n");
    let t = no_script();
    let listed = |headers: &'static [(&'static str, &'static str)]| {
        let (p, t) = (&p, &t);
        async move {
            let a = call(p, t, "GET", "/v1/models", headers, "").await;
            let ids: Vec<String> = a.json()["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_string())
                .collect();
            (ids, a)
        }
    };
    // Anonymous: only keyless providers, so `us-model` (beta only) is not listed.
    assert_eq!(listed(&[]).await.0, ["chat-model"]);
    // A tenant sees both; one limited to the EU does not see the US-only model; nor does an EU
    // client.
    assert_eq!(
        listed(&[("authorization", "Bearer sk-acme")]).await.0,
        ["chat-model", "us-model"]
    );
    assert_eq!(
        listed(&[("authorization", "Bearer sk-eu")]).await.0,
        ["chat-model"]
    );
    let (ids, a) = listed(&[("authorization", "Bearer sk-acme"), ("cf-ipcountry", "FR")]).await;
    assert_eq!(ids, ["chat-model"]);
    assert_eq!(
        a.json()["data"][0]["meridian"]["providers"],
        serde_json::json!(["alpha"])
    );
    // And a request for the unlisted model is indeed refused (451: residency alone).
    let a = chat(
        &p,
        &t,
        &[JSON, ("authorization", "Bearer sk-eu")],
        r#"{"model":"us-model"}"#,
    )
    .await;
    assert_eq!(a.status, 451);
    // Without anonymous access, listing needs a key.
    let closed = policy::load(
        &policy_text("").replace("allow_anonymous = true", "allow_anonymous = false"),
        "x",
    )
    .unwrap();
    let a = call(&closed, &t, "GET", "/v1/models", &[], "").await;
    assert_eq!((a.status, a.code().as_str()), (401, "missing_api_key"));
}

#[tokio::test(start_paused = true)]
async fn explain_needs_the_admin_key() {
    let p = load("");
    let t = no_script();
    let a = call(
        &p,
        &t,
        "POST",
        "/v1/route/explain",
        &[JSON, ("x-meridian-admin-key", "wrong")],
        CHAT,
    )
    .await;
    assert_eq!((a.status, a.code().as_str()), (401, "invalid_admin_key"));
    let a = call(
        &p,
        &t,
        "POST",
        "/v1/route/explain",
        &[
            JSON,
            ("x-meridian-admin-key", "adm"),
            ("cf-ipcountry", "FR"),
        ],
        CHAT,
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["decision"]["candidates"][0]["provider"], "alpha");
    assert_eq!(
        a.json()["facts"]["location"]["source"],
        "header cf-ipcountry"
    );
    assert!(t.sent_to().is_empty(), "explain never forwards");
}

#[tokio::test(start_paused = true)]
async fn refusals_and_exhaustion_have_their_exact_codes() {
    let p = load("[[rules]]\nid = \"eu\"\nwhen = { client_jurisdiction = [\"eu\"] }\nrequire = { jurisdiction = [\"eu\"] }\n");
    let acme = ("authorization", "Bearer sk-acme");
    let t = no_script();
    let a = chat(
        &p,
        &t,
        &[JSON, acme, ("cf-ipcountry", "FR")],
        r#"{"model":"us-model"}"#,
    )
    .await;
    assert_eq!((a.status, a.code().as_str()), (451, "residency_violation"));
    let a = chat(
        &p,
        &t,
        &[JSON, acme, ("x-meridian-privacy", "local-only")],
        CHAT,
    )
    .await;
    assert_eq!((a.status, a.code().as_str()), (403, "no_allowed_provider"));
    let a = chat(
        &p,
        &t,
        &[JSON, ("authorization", "Bearer nope")],
        r#"{"model":"us-model"}"#,
    )
    .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (403, "no_allowed_provider"),
        "unknown key = anonymous: no paid providers"
    );
    assert_eq!(a.header("x-meridian-tenant"), Some("anonymous"));
    assert_eq!(a.header("x-meridian-attempts"), Some("0"));

    let t = Fake::new(vec![
        ("alpha", vec![status(503, None)]),
        (
            "beta",
            vec![Step::Fail {
                after_ms: 0,
                failure: Failure::Connect("refused".into()),
            }],
        ),
    ]);
    let a = chat(&p, &t, &[JSON, acme], CHAT).await;
    assert_eq!((a.status, a.code().as_str()), (502, "upstream_unavailable"));
    assert_eq!(
        a.header("x-meridian-failures"),
        Some("alpha=status 503, beta=connect error")
    );
    let t = Fake::new(vec![(
        "alpha",
        vec![Step::Fail {
            after_ms: 200_000,
            failure: Failure::Connect("x".into()),
        }],
    )]);
    let a = chat(&p, &t, &[JSON, ("cf-ipcountry", "DE")], CHAT).await;
    assert_eq!((a.status, a.code().as_str()), (504, "upstream_timeout"));
}

#[tokio::test(start_paused = true)]
async fn unset_keys_are_skipped_not_retried() {
    let p = load("[settings.plan]\nretries = 3\nbackoff_ms = 1000\n");
    let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
    let env_secret = |_: &str| None;
    let fresh = || "r".to_string();
    let env = Env {
        policy: Ok(&p),
        secret: &env_secret,
        edge_region: None,
        max_response_bytes: 1 << 20,
        geoip: None,
        fresh_id: &fresh,
    };
    let req = Request {
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("authorization".into(), "Bearer sk-acme".into()),
        ],
        body: Bytes(Some(
            chat_body(r#","provider":{"order":["beta"]}"#).into_bytes(),
        )),
    };
    let started = t.now_ms();
    let reply = serve(&env, &t, req).await;
    assert_eq!(reply.status, 200);
    let failures: Vec<String> = reply
        .record
        .attempts
        .iter()
        .map(|a| {
            format!(
                "{}={}",
                a.provider,
                a.failure.as_ref().map_or("ok".into(), Failure::label)
            )
        })
        .collect();
    assert_eq!(failures, ["beta=not configured", "alpha=ok"]);
    assert_eq!(
        t.now_ms() - started,
        0,
        "no backoff was slept for a provider that cannot be called"
    );
    let line: serde_json::Value = serde_json::from_str(&reply.record.log_line(0, 0)).unwrap();
    assert!(line["attempts"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("beta_key"));
    let shown = reply
        .headers
        .iter()
        .find(|(k, _)| k == "x-meridian-failures")
        .unwrap();
    assert_eq!(shown.1, "beta=not configured");
}

#[tokio::test(start_paused = true)]
async fn streams_are_truthful_to_the_end() {
    let p = load("");
    let stream_req = chat_body(r#","stream":true"#);
    let go = |t: Fake| {
        let p = &p;
        let body = stream_req.clone();
        async move {
            let h = [
                JSON,
                ("cf-ipcountry", "DE"),
                ("authorization", "Bearer sk-acme"),
            ];
            let a = chat(p, &t, &h, &body).await;
            (a, t)
        }
    };
    // Clean: everything through [DONE], nothing after it, a reset after it is no error.
    let (a, _) = go(Fake::new(vec![(
        "alpha",
        vec![Step::Answer {
            after_ms: 0,
            status: 200,
            headers: vec![],
            chunks: vec![
                (0, Ok(EV1.as_bytes().to_vec())),
                (
                    5,
                    Ok(format!("{EV2}{DONE}data: {{\"late\":1}}\n\n").into_bytes()),
                ),
                (5, Err(Failure::Transport("connection reset".into()))),
            ],
        }],
    )]))
    .await;
    assert_eq!(a.text(), format!("{EV1}{EV2}{DONE}"));
    assert_eq!(a.record.stream_outcome, Some("done"));

    // A malformed line: the valid events before it (in the same chunk) are delivered, then the
    // error event, and no [DONE].
    let (a, _) = go(Fake::new(vec![(
        "alpha",
        vec![sse(&[
            (0, EV1),
            (0, &format!("{EV2}data: {{broken\n\n{DONE}")),
        ])],
    )]))
    .await;
    let text = a.text();
    assert!(
        text.starts_with(&format!("{EV1}{EV2}event: error\n")),
        "{text}"
    );
    assert!(!text.contains("[DONE]"));
    assert_eq!(a.record.stream_outcome, Some("upstream_stream_malformed"));

    // Cut off after the first event: an error event, never a clean end.
    let (a, _) = go(Fake::new(vec![("alpha", vec![sse(&[(0, EV1), (0, EV2)])])])).await;
    assert!(a.text().ends_with("}\n\n") && a.text().contains("upstream_stream_truncated"));

    // A first event that is an error, or garbage: nothing was sent, so the next candidate serves.
    for first in [
        "data: {\"error\":{\"message\":\"overloaded\"}}\n\n",
        "data: <html>oops\n\n",
    ] {
        let (a, t) = go(Fake::new(vec![
            ("alpha", vec![sse(&[(0, first)])]),
            ("beta", vec![sse(&[(0, EV1), (0, DONE)])]),
        ]))
        .await;
        assert_eq!(a.status, 200, "{first}");
        assert_eq!(a.header("x-meridian-provider"), Some("beta"), "{first}");
        assert_eq!(a.text(), format!("{EV1}{DONE}"), "{first}");
        assert!(a
            .header("x-meridian-failures")
            .unwrap()
            .starts_with("alpha=malformed response"));
        assert_eq!(t.sent_to(), ["alpha", "beta"]);
    }
}

#[tokio::test(start_paused = true)]
async fn the_stream_deadline_ends_a_stream_that_runs_too_long() {
    let p = load("[settings.plan]\nstream_deadline_ms = 1000\nidle_timeout_ms = 5000\n");
    let chunks: Vec<(u64, &str)> = std::iter::once((0, EV1))
        .chain(std::iter::repeat_n((300, EV2), 10))
        .collect();
    let t = Fake::new(vec![("alpha", vec![sse(&chunks)])]);
    let a = chat(
        &p,
        &t,
        &[JSON, ("cf-ipcountry", "DE")],
        &chat_body(r#","stream":true"#),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.record.stream_outcome, Some("stream_deadline_exceeded"));
    assert!(a.text().contains("stream_deadline_exceeded"));
    assert_eq!(
        a.text().matches("\"lo\"").count(),
        3,
        "events until the deadline: {}",
        a.text()
    );
    assert!(t.now_ms() <= 1000, "{}", t.now_ms());
}

#[tokio::test(start_paused = true)]
async fn hedging_starts_the_backup_only_while_no_headers_have_come() {
    let p = load("[settings.plan]\nhedge_after_ms = 100\n");
    // alpha's headers come at 50 ms and its body slowly after: no hedge.
    let slow_body = Step::Answer {
        after_ms: 50,
        status: 200,
        headers: vec![],
        chunks: vec![(
            500,
            Ok(br#"{"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#.to_vec()),
        )],
    };
    let t = Fake::new(vec![("alpha", vec![slow_body]), ("beta", vec![ok_json(0)])]);
    let a = chat(&p, &t, &ACME_DE, CHAT).await;
    assert_eq!(a.header("x-meridian-provider"), Some("alpha"));
    assert_eq!(t.sent_to(), ["alpha"], "a body being read is not hedged");
    assert_eq!(a.header("x-meridian-hedged"), None);
    // Headers late: the backup starts, answers first, and alpha's request is cancelled.
    let t = Fake::new(vec![
        ("alpha", vec![ok_json(400)]),
        ("beta", vec![ok_json(10)]),
    ]);
    let a = chat(&p, &t, &ACME_DE, CHAT).await;
    assert_eq!(a.header("x-meridian-provider"), Some("beta"));
    assert_eq!(a.header("x-meridian-hedged"), Some("true"));
    assert_eq!(t.dropped.borrow().as_slice(), ["alpha"]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_in_both_forms_with_retries_on() {
    let p = load("[settings.plan]\nretries = 1\nbackoff_ms = 10\n");
    // 08:49:37 is when the fake clock starts; the provider asks for 08:49:40: 3 s.
    for value in ["3", "Sun, 06 Nov 1994 08:49:40 GMT"] {
        let t = Fake::new(vec![("alpha", vec![status(429, Some(value)), ok_json(0)])]);
        let a = chat(&p, &t, &[JSON, ("cf-ipcountry", "DE")], CHAT).await;
        assert_eq!(a.status, 200, "{value}");
        let sent = t.sent.borrow().clone();
        assert_eq!(sent.len(), 2, "{value}");
        assert_eq!(sent[1].1 - sent[0].1, 3000, "{value}: waited as asked");
    }
    // A date in the past: retry after the backoff.
    let t = Fake::new(vec![(
        "alpha",
        vec![
            status(503, Some("Sun, 06 Nov 1994 08:00:00 GMT")),
            ok_json(0),
        ],
    )]);
    let a = chat(&p, &t, &[JSON, ("cf-ipcountry", "DE")], CHAT).await;
    assert_eq!(a.status, 200);
    let sent = t.sent.borrow().clone();
    assert_eq!(sent[1].1 - sent[0].1, 10);
}

/// Personal-data rules over the two providers: cards refused, IBANs only to `alpha` (DE),
/// emails redacted and restored.
const PII_RULES: &str = "[[rules]]\nid = \"no-cards\"\nwhen = { pii = [\"card\"] }\nrefuse = true\n\
    [[rules]]\nid = \"iban-in-de\"\nwhen = { pii = [\"iban\"] }\nrequire = { providers = [\"alpha\"] }\n\
    [[rules]]\nid = \"emails-redacted\"\nredact = [\"email\"]\nrestore = true\n";

fn pii_policy() -> Policy {
    policy::load(&(policy_text("") + PII_RULES), "api").unwrap_or_else(|e| panic!("{e}"))
}

fn prompt(text: &str, extra: &str) -> String {
    serde_json::json!({"model": "chat-model", "messages": [{"role": "user", "content": text}]})
        .to_string()
        .trim_end_matches('}')
        .to_string()
        + extra
        + "}"
}

fn answering(content: &str) -> Step {
    Step::Answer {
        after_ms: 0,
        status: 200,
        headers: vec![],
        chunks: vec![(
            0,
            Ok(serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})
                .to_string()
                .into_bytes()),
        )],
    }
}

#[tokio::test(start_paused = true)]
async fn personal_data_is_routed_redacted_restored_or_refused() {
    let p = pii_policy();
    let h = [
        JSON,
        ("authorization", "Bearer sk-acme"),
        ("cf-ipcountry", "US"),
    ];

    // An email: redacted before forwarding, restored in the answer, counted in the header.
    let t = Fake::new(vec![(
        "alpha",
        vec![answering("Sure, I wrote to [EMAIL_1].")],
    )]);
    let a = chat(&p, &t, &h, &prompt("mail jane@example.com please", "")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let sent = String::from_utf8(t.requests.borrow()[0].body.clone()).unwrap();
    assert!(sent.contains("mail [EMAIL_1] please"), "{sent}");
    assert!(!sent.contains("jane@"), "{sent}");
    assert_eq!(
        a.json()["choices"][0]["message"]["content"],
        "Sure, I wrote to jane@example.com."
    );
    assert_eq!(a.header("x-meridian-pii"), Some("email=1; redacted"));
    let line = a.record.log_line(1, 2);
    assert!(
        line.contains(
            r#""pii":{"found":{"email":1},"action":"redacted","redacted":1,"restored":true}"#
        ),
        "{line}"
    );
    assert!(!line.contains("jane@"), "{line}");

    // An IBAN: only alpha may serve (the US client could otherwise use beta first).
    let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
    let a = chat(
        &p,
        &t,
        &h,
        &prompt(
            "pay to DE89370400440532013000",
            r#","provider":{"order":["beta"]}"#,
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(t.sent_to(), ["alpha"]);
    assert_eq!(a.header("x-meridian-pii"), Some("iban=1; routed"));
    assert!(a.header("x-meridian-rules").unwrap().contains("iban-in-de"));

    // A card: 422 before any attempt, the kind named, never the value.
    let t = no_script();
    let a = chat(&p, &t, &h, &prompt("charge 4111 1111 1111 1111", "")).await;
    assert_eq!(a.status, 422, "{}", a.text());
    assert_eq!(a.code(), "personal_data_refused");
    assert!(a.text().contains("(card; rule `no-cards`)"), "{}", a.text());
    assert!(!a.text().contains("4111"), "{}", a.text());
    assert_eq!(a.header("x-meridian-pii"), Some("card=1; refused"));
    assert!(t.sent_to().is_empty());

    // Nothing found: said so.
    let t = Fake::new(vec![("beta", vec![ok_json(0)])]);
    let a = chat(&p, &t, &h, &prompt("hello", "")).await;
    assert_eq!(a.header("x-meridian-pii"), Some("none"));

    // A policy without personal-data rules scans nothing and says nothing.
    let plain = load("");
    let t = Fake::new(vec![("beta", vec![ok_json(0)])]);
    let a = chat(&plain, &t, &h, &prompt("mail jane@example.com", "")).await;
    assert_eq!(a.header("x-meridian-pii"), None);
    assert!(String::from_utf8_lossy(&t.requests.borrow()[0].body).contains("jane@example.com"));
}

#[tokio::test(start_paused = true)]
async fn a_restored_stream_gives_back_placeholders_split_across_chunks() {
    let p = pii_policy();
    let h = [
        JSON,
        ("authorization", "Bearer sk-acme"),
        ("cf-ipcountry", "US"),
    ];
    let ev = |s: &str| {
        format!(
            "data: {}\n\n",
            serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {"content": s}, "finish_reason": null}]})
        )
    };
    let fin = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
    // The placeholder arrives in three events, and the SSE bytes are split mid-line too.
    let body = format!(
        "{}{}{}{fin}{DONE}",
        ev("Wrote to [EMA"),
        ev("IL_"),
        ev("1] and [EMAIL_1].")
    );
    let (a1, a2) = body.split_at(body.len() / 2);
    let t = Fake::new(vec![("alpha", vec![sse(&[(0, a1), (3, a2)])])]);
    let a = chat(
        &p,
        &t,
        &h,
        &prompt(
            "mail jane@example.com",
            r#","stream":true,"provider":{"order":["alpha"]}"#,
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let text = a.text();
    let mut content = String::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        content.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
    }
    assert_eq!(content, "Wrote to jane@example.com and jane@example.com.");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("[EMAIL"), "{text}");
    assert_eq!(a.record.stream_outcome, Some("done"));
}

/// `claude` (Anthropic, EU, key `claude_key`), `azure-eu` (Azure OpenAI, key `azure_key`) and
/// `alpha` (OpenAI wire), all serving `chat-model`, tried in that order.
fn wires_policy() -> Policy {
    let text = "version = 1\n[settings]\nallow_anonymous = \"paid\"\n\
        [[providers]]\nid = \"claude\"\nkind = \"anthropic\"\nbase_url = \"https://claude/v1\"\nkey_secret = \"claude_key\"\nlocation = \"eu\"\nmax_tokens = 1000\nmodels = { \"chat-model\" = \"claude-sonnet-4-5\" }\n\
        [[providers]]\nid = \"azure-eu\"\nkind = \"azure\"\nbase_url = \"https://azure\"\nkey_secret = \"azure_key\"\napi_version = \"2024-10-21\"\nlocation = \"SE\"\nmodels = { \"chat-model\" = \"gpt4o-prod\" }\n\
        [[providers]]\nid = \"alpha\"\nbase_url = \"http://alpha/v1\"\nlocation = \"DE\"\nmodels = { \"chat-model\" = \"a-m\" }\n\
        [[rules]]\nid = \"order\"\nprefer = { order = [\"claude\", \"azure-eu\", \"alpha\"] }\n";
    policy::load(text, "wires").unwrap_or_else(|e| panic!("{e}"))
}

/// A request through `serve` on the wires policy, with the providers' keys set.
async fn wires_serve(t: &Fake, path: &str, headers: &[(&str, &str)], body: String) -> Answer {
    let secret = |name: &str| match name {
        "claude_key" => Some("sk-ant-operator".to_string()),
        "azure_key" => Some("azure-operator-key".to_string()),
        _ => None,
    };
    let p = wires_policy();
    call_with(Ok(&p), &secret, t, "POST", path, headers, &body).await
}

async fn wires_call(t: &Fake, body: &str) -> Answer {
    let h = [JSON, ("authorization", "Bearer sk-client")];
    wires_serve(t, "/v1/chat/completions", &h, body.to_string()).await
}

fn answer(status: u16, body: &str) -> Step {
    Step::Answer {
        after_ms: 0,
        status,
        headers: vec![],
        chunks: vec![(0, Ok(body.as_bytes().to_vec()))],
    }
}

#[tokio::test(start_paused = true)]
async fn anthropic_providers_get_their_own_wire_and_answer_in_openai_shape() {
    let msg = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Bonjour"}],"stop_reason":"end_turn","usage":{"input_tokens":9,"output_tokens":3}}"#;
    let t = Fake::new(vec![("claude", vec![answer(200, msg)])]);
    let a = wires_call(&t, r#"{"model":"chat-model","messages":[{"role":"system","content":"Be kind."},{"role":"user","content":"Hi"}]}"#).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let sent = t.requests.borrow()[0].clone();
    assert_eq!(sent.url, "https://claude/v1/messages");
    let h = |k: &str| sent.header(k);
    assert_eq!(h("x-api-key"), Some("sk-ant-operator"));
    assert_eq!(h("anthropic-version"), Some("2023-06-01"));
    assert_eq!(h("authorization"), None, "no client credential, no bearer");
    let b: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        b,
        serde_json::json!({"model": "claude-sonnet-4-5", "system": "Be kind.", "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "max_tokens": 1000})
    );
    let v = a.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "Bonjour");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["total_tokens"], 12);
    assert_eq!(a.header("x-meridian-provider"), Some("claude"));

    // A stream, translated as it arrives, ends with [DONE] after message_stop.
    let events = [
        r#"{"type":"message_start","message":{"id":"msg_2","model":"claude-sonnet-4-5","usage":{"input_tokens":4,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo"}}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}"#,
        r#"{"type":"message_stop"}"#,
    ];
    let sse_text: String = events
        .iter()
        .map(|e| format!("event: x\ndata: {e}\n\n"))
        .collect();
    let (a1, a2) = sse_text.split_at(sse_text.len() / 3);
    let t = Fake::new(vec![("claude", vec![sse(&[(0, a1), (2, a2)])])]);
    let a = wires_call(&t, r#"{"model":"chat-model","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hi"}]}"#).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let text = a.text();
    let mut content = String::new();
    let mut usage = serde_json::Value::Null;
    for d in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if d == "[DONE]" {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(d).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        content.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        if !v["usage"].is_null() {
            usage = v["usage"].clone();
        }
    }
    assert_eq!(content, "Hello");
    assert_eq!(usage["completion_tokens"], 2);
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(a.record.stream_outcome, Some("done"));
    assert_eq!(a.record.usage.map(|u| u.total_tokens), Some(6));
}

#[tokio::test(start_paused = true)]
async fn an_overloaded_anthropic_provider_falls_back_across_wires() {
    // 529 before the first byte: the next candidate, Azure, serves; the client sees one answer.
    let t = Fake::new(vec![
        (
            "claude",
            vec![answer(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )],
        ),
        (
            "azure",
            vec![answer(
                200,
                r#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"from azure"},"finish_reason":"stop"}]}"#,
            )],
        ),
    ]);
    let a = wires_call(
        &t,
        r#"{"model":"chat-model","messages":[{"role":"user","content":"Hi"}]}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["choices"][0]["message"]["content"], "from azure");
    assert_eq!(a.header("x-meridian-failures"), Some("claude=status 529"));
    let sent = t.requests.borrow()[1].clone();
    assert_eq!(
        sent.url,
        "https://azure/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    );
    let h = |k: &str| sent.header(k);
    assert_eq!(h("api-key"), Some("azure-operator-key"));
    assert_eq!(h("authorization"), None);

    // A stream whose first Anthropic event is an error falls back too.
    let err = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let ok =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"az\"}}]}\n\ndata: [DONE]\n\n";
    let t = Fake::new(vec![
        ("claude", vec![sse(&[(0, err)])]),
        ("azure", vec![sse(&[(0, ok)])]),
    ]);
    let a = wires_call(
        &t,
        r#"{"model":"chat-model","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#,
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-meridian-provider"), Some("azure-eu"));
    assert!(a.text().contains("\"az\""), "{}", a.text());
}

#[tokio::test(start_paused = true)]
async fn a_field_anthropic_cannot_take_is_a_400_when_no_provider_can() {
    // `logprobs`: Anthropic cannot; Azure and alpha can, so they serve.
    let t = Fake::new(vec![("azure", vec![ok_json(0)])]);
    let a = wires_call(
        &t,
        r#"{"model":"chat-model","logprobs":true,"messages":[{"role":"user","content":"Hi"}]}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.header("x-meridian-failures"),
        Some("claude=cannot take `logprobs`")
    );
    // Only Anthropic allowed: a 400 naming the field.
    let t = no_script();
    let a = wires_call(&t, r#"{"model":"chat-model","logprobs":true,"provider":{"only":["claude"]},"messages":[{"role":"user","content":"Hi"}]}"#).await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(a.code(), "unsupported_parameter");
    assert!(
        a.text().contains("`claude` cannot take `logprobs`"),
        "{}",
        a.text()
    );
    assert!(t.sent_to().is_empty());
}

async fn messages_call(t: &Fake, body: &str, only: &str) -> Answer {
    let body =
        body.trim_end_matches('}').to_string() + &format!(r#","provider":{{"only":["{only}"]}}}}"#);
    let h = [
        JSON,
        ("x-api-key", "sk-client"),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "prompt-caching-2024-07-31"),
    ];
    wires_serve(t, "/v1/messages", &h, body).await
}

/// Anthropic event names in a stream, in order.
fn event_names(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn anthropic_clients_are_served_by_anthropic_and_openai_wire_providers() {
    let req = r#"{"model":"chat-model","max_tokens":50,"system":"Be kind.","messages":[{"role":"user","content":"Hi"}]}"#;
    // To an Anthropic provider: passed through, model rewritten, key and versions set.
    let msg = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"thinking","thinking":"hm","signature":"s"},{"type":"text","text":"Hello"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":3}}"#;
    let t = Fake::new(vec![("claude", vec![answer(200, msg)])]);
    let a = messages_call(&t, req, "claude").await;
    assert_eq!(a.status, 200, "{}", a.text());
    let sent = t.requests.borrow()[0].clone();
    assert_eq!(sent.url, "https://claude/v1/messages");
    let h = |k: &str| sent.header(k);
    assert_eq!(h("x-api-key"), Some("sk-ant-operator"));
    assert_eq!(h("anthropic-beta"), Some("prompt-caching-2024-07-31"));
    let b: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        b,
        serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 50, "system": "Be kind.", "messages": [{"role": "user", "content": "Hi"}]})
    );
    assert_eq!(
        a.json()["content"][0]["type"],
        "thinking",
        "passed through whole"
    );
    assert_eq!(a.record.usage.map(|u| u.total_tokens), Some(12));

    // To an OpenAI-wire provider: translated both ways.
    let t = Fake::new(vec![(
        "alpha",
        vec![answer(
            200,
            r#"{"id":"c","object":"chat.completion","model":"a-m","choices":[{"index":0,"message":{"role":"assistant","content":"Hallo"},"finish_reason":"length"}],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}"#,
        )],
    )]);
    let a = messages_call(&t, req, "alpha").await;
    assert_eq!(a.status, 200, "{}", a.text());
    let sent: serde_json::Value = serde_json::from_slice(&t.requests.borrow()[0].body).unwrap();
    assert_eq!(
        t.requests.borrow()[0].url,
        "http://alpha/v1/chat/completions"
    );
    assert_eq!(
        sent["messages"],
        serde_json::json!([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}])
    );
    let v = a.json();
    assert_eq!(v["type"], "message");
    assert_eq!(
        v["content"],
        serde_json::json!([{"type": "text", "text": "Hallo"}])
    );
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 2);

    // A stream from an OpenAI-wire provider reaches the Anthropic client as Anthropic events.
    let ok = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\ndata: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hal\"}}]}\n\ndata: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    let t = Fake::new(vec![("alpha", vec![sse(&[(0, ok)])])]);
    let stream_req = req.replace("\"max_tokens\":50", "\"max_tokens\":50,\"stream\":true");
    let a = messages_call(&t, &stream_req, "alpha").await;
    assert_eq!(a.status, 200, "{}", a.text());
    let sent: serde_json::Value = serde_json::from_slice(&t.requests.borrow()[0].body).unwrap();
    assert_eq!(
        sent["stream_options"],
        serde_json::json!({"include_usage": true})
    );
    assert_eq!(
        event_names(&a.text()),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );

    // And from an Anthropic provider, failing after the first byte: Anthropic's error event,
    // no message_stop.
    let events = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":1}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n";
    let t = Fake::new(vec![(
        "claude",
        vec![Step::Answer {
            after_ms: 0,
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            chunks: vec![
                (0, Ok(events.as_bytes().to_vec())),
                (1, Err(Failure::Transport("reset".into()))),
            ],
        }],
    )]);
    let a = messages_call(&t, &stream_req, "claude").await;
    let text = a.text();
    let names = event_names(&text);
    assert_eq!(names.last(), Some(&"error"), "{text}");
    assert!(!names.contains(&"message_stop"), "{text}");
    assert!(text.contains("\"text\":\"Hel\""), "{text}");
}

#[tokio::test(start_paused = true)]
async fn anthropic_clients_get_errors_in_anthropics_shape() {
    // Unknown model: 404 not_found_error.
    let t = no_script();
    let a = messages_call(
        &t,
        r#"{"model":"nope","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
        "alpha",
    )
    .await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["type"], "error");
    assert_eq!(a.json()["error"]["type"], "not_found_error");
    // A field no OpenAI-wire provider can take: 400 invalid_request_error naming it.
    let a = messages_call(&t, r#"{"model":"chat-model","max_tokens":5,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[{"role":"user","content":"x"}]}"#, "alpha").await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(a.json()["error"]["type"], "invalid_request_error");
    assert!(a.text().contains("`thinking`"), "{}", a.text());
    // Token counting is refused clearly.
    let p = wires_policy();
    let a = call(&p, &t, "POST", "/v1/messages/count_tokens", &[JSON], "{}").await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["error"]["type"], "not_found_error");
    assert!(a.text().contains("does not count tokens"), "{}", a.text());
}

#[tokio::test(start_paused = true)]
async fn an_anthropic_client_falls_back_from_anthropic_to_an_openai_engine_in_one_stream() {
    // The Anthropic provider is overloaded before the first byte; the OpenAI-wire engine serves,
    // and the client reads one coherent Anthropic stream.
    let ok = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\ndata: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"from the engine\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    let t = Fake::new(vec![
        (
            "claude",
            vec![answer(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )],
        ),
        ("alpha", vec![sse(&[(0, ok)])]),
    ]);
    let req = r#"{"model":"chat-model","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
    let a = messages_call(&t, req, r#"claude","alpha"#).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(t.sent_to(), ["claude", "alpha"]);
    assert_eq!(a.header("x-meridian-provider"), Some("alpha"));
    let text = a.text();
    assert_eq!(
        event_names(&text),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ],
        "{text}"
    );
    assert!(text.contains("\"text\":\"from the engine\""), "{text}");
    // The Anthropic provider got the request as the client sent it; the engine got chat.
    assert_eq!(t.requests.borrow()[0].url, "https://claude/v1/messages");
    assert_eq!(
        t.requests.borrow()[1].url,
        "http://alpha/v1/chat/completions"
    );
}

#[tokio::test(start_paused = true)]
async fn an_anthropic_stream_for_an_anthropic_client_passes_through_as_it_came() {
    let upstream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_t\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"usage\":{\"input_tokens\":7,\"cache_read_input_tokens\":3,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me think\"}}\n\n\
event: ping\ndata: {\"type\":\"ping\"}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":12}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let (a1, a2) = upstream.split_at(97);
    let t = Fake::new(vec![("claude", vec![sse(&[(0, a1), (2, a2)])])]);
    let req = r#"{"model":"chat-model","max_tokens":50,"stream":true,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[{"role":"user","content":"Hi"}]}"#;
    let a = messages_call(&t, req, "claude").await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.text(), upstream, "byte for byte");
    let sent: serde_json::Value = serde_json::from_slice(&t.requests.borrow()[0].body).unwrap();
    assert_eq!(
        sent["thinking"]["budget_tokens"], 1024,
        "the client's own fields go along"
    );
    assert_eq!(a.record.stream_outcome, Some("done"));
    let u = a.record.usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.cached_tokens, u.completion_tokens),
        (10, 3, 12)
    );
}

#[tokio::test(start_paused = true)]
async fn the_last_event_is_ended_even_when_its_blank_line_comes_later() {
    // `data: [DONE]\n` and its blank line in separate chunks: Meridian stops reading at [DONE]
    // and ends the event itself, so clients dispatch it.
    let t = Fake::new(vec![(
        "alpha",
        vec![sse(&[(0, EV1), (1, "data: [DONE]\n"), (1, "\n")])],
    )]);
    let a = chat(&load(""), &t, &ACME_DE, &chat_body(r#","stream":true"#)).await;
    assert!(a.text().ends_with("data: [DONE]\n\n"), "{:?}", a.text());
    let t = Fake::new(vec![("alpha", vec![sse(&[(0, EV1), (1, DONE)])])]);
    let a = chat(&load(""), &t, &ACME_DE, &chat_body(r#","stream":true"#)).await;
    assert!(
        a.text().ends_with("data: [DONE]\n\n") && !a.text().ends_with("\n\n\n"),
        "{:?}",
        a.text()
    );
}

#[test]
fn a_whole_body_is_framed_by_its_length_except_a_204() {
    let reply = |status: u16| Reply::<crate::testing::FakeBody> {
        status,
        headers: vec![],
        body: Body::Full(b"{\"ok\":true}".to_vec()),
        record: Record::default(),
    };
    let mut ok = reply(200);
    ok.frame_by_length();
    assert_eq!(
        ok.headers,
        [("content-length".to_string(), "11".to_string())]
    );
    let mut empty = reply(204);
    empty.frame_by_length();
    assert!(empty.headers.is_empty());
}

mod boundary;
