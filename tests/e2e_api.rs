//! End to end: the built component in meridian-host (wasmtime 48) against mock upstreams.
//! The API surface: forwarding, aliasing, key injection, streaming, models, bad input.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use support::mock::{chunk, SseEnd};
use support::{json_of, list_ids, policy_for, Meridian, Mock, Script};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn non_stream_chat_is_forwarded_with_alias_key_injection_and_audit() {
    let up = Mock::start(Script::ok("hello from upstream")).await;
    let client_key = "sk-client-should-not-leak";
    let tenant = format!(
        "[[tenants]]\nid = \"acme\"\nkeys = [\"sha256:{}\"]\n",
        hex::encode(meridian::policy::hash_key(client_key))
    );
    let policy = policy_for(
        &[("alpha", &up, "DE", "key_secret = \"openai_api_key\"")],
        &tenant,
    );
    let m = Meridian::with_policy(
        &policy,
        &[("SPIN_VARIABLE_OPENAI_API_KEY", "sk-provider-secret")],
    )
    .await;

    let r = client()
        .post(m.at("/v1/chat/completions"))
        .header("authorization", format!("Bearer {client_key}"))
        .header("cookie", "session=abc")
        .header("x-request-id", "req-nonstream-1")
        .header("cf-ipcountry", "DE")
        .header("content-type", "application/json")
        .body(r#"{"model":"chat-model","messages":[{"role":"user","content":"secret prompt text"}],"temperature":0.70,"provider":{"order":["alpha"]}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-meridian-provider"), "alpha");
    assert_eq!(header(&r, "x-meridian-model"), "alpha-upstream-model");
    assert_eq!(header(&r, "x-meridian-jurisdiction"), "DE");
    assert_eq!(header(&r, "x-meridian-attempts"), "1");
    assert_eq!(header(&r, "x-request-id"), "req-nonstream-1");
    assert!(header(&r, "x-meridian-policy").starts_with("e2e@1+"));
    // usage 10 in, 20 out at 1.0 / 2.0 USD per million tokens
    assert_eq!(header(&r, "x-meridian-cost-usd"), "0.00005000");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "hello from upstream"
    );

    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(
        req.header("authorization"),
        Some("Bearer sk-provider-secret")
    );
    assert_eq!(req.header("cookie"), None);
    assert_eq!(
        req.header("transfer-encoding"),
        None,
        "a known length, not chunked"
    );
    assert!(req
        .header("content-length")
        .is_some_and(|v| v.parse::<usize>().is_ok_and(|n| n > 0)));
    assert_eq!(req.header("cf-ipcountry"), None);
    assert_eq!(req.header("x-request-id"), Some("req-nonstream-1"));
    assert_eq!(req.body["model"], "alpha-upstream-model");
    assert!(
        req.body.get("provider").is_none(),
        "the provider object is Meridian's, not the upstream's"
    );
    assert_eq!(
        req.body["temperature"].to_string(),
        "0.70",
        "numbers pass through exactly"
    );
    assert_eq!(req.body["messages"][0]["content"], "secret prompt text");

    let log = m.log_for("req-nonstream-1").await;
    assert_eq!(log["provider"], "alpha");
    assert_eq!(log["tenant"], "acme");
    assert_eq!(log["status"], 200);
    let raw = m.stdout.lock().unwrap().join("\n");
    assert!(
        !raw.contains("secret prompt text"),
        "prompt text must never be logged"
    );
    assert!(!raw.contains("sk-provider-secret") && !raw.contains("sk-client-should-not-leak"));
}

#[tokio::test]
async fn stream_first_chunk_arrives_while_upstream_is_still_generating() {
    let release = Arc::new(tokio::sync::Notify::new());
    let up = Mock::start(Script::Sse {
        events: vec![chunk("Hel"), chunk("lo")],
        gap_ms: 0,
        end: SseEnd::HoldAfterFirst(release.clone()),
    })
    .await;
    let policy = policy_for(&[("alpha", &up, "DE", "")], "");
    let m = Meridian::with_policy(&policy, &[]).await;
    let r = client()
        .post(m.at("/v1/chat/completions"))
        .json(&serde_json::json!({"model": "chat-model", "stream": true, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/event-stream"));
    let mut body = r.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(20), body.next())
        .await
        .expect("the first chunk must arrive while the upstream holds the rest")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("Hel"));
    // Only now does the upstream finish.
    release.notify_one();
    let mut rest = Vec::new();
    while let Some(c) = body.next().await {
        rest.extend_from_slice(&c.unwrap());
    }
    let rest = String::from_utf8(rest).unwrap();
    assert!(
        rest.contains("lo") && rest.trim_end().ends_with("data: [DONE]"),
        "{rest}"
    );
}

#[tokio::test]
async fn models_list_and_health_come_from_the_policy() {
    let up = Mock::start(Script::ok("x")).await;
    let m = Meridian::with_policy(&policy_for(&[("alpha", &up, "DE", "")], ""), &[]).await;
    let r = client().get(m.at("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    let ids = list_ids(&v);
    assert_eq!(ids, ["chat-model", "embed-model"]);
    let h: serde_json::Value = json_of(client().get(m.at("/healthz"))).await;
    assert_eq!(h["status"], "ok");
    assert!(h["policy"].as_str().unwrap().starts_with("e2e@1"));
}

#[tokio::test]
async fn embedded_default_policy_serves_with_nothing_configured() {
    let m = Meridian::default_policy(&[]).await;
    // Anonymous callers are served only by the keyless engine: that is all they are listed.
    let v: serde_json::Value = json_of(client().get(m.at("/v1/models"))).await;
    let ids = list_ids(&v);
    assert_eq!(ids, ["llama-3.1-8b"]);
    let h: serde_json::Value = json_of(client().get(m.at("/healthz"))).await;
    assert!(h["policy"].as_str().unwrap().starts_with("default@"));
    assert_eq!(h["client_location"]["platform"], "spin");
    // Anonymous callers may not spend the operator's keys: refused before any attempt.
    let r = client()
        .post(m.at("/v1/chat/completions"))
        .json(&serde_json::json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(header(&r, "x-meridian-attempts"), "0");
    assert_eq!(header(&r, "x-meridian-tenant"), "anonymous");

    // The compiled default policy routes `local-only` traffic to its self-hosted engine at
    // 127.0.0.1:11434 (played here by a mock), under the engine's own model name.
    let engine = Mock::start_at("127.0.0.1:11434", Script::ok("from the local engine"))
        .await
        .expect("127.0.0.1:11434 is taken (a local Ollama?): stop it to run this test");
    let r = client()
        .post(m.at("/v1/chat/completions"))
        .header("x-meridian-privacy", "local-only")
        .json(&serde_json::json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-meridian-provider"), "local");
    assert_eq!(header(&r, "x-meridian-model"), "llama3.1:8b");
    let seen = engine.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body["model"], "llama3.1:8b");
}

#[tokio::test]
async fn route_explain_answers_behind_the_admin_key_without_forwarding() {
    let eu = Mock::start(Script::ok("never")).await;
    let us = Mock::start(Script::ok("never")).await;
    let policy = policy_for(
        &[("eu-prov", &eu, "DE", ""), ("us-prov", &us, "US", "")],
        "[[rules]]\nid = \"eu-stays\"\nwhen = { client_jurisdiction = [\"eu\"] }\nrequire = { jurisdiction = [\"eu\"] }\n",
    );
    let body =
        serde_json::json!({"model": "chat-model", "messages": [{"role": "user", "content": "x"}]});

    // Without an admin key configured, the endpoint is off.
    let off = Meridian::with_policy(&policy, &[]).await;
    let r = client()
        .post(off.at("/v1/route/explain"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, e) = error_of(r).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (403, Some("explain_disabled"))
    );

    let m = Meridian::with_policy(&policy, &[("SPIN_VARIABLE_ADMIN_KEY", "adm-secret")]).await;
    for key in [None, Some("wrong")] {
        let mut rb = client().post(m.at("/v1/route/explain")).json(&body);
        if let Some(k) = key {
            rb = rb.header("x-meridian-admin-key", k);
        }
        let (status, e) = error_of(rb.send().await.unwrap()).await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (401, Some("invalid_admin_key"))
        );
    }
    // The admin key comes first: without it, not even a body that is not JSON is read.
    let (status, e) = error_of(
        client()
            .post(m.at("/v1/route/explain"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (401, Some("invalid_admin_key"))
    );
    let r = client()
        .post(m.at("/v1/route/explain"))
        .header("x-meridian-admin-key", "adm-secret")
        .header("cf-ipcountry", "FR")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["decision"]["candidates"][0]["provider"], "eu-prov");
    assert_eq!(v["decision"]["candidates"].as_array().unwrap().len(), 1);
    assert_eq!(v["decision"]["excluded"][0]["provider"], "us-prov");
    assert_eq!(
        v["decision"]["matched_rules"],
        serde_json::json!(["eu-stays"])
    );
    assert!(v["text"].as_str().unwrap().contains("1. eu-prov"), "{v}");
    assert!(
        eu.requests().is_empty() && us.requests().is_empty(),
        "explain never forwards"
    );
}

#[tokio::test]
async fn embeddings_and_completions_are_forwarded_to_their_paths() {
    let up = Mock::with(|req, _| {
        let body = if req.path.ends_with("/embeddings") {
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"e","usage":{"prompt_tokens":2,"total_tokens":2}}"#
        } else {
            r#"{"id":"c","object":"text_completion","choices":[{"text":"ok","index":0}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#
        };
        Script::Json { status: 200, body: body.into(), headers: vec![] }
    })
    .await;
    let m = Meridian::with_policy(&policy_for(&[("alpha", &up, "DE", "")], ""), &[]).await;
    let r = client()
        .post(m.at("/v1/embeddings"))
        .json(&serde_json::json!({"model": "embed-model", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["data"][0]["embedding"][1], 0.2);
    let r = client()
        .post(m.at("/v1/completions"))
        .json(&serde_json::json!({"model": "chat-model", "prompt": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let reqs = up.requests();
    assert_eq!(reqs[0].path, "/v1/embeddings");
    assert_eq!(reqs[0].body["model"], "alpha-embed");
    assert_eq!(reqs[1].path, "/v1/completions");
}

/// Sends a request and returns its status and JSON error body.
async fn sent(rb: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    error_of(rb.send().await.unwrap()).await
}

async fn error_of(r: reqwest::Response) -> (u16, serde_json::Value) {
    let s = r.status().as_u16();
    let v: serde_json::Value = r.json().await.expect("error bodies are JSON");
    assert!(
        v["error"]["message"].is_string() && v["error"]["type"].is_string(),
        "{v}"
    );
    (s, v)
}

#[tokio::test]
async fn bad_input_gets_clear_openai_shaped_errors() {
    let up = Mock::start(Script::ok("x")).await;
    let m = Meridian::with_policy(&policy_for(&[("alpha", &up, "DE", "")], ""), &[]).await;
    let c = client();

    let (s, v) = error_of(c.get(m.at("/v1/nothing")).send().await.unwrap()).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("unknown_url")));

    let r = c.get(m.at("/v1/chat/completions")).send().await.unwrap();
    assert_eq!(header(&r, "allow"), "POST");
    let (s, _) = error_of(r).await;
    assert_eq!(s, 405);

    // Not JSON; and JSON nested past serde_json's 128-level limit, a 400 rather than a trap
    // (the component's shadow stack is 128 KiB).
    let deep = format!(
        "{{\"model\": \"chat-model\", \"x\": {}1{}}}",
        "[".repeat(2000),
        "]".repeat(2000)
    );
    for body in ["{not json".to_string(), deep] {
        let (s, v) = sent(
            c.post(m.at("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("invalid_json"))
        );
    }

    let (s, v) = sent(
        c.post(m.at("/v1/chat/completions"))
            .json(&serde_json::json!({"messages": []})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str(), v["error"]["param"].as_str()),
        (400, Some("missing_model"), Some("model"))
    );

    let (s, v) = sent(
        c.post(m.at("/v1/chat/completions"))
            .json(&serde_json::json!({"model": "chat-modle"})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("chat-model"),
        "did-you-mean: {v}"
    );

    // The e2e policy sets max_body_bytes = 4096.
    let big = serde_json::json!({"model": "chat-model", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let (s, v) = sent(c.post(m.at("/v1/chat/completions")).json(&big)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("request_too_large"))
    );

    // Chunked (no content-length) bodies are limited too.
    let stream = futures::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1000]))),
    );
    let r = c
        .post(m.at("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    let (s, v) = sent(
        c.post(m.at("/v1/chat/completions"))
            .header("x-meridian-privacy", "zdr, no-trainig")
            .json(&serde_json::json!({"model": "chat-model"})),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-training"),
        "{v}"
    );
    assert_eq!(up.requests().len(), 0, "nothing bad reached the upstream");
    // The deepest JSON the limit allows is parsed, forwarded unchanged and answered (in a field
    // Meridian passes without walking it).
    let deepest = format!(
        "{{\"model\": \"chat-model\", \"metadata\": {}1{}}}",
        "[".repeat(126),
        "]".repeat(126)
    );
    let r = c
        .post(m.at("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(deepest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent = up.requests().remove(0).body;
    let mut depth = 0;
    let mut x = &sent["metadata"];
    while let Some(inner) = x.get(0) {
        depth += 1;
        x = inner;
    }
    assert_eq!(depth, 126, "forwarded unchanged");
}

#[tokio::test]
async fn upstream_down_is_a_502_that_says_why() {
    let refused = Mock::refused_url().await;
    let policy = format!(
        "version = 1\n[settings]\nallow_anonymous = true\n[[providers]]\nid = \"down\"\nbase_url = \"{refused}/v1\"\nlocation = \"US\"\nmodels = {{ \"chat-model\" = \"x\" }}\n"
    );
    let m = Meridian::with_policy(&policy, &[]).await;
    let r = client()
        .post(m.at("/v1/chat/completions"))
        .header("x-request-id", "req-down")
        .json(&serde_json::json!({"model": "chat-model", "messages": []}))
        .send()
        .await
        .unwrap();
    assert!(
        header(&r, "x-meridian-failures").starts_with("down=connect error"),
        "{:?}",
        r.headers()
    );
    let (s, v) = error_of(r).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (502, Some("upstream_unavailable"))
    );
    assert_eq!(v["error"]["meridian"]["attempts"][0]["provider"], "down");
}

#[tokio::test]
async fn residency_refusal_is_451_and_explains_each_exclusion() {
    let us = Mock::start(Script::ok("x")).await;
    let policy = policy_for(
        &[("usa", &us, "US", "")],
        "[[rules]]\nid = \"eu-stays-in-eu\"\nwhen = { client_jurisdiction = [\"eu\"] }\nrequire = { jurisdiction = [\"eu\"] }\n",
    )
    ;
    let m = Meridian::with_policy(&policy, &[]).await;
    let r = client()
        .post(m.at("/v1/chat/completions"))
        .header("cf-ipcountry", "FR")
        .json(&serde_json::json!({"model": "chat-model", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-meridian-rules"), "eu-stays-in-eu");
    let (s, v) = error_of(r).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (451, Some("residency_violation"))
    );
    let ex = &v["error"]["meridian"]["excluded"][0];
    assert_eq!(ex["provider"], "usa");
    assert_eq!(ex["reasons"][0]["by"], "rule `eu-stays-in-eu`");
    assert_eq!(
        us.requests().len(),
        0,
        "nothing was sent where the policy forbids"
    );
    // A header the policy does not trust cannot move the client.
    let r = client()
        .post(m.at("/v1/chat/completions"))
        .header("cf-ipcountry", "FR")
        .header("x-vercel-ip-country", "US")
        .json(&serde_json::json!({"model": "chat-model", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 451);
}

#[tokio::test]
async fn a_policy_variable_that_does_not_validate_is_refused_and_its_errors_logged() {
    let m = Meridian::with_policy(
        "version = 1\n[[providers]]\nid = \"x\"\nbase_ur = \"http://a\"\n",
        &[],
    )
    .await;
    let (s, v) = error_of(client().get(m.at("/v1/models")).send().await.unwrap()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (500, Some("invalid_policy"))
    );
    // The caller hears that the policy is invalid; the operator's log has every error.
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(!msg.contains("base_ur"), "{msg}");
    let rid = v["error"]["meridian"]["request_id"]
        .as_str()
        .map(str::to_string);
    let logs = m.logs();
    let line = logs
        .iter()
        .find(|l| {
            l["error_code"] == "invalid_policy"
                && rid.as_ref().is_none_or(|r| l["request_id"] == *r)
        })
        .expect("the refusal's log line");
    let detail = line["error_detail"].as_str().unwrap();
    assert!(
        detail.contains("unknown key `base_ur`") && detail.contains("did you mean `base_url`?"),
        "{detail}"
    );
}

/// The `policy` variable may carry the compiled form `meridian compile` writes: served exactly as
/// its TOML would be (same policy version, same routing), and an edited compiled form is an
/// invalid policy whose log says what to do.
#[tokio::test]
async fn a_compiled_policy_in_the_variable_serves_as_its_toml_does() {
    let up = Mock::start(Script::ok("compiled")).await;
    let toml = policy_for(&[("alpha", &up, "DE", "")], "");
    let compiled =
        meridian::policy::compiled::compile(&meridian::policy::load(&toml, "e2e").unwrap());
    let chat = |m: &Meridian| {
        client()
            .post(m.at("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(r#"{"model":"chat-model","messages":[{"role":"user","content":"hi"}]}"#)
            .send()
    };
    let mut versions = Vec::new();
    for text in [&toml, &compiled] {
        let m = Meridian::with_policy(text, &[]).await;
        let r = chat(&m).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-meridian-provider"), "alpha");
        versions.push(header(&r, "x-meridian-policy").to_string());
    }
    assert_eq!(versions[0], versions[1]);
    assert!(versions[0].starts_with("e2e@1+"));
    // One character of the encoded policy changed, as a hand edit would.
    let at = compiled.len() - 20;
    let c = if &compiled[at..at + 1] == "A" {
        "B"
    } else {
        "A"
    };
    let edited = format!("{}{c}{}", &compiled[..at], &compiled[at + 1..]);
    let m = Meridian::with_policy(&edited, &[]).await;
    let r = chat(&m).await.unwrap();
    assert_eq!(r.status(), 500);
    let id = header(&r, "x-request-id").to_string();
    let line = m.log_for(&id).await;
    let detail = line.to_string();
    assert!(
        detail.contains("checksum") && detail.contains("meridian compile"),
        "{detail}"
    );
}
