//! Facts a client cannot forge, end to end in the real runtime: each platform profile against
//! spoofed location headers, the edge secret, the built-in IP table, who may spend the
//! operator's keys, and what of an upstream's error reaches the client.

mod support;

use std::path::PathBuf;

use support::{Meridian, Mock, Script};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn h(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Two keyless providers, `eu` (DE) and `us` (US), behind the given `[settings.client]` body.
/// EU clients and clients whose country is unknown stay in the EU; everyone else prefers `us`.
fn geo_policy(eu: &Mock, us: &Mock, client: &str) -> String {
    format!(
        "version = 1\nname = \"trust\"\nrevision = \"1\"\n[settings]\nallow_anonymous = true\n[settings.client]\n{client}\n\
         [[providers]]\nid = \"eu\"\nbase_url = \"{}/v1\"\nlocation = \"DE\"\nmodels = {{ \"chat-model\" = \"eu-m\" }}\n\
         [[providers]]\nid = \"us\"\nbase_url = \"{}/v1\"\nlocation = \"US\"\nmodels = {{ \"chat-model\" = \"us-m\" }}\n\
         [[rules]]\nid = \"eu-stays\"\nwhen = {{ client_jurisdiction = [\"eu\"] }}\nrequire = {{ jurisdiction = [\"eu\"] }}\n\
         [[rules]]\nid = \"unknown-stays\"\nwhen = {{ client_country = [\"XX\"] }}\nrequire = {{ jurisdiction = [\"eu\"] }}\n\
         [[rules]]\nid = \"us-first\"\nprefer = {{ order = [\"us\"] }}\n",
        eu.url(),
        us.url()
    )
}

/// Sends a chat request with the given headers; returns (status, serving provider, the
/// client-country audit header).
async fn ask(m: &Meridian, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut rb = client()
        .post(m.at("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(r#"{"model":"chat-model","messages":[{"role":"user","content":"hi"}]}"#);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    (
        r.status().as_u16(),
        h(&r, "x-meridian-provider"),
        h(&r, "x-meridian-client-country"),
    )
}

/// (what, headers, the provider that must serve, the country the audit must report)
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, &'a str);

struct Profile {
    client: &'static str,
    /// The header the platform sets, and how it writes a US client.
    header: &'static str,
    us: &'static str,
    de: &'static str,
    /// Another platform's country header (which this platform does not strip).
    foreign: &'static str,
}

const PROFILES: &[Profile] = &[
    Profile {
        client: "platform = \"cloudflare\"",
        header: "cf-ipcountry",
        us: "US",
        de: "DE",
        foreign: "cloudfront-viewer-country",
    },
    Profile {
        client: "platform = \"cloudfront\"",
        header: "cloudfront-viewer-country",
        us: "US",
        de: "DE",
        foreign: "cf-ipcountry",
    },
    Profile {
        client: "platform = \"vercel\"",
        header: "x-vercel-ip-country",
        us: "US",
        de: "DE",
        foreign: "cf-ipcountry",
    },
    Profile {
        client: "platform = \"akamai\"",
        header: "x-akamai-edgescape",
        us: "georegion=246,country_code=US,region_code=CA",
        de: "georegion=79,country_code=DE,city=BERLIN",
        foreign: "cf-ipcountry",
    },
    Profile {
        client: "platform = \"fastly\"\ncountry_header = \"fastly-geo-country\"",
        header: "fastly-geo-country",
        us: "US",
        de: "DE",
        foreign: "x-vercel-ip-country",
    },
    Profile {
        client: "platform = \"custom\"\ncountry_header = \"x-edge-country\"",
        header: "x-edge-country",
        us: "US",
        de: "DE",
        foreign: "cf-ipcountry",
    },
];

#[tokio::test]
async fn each_profile_trusts_only_its_own_header_once_and_never_falls_through() {
    let eu = Mock::start(Script::ok("eu")).await;
    let us = Mock::start(Script::ok("us")).await;
    for p in PROFILES {
        let m = Meridian::with_policy(&geo_policy(&eu, &us, p.client), &[]).await;
        let upper = p.header.to_ascii_uppercase();
        let cases: Vec<Case> = vec![
            ("the trusted header", vec![(p.header, p.us)], "us", "US"),
            ("the trusted header, EU", vec![(p.header, p.de)], "eu", "DE"),
            ("no header", vec![], "eu", "XX"),
            (
                "another platform's header alone",
                vec![(p.foreign, "US")],
                "eu",
                "XX",
            ),
            (
                "another platform's header beside the trusted one",
                vec![(p.header, p.de), (p.foreign, "US")],
                "eu",
                "DE",
            ),
            (
                "the header twice",
                vec![(p.header, p.us), (p.header, p.us)],
                "eu",
                "XX",
            ),
            (
                "a spoof beside the trusted one",
                vec![(p.header, p.de), (p.header, p.us)],
                "eu",
                "XX",
            ),
            (
                "a spoof in other letter case beside the trusted one",
                vec![(upper.as_str(), p.us), (p.header, p.de)],
                "eu",
                "XX",
            ),
            (
                "a padded spoof beside the trusted one",
                vec![(p.header, p.de), (p.header, "  US  ")],
                "eu",
                "XX",
            ),
            ("Tor", vec![(p.header, "T1")], "eu", "XX"),
            ("unknown", vec![(p.header, "XX")], "eu", "XX"),
            ("a lower-case code", vec![(p.header, "us")], "eu", "XX"),
            ("garbage", vec![(p.header, "United States")], "eu", "XX"),
            ("empty", vec![(p.header, "")], "eu", "XX"),
            (
                "Tor, with another platform's header",
                vec![(p.header, "T1"), (p.foreign, "US")],
                "eu",
                "XX",
            ),
        ];
        for (what, headers, want, want_country) in cases {
            let (status, provider, country) = ask(&m, &headers).await;
            assert_eq!(status, 200, "{}: {what}", p.header);
            assert_eq!(
                provider, want,
                "{}: {what} (client country: {country})",
                p.header
            );
            let expected = if want_country == "XX" {
                "XX; unknown".to_string()
            } else {
                format!("{want_country}; header {}", p.header)
            };
            assert!(
                country.starts_with(&expected),
                "{}: {what}: {country}",
                p.header
            );
        }
        let (_, _, country) = ask(&m, &[(p.header, p.us)]).await;
        assert_eq!(country, format!("US; header {}", p.header));
    }
}

#[tokio::test]
async fn the_edge_secret_gates_every_location_header() {
    let eu = Mock::start(Script::ok("eu")).await;
    let us = Mock::start(Script::ok("us")).await;
    let policy = geo_policy(
        &eu,
        &us,
        "platform = \"cloudflare\"\nedge_secret = { header = \"x-edge-auth\", secret = \"edge_secret\" }",
    ) + "[[rules]]\nid = \"direct-callers-refused\"\nwhen = { edge_verified = false }\nrequire = { providers = [] }\n";
    let secret = "edge-3f9c1e7b2d";
    let m = Meridian::with_policy(&policy, &[("SPIN_VARIABLE_EDGE_SECRET", secret)]).await;

    let (status, provider, country) =
        ask(&m, &[("cf-ipcountry", "US"), ("x-edge-auth", secret)]).await;
    assert_eq!((status, provider.as_str()), (200, "us"), "{country}");
    assert_eq!(country, "US; header cf-ipcountry");
    for (what, headers) in [
        ("absent", vec![("cf-ipcountry", "US")]),
        (
            "wrong",
            vec![("cf-ipcountry", "US"), ("x-edge-auth", "edge-3f9c1e7b2e")],
        ),
        (
            "a prefix",
            vec![("cf-ipcountry", "US"), ("x-edge-auth", "edge-3f9c")],
        ),
        (
            "twice",
            vec![
                ("cf-ipcountry", "US"),
                ("x-edge-auth", secret),
                ("x-edge-auth", secret),
            ],
        ),
    ] {
        let (status, provider, country) = ask(&m, &headers).await;
        assert_eq!(status, 403, "{what}");
        assert_eq!(provider, "", "{what}");
        assert!(
            country.starts_with("XX; unknown: the edge secret did not verify"),
            "{what}: {country}"
        );
    }
    assert!(eu.requests().is_empty());
    drop(m);

    // With the secret's variable unset nothing verifies: fail closed, and say why.
    let m = Meridian::with_policy(&policy, &[]).await;
    let (status, _, country) = ask(&m, &[("cf-ipcountry", "US"), ("x-edge-auth", secret)]).await;
    assert_eq!(status, 403);
    assert!(
        country.contains("edge secret is not configured"),
        "{country}"
    );
}

/// A component built with the real IP table (`MERIDIAN_GEOIP`, fetched by scripts/geoip) into
/// its own target directory, so the artifact the other tests run is untouched.
async fn build_with_table() -> PathBuf {
    let root = support::meridian::root();
    let dir = tokio::process::Command::new(root.join("scripts/geoip"))
        .output()
        .await
        .expect("run scripts/geoip");
    assert!(
        dir.status.success(),
        "scripts/geoip: {}",
        String::from_utf8_lossy(&dir.stderr)
    );
    let dir = String::from_utf8_lossy(&dir.stdout).trim().to_string();
    let (out, wasm) =
        support::meridian::build_component("geoip", &[("MERIDIAN_GEOIP", dir.as_str())]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wasm
}

#[tokio::test]
async fn addresses_are_located_with_the_built_in_table() {
    let wasm = build_with_table().await;
    let eu = Mock::start(Script::ok("eu")).await;
    let us = Mock::start(Script::ok("us")).await;

    // Behind a platform that gives only the client's address.
    let policy = geo_policy(
        &eu,
        &us,
        "platform = \"custom\"\naddress_header = \"x-client-ip\"",
    );
    let m = Meridian::build_with_policy(&wasm, &policy, &[]).await;
    let health: serde_json::Value = client()
        .get(m.at("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let table = &health["client_location"]["ip_table"];
    assert_eq!(table["date"], "2026-06-17", "{health}");
    assert!(table["ipv4_ranges"].as_u64().unwrap() > 100_000, "{health}");
    assert!(
        health["policy"]
            .as_str()
            .unwrap()
            .ends_with(" ip-table 2026-06-17"),
        "{health}"
    );
    // Addresses whose country the pinned data set states (a German university, Google's DNS
    // over IPv4 and IPv6, RIPE NCC in the Netherlands).
    for (ip, provider, country) in [
        ("130.149.7.201", "eu", "DE"),
        ("8.8.8.8", "us", "US"),
        ("2001:4860:4860::8888", "us", "US"),
        ("193.0.6.139", "eu", "NL"),
    ] {
        let (status, served, got) = ask(&m, &[("x-client-ip", ip)]).await;
        assert_eq!((status, served.as_str()), (200, provider), "{ip}: {got}");
        assert_eq!(
            got,
            format!("{country}; address in x-client-ip, ip table 2026-06-17")
        );
    }
    for (what, headers) in [
        ("a private address", vec![("x-client-ip", "10.1.2.3")]),
        ("a list", vec![("x-client-ip", "8.8.8.8, 130.149.7.201")]),
        (
            "twice",
            vec![("x-client-ip", "8.8.8.8"), ("x-client-ip", "8.8.8.8")],
        ),
        ("garbage", vec![("x-client-ip", "eight.eight")]),
    ] {
        let (status, served, got) = ask(&m, &headers).await;
        assert_eq!((status, served.as_str()), (200, "eu"), "{what}: {got}");
        assert!(got.starts_with("XX; unknown"), "{what}: {got}");
    }
    drop(m);

    // Spin facing clients directly: the connection's address, which the runtime adds in
    // `spin-client-addr`. Spin appends its value after any the client sent under that name, so
    // a spoof makes the header appear twice: unknown, never the spoofed country.
    let spin = geo_policy(&eu, &us, "platform = \"spin\"");
    let m = Meridian::build_with_policy(&wasm, &spin, &[]).await;
    let (status, served, got) = ask(&m, &[]).await;
    assert_eq!((status, served.as_str()), (200, "eu"), "{got}");
    assert_eq!(
        got, "XX; unknown: the address in spin-client-addr is in no country's range",
        "the test's own 127.0.0.1"
    );
    let (status, served, got) = ask(&m, &[("spin-client-addr", "8.8.8.8:443")]).await;
    assert_eq!((status, served.as_str()), (200, "eu"), "{got}");
    assert_eq!(
        got, "XX; unknown: spin-client-addr appears 2 times",
        "the spoof stays beside Spin's own value"
    );
    drop(m);
    // The same with the host standing in for clients elsewhere (its test-only peer header).
    let m = Meridian::build_with_policy_and_peer_header(&wasm, &spin).await;
    for (peer, provider, country) in [
        ("130.149.7.201:5000", "eu", "DE"),
        ("8.8.8.8:443", "us", "US"),
        ("[2001:4860:4860::8888]:443", "us", "US"),
    ] {
        let (status, served, got) = ask(&m, &[("x-test-peer", peer)]).await;
        assert_eq!((status, served.as_str()), (200, provider), "{peer}: {got}");
        assert_eq!(
            got,
            format!("{country}; address in spin-client-addr, ip table 2026-06-17")
        );
    }
    // A German client that claims a US address in `spin-client-addr` is never American: two
    // values, so unknown, and the policy keeps unknown clients in the EU.
    let (_, served, got) = ask(
        &m,
        &[
            ("x-test-peer", "130.149.7.201:5000"),
            ("spin-client-addr", "8.8.8.8:443"),
        ],
    )
    .await;
    assert_eq!(served, "eu", "{got}");
    assert_eq!(got, "XX; unknown: spin-client-addr appears 2 times");
}

#[tokio::test]
async fn anonymous_callers_never_spend_the_operators_keys() {
    // The embedded default policy with a provider key set: anonymous use of that provider is
    // refused before any attempt, and an unknown key is served as anonymous, not refused.
    let m = Meridian::default_policy(&[("SPIN_VARIABLE_OPENAI_API_KEY", "sk-operator-0123456789")])
        .await;
    for key in [None, Some("sk-not-a-tenant")] {
        let mut rb = client()
            .post(m.at("/v1/chat/completions"))
            .json(&serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}));
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 403, "{key:?}");
        assert_eq!(h(&r, "x-meridian-tenant"), "anonymous");
        assert_eq!(h(&r, "x-meridian-attempts"), "0");
        let body: serde_json::Value = r.json().await.unwrap();
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("anonymous access needs the operator's provider key"),
            "{msg}"
        );
        assert!(!msg.contains("sk-operator"), "{msg}");
    }
}

#[tokio::test]
async fn upstream_errors_reach_the_client_as_a_summary_and_the_log_as_identifiers() {
    let leaky = r#"{"error":{"message":"Incorrect API key provided: sk-proj-abcd********************wxyz. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
    let up = Mock::with(move |r, _| {
        if r.body["messages"][0]["content"] == "bad" {
            Script::Json {
                status: 400,
                body: r#"{"error":{"message":"echo of prompt text","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}"#.into(),
                headers: vec![],
            }
        } else {
            Script::Json {
                status: 401,
                body: leaky.into(),
                headers: vec![
                    ("set-cookie".into(), "session=abc".into()),
                    ("openai-organization".into(), "operator-org".into()),
                    ("x-ratelimit-remaining-requests".into(), "99".into()),
                ],
            }
        }
    })
    .await;
    let hash = hex::encode(meridian::policy::hash_key("sk-tenant-1"));
    let policy = format!(
        "version = 1\n[settings]\nallow_anonymous = false\n[[providers]]\nid = \"alpha\"\nbase_url = \"{}/v1\"\nkey_secret = \"openai_api_key\"\nlocation = \"US\"\nmodels = {{ \"chat-model\" = \"a\" }}\n[[providers]]\nid = \"unset\"\nbase_url = \"{}/v1\"\nkey_secret = \"groq_api_key\"\nlocation = \"US\"\nmodels = {{ \"other-model\" = \"b\" }}\n[[tenants]]\nid = \"acme\"\nkeys = [\"sha256:{hash}\"]\n",
        up.url(),
        up.url()
    );
    let m = Meridian::with_policy(
        &policy,
        &[("SPIN_VARIABLE_OPENAI_API_KEY", "sk-proj-abcdSECRETwxyz")],
    )
    .await;
    let send = |model: &str, content: &str, rid: &str| {
        client()
            .post(m.at("/v1/chat/completions"))
            .bearer_auth("sk-tenant-1")
            .header("x-request-id", rid)
            .json(&serde_json::json!({"model": model, "messages": [{"role": "user", "content": content}]}))
            .send()
    };

    let r = send("chat-model", "hi", "up-401").await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(h(&r, "x-meridian-tenant"), "acme");
    for hidden in [
        "set-cookie",
        "openai-organization",
        "x-ratelimit-remaining-requests",
    ] {
        assert!(r.headers().get(hidden).is_none(), "{hidden} passed through");
    }
    let text = r.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "upstream_auth_failed");
    // "abcd" with its neighbours: a bare "abcd" can occur in a random hex id.
    assert!(
        !text.contains("-abcd") && !text.contains("abcd*") && !text.contains("wxyz"),
        "{text}"
    );
    assert!(
        text.contains("HTTP 401") && text.contains("`invalid_api_key`"),
        "{text}"
    );
    let log = m.log_for("up-401").await;
    // The log keeps what kind of error it was, never the provider's text.
    let logged = log["upstream_error"].as_str().unwrap();
    assert_eq!(
        logged, "HTTP 401, type `invalid_request_error`, code `invalid_api_key`",
        "{log}"
    );

    let r = send("chat-model", "bad", "up-400").await.unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(!text.contains("echo of prompt text"), "{text}");
    assert!(text.contains("param `temperature`"), "{text}");
    let log = m.log_for("up-400").await;
    assert!(!log.to_string().contains("echo of prompt text"), "{log}");
    assert!(
        log["upstream_error"]
            .as_str()
            .unwrap()
            .contains("param `temperature`"),
        "{log}"
    );

    // A provider whose key is unset: the client hears "not configured", the log says which.
    let r = send("other-model", "hi", "up-unset").await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(h(&r, "x-meridian-failures"), "unset=not configured");
    let text = r.text().await.unwrap();
    assert!(!text.contains("groq_api_key"), "{text}");
    let log = m.log_for("up-unset").await;
    assert!(
        log["attempts"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("groq_api_key"),
        "{log}"
    );
    drop(m);

    // The policy may pass the provider's rate-limit headers on.
    let m = Meridian::with_policy(
        &policy.replace(
            "allow_anonymous = false",
            "allow_anonymous = false\nexpose_ratelimit_headers = true",
        ),
        &[("SPIN_VARIABLE_OPENAI_API_KEY", "sk-x")],
    )
    .await;
    let r = client()
        .post(m.at("/v1/chat/completions"))
        .bearer_auth("sk-tenant-1")
        .json(&serde_json::json!({"model": "chat-model", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(h(&r, "x-ratelimit-remaining-requests"), "99");
    assert!(r.headers().get("set-cookie").is_none());
}
