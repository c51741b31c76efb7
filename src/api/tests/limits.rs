//! Meridian's own limits through `serve`: the 429 and its headers in both protocols, what is
//! reserved and settled (whole answers, streams, a stream cut short), the store down (closed
//! and open), browser keys, and the provider's rate-limit headers kept apart.

use super::*;
use crate::testing::MemStore;

/// `alpha` (1.0 / 2.0 dollars per million tokens). Tenants: `acme` (2 requests a minute),
/// `rich` (dollars and tokens), `web` (a browser key, limited by the `browser` rule), `ops`
/// (served uncounted when the store is down).
fn limited(extra: &str) -> Policy {
    let h = |k: &str| hex::encode(policy::hash_key(k));
    let text = format!(
        "version = 1\n[settings]\nexpose_ratelimit_headers = true\n[settings.limits]\nfail_open = [\"ops\"]\ndefault_max_tokens = 700\n{extra}\n\
         [[providers]]\nid = \"alpha\"\nbase_url = \"http://alpha/v1\"\nlocation = \"DE\"\nmodels = {{ \"chat-model\" = {{ id = \"a-m\", input_price = 1.0, output_price = 2.0 }} }}\n\
         [[tenants]]\nid = \"acme\"\nkeys = [\"sha256:{}\"]\nlimits = {{ requests_per_minute = 2 }}\n\
         [[tenants]]\nid = \"rich\"\nkeys = [\"sha256:{}\"]\nlimits = {{ usd_per_day = 0.01, tokens_per_hour = 50000, concurrent = 3 }}\n\
         [[tenants]]\nid = \"web\"\nkeys = [\"sha256:{}\"]\norigins = [\"https://app.example\"]\n\
         [[tenants]]\nid = \"ops\"\nkeys = [\"sha256:{}\"]\nlimits = {{ requests_per_minute = 1 }}\n\
         [[rules]]\nid = \"browser\"\nwhen = {{ browser = true }}\nlimits = {{ requests_per_hour = 1 }}\n",
        h("sk-acme"),
        h("sk-rich"),
        h("pk-web"),
        h("sk-ops"),
    );
    policy::load(&text, "limits").unwrap_or_else(|e| panic!("{e}"))
}

fn secret(_: &str) -> Option<String> {
    None
}

async fn post(p: &Policy, store: &MemStore, t: &Fake, path: &str, key: &str, body: &str) -> Answer {
    let auth = format!("Bearer {key}");
    call_store(
        Ok(p),
        &secret,
        Some(store),
        t,
        "POST",
        path,
        &[
            JSON,
            ("authorization", &auth),
            ("origin", "https://app.example"),
        ],
        body,
    )
    .await
}

/// The Fake's clock starts at 784,111,777 s: 37 s into its minute, so the minute ends in 23 s.
const MINUTE_LEFT: &str = "23";

fn log(a: &Answer) -> serde_json::Value {
    serde_json::from_str(&a.record.log_line(0, 0)).unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_request_over_the_limit_gets_a_429_that_names_it_and_says_when() {
    let p = limited("");
    let store = MemStore::default();
    let t = Fake::new(vec![("alpha", vec![ok_json(0), ok_json(0)])]);
    let first = post(&p, &store, &t, "/v1/chat/completions", "sk-acme", CHAT).await;
    assert_eq!(first.status, 200);
    // One store round trip: the request counter; nothing to settle for a count.
    assert_eq!(store.calls.get(), 1);
    assert_eq!(first.header("x-ratelimit-limit-requests"), Some("2"));
    assert_eq!(first.header("x-ratelimit-remaining-requests"), Some("1"));
    assert_eq!(first.header("x-ratelimit-reset-requests"), Some("23s"));
    assert_eq!(
        first.header("x-meridian-limits"),
        Some("tenant acme requests_per_minute reserved 1, 1 left")
    );
    let second = post(&p, &store, &t, "/v1/chat/completions", "sk-acme", CHAT).await;
    assert_eq!(second.header("x-ratelimit-remaining-requests"), Some("0"));
    let third = post(&p, &store, &t, "/v1/chat/completions", "sk-acme", CHAT).await;
    assert_eq!(third.status, 429, "{}", third.text());
    assert_eq!(third.code(), "rate_limit_exceeded");
    assert_eq!(third.json()["error"]["type"], "rate_limit_error");
    let msg = third.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("tenant acme") && msg.contains("requests_per_minute = 2"),
        "{msg}"
    );
    assert_eq!(third.header("retry-after"), Some(MINUTE_LEFT));
    assert_eq!(third.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(
        third.header("x-meridian-limits"),
        Some("refused by tenant acme requests_per_minute")
    );
    assert_eq!(
        t.sent_to(),
        ["alpha", "alpha"],
        "the refused request reached no provider"
    );
    assert_eq!(
        log(&third)["limits"]["refused"]["limit"],
        "requests_per_minute"
    );
}

#[tokio::test(start_paused = true)]
async fn anthropic_clients_get_anthropics_error_and_header_shapes() {
    let p = limited("");
    let store = MemStore::default();
    let body =
        r#"{"model":"chat-model","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let t = Fake::new(vec![(
        "alpha",
        vec![
            answer(
                200,
                r#"{"choices":[{"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
            );
            2
        ],
    )]);
    for _ in 0..2 {
        let ok = post(&p, &store, &t, "/v1/messages", "sk-acme", body).await;
        assert_eq!(ok.status, 200, "{}", ok.text());
        assert!(ok.header("anthropic-ratelimit-requests-limit").is_some());
    }
    let refused = post(&p, &store, &t, "/v1/messages", "sk-acme", body).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["type"], "error");
    assert_eq!(refused.json()["error"]["type"], "rate_limit_error");
    assert_eq!(
        refused.header("anthropic-ratelimit-requests-limit"),
        Some("2")
    );
    assert_eq!(
        refused.header("anthropic-ratelimit-requests-remaining"),
        Some("0")
    );
    // 784,111,777 + 23 s = 1994-11-06T08:50:00Z.
    assert_eq!(
        refused.header("anthropic-ratelimit-requests-reset"),
        Some("1994-11-06T08:50:00Z")
    );
    assert_eq!(refused.header("retry-after"), Some(MINUTE_LEFT));
}

#[tokio::test(start_paused = true)]
async fn whole_answers_settle_to_the_usage_the_provider_reported() {
    let p = limited("");
    let store = MemStore::default();
    // 1 prompt and 2 completion tokens at 1.0 and 2.0 dollars per million: 5 millionths.
    let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
    let body = chat_body(r#","max_tokens":100"#);
    let a = post(&p, &store, &t, "/v1/chat/completions", "sk-rich", &body).await;
    assert_eq!(a.status, 200);
    // Before the attempt: three increments (tokens, dollars, in flight) and a read of the
    // previous in-flight slot; after: three increments.
    assert_eq!(store.calls.get(), 7);
    let usd = store
        .values
        .borrow()
        .iter()
        .find(|(k, _)| k.contains(":usd:day:"))
        .map(|(_, v)| *v);
    let tokens = store
        .values
        .borrow()
        .iter()
        .find(|(k, _)| k.contains(":tokens:hour:"))
        .map(|(_, v)| *v);
    assert_eq!(usd, Some(5));
    assert_eq!(tokens, Some(3));
    let in_flight: i64 = store
        .values
        .borrow()
        .iter()
        .filter(|(k, _)| k.contains(":concurrent:"))
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(in_flight, 0);
    // The reservation bounded it: the body's bytes as input tokens, plus 100 output tokens.
    let l = log(&a);
    let reserved = body.len() as u64 + 100;
    assert_eq!(
        l["limits"]["hold"]["need"]["input_tokens"],
        body.len() as u64
    );
    assert_eq!(l["limits"]["settlement"]["state"], "settled");
    // Where the serving provider processes data, for `meridian report`'s matrix.
    assert_eq!(l["jurisdiction"], "DE");
    assert_eq!(l["limits"]["settlement"]["actual"]["tokens"], 3);
    assert_eq!(l["limits"]["settlement"]["actual"]["micro_usd"], 5);
    assert_eq!(
        a.header("x-ratelimit-remaining-tokens"),
        Some((50_000 - reserved).to_string().as_str())
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_without_max_tokens_gets_one_so_its_reservation_bounds_it() {
    let p = limited("");
    let store = MemStore::default();
    let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
    let a = post(&p, &store, &t, "/v1/chat/completions", "sk-rich", CHAT).await;
    assert_eq!(a.status, 200);
    let sent: serde_json::Value = serde_json::from_slice(&t.requests.borrow()[0].body).unwrap();
    assert_eq!(sent["max_tokens"], 700);
}

#[tokio::test(start_paused = true)]
async fn a_dollar_limit_refuses_what_could_cost_more_than_is_left() {
    let p = limited("");
    let store = MemStore::default();
    let t = no_script();
    // 4,990 output tokens at 2 dollars per million is $0.00998: over $0.01 with the input.
    let body = chat_body(r#","max_tokens":4990"#);
    let a = post(&p, &store, &t, "/v1/chat/completions", "sk-rich", &body).await;
    assert_eq!(a.status, 429, "{}", a.text());
    let msg = a.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("max_tokens"), "{msg}");
    assert!(t.sent_to().is_empty());
    assert!(
        store.values.borrow().values().all(|v| *v == 0),
        "everything given back"
    );
}

#[tokio::test(start_paused = true)]
async fn streams_settle_after_the_last_event_and_a_cut_stream_keeps_its_reservation() {
    let p = limited("");
    let store = MemStore::default();
    let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":6,\"total_tokens\":10}}\n\n";
    let t = Fake::new(vec![(
        "alpha",
        vec![
            sse(&[(0, EV1), (5, EV2), (5, usage), (0, DONE)]),
            Step::Answer {
                after_ms: 0,
                status: 200,
                headers: vec![("content-type".into(), "text/event-stream".into())],
                chunks: vec![
                    (0, Ok(EV1.as_bytes().to_vec())),
                    (5, Err(Failure::Transport("reset".into()))),
                ],
            },
        ],
    )]);
    let body = chat_body(r#","max_tokens":50,"stream":true"#);
    let a = post(&p, &store, &t, "/v1/chat/completions", "sk-rich", &body).await;
    assert_eq!(a.status, 200);
    let tokens_key = store
        .values
        .borrow()
        .keys()
        .find(|k| k.contains(":tokens:hour:"))
        .cloned()
        .unwrap();
    assert_eq!(store.value(&tokens_key), 10);
    assert_eq!(log(&a)["limits"]["settlement"]["state"], "settled");
    let b = post(&p, &store, &t, "/v1/chat/completions", "sk-rich", &body).await;
    assert!(b.text().contains("error"), "{}", b.text());
    assert_eq!(log(&b)["limits"]["settlement"]["state"], "kept");
    assert_eq!(
        store.value(&tokens_key),
        10 + body.len() as i64 + 50,
        "the cut stream's usage is unknown: its whole reservation stays"
    );
}

#[tokio::test(start_paused = true)]
async fn the_store_down_fails_closed_except_for_tenants_the_policy_names() {
    let p = limited("");
    let store = MemStore::default();
    store.down.set(true);
    let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
    let closed = post(&p, &store, &t, "/v1/chat/completions", "sk-acme", CHAT).await;
    assert_eq!(closed.status, 503);
    assert_eq!(closed.code(), "limits_unavailable");
    assert_eq!(closed.header("retry-after"), Some("1"));
    assert_eq!(
        closed.header("x-meridian-limits"),
        Some("refused: the key-value store could not be reached (fail closed)")
    );
    assert_eq!(log(&closed)["limits"]["unavailable"], "store unreachable");
    // As docs/limits.md says: the reason in the log's `limits.unavailable` and `error_detail`;
    // no upstream was involved, so the error is Meridian's own (`server_error`).
    assert_eq!(
        log(&closed)["error_detail"],
        "limits store: store unreachable"
    );
    let err: serde_json::Value = serde_json::from_slice(&closed.body).unwrap();
    assert_eq!(err["error"]["type"], "server_error", "{err}");
    assert!(t.sent_to().is_empty());
    let open = post(&p, &store, &t, "/v1/chat/completions", "sk-ops", CHAT).await;
    assert_eq!(open.status, 200);
    assert!(open
        .header("x-meridian-limits")
        .unwrap()
        .starts_with("not counted: the key-value store could not be reached"));
    // No store at all is the same as a store that is down.
    let none = call_store(
        Ok(&p),
        &secret,
        None,
        &t,
        "POST",
        "/v1/chat/completions",
        &[JSON, ("authorization", "Bearer sk-acme")],
        CHAT,
    )
    .await;
    assert_eq!(none.status, 503);
}

#[tokio::test(start_paused = true)]
async fn a_browser_key_is_limited_by_the_browser_rule_and_a_server_key_is_not() {
    let p = limited("");
    let store = MemStore::default();
    let t = Fake::new(vec![("alpha", vec![ok_json(0), ok_json(0), ok_json(0)])]);
    let one = post(&p, &store, &t, "/v1/chat/completions", "pk-web", CHAT).await;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.header("x-ratelimit-limit-requests"), Some("1"));
    let two = post(&p, &store, &t, "/v1/chat/completions", "pk-web", CHAT).await;
    assert_eq!(two.status, 429);
    assert!(
        two.text().contains("rule browser for tenant web"),
        "{}",
        two.text()
    );
    // A tenant without a browser key: the rule does not apply.
    let rich = post(&p, &store, &t, "/v1/chat/completions", "sk-rich", CHAT).await;
    assert_eq!(rich.header("x-ratelimit-limit-requests"), None);
}

#[tokio::test(start_paused = true)]
async fn meridians_rate_limit_headers_replace_the_providers() {
    let p = limited("");
    let store = MemStore::default();
    let t = Fake::new(vec![(
        "alpha",
        vec![Step::Answer {
            after_ms: 0,
            status: 200,
            headers: vec![
                ("x-ratelimit-limit-requests".into(), "10000".into()),
                ("x-ratelimit-remaining-tokens".into(), "999999".into()),
            ],
            chunks: vec![(
                0,
                Ok(
                    br#"{"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#
                        .to_vec(),
                ),
            )],
        }],
    )]);
    let a = post(&p, &store, &t, "/v1/chat/completions", "sk-acme", CHAT).await;
    let limits: Vec<&str> = a
        .headers
        .iter()
        .filter(|(k, _)| k == "x-ratelimit-limit-requests")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(limits, ["2"]);
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), None);
    // Without limits of its own, a caller still sees the provider's when the policy says so.
    let t = Fake::new(vec![(
        "alpha",
        vec![Step::Answer {
            after_ms: 0,
            status: 200,
            headers: vec![("x-ratelimit-limit-requests".into(), "10000".into())],
            chunks: vec![(0, Ok(b"{}".to_vec()))],
        }],
    )]);
    let free = limited("");
    let mut unlimited = free.clone();
    unlimited.tenants.to_mut()[1].limits = None;
    let b = post(
        &unlimited,
        &store,
        &t,
        "/v1/chat/completions",
        "sk-rich",
        CHAT,
    )
    .await;
    assert_eq!(b.header("x-ratelimit-limit-requests"), Some("10000"));
}

/// `alpha` then `beta` (price order), both serving `chat-model`; a provider that fails twice
/// within a minute cools down for 30 s.
fn health_policy(providers: &[&str]) -> Policy {
    let mut text = String::from(
        "version = 1\n[settings]\nallow_anonymous = true\n[settings.health]\nfailures = 2\nwindow_s = 60\ncooldown_s = 30\n",
    );
    for (i, p) in providers.iter().enumerate() {
        text.push_str(&format!(
            "[[providers]]\nid = \"{p}\"\nbase_url = \"http://{p}/v1\"\nlocation = \"DE\"\nmodels = {{ \"chat-model\" = {{ id = \"m\", input_price = {}.0, output_price = 1.0 }} }}\n",
            i + 1
        ));
    }
    policy::load(&text, "health").unwrap_or_else(|e| panic!("{e}"))
}

async fn anonymous(p: &Policy, store: &MemStore, t: &Fake) -> Answer {
    call_store(
        Ok(p),
        &secret,
        Some(store),
        t,
        "POST",
        "/v1/chat/completions",
        &[JSON],
        CHAT,
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn a_provider_that_keeps_failing_is_skipped_by_every_node_until_it_cools_down() {
    let p = health_policy(&["alpha", "beta"]);
    // One store: what every node shares.
    let store = MemStore::default();
    let t = Fake::new(vec![
        (
            "alpha",
            vec![status(500, None), status(500, None), ok_json(0)],
        ),
        ("beta", vec![ok_json(0), ok_json(0), ok_json(0)]),
    ]);
    let first = anonymous(&p, &store, &t).await;
    assert_eq!(first.header("x-meridian-provider"), Some("beta"));
    assert!(first.record.cooled.is_empty());
    let second = anonymous(&p, &store, &t).await;
    assert_eq!(second.header("x-meridian-provider"), Some("beta"));
    assert_eq!(
        second.record.cooled,
        ["alpha/m"],
        "the second failure within the window: a 500 cools the model it answered for"
    );
    // Now alpha is skipped without an attempt: 784,111,777 + 30 s = 08:50:07.
    let third = anonymous(&p, &store, &t).await;
    assert_eq!(third.header("x-meridian-provider"), Some("beta"));
    assert_eq!(
        third.header("x-meridian-cooling"),
        Some("alpha (m) cooling down until 1994-11-06T08:50:07Z")
    );
    assert_eq!(t.sent_to(), ["alpha", "beta", "alpha", "beta", "beta"]);
    // After the cool-down it is tried again.
    tokio::time::advance(std::time::Duration::from_secs(31)).await;
    let later = anonymous(&p, &store, &t).await;
    assert_eq!(later.header("x-meridian-provider"), Some("alpha"));
    assert_eq!(later.header("x-meridian-cooling"), None);
}

#[tokio::test(start_paused = true)]
async fn when_every_provider_is_cooling_down_the_answer_says_until_when() {
    let p = health_policy(&["alpha"]);
    let store = MemStore::default();
    let t = Fake::new(vec![("alpha", vec![status(503, None), status(503, None)])]);
    for _ in 0..2 {
        let a = anonymous(&p, &store, &t).await;
        assert_eq!(a.status, 502, "{}", a.text());
    }
    let cooled = anonymous(&p, &store, &t).await;
    assert_eq!(cooled.status, 503);
    assert_eq!(cooled.code(), "providers_cooling_down");
    assert_eq!(cooled.header("retry-after"), Some("30"));
    let excluded = &cooled.json()["error"]["meridian"]["excluded"][0];
    assert_eq!(excluded["provider"], "alpha");
    assert_eq!(excluded["reasons"][0]["kind"], "health");
    assert_eq!(
        excluded["reasons"][0]["message"],
        "cooling down until 1994-11-06T08:50:07Z after 2 failures within 60 s"
    );
    assert_eq!(t.sent_to().len(), 2, "no attempt while it cools down");
}

/// Cool-downs count what the provider caused: a connection failure cools the provider as a
/// whole; a 5xx cools the model it answered for, and the provider's other models are still
/// tried; a 429 or a timeout of a long prompt (above `SMALL_REQUEST_TOKENS`, so explained by
/// the request itself) cools nothing, while a short prompt's does.
#[tokio::test(start_paused = true)]
async fn cool_downs_count_what_the_provider_caused_per_model_where_it_is_per_model() {
    let text = "version = 1\n[settings]\nallow_anonymous = true\n[settings.health]\nfailures = 2\nwindow_s = 60\ncooldown_s = 30\n\
         [[providers]]\nid = \"alpha\"\nbase_url = \"http://alpha/v1\"\nlocation = \"DE\"\nmodels = { \"one\" = \"a-one\", \"two\" = \"a-two\" }\n\
         [[providers]]\nid = \"beta\"\nbase_url = \"http://beta/v1\"\nlocation = \"DE\"\nmodels = { \"one\" = \"b-one\", \"two\" = \"b-two\" }\n\
         [[rules]]\nid = \"alpha-first\"\nprefer = { order = [\"alpha\", \"beta\"] }\n";
    let p = policy::load(text, "health-blame").unwrap();
    let body = |model: &str, words: usize| {
        let prompt = "word ".repeat(words);
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"{prompt}"}}]}}"#)
    };
    async fn send(p: &Policy, t: &Fake, store: &MemStore, b: String) -> Answer {
        call_store(
            Ok(p),
            &secret,
            Some(store),
            t,
            "POST",
            "/v1/chat/completions",
            &[JSON],
            &b,
        )
        .await
    }
    // Long prompts (about 12,500 estimated tokens) rate limited twice: nothing cools.
    let store = MemStore::default();
    let t = Fake::new(vec![
        (
            "alpha",
            vec![status(429, None), status(429, None), ok_json(0)],
        ),
        ("beta", vec![ok_json(0), ok_json(0)]),
    ]);
    for _ in 0..2 {
        let a = send(&p, &t, &store, body("one", 10_000)).await;
        assert!(a.record.cooled.is_empty(), "{:?}", a.record.cooled);
    }
    let a = send(&p, &t, &store, body("one", 2)).await;
    assert_eq!(
        a.header("x-meridian-provider"),
        Some("alpha"),
        "alpha is not cooling"
    );
    // Short prompts rate limited twice: the model cools; the provider's other model does not.
    let store = MemStore::default();
    let t = Fake::new(vec![
        (
            "alpha",
            vec![status(429, None), status(429, None), ok_json(0)],
        ),
        ("beta", vec![ok_json(0), ok_json(0), ok_json(0)]),
    ]);
    let _ = send(&p, &t, &store, body("one", 2)).await;
    let second = send(&p, &t, &store, body("one", 2)).await;
    assert_eq!(second.record.cooled, ["alpha/a-one"]);
    let one = send(&p, &t, &store, body("one", 2)).await;
    assert_eq!(
        one.header("x-meridian-provider"),
        Some("beta"),
        "alpha's `one` cools"
    );
    let two = send(&p, &t, &store, body("two", 2)).await;
    assert_eq!(
        two.header("x-meridian-provider"),
        Some("alpha"),
        "alpha's `two` does not"
    );
    // A provider that cannot be reached cools as a whole, whatever the model.
    let store = MemStore::default();
    let t = Fake::new(vec![
        (
            "alpha",
            vec![
                Step::Fail {
                    after_ms: 0,
                    failure: Failure::Connect("refused".into()),
                },
                Step::Fail {
                    after_ms: 0,
                    failure: Failure::Connect("refused".into()),
                },
            ],
        ),
        ("beta", vec![ok_json(0), ok_json(0), ok_json(0), ok_json(0)]),
    ]);
    let _ = send(&p, &t, &store, body("one", 2)).await;
    let second = send(&p, &t, &store, body("two", 2)).await;
    assert_eq!(second.record.cooled, ["alpha"]);
    for m in ["one", "two"] {
        let a = send(&p, &t, &store, body(m, 2)).await;
        assert_eq!(a.header("x-meridian-provider"), Some("beta"), "{m}");
    }
}

/// `alpha` (1.0 / 1.0) and `beta` (2.0 / 1.0), tenant `acme` with a token and a dollar limit;
/// `extra` sets the plan.
fn two_priced(extra: &str) -> Policy {
    let text = format!(
        "version = 1\n[settings.plan]\n{extra}\n\
         [[providers]]\nid = \"alpha\"\nbase_url = \"http://alpha/v1\"\nlocation = \"DE\"\nmodels = {{ \"chat-model\" = {{ id = \"m\", input_price = 1.0, output_price = 1.0 }} }}\n\
         [[providers]]\nid = \"beta\"\nbase_url = \"http://beta/v1\"\nlocation = \"DE\"\nmodels = {{ \"chat-model\" = {{ id = \"m\", input_price = 2.0, output_price = 1.0 }} }}\n\
         [[tenants]]\nid = \"acme\"\nkeys = [\"sha256:{}\"]\nlimits = {{ tokens_per_day = 100000, usd_per_day = 1.0 }}\n",
        hex::encode(policy::hash_key("sk-acme"))
    );
    policy::load(&text, "two").unwrap_or_else(|e| panic!("{e}"))
}

fn counter(store: &MemStore, part: &str) -> i64 {
    store
        .values
        .borrow()
        .iter()
        .find(|(k, _)| k.contains(part))
        .map_or(0, |(_, v)| *v)
}

#[tokio::test(start_paused = true)]
async fn a_fallback_settles_to_the_answer_and_the_failed_attempt_costs_nothing() {
    let p = two_priced("");
    let store = MemStore::default();
    let t = Fake::new(vec![
        ("alpha", vec![status(500, None)]),
        ("beta", vec![ok_json(0)]),
    ]);
    let body = chat_body(r#","max_tokens":10"#);
    let a = post(&p, &store, &t, "/v1/chat/completions", "sk-acme", &body).await;
    assert_eq!(a.header("x-meridian-provider"), Some("beta"));
    // The reservation was at the dearer candidate's prices (beta: 2.0 per input token).
    let l = log(&a);
    assert_eq!(
        l["limits"]["hold"]["need"]["micro_usd"],
        body.len() as u64 * 2 + 10
    );
    // beta's usage: 1 prompt token at 2.0 and 2 completion tokens at 1.0 = 4 millionths.
    assert_eq!(counter(&store, ":usd:day:"), 4);
    assert_eq!(counter(&store, ":tokens:day:"), 3);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_reserves_for_two_attempts_and_bills_the_loser_its_whole_bound() {
    let p = two_priced("hedge_after_ms = 100");
    let store = MemStore::default();
    // alpha answers after 500 ms, too late: the hedge to beta (sent at 100 ms) wins at 150 ms.
    let t = Fake::new(vec![
        ("alpha", vec![ok_json(500)]),
        ("beta", vec![ok_json(50)]),
    ]);
    let body = chat_body(r#","max_tokens":10"#);
    let a = post(&p, &store, &t, "/v1/chat/completions", "sk-acme", &body).await;
    assert_eq!(
        a.header("x-meridian-provider"),
        Some("beta"),
        "{}",
        a.text()
    );
    let l = log(&a);
    let input = body.len() as u64;
    assert_eq!(l["limits"]["hold"]["need"]["parallel"], 2);
    assert_eq!(
        l["limits"]["hold"]["counters"][0]["reserve"],
        2 * (input + 10),
        "tokens for two attempts"
    );
    // beta's answer (3 tokens, 4 millionths) plus alpha's bound, since it may have read the
    // prompt and generated the whole answer: `input` + 10 tokens at 1.0 each.
    assert_eq!(counter(&store, ":tokens:day:"), 3 + input as i64 + 10);
    assert_eq!(counter(&store, ":usd:day:"), 4 + input as i64 + 10);
}

/// A tenant's policy whose only limit is `tokens_per_day = max`, over alpha and beta (as
/// `two_priced`).
fn two_with_tokens(max: u64) -> Policy {
    let text = format!(
        "version = 1\n\
         [[providers]]\nid = \"alpha\"\nbase_url = \"http://alpha/v1\"\nlocation = \"DE\"\nmodels = {{ \"chat-model\" = {{ id = \"m\", input_price = 1.0, output_price = 1.0 }} }}\n\
         [[providers]]\nid = \"beta\"\nbase_url = \"http://beta/v1\"\nlocation = \"DE\"\nmodels = {{ \"chat-model\" = {{ id = \"m\", input_price = 2.0, output_price = 1.0 }} }}\n\
         [[tenants]]\nid = \"acme\"\nkeys = [\"sha256:{}\"]\nlimits = {{ tokens_per_day = {max} }}\n",
        hex::encode(policy::hash_key("sk-acme"))
    );
    policy::load(&text, "two").unwrap_or_else(|e| panic!("{e}"))
}

/// A chat body with `max_tokens = 10`, its bound (one token per byte, and the output), an empty
/// store, and providers where alpha times out and beta answers.
fn alpha_times_out() -> (String, u64, MemStore, Fake) {
    let body = chat_body(r#","max_tokens":10"#);
    let bound = body.len() as u64 + 10;
    let timed_out = Step::Fail {
        after_ms: 10,
        failure: Failure::Timeout("headers"),
    };
    let t = Fake::new(vec![("alpha", vec![timed_out]), ("beta", vec![ok_json(0)])]);
    (body, bound, MemStore::default(), t)
}

/// An attempt after one the provider may bill (a timeout) is covered before it starts: the
/// reservation grows by one attempt's bound, and the settlement counts the timed-out attempt at
/// that bound and the answer at its usage.
#[tokio::test(start_paused = true)]
async fn a_fallback_after_a_timeout_is_covered_before_it_starts() {
    let (body, bound, store, t) = alpha_times_out();
    let p = two_with_tokens(10 * bound);
    let a = post(&p, &store, &t, "/v1/chat/completions", "sk-acme", &body).await;
    assert_eq!(
        a.header("x-meridian-provider"),
        Some("beta"),
        "{}",
        a.text()
    );
    let l = log(&a);
    assert_eq!(l["limits"]["hold"]["covered"], 2);
    assert_eq!(l["limits"]["hold"]["counters"][0]["reserve"], 2 * bound);
    assert_eq!(counter(&store, ":tokens:day:"), 3 + bound as i64);
    // A connection refused costs nothing and needs no more cover.
    let store = MemStore::default();
    let t = Fake::new(vec![
        (
            "alpha",
            vec![Step::Fail {
                after_ms: 0,
                failure: Failure::Connect("refused".into()),
            }],
        ),
        ("beta", vec![ok_json(0)]),
    ]);
    let a = post(&p, &store, &t, "/v1/chat/completions", "sk-acme", &body).await;
    assert_eq!(a.header("x-meridian-provider"), Some("beta"));
    assert_eq!(log(&a)["limits"]["hold"]["covered"], 1);
    assert_eq!(counter(&store, ":tokens:day:"), 3);
}

/// When the limit has no room to cover the next attempt, it does not start: the caller learns
/// why, and the settled total (the timed-out attempt at its bound) stays within the limit.
#[tokio::test(start_paused = true)]
async fn an_attempt_the_limit_cannot_cover_does_not_start() {
    let (body, bound, store, t) = alpha_times_out();
    let p = two_with_tokens(bound + bound / 2);
    let a = post(&p, &store, &t, "/v1/chat/completions", "sk-acme", &body).await;
    assert_eq!(a.status, 504, "{}", a.text());
    assert_eq!(t.sent_to(), ["alpha"], "beta was never asked");
    let text = a.text();
    assert!(
        text.contains("No further attempt was made") && text.contains("tokens_per_day"),
        "{text}"
    );
    let l = log(&a);
    assert!(l["limits"]["stopped"]
        .as_str()
        .is_some_and(|s| s.contains("tokens_per_day")));
    assert_eq!(l["limits"]["hold"]["covered"], 1);
    assert_eq!(counter(&store, ":tokens:day:"), bound as i64);
    assert!(counter(&store, ":tokens:day:") <= (bound + bound / 2) as i64);
}

#[tokio::test(start_paused = true)]
async fn embeddings_and_messages_are_counted_like_chat() {
    let p = limited("");
    let store = MemStore::default();
    let t = Fake::new(vec![(
        "alpha",
        vec![
            answer(
                200,
                r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1]}],"usage":{"prompt_tokens":7,"total_tokens":7}}"#,
            ),
            answer(
                200,
                r#"{"choices":[{"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
            ),
        ],
    )]);
    let e = post(
        &p,
        &store,
        &t,
        "/v1/embeddings",
        "sk-rich",
        r#"{"model":"chat-model","input":"hello"}"#,
    )
    .await;
    assert_eq!(e.status, 200, "{}", e.text());
    assert_eq!(log(&e)["limits"]["hold"]["need"]["output_tokens"], 0);
    assert_eq!(log(&e)["limits"]["settlement"]["state"], "settled");
    assert_eq!(counter(&store, ":tokens:hour:"), 7);
    let m = post(
        &p,
        &store,
        &t,
        "/v1/messages",
        "sk-rich",
        r#"{"model":"chat-model","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(m.status, 200, "{}", m.text());
    assert_eq!(log(&m)["limits"]["settlement"]["state"], "settled");
    assert_eq!(counter(&store, ":tokens:hour:"), 14);
}

/// Anthropic reports usage at `message_start` (the input and one output token) and the billed
/// output at `message_delta`: a stream cut between them keeps its whole reservation, a stream
/// that ends settles to the final usage. Both passed through natively and translated for a chat
/// client.
#[tokio::test(start_paused = true)]
async fn an_anthropic_stream_cut_after_message_start_keeps_its_whole_reservation() {
    let h = |k: &str| hex::encode(policy::hash_key(k));
    let text = format!(
        "version = 1\n\
         [[providers]]\nid = \"claude\"\nkind = \"anthropic\"\nbase_url = \"http://claude/v1\"\nlocation = \"IE\"\nmodels = {{ \"chat-model\" = {{ id = \"claude-x\", input_price = 1.0, output_price = 2.0 }} }}\n\
         [[tenants]]\nid = \"rich\"\nkeys = [\"sha256:{}\"]\nlimits = {{ tokens_per_hour = 100000 }}\n",
        h("sk-rich"),
    );
    let p = policy::load(&text, "anthropic-limits").unwrap();
    let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n";
    let block = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n";
    let end = "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":30}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let cut = || Step::Answer {
        after_ms: 0,
        status: 200,
        headers: vec![("content-type".into(), "text/event-stream".into())],
        chunks: vec![
            (0, Ok(start.as_bytes().to_vec())),
            (5, Ok(block.as_bytes().to_vec())),
            (5, Err(Failure::Transport("reset".into()))),
        ],
    };
    let whole = || sse(&[(0, start), (5, block), (5, end)]);
    let t = Fake::new(vec![("claude", vec![cut(), whole(), cut(), whole()])]);
    let store = MemStore::default();
    let messages = r#"{"model":"chat-model","max_tokens":400,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let chat = r#"{"model":"chat-model","max_tokens":400,"stream":true,"messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true}}"#;
    let mut expected = 0i64;
    for (path, body) in [("/v1/messages", messages), ("/v1/chat/completions", chat)] {
        // Reserved: one token per byte of the body, and `max_tokens`.
        let reserved = body.len() as i64 + 400;
        let a = post(&p, &store, &t, path, "sk-rich", body).await;
        assert_eq!(a.status, 200, "{path}");
        assert!(a.text().contains("error"), "{path}: {}", a.text());
        assert_eq!(log(&a)["limits"]["settlement"]["state"], "kept", "{path}");
        expected += reserved;
        assert_eq!(counter(&store, ":tokens:hour:"), expected, "{path}: cut");
        let b = post(&p, &store, &t, path, "sk-rich", body).await;
        assert_eq!(b.status, 200, "{path}");
        assert_eq!(
            log(&b)["limits"]["settlement"]["state"],
            "settled",
            "{path}"
        );
        expected += 25 + 30;
        assert_eq!(counter(&store, ":tokens:hour:"), expected, "{path}: whole");
    }
}

/// Input the body does not show (an image by URL, a file by id, a stored conversation) is
/// reserved at the model's whole context window, and refused where the catalog states none.
#[tokio::test(start_paused = true)]
async fn unseen_input_is_reserved_at_the_context_window_or_refused_without_one() {
    let image = r#"{"model":"chat-model","max_tokens":10,"messages":[{"role":"user","content":[{"type":"text","text":"what is this"},{"type":"image_url","image_url":{"url":"https://img.example/cat.png"}}]}]}"#;
    // No window stated: no bound, so a limited caller is refused, and told what to set.
    let p = limited("");
    let store = MemStore::default();
    let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
    let a = post(&p, &store, &t, "/v1/chat/completions", "sk-rich", image).await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(a.code(), "unbounded_input");
    assert!(a.text().contains("context_window"), "{}", a.text());
    assert!(t.sent_to().is_empty());
    // A stated window: reserved in full, whatever the body's size.
    let text = format!(
        "version = 1\n[[providers]]\nid = \"alpha\"\nbase_url = \"http://alpha/v1\"\nlocation = \"DE\"\nmodels = {{ \"chat-model\" = {{ id = \"a-m\", input_price = 1.0, output_price = 2.0, context_window = 128000 }} }}\n\
         [[tenants]]\nid = \"rich\"\nkeys = [\"sha256:{}\"]\nlimits = {{ tokens_per_hour = 1000000 }}\n",
        hex::encode(policy::hash_key("sk-rich"))
    );
    let p = policy::load(&text, "window").unwrap();
    let store = MemStore::default();
    let t = Fake::new(vec![("alpha", vec![ok_json(0), ok_json(0)])]);
    let a = post(&p, &store, &t, "/v1/chat/completions", "sk-rich", image).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(log(&a)["limits"]["hold"]["need"]["input_tokens"], 128_000);
    // The same request with the image inline reserves its bytes and a media part only.
    let inline = image.replace(
        "https://img.example/cat.png",
        "data:image/png;base64,iVBORw0KGgo=",
    );
    let b = post(&p, &store, &t, "/v1/chat/completions", "sk-rich", &inline).await;
    assert_eq!(b.status, 200, "{}", b.text());
    let input = log(&b)["limits"]["hold"]["need"]["input_tokens"]
        .as_u64()
        .unwrap();
    assert_eq!(input, inline.len() as u64 + 2_000);
}

/// What a provider adds to the body is reserved: its tool-use prompt when the request offers
/// tools, and the definition of each tool it defines itself. A tool the provider runs brings
/// back results billed as input the body does not show, and has the model read the
/// conversation again after each call: reserved at the context window once per read, and
/// refused where the request lets the provider call it without a bound. Figures from the
/// providers' references (Anthropic's tool-use pricing: a 159-530 token system prompt, 245-735
/// per tool it defines), with the margins Meridian documents (1,024 and 1,536).
#[tokio::test(start_paused = true)]
async fn tool_overheads_and_provider_run_tools_are_reserved_or_refused() {
    let text = format!(
        "version = 1\n\
         [[providers]]\nid = \"claude\"\nkind = \"anthropic\"\nbase_url = \"http://claude/v1\"\nlocation = \"IE\"\ncapabilities = [\"web_search\"]\nmodels = {{ \"chat-model\" = {{ id = \"claude-x\", input_price = 1.0, output_price = 2.0, context_window = 100000 }} }}\n\
         [[tenants]]\nid = \"rich\"\nkeys = [\"sha256:{}\"]\nlimits = {{ tokens_per_hour = 100000000 }}\n",
        hex::encode(policy::hash_key("sk-rich")),
    );
    let p = policy::load(&text, "tools").unwrap();
    let p = &p;
    let reserved = |tools: &str| {
        let body = format!(
            r#"{{"model":"chat-model","max_tokens":10,"messages":[{{"role":"user","content":"hi"}}],"tools":[{tools}]}}"#
        );
        async move {
            let store = MemStore::default();
            let t = Fake::new(vec![("claude", vec![ok_json(0)])]);
            let a = post(p, &store, &t, "/v1/messages", "sk-rich", &body).await;
            let sent = t.sent_to().len();
            (body.len() as u64, a, sent)
        }
    };
    let input = |a: &Answer| log(a)["limits"]["hold"]["need"]["input_tokens"].as_u64();
    let (len, a, _) = reserved(r#"{"name":"f","input_schema":{"type":"object"}}"#).await;
    assert_eq!(
        input(&a),
        Some(len + 1_024),
        "a client tool: the tool-use prompt"
    );
    let (len, a, _) = reserved(r#"{"type":"bash_20250124","name":"bash"}"#).await;
    assert_eq!(
        input(&a),
        Some(len + 1_024 + 1_536),
        "a tool Anthropic defines"
    );
    let (_, a, sent) = reserved(r#"{"type":"web_search_20250305","name":"web_search"}"#).await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(a.record.error_code, Some("unbounded_input"));
    assert!(a.text().contains("max_uses"), "{}", a.text());
    assert_eq!(sent, 0);
    let (_, a, _) =
        reserved(r#"{"type":"web_search_20250305","name":"web_search","max_uses":3}"#).await;
    assert_eq!(
        input(&a),
        Some(100_000 * 4),
        "the window, read once and after each of 3 calls"
    );
}

/// The promise, as a property: providers that bill the most their references allow (every
/// token of the context window for input the body does not show, one token per byte of the
/// body they receive otherwise, every output token asked for, and every attempt they may have
/// run: an answer or a timeout; an error status bills nothing), any mix of fallbacks and
/// retries, and requests arriving together at two nodes that share one store: what the
/// providers billed in all never exceeds the limit, and neither does the settled counter. The
/// oracle (what a provider bills) is written here, from the references, not taken from
/// Meridian's estimate.
mod bound {
    use super::*;
    use crate::transport::OutboundRequest;
    use proptest::prelude::*;
    use serde_json::Value;
    use std::cell::Cell;
    use std::rc::Rc;

    const WINDOW: u64 = 5_000;

    #[derive(Debug, Clone)]
    struct Req {
        text: usize,
        max_tokens: u64,
        image_by_url: bool,
        /// What alpha does (answers, times out, or answers 500), then beta.
        alpha: u8,
        beta: u8,
    }

    fn req() -> impl Strategy<Value = Req> {
        (
            1usize..300,
            1u64..400,
            prop::bool::weighted(0.3),
            0u8..3,
            0u8..2,
        )
            .prop_map(|(text, max_tokens, image_by_url, alpha, beta)| Req {
                text,
                max_tokens,
                image_by_url,
                alpha,
                beta,
            })
    }

    fn body(r: &Req) -> String {
        let text = format!("[a{}b{}]{}", r.alpha, r.beta, "x".repeat(r.text));
        let content = if r.image_by_url {
            format!(
                r#"[{{"type":"text","text":"{text}"}},{{"type":"image_url","image_url":{{"url":"https://img.example/p.png"}}}}]"#
            )
        } else {
            format!(r#""{text}""#)
        };
        format!(
            r#"{{"model":"chat-model","max_tokens":{},"messages":[{{"role":"user","content":{content}}}]}}"#,
            r.max_tokens
        )
    }

    /// The most a provider bills for one attempt it ran, by the references.
    fn most_billed(req: &OutboundRequest) -> (u64, u64) {
        let v: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let input = if req.body.windows(11).any(|w| w == b"img.example") {
            WINDOW
        } else {
            req.body.len() as u64
        };
        (input, v["max_tokens"].as_u64().unwrap_or(u64::MAX / 4))
    }

    fn policy(max: u64, retries: u32) -> Policy {
        let text = format!(
            "version = 1\n[settings.plan]\nretries = {retries}\nbackoff_ms = 1\n\
             [[providers]]\nid = \"alpha\"\nbase_url = \"http://alpha/v1\"\nlocation = \"DE\"\ncapabilities = [\"remote_media\"]\nmodels = {{ \"chat-model\" = {{ id = \"m\", input_price = 1.0, output_price = 1.0, context_window = {WINDOW} }} }}\n\
             [[providers]]\nid = \"beta\"\nbase_url = \"http://beta/v1\"\nlocation = \"DE\"\ncapabilities = [\"remote_media\"]\nmodels = {{ \"chat-model\" = {{ id = \"m\", input_price = 1.0, output_price = 1.0, context_window = {WINDOW} }} }}\n\
             [[tenants]]\nid = \"acme\"\nkeys = [\"sha256:{}\"]\nlimits = {{ tokens_per_day = {max} }}\n",
            hex::encode(policy::hash_key("sk-acme"))
        );
        policy::load(&text, "bound").unwrap_or_else(|e| panic!("{e}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn what_providers_bill_never_exceeds_the_limit(
            reqs in prop::collection::vec(req(), 1..10),
            max in 500u64..40_000,
            retries in 0u32..2,
        ) {
            let p = policy(max, retries);
            let store = MemStore::default();
            let billed = Rc::new(Cell::new(0u64));
            let b = billed.clone();
            // Two nodes: each serves its share with its own transport, both on one store.
            let node = || {
                let b = b.clone();
                Fake::responding(move |provider, req| {
                    let text = String::from_utf8_lossy(&req.body);
                    let what = if provider == "alpha" {
                        text.split("[a").nth(1).and_then(|s| s.chars().next())
                    } else {
                        text.split('b').nth(1).and_then(|s| s.chars().next())
                    };
                    let (input, output) = most_billed(req);
                    match what {
                        Some('2') => status(500, None),
                        Some('1') => {
                            b.set(b.get() + input + output);
                            Step::Fail { after_ms: 5, failure: Failure::Timeout("headers") }
                        }
                        _ => {
                            b.set(b.get() + input + output);
                            let usage = format!(
                                r#"{{"choices":[{{"index":0,"message":{{"role":"assistant","content":"ok"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{input},"completion_tokens":{output},"total_tokens":{}}}}}"#,
                                input + output
                            );
                            Step::Answer {
                                after_ms: 5,
                                status: 200,
                                headers: vec![("content-type".into(), "application/json".into())],
                                chunks: vec![(0, Ok(usage.into_bytes()))],
                            }
                        }
                    }
                })
            };
            let (one, two) = (node(), node());
            super::super::paused_runtime().block_on(async {
                let bodies: Vec<String> = reqs.iter().map(body).collect();
                let calls = bodies.iter().enumerate().map(|(i, b)| {
                    let t = if i % 2 == 0 { &one } else { &two };
                    post(&p, &store, t, "/v1/chat/completions", "sk-acme", b)
                });
                futures::future::join_all(calls).await;
            });
            let settled = counter(&store, ":tokens:day:");
            prop_assert!(billed.get() <= max, "providers billed {} over the limit {max}", billed.get());
            prop_assert!(settled >= 0 && settled as u64 <= max, "settled {settled} over the limit {max}");
            prop_assert!(settled as u64 >= billed.get(), "settled {settled} below what was billed {}", billed.get());
        }
    }
}

/// A billing choice dearer than the catalog's prices (here `service_tier: "priority"`) is a
/// capability the provider must grant, and is priced at the model's `option_price_factor`: in
/// the reservation and in the settlement. A limited request to a model that states no factor is
/// refused, naming the setting.
#[tokio::test(start_paused = true)]
async fn a_priority_tier_is_granted_and_priced_or_refused() {
    let policy_with = |provider_extra: &str, model_extra: &str| {
        let text = format!(
            "version = 1\n\
             [[providers]]\nid = \"alpha\"\nbase_url = \"http://alpha/v1\"\nlocation = \"DE\"\n{provider_extra}\nmodels = {{ \"chat-model\" = {{ id = \"m\", input_price = 1.0, output_price = 1.0{model_extra} }} }}\n\
             [[tenants]]\nid = \"acme\"\nkeys = [\"sha256:{}\"]\nlimits = {{ usd_per_day = 1.0 }}\n",
            hex::encode(policy::hash_key("sk-acme"))
        );
        policy::load(&text, "tiers").unwrap_or_else(|e| panic!("{e}"))
    };
    let priority = chat_body(r#","max_tokens":10,"service_tier":"priority""#);
    let standard = chat_body(r#","max_tokens":10,"service_tier":"default""#);
    // Not granted: no provider may take it.
    let p = policy_with("", "");
    let store = MemStore::default();
    let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
    let a = post(&p, &store, &t, "/v1/chat/completions", "sk-acme", &priority).await;
    assert_ne!(a.status, 200);
    assert!(a.text().contains("priced_options"), "{}", a.text());
    assert!(t.sent_to().is_empty());
    // The default tier needs no grant and is priced at the catalog's prices.
    let a = post(&p, &store, &t, "/v1/chat/completions", "sk-acme", &standard).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        log(&a)["limits"]["hold"]["need"]["micro_usd"],
        standard.len() as u64 + 10
    );
    // Granted, but the model states no factor: a limited caller is refused, told what to set.
    let p = policy_with("capabilities = [\"priced_options\"]", "");
    let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
    let a = post(&p, &store, &t, "/v1/chat/completions", "sk-acme", &priority).await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(a.code(), "unpriced_option");
    assert!(a.text().contains("option_price_factor"), "{}", a.text());
    assert!(t.sent_to().is_empty());
    // Granted and priced: reserved and settled at twice the catalog's prices.
    let p = policy_with(
        "capabilities = [\"priced_options\"]",
        ", option_price_factor = 2.0",
    );
    let store = MemStore::default();
    let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
    let a = post(&p, &store, &t, "/v1/chat/completions", "sk-acme", &priority).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        log(&a)["limits"]["hold"]["need"]["micro_usd"],
        2 * (priority.len() as u64 + 10)
    );
    // The answer's usage (1 prompt and 2 completion tokens) at 2.0 per million each.
    assert_eq!(counter(&store, ":usd:day:"), 6);
}
