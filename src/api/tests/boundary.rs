//! What a request may ask a provider to do: unknown fields, capabilities granted per provider
//! and narrowed by rules, zero retention never forwarding `store: true`, and translated streams
//! bounded like passed-through ones.

use super::*;

/// `open` (OpenAI wire, US, zero retention), `azure-eu` (Azure, SE, granted `data_sources`),
/// `claude` (Anthropic, IE, granted `web_search` and `mcp`), `engine` (self-hosted, DE) and
/// `keeper` (OpenAI wire, US, retains, granted `store`) all serve `m`. `extra` goes into
/// `[settings]`'s neighbourhood (rules, request settings).
fn boundary_policy(extra: &str) -> Policy {
    let text = format!(
        "version = 1\n[settings]\nallow_anonymous = \"paid\"\n{extra}\n\
        [[providers]]\nid = \"open\"\nbase_url = \"https://open/v1\"\nlocation = \"US\"\nretention_days = 0\nzdr = true\nmodels = {{ m = \"o-m\" }}\n\
        [[providers]]\nid = \"keeper\"\nbase_url = \"https://keeper/v1\"\nlocation = \"US\"\ncapabilities = [\"store\", \"remote_media\"]\nmodels = {{ m = \"k-m\" }}\n\
        [[providers]]\nid = \"azure-eu\"\nkind = \"azure\"\nbase_url = \"https://azure-eu\"\nlocation = \"SE\"\ncapabilities = [\"data_sources\"]\nmodels = {{ m = \"dep\" }}\n\
        [[providers]]\nid = \"claude\"\nkind = \"anthropic\"\nbase_url = \"https://claude/v1\"\nlocation = \"IE\"\ncapabilities = [\"web_search\", \"mcp\"]\nmodels = {{ m = \"claude-x\" }}\n\
        [[providers]]\nid = \"engine\"\nbase_url = \"http://engine/v1\"\nlocation = \"DE\"\nself_hosted = true\nmodels = {{ m = \"llama\" }}\n"
    );
    policy::load(&text, "boundary").unwrap_or_else(|e| panic!("{e}"))
}

fn m_body(extra: &str) -> String {
    chat_body(extra).replace("chat-model", "m")
}

/// `POST /v1/chat/completions`.
async fn chat_to(p: &Policy, t: &Fake, headers: &[(&str, &str)], body: &str) -> Answer {
    post(p, t, "/v1/chat/completions", headers, body).await
}

async fn post(p: &Policy, t: &Fake, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    call(p, t, "POST", path, headers, body).await
}

fn sent_json(t: &Fake, i: usize) -> serde_json::Value {
    serde_json::from_slice(&t.requests.borrow()[i].body).unwrap()
}

fn reasons(a: &Answer) -> String {
    a.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(start_paused = true)]
async fn an_unknown_field_is_refused_by_name_or_dropped_when_the_policy_says_so() {
    let p = boundary_policy("[[rules]]\nid = \"o\"\nprefer = { order = [\"open\"] }\n");
    let t = no_script();
    let a = chat_to(&p, &t, &[JSON], &m_body(r#","frobnicate":1"#)).await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(a.code(), "unknown_parameter");
    let m = reasons(&a);
    assert!(
        m.contains("`frobnicate`") && m.contains("unknown_fields = \"drop\""),
        "{m}"
    );
    // Nested: an extra key inside a message is a field too.
    let a = chat_to(
        &p,
        &t,
        &[JSON],
        r#"{"model":"m","messages":[{"role":"user","content":"hi","x_secret":1}]}"#,
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(
        reasons(&a).contains("`messages[0].x_secret`"),
        "{}",
        reasons(&a)
    );
    assert!(t.requests.borrow().is_empty(), "nothing was forwarded");

    // Ordinary fields pass unchanged.
    let t = Fake::new(vec![("open", vec![ok_json(0)])]);
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.2,"seed":7,"top_k":5,"response_format":{"type":"json_object"},"stream_options":null,"user":"u1"}"#;
    let a = chat_to(&p, &t, &[JSON], body).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let sent = sent_json(&t, 0);
    for k in ["temperature", "seed", "top_k", "response_format", "user"] {
        assert!(sent.get(k).is_some(), "{k} passes: {sent}");
    }

    // With `unknown_fields = "drop"` the field is removed and named in the audit.
    let p = boundary_policy("[settings.request]\nunknown_fields = \"drop\"\n[[rules]]\nid = \"o\"\nprefer = { order = [\"open\"] }\n");
    let t = Fake::new(vec![("open", vec![ok_json(0)])]);
    let a = chat_to(
        &p,
        &t,
        &[JSON],
        r#"{"model":"m","messages":[{"role":"user","content":"hi","x":1}],"frobnicate":1}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let sent = sent_json(&t, 0);
    assert!(
        sent.get("frobnicate").is_none() && sent["messages"][0].get("x").is_none(),
        "{sent}"
    );
    assert_eq!(
        a.header("x-meridian-dropped-fields"),
        Some("messages[0].x, frobnicate")
    );
    let line: serde_json::Value = serde_json::from_str(&a.record.log_line(0, 0)).unwrap();
    assert_eq!(
        line["dropped_fields"],
        serde_json::json!(["messages[0].x", "frobnicate"])
    );
}

#[tokio::test(start_paused = true)]
async fn store_never_reaches_a_zero_retention_route_and_needs_a_grant_elsewhere() {
    let p = boundary_policy("");
    // `x-meridian-privacy: zdr` with `store: true`: every provider is out, and the answer says
    // why, before anything is sent.
    let t = no_script();
    let zdr = [JSON, ("x-meridian-privacy", "zdr")];
    let a = chat_to(&p, &t, &zdr, &m_body(r#","store":true"#)).await;
    assert_eq!(a.status, 403, "{}", a.text());
    assert_eq!(a.code(), "capability_not_granted");
    let m = reasons(&a);
    assert!(
        m.contains("zero data retention") && m.contains("`store: true`"),
        "{m}"
    );
    assert!(t.requests.borrow().is_empty());

    // Without zdr, only the provider granted `store` may take it; the others are excluded with
    // the grant they lack, and the audit names the capability.
    let t = Fake::new(vec![("keeper", vec![ok_json(0)])]);
    let a = chat_to(&p, &t, &[JSON], &m_body(r#","store":true"#)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-meridian-provider"), Some("keeper"));
    assert_eq!(a.header("x-meridian-capabilities"), Some("store"));
    assert_eq!(sent_json(&t, 0)["store"], true);
    assert!(a.record.excluded.contains(&"open".to_string()));

    // `store: false` is an ordinary field.
    let t = Fake::new(vec![("open", vec![ok_json(0)])]);
    let a = chat_to(&p, &t, &zdr, &m_body(r#","store":false"#)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-meridian-capabilities"), None);

    // A rule can withdraw what a provider is granted.
    let p = boundary_policy("[[rules]]\nid = \"no-retention\"\nrequire = { capabilities = [] }\n");
    let a = post(
        &p,
        &no_script(),
        "/v1/chat/completions",
        &[JSON],
        &m_body(r#","store":true"#),
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.text());
    assert!(
        reasons(&a).contains("rule `no-retention` withdraws `store`"),
        "{}",
        reasons(&a)
    );
}

#[tokio::test(start_paused = true)]
async fn azure_data_sources_only_where_granted_and_only_on_the_azure_wire() {
    let p = boundary_policy("");
    let ds = r#","data_sources":[{"type":"azure_search","parameters":{"endpoint":"https://s","index_name":"i","authentication":{"type":"system_assigned_managed_identity"}}}]"#;
    let t = Fake::new(vec![("azure-eu", vec![ok_json(0)])]);
    let a = chat_to(&p, &t, &[JSON], &m_body(ds)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-meridian-provider"), Some("azure-eu"));
    assert!(sent_json(&t, 0)["data_sources"].is_array());
    // Without the grant, no provider is left: a 403 that names the field and the grant.
    let p = boundary_policy(
        "[[rules]]\nid = \"plain\"\nrequire = { capabilities = [\"remote_media\"] }\n",
    );
    let a = post(
        &p,
        &no_script(),
        "/v1/chat/completions",
        &[JSON],
        &m_body(ds),
    )
    .await;
    assert_eq!(a.status, 403);
    let m = reasons(&a);
    assert!(
        m.contains("`data_sources`") && m.contains("`open`: request uses `data_sources`"),
        "{m}"
    );
    assert!(
        m.contains("cannot carry"),
        "the openai wire has no data_sources: {m}"
    );
}

#[tokio::test(start_paused = true)]
async fn anthropic_server_tools_mcp_and_betas_need_the_providers_grant() {
    let h = [JSON, ("x-api-key", "ignored")];
    let mcp = r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"mcp_servers":[{"type":"url","url":"https://evil.example/mcp","name":"x"}]}"#;
    let msg = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}"#;
    let p = boundary_policy("");
    let t = Fake::new(vec![("claude", vec![answer(200, msg)])]);
    let beta = [JSON, ("anthropic-beta", "mcp-client-2025-04-04")];
    let a = post(&p, &t, "/v1/messages", &beta, mcp).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-meridian-capabilities"), Some("mcp"));
    assert_eq!(
        t.requests.borrow()[0].header("anthropic-beta"),
        Some("mcp-client-2025-04-04")
    );

    // A web fetch tool is not granted to `claude`, and no other wire can carry it: refused in
    // Anthropic's error shape, naming the tool.
    let fetch = r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"web_fetch_20250910","name":"web_fetch"}]}"#;
    let a = post(&p, &no_script(), "/v1/messages", &h, fetch).await;
    assert_eq!(a.status, 403, "{}", a.text());
    let v = a.json();
    assert_eq!(v["type"], "error");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("`web_fetch`") && m.contains("a web fetch tool"),
        "{m}"
    );

    // A beta that is not on the provider's list excludes it.
    let odd = [JSON, ("anthropic-beta", "some-new-beta-2026-01-01")];
    let t = no_script();
    let a = post(&p, &t, "/v1/messages", &odd, r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#).await;
    assert_eq!(a.status, 403, "{}", a.text());
    assert!(a.text().contains("anthropic_beta"), "{}", a.text());
}

#[tokio::test(start_paused = true)]
async fn a_self_hosted_engine_never_fetches_a_url_the_caller_names() {
    let p = boundary_policy("[[rules]]\nid = \"home\"\nrequire = { self_hosted = true }\n");
    let img = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"what is this"},{"type":"image_url","image_url":{"url":"http://10.0.0.5/admin"}}]}]}"#;
    let t = no_script();
    let a = chat_to(&p, &t, &[JSON], img).await;
    assert_eq!(a.status, 403, "{}", a.text());
    assert!(reasons(&a).contains("`remote_media`"), "{}", reasons(&a));
    assert!(t.requests.borrow().is_empty());
    // The same image inline (a data URL) is the client's own bytes: served.
    let t = Fake::new(vec![("engine", vec![ok_json(0)])]);
    let inline = img.replace(
        "http://10.0.0.5/admin",
        "data:image/png;base64,iVBORw0KGgo=",
    );
    let a = chat_to(&p, &t, &[JSON], &inline).await;
    assert_eq!(a.status, 200, "{}", a.text());
}

#[tokio::test(start_paused = true)]
async fn a_translated_stream_of_pings_ends_at_the_stream_deadline() {
    let p = boundary_policy("[settings.plan]\nstream_deadline_ms = 1500\nidle_timeout_ms = 5000\n[[rules]]\nid = \"c\"\nprefer = { order = [\"claude\"] }\n");
    let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-x\",\"usage\":{\"input_tokens\":1,\"output_tokens\":0}}}\n\n";
    let first = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n";
    let ping = "event: ping\ndata: {\"type\":\"ping\"}\n\n";
    let mut chunks = vec![(0, start), (0, first)];
    chunks.extend(std::iter::repeat_n((100, ping), 120)); // 12 s of pings
    let t = Fake::new(vec![("claude", vec![sse(&chunks)])]);
    let a = chat_to(&p, &t, &[JSON], &m_body(r#","stream":true"#)).await;
    assert_eq!(a.status, 200);
    let text = a.text();
    assert!(text.contains("\"Hi\""), "{text}");
    assert!(!text.contains("[DONE]"), "never a clean end: {text}");
    assert_eq!(
        a.record.stream_outcome,
        Some("stream_deadline_exceeded"),
        "{text}"
    );
    assert!(
        t.now_ms() <= 1600,
        "ended at {} ms, not after the pings",
        t.now_ms()
    );
}

#[tokio::test(start_paused = true)]
async fn a_translated_stream_that_only_pings_never_reaches_its_first_byte() {
    let p = boundary_policy("[settings.plan]\nfirst_byte_timeout_ms = 1000\n[[rules]]\nid = \"c\"\nprefer = { order = [\"claude\", \"keeper\"] }\n");
    let ping = "event: ping\ndata: {\"type\":\"ping\"}\n\n";
    let pings: Vec<(u64, &str)> = std::iter::repeat_n((100, ping), 100).collect();
    let ok = "data: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\ndata: [DONE]\n\n";
    let t = Fake::new(vec![
        ("claude", vec![sse(&pings)]),
        ("keeper", vec![sse(&[(0, ok)])]),
    ]);
    let a = chat_to(&p, &t, &[JSON], &m_body(r#","stream":true"#)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.header("x-meridian-provider"),
        Some("keeper"),
        "fell back before the first byte"
    );
    assert!(
        a.header("x-meridian-failures")
            .unwrap_or_default()
            .contains("claude=timeout"),
        "{:?}",
        a.headers
    );
}

/// The oracle for the property below, written from OpenAI's and Anthropic's API references
/// independently of `wire::fields`: the top-level fields each upstream may receive for a chat
/// request, and the keys of one chat message.
mod oracle {
    pub const OPENAI_CHAT: &[&str] = &[
        "model",
        "messages",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
        "data_sources",
        "top_k",
        "min_p",
        "repetition_penalty",
    ];
    pub const ANTHROPIC_MESSAGES: &[&str] = &[
        "model",
        "messages",
        "system",
        "max_tokens",
        "temperature",
        "top_p",
        "stop_sequences",
        "stream",
        "tools",
        "tool_choice",
        "metadata",
    ];
    pub const CHAT_MESSAGE: &[&str] = &[
        "role",
        "content",
        "name",
        "tool_calls",
        "tool_call_id",
        "function_call",
        "refusal",
        "audio",
        "reasoning",
        "reasoning_content",
    ];
    pub const ANTHROPIC_MESSAGE: &[&str] = &["role", "content"];
}

mod property {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn extra_key() -> impl Strategy<Value = String> {
        "x_[a-z]{1,8}"
    }

    /// A chat request with some ordinary fields, extra top-level fields and extra keys inside
    /// its messages.
    fn request() -> impl Strategy<Value = (Value, bool)> {
        (
            proptest::collection::vec(extra_key(), 0..3),
            proptest::collection::vec((0usize..3, extra_key()), 0..3),
            proptest::option::of(0.0f64..2.0),
            proptest::option::of(1u64..100),
            any::<bool>(),
        )
            .prop_map(|(top, nested, temperature, max_tokens, user)| {
                let mut messages = vec![
                    json!({"role": "system", "content": "be brief"}),
                    json!({"role": "user", "content": "hi"}),
                    json!({"role": "assistant", "content": "hello"}),
                ];
                for (i, k) in &nested {
                    messages[*i][k.as_str()] = json!(1);
                }
                let mut b = json!({"model": "m", "messages": messages});
                if let Some(t) = temperature {
                    b["temperature"] = json!(t);
                }
                if let Some(n) = max_tokens {
                    b["max_tokens"] = json!(n);
                }
                if user {
                    b["user"] = json!("u");
                }
                for k in &top {
                    b[k.as_str()] = json!({"nested": [1, 2]});
                }
                (b, !top.is_empty() || !nested.is_empty())
            })
    }

    fn keys_within(v: &Value, allowed: &[&str]) -> Result<(), String> {
        match v.as_object() {
            Some(o) => match o.keys().find(|k| !allowed.contains(&k.as_str())) {
                Some(k) => Err(format!("`{k}` is not in the table: {v}")),
                None => Ok(()),
            },
            None => Err(format!("not an object: {v}")),
        }
    }

    fn run(policy: &Policy, provider: &'static str, body: &Value) -> (Answer, Option<Value>) {
        super::super::paused_runtime().block_on(async {
            let reply = if provider == "claude" {
                r#"{"id":"msg_1","type":"message","role":"assistant","model":"c","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}"#
            } else {
                r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#
            };
            let t = Fake::new(vec![(provider, vec![answer(200, reply)])]);
            let a = chat_to(policy, &t, &[JSON], &body.to_string()).await;
            let sent = t.requests.borrow().first().map(|r| serde_json::from_slice(&r.body).unwrap());
            (a, sent)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256).min(2000)
        ))]

        /// Whatever extra fields a request carries, at the top or inside its messages, each
        /// wire's upstream receives only fields of that wire's table; with the default
        /// `unknown_fields = "refuse"`, a request with an extra field reaches no upstream.
        #[test]
        fn each_upstream_receives_only_fields_of_its_wires_table((body, extra) in request()) {
            for provider in ["open", "azure-eu", "claude"] {
                let rules = format!("[settings.request]\nunknown_fields = \"drop\"\n[[rules]]\nid = \"one\"\nrequire = {{ providers = [\"{provider}\"] }}\n");
                let p = boundary_policy(&rules);
                let (a, sent) = run(&p, provider, &body);
                prop_assert_eq!(a.status, 200, "{}: {}", provider, a.text());
                let sent = sent.unwrap();
                let (top, message) = if provider == "claude" {
                    (oracle::ANTHROPIC_MESSAGES, oracle::ANTHROPIC_MESSAGE)
                } else {
                    (oracle::OPENAI_CHAT, oracle::CHAT_MESSAGE)
                };
                prop_assert!(keys_within(&sent, top).is_ok(), "{}: {:?}", provider, keys_within(&sent, top));
                for m in sent["messages"].as_array().unwrap() {
                    prop_assert!(keys_within(m, message).is_ok(), "{}: {:?}", provider, keys_within(m, message));
                }
                // What the client sent and the table knows arrives unchanged (OpenAI wires).
                if provider != "claude" {
                    for k in ["temperature", "max_tokens", "user"] {
                        prop_assert_eq!(&sent.get(k), &body.get(k), "{}", k);
                    }
                }
            }
            let p = boundary_policy("[[rules]]\nid = \"one\"\nrequire = { providers = [\"open\"] }\n");
            let (a, sent) = run(&p, "open", &body);
            if extra {
                prop_assert_eq!(a.status, 400, "{}", a.text());
                prop_assert!(sent.is_none());
            } else {
                prop_assert_eq!(a.status, 200, "{}", a.text());
            }
        }
    }
}

/// An environment with a policy, secrets and ids, and nothing else (no store, no IP table).
fn bare_env<'a>(
    p: &'a Policy,
    secret: &'a dyn Fn(&str) -> Option<String>,
    fresh: &'a dyn Fn() -> String,
) -> Env<'a> {
    Env {
        policy: Ok(p),
        secret,
        edge_region: None,
        max_response_bytes: 1 << 20,
        geoip: None,
        fresh_id: fresh,
        store: None,
        host_span: None,
    }
}

/// A body that records whether anyone read it.
struct Watched(std::rc::Rc<std::cell::Cell<bool>>);

impl RequestBody for Watched {
    async fn next_chunk(&mut self) -> Option<Result<Vec<u8>, String>> {
        self.0.set(true);
        None
    }
}

#[tokio::test(start_paused = true)]
async fn a_caller_without_a_valid_key_is_refused_before_its_body_is_read() {
    let text = policy_text("").replace("allow_anonymous = true", "allow_anonymous = false");
    let p = policy::load(&text, "api").unwrap();
    let t = no_script();
    let fresh = || "id".to_string();
    let secret = |_: &str| None;
    let env = bare_env(&p, &secret, &fresh);
    for (auth, status) in [("Bearer sk-wrong", 401), ("Bearer sk-acme", 400)] {
        let read = std::rc::Rc::new(std::cell::Cell::new(false));
        let req = Request {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("authorization".into(), auth.into()),
            ],
            body: Watched(read.clone()),
        };
        let reply = serve(&env, &t, req).await;
        assert_eq!(reply.status, status, "{auth}");
        // A valid key's (empty) body is read and found wanting; a bad key's never is.
        assert_eq!(read.get(), status != 401, "{auth}");
    }
}

/// The explain endpoint is the operator's: without the admin key its body is never read.
#[tokio::test(start_paused = true)]
async fn explain_checks_the_admin_key_before_reading_the_body() {
    let p = policy::load(&policy_text(""), "api").unwrap();
    let t = no_script();
    let fresh = || "id".to_string();
    let secret = |name: &str| (name == "admin_key").then(|| "admin-secret-0001".to_string());
    let env = bare_env(&p, &secret, &fresh);
    for (key, status) in [
        (None, 401),
        (Some("wrong"), 401),
        (Some("admin-secret-0001"), 400),
    ] {
        let read = std::rc::Rc::new(std::cell::Cell::new(false));
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(k) = key {
            headers.push(("x-meridian-admin-key".into(), k.into()));
        }
        let req = Request {
            method: "POST".into(),
            path: "/v1/route/explain".into(),
            headers,
            body: Watched(read.clone()),
        };
        let reply = serve(&env, &t, req).await;
        assert_eq!(reply.status, status, "{key:?}");
        // The right key's (empty) body is read and found wanting; without it, never read.
        assert_eq!(read.get(), status == 400, "{key:?}");
    }
}

/// A body in parts that counts how often it is asked for the next one.
struct Parts(
    std::collections::VecDeque<Vec<u8>>,
    std::rc::Rc<std::cell::Cell<u32>>,
);

impl RequestBody for Parts {
    async fn next_chunk(&mut self) -> Option<Result<Vec<u8>, String>> {
        self.1.set(self.1.get() + 1);
        self.0.pop_front().map(Ok)
    }
}

/// A body whose declared length has arrived is complete: its end is not waited for. Without a
/// length, or with `transfer-encoding` (whose framing wins over a length), it is read to its end.
#[tokio::test(start_paused = true)]
async fn a_body_of_its_declared_length_is_not_read_past_its_end() {
    let p = policy::load(&policy_text(""), "api").unwrap();
    let t = no_script();
    let fresh = || "id".to_string();
    let secret = |_: &str| None;
    let env = bare_env(&p, &secret, &fresh);
    let body = br#"{"model":"no-such-model","messages":[{"role":"user","content":"hi"}]}"#;
    let (first, second) = body.split_at(20);
    let length = body.len().to_string();
    for (extra, reads) in [
        (vec![("content-length", length.as_str())], 2),
        (
            vec![
                ("content-length", length.as_str()),
                ("transfer-encoding", "chunked"),
            ],
            3,
        ),
        (vec![], 3),
    ] {
        let count = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let req = Request {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            headers,
            body: Parts([first.to_vec(), second.to_vec()].into(), count.clone()),
        };
        let reply = serve(&env, &t, req).await;
        // Read whole and parsed: the model is what is wrong with it.
        assert_eq!(reply.status, 404, "{extra:?}");
        assert_eq!(count.get(), reads, "{extra:?}");
    }
}
