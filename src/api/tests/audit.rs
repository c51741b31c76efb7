//! The audit headers every response carries, whatever happened, and a policy that fails to load.

use super::*;

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
