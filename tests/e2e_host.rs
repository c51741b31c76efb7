//! meridian-host holds under abuse, as a host a deployment can be put behind: slow headers are
//! cut off, a guest that loops or allocates without end gets a 500 while the host keeps serving
//! others, and an outbound request to a host outside `allowed_outbound_hosts` (another port, an
//! IP literal for `localhost`, userinfo in the URL, a redirect) is refused and recorded as a
//! failure. Every wait here is bounded.

mod support;

use std::time::{Duration, Instant};

use support::{Meridian, Mock, Script};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn floor() -> std::path::PathBuf {
    let p = support::meridian::root().join("target/wasm32-wasip2/release/meridian_floor.wasm");
    assert!(
        p.exists(),
        "{} is missing: run ./scripts/setup",
        p.display()
    );
    p
}

fn addr(m: &Meridian) -> String {
    m.url.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection (or `limit` passes): how long that took.
async fn until_closed(s: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_cut_off() {
    let m = Meridian::with_host_args(Some(&floor()), &["--header-read-timeout-ms", "800"]).await;
    // Headers that never finish.
    let mut s = tokio::net::TcpStream::connect(addr(&m)).await.unwrap();
    s.write_all(b"POST /empty HTTP/1.1\r\nhost: x\r\ncontent-type: appl")
        .await
        .unwrap();
    let took = until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(took.is_some_and(|t| t < Duration::from_secs(5)), "{took:?}");
    // A kept-alive connection that sends nothing after its first request.
    let mut s = tokio::net::TcpStream::connect(addr(&m)).await.unwrap();
    s.write_all(b"POST /empty HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    let took = until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(took.is_some_and(|t| t < Duration::from_secs(5)), "{took:?}");
    // A request sent in time is served.
    let r = reqwest::Client::new()
        .post(m.at("/empty"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_guest_that_loops_or_allocates_without_end_gets_a_500_and_others_are_served() {
    let m = Meridian::with_host_args(
        Some(&floor()),
        &["--max-request-ms", "2000", "--max-instance-memory-mb", "32"],
    )
    .await;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let looping = {
        let c = c.clone();
        let url = m.at("/abuse/loop");
        tokio::spawn(async move { c.post(url).send().await.map(|r| r.status().as_u16()) })
    };
    // While the loop runs, other requests are answered (the guest yields every tick); at the
    // request's time limit its code traps. The guest says when it starts spinning.
    let mut started_loop = false;
    for _ in 0..200 {
        if m.stdout
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("abuse: loop started"))
        {
            started_loop = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(started_loop, "the looping request never started");
    for _ in 0..5 {
        let r = c.post(m.at("/empty")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(
        !looping.is_finished(),
        "the others were served while the guest looped"
    );
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(25), looping)
        .await
        .expect("the looping request ended")
        .unwrap()
        .unwrap();
    assert_eq!(status, 500);
    assert!(started.elapsed() < Duration::from_secs(20));

    let r = c.post(m.at("/abuse/alloc")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let r = c.post(m.at("/empty")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the host keeps serving");
}

#[tokio::test]
async fn outbound_requests_outside_allowed_outbound_hosts_are_refused_and_recorded() {
    let allowed = Mock::start(Script::ok("allowed")).await;
    let other = Mock::start(Script::ok("must not be reached")).await;
    let redirect = Mock::start(Script::Json {
        status: 302,
        body: "{}".into(),
        headers: vec![(
            "location".into(),
            format!("{}/v1/chat/completions", other.url()),
        )],
    })
    .await;
    let port = allowed.addr.port();
    let other_port = other.addr.port();
    let cases = [
        ("another port", format!("http://127.0.0.1:{other_port}/v1")),
        (
            "an IP literal for localhost",
            format!("http://127.0.0.1:{port}/v1"),
        ),
        (
            "userinfo naming the allowed host",
            format!("http://localhost:{port}@127.0.0.1:{other_port}/v1"),
        ),
    ];
    for (what, base) in cases {
        let policy = format!(
            "version = 1\n[settings]\nallow_anonymous = true\n[[providers]]\nid = \"p\"\nbase_url = \"{base}\"\nlocation = \"DE\"\nmodels = {{ m = \"m\" }}\n"
        );
        if meridian::policy::load(&policy, "t").is_err() {
            // Refused before it could be deployed: safe too, but this test is about the host.
            panic!("{what}: the policy does not load");
        }
        let m = Meridian::with_exact_outbound(
            None,
            Some(&policy),
            &["--allow-outbound", &format!("http://localhost:{port}")],
        )
        .await;
        let r = reqwest::Client::new()
            .post(m.at("/v1/chat/completions"))
            .header("x-request-id", "denied")
            .json(
                &serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502, "{what}");
        assert_eq!(
            r.headers()["x-meridian-failures"],
            "p=not configured",
            "{what}"
        );
        let log = m.log_for("denied").await;
        assert!(
            log["attempts"][0]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("allowed_outbound_hosts")),
            "{what}: {log}"
        );
    }
    assert!(
        other.requests().is_empty(),
        "nothing reached the other port"
    );
    assert!(
        allowed.requests().is_empty(),
        "nor the allowed port under another name"
    );

    // A redirect from an allowed host is not followed: the other host never hears of it.
    let policy = format!(
        "version = 1\n[settings]\nallow_anonymous = true\n[[providers]]\nid = \"p\"\nbase_url = \"{}/v1\"\nlocation = \"DE\"\nmodels = {{ m = \"m\" }}\n",
        redirect.url()
    );
    let m =
        Meridian::with_exact_outbound(None, Some(&policy), &["--allow-outbound", &redirect.url()])
            .await;
    let r = reqwest::Client::new()
        .post(m.at("/v1/chat/completions"))
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(redirect.requests().len(), 1);
    assert!(other.requests().is_empty(), "the redirect was not followed");
}

/// A failed `accept()` (the process is out of file descriptors, EMFILE) does not stop the
/// host: it logs, pauses briefly and goes on serving once descriptors are free again.
#[tokio::test]
async fn a_failed_accept_is_logged_and_the_host_goes_on_serving() {
    let log = std::env::temp_dir().join(format!("meridian-accept-{}.log", std::process::id()));
    let m = Meridian::with_file_limit(96, &log).await;
    let addr = m.url.trim_start_matches("http://").to_string();
    // Twice as many connections as the host may have files: its accepts fail for a while.
    let mut held = Vec::new();
    for _ in 0..192 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        {
            held.push(s);
        }
    }
    let failed = async {
        for _ in 0..100 {
            if std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("accept failed")
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(
        failed.await,
        "no accept failed: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    drop(held);
    // Served again once the connections are gone (polled, at most 15 s).
    let client = reqwest::Client::new();
    let mut ok = false;
    for _ in 0..60 {
        if let Ok(Ok(r)) =
            tokio::time::timeout(Duration::from_secs(2), client.get(m.at("/healthz")).send()).await
        {
            if r.status() == 200 {
                ok = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ok, "the host stopped serving after accept failed");
    let _ = std::fs::remove_file(&log);
}
