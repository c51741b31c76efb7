//! Inference requests: tenants' caps, the models list, explain, refusals, exhaustion, unset keys, hedging and `Retry-After`.

use super::*;

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
        store: None,

        host_span: None,
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

/// A transport is asked for every response header only when the policy passes the provider's
/// rate-limit headers on; otherwise it may hand over just the ones Meridian reads.
#[tokio::test(start_paused = true)]
async fn every_upstream_header_is_asked_for_only_when_rate_limits_pass_through() {
    for (settings, all) in [("", false), ("expose_ratelimit_headers = true\n", true)] {
        let text = policy_text("").replacen(
            "allow_anonymous = true\n",
            &format!("allow_anonymous = true\n{settings}"),
            1,
        );
        let p = policy::load(&text, "api").unwrap();
        let t = Fake::new(vec![("alpha", vec![ok_json(0)])]);
        let a = chat(&p, &t, &[JSON], CHAT).await;
        assert_eq!(a.status, 200, "{}", a.text());
        let sent = t.requests.borrow();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].all_headers, all, "{settings}");
    }
}
