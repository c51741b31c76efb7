//! Browsers: CORS on answers and preflights, for allowed, unknown and missing origins.

use super::*;

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
