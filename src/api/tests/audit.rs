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

/// `audit_headers = "one"`: a response carries `x-request-id` and one `x-meridian-audit`, an
/// RFC 9651 dictionary (parsed here by the `sfv` crate) holding exactly the facts that the
/// default gives one header each, with the same text; `x-meridian-audit` is exposed to browsers.
#[tokio::test(start_paused = true)]
async fn one_audit_header_holds_what_each_header_says() {
    let each = load("[[rules]]\nid = \"a-first\"\nprefer = { order = [\"alpha\", \"beta\"] }\n");
    let one_text = policy_text("").replacen(
        "allow_anonymous = true\n",
        "allow_anonymous = true\naudit_headers = \"one\"\n",
        1,
    ) + "[[rules]]\nid = \"a-first\"\nprefer = { order = [\"alpha\", \"beta\"] }\n";
    let one = policy::load(&one_text, "api").unwrap();
    assert_eq!(one.settings.audit_headers, policy::AuditHeaders::One);
    let headers = [
        JSON,
        ("authorization", "Bearer sk-acme"),
        ("traceparent", GIVEN_TRACEPARENT),
        ("cf-ipcountry", "DE"),
        ("x-request-id", "mine-7"),
        ("origin", "https://app.example"),
    ];
    let answer = |p: &Policy| {
        let p = p.clone();
        async move {
            // alpha fails with a status the plan falls back on; beta answers.
            let t = Fake::new(vec![
                ("alpha", vec![status(503, None)]),
                ("beta", vec![ok_json(0)]),
            ]);
            chat(&p, &t, &headers, CHAT).await
        }
    };
    let (a, b) = (answer(&each).await, answer(&one).await);
    assert_eq!((a.status, b.status), (200, 200), "{}", b.text());
    let facts: Vec<(&str, &str)> = a
        .headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-meridian-"))
        .map(|(k, v)| (k.trim_start_matches("x-meridian-"), v.as_str()))
        .collect();
    // The case has something to fold: who served, what failed (`=` and spaces in a value).
    for k in [
        "provider",
        "failures",
        "client-country",
        "policy",
        "trace-id",
    ] {
        assert!(facts.iter().any(|(f, _)| *f == k), "{k} missing: {facts:?}");
    }
    assert_eq!(b.header("x-request-id"), Some("mine-7"));
    assert!(
        b.headers
            .iter()
            .all(|(k, _)| !k.starts_with("x-meridian-") || k == "x-meridian-audit"),
        "{:?}",
        b.headers
    );
    let dict = sfv::Parser::parse_dictionary(b.header("x-meridian-audit").unwrap().as_bytes())
        .unwrap_or_else(|e| panic!("not an RFC 9651 dictionary: {e}"));
    let folded: Vec<(&str, &str)> = dict
        .iter()
        .map(|(k, v)| match v {
            sfv::ListEntry::Item(i) => (k.as_str(), i.bare_item.as_str().unwrap()),
            other => panic!("{k}: {other:?}"),
        })
        .collect();
    // The two policies differ by the setting, so their digests do; every other fact is the same.
    let label = |p: &Policy| format!("api@1+{}", p.digest);
    let expect: Vec<(&str, String)> = facts
        .iter()
        .map(|(k, v)| {
            (
                *k,
                if *k == "policy" {
                    label(&one)
                } else {
                    v.to_string()
                },
            )
        })
        .collect();
    assert_eq!(
        facts.iter().find(|(k, _)| *k == "policy").unwrap().1,
        label(&each)
    );
    let folded: Vec<(&str, String)> = folded
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    assert_eq!(folded, expect);
    // Browsers may read it.
    let expose = b
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(expose.contains("x-meridian-audit"), "{expose}");
    // The default is one header each.
    assert_eq!(each.settings.audit_headers, policy::AuditHeaders::Each);
    assert!(a.header("x-meridian-audit").is_none());
}

/// A fact with `"` or `\` in its text reads back the same out of the folded header.
#[test]
fn one_audit_header_escapes_quotes_and_backslashes() {
    let record = Record {
        request_id: "r".into(),
        policy: Some(r#"odd "name" \ here"#.into()),
        provider: Some("p=1, q".into()),
        ..Record::default()
    };
    let h = record.headers(policy::AuditHeaders::One);
    assert_eq!(h[0], ("x-request-id".to_string(), "r".to_string()));
    let dict = sfv::Parser::parse_dictionary(h[1].1.as_bytes()).unwrap();
    let get = |k: &str| match &dict[k] {
        sfv::ListEntry::Item(i) => i.bare_item.as_str().unwrap().to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(get("policy"), r#"odd "name" \ here"#);
    assert_eq!(get("provider"), "p=1, q");
    assert_eq!(h.len(), 2);
}
