//! Limits shared by every edge node, end to end: a real `redis-server` on 127.0.0.1 and two
//! meridian-host processes serving the same component with Spin's runtime config pointing both
//! at it. 200 concurrent requests from one tenant across both nodes stop exactly at the limit;
//! a browser key hammered with a forged `Origin` is cut off at its limit; a token limit's
//! settled total is what the provider reported; the store stopped mid-run gives the policy's
//! answer (503, or served uncounted for a `fail_open` tenant) and nothing is lost when it comes
//! back; the official OpenAI SDK reads the headers and its retry honours `Retry-After`.

mod support;

use std::time::Duration;

use support::clients::{self, python};
use support::redis::Redis;
use support::{policy_for, Meridian, Mock, Script};

fn hash(k: &str) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(k.as_bytes()))
}

const ACME: &str = "sk-acme-e2e-limits-0001";
const METERED: &str = "sk-metered-e2e-limits-02";
const OPS: &str = "sk-ops-e2e-limits-000003";
const CONC: &str = "sk-conc-e2e-limits-00004";
const WEB: &str = "pk-web-e2e-limits-000005";

fn policy(mock: &Mock) -> String {
    policy_for(
        &[("alpha", mock, "DE", "")],
        &format!(
            "[settings.limits]\nfail_open = [\"ops\"]\n\n\
             [[tenants]]\nid = \"acme\"\nkeys = [\"sha256:{}\"]\nlimits = {{ requests_per_month = 100 }}\n\n\
             [[tenants]]\nid = \"metered\"\nkeys = [\"sha256:{}\"]\nlimits = {{ tokens_per_month = 3000 }}\n\n\
             [[tenants]]\nid = \"ops\"\nkeys = [\"sha256:{}\"]\nlimits = {{ requests_per_month = 1000 }}\n\n\
             [[tenants]]\nid = \"conc\"\nkeys = [\"sha256:{}\"]\nlimits = {{ requests_per_month = 100, concurrent = 1 }}\n\n\
             [[tenants]]\nid = \"web\"\nkeys = [\"sha256:{}\"]\norigins = [\"https://app.example\"]\n\n\
             [[rules]]\nid = \"browser-keys\"\nwhen = {{ browser = true }}\nlimits = {{ requests_per_month = 5 }}\n",
            hash(ACME),
            hash(METERED),
            hash(OPS),
            hash(CONC),
            hash(WEB),
        ),
    )
}

const BODY: &str =
    r#"{"model":"chat-model","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}"#;

async fn post(client: &reqwest::Client, base: &str, key: &str) -> reqwest::Response {
    client
        .post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(BODY)
        .send()
        .await
        .unwrap()
}

/// Waits (at most 10 s) until the nodes have written `n` log lines for `tenant`: a request's
/// settlement is made after the client has its answer, before its log line.
async fn settled(nodes: &[&Meridian], tenant: &str, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..200 {
        let lines: Vec<serde_json::Value> = nodes
            .iter()
            .flat_map(|m| m.logs())
            .filter(|l| l["tenant"] == tenant)
            .collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} log lines for {tenant} within 10 s");
}

/// `n` requests from the tenant with `key` at once, alternating between the nodes; their
/// statuses in the order sent.
async fn at_once(
    client: &reqwest::Client,
    nodes: [&Meridian; 2],
    key: &'static str,
    n: usize,
) -> Vec<u16> {
    let tasks = (0..n).map(|i| {
        let client = client.clone();
        let base = nodes[i % 2].url.clone();
        tokio::spawn(async move { post(&client, &base, key).await.status().as_u16() })
    });
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// The tests' redis-server on a port another process took between its pick and the server's
/// bind is noticed, so `Redis::start` tries another port instead of failing the test or, worse,
/// sharing another test's server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_server_whose_port_is_taken_is_noticed() {
    // Taken by a listener that is not Redis: the server exits.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let e = Redis::on_port(port).try_run().await.unwrap_err();
    assert!(e.contains("exited"), "{e}");
    drop(listener);
    // Taken by another test's redis-server: its answer to PING is not taken for this one's.
    let other = Redis::start().await;
    let e = Redis::on_port(other.port).try_run().await.unwrap_err();
    assert!(e.contains("exited") || e.contains("another"), "{e}");
    assert_eq!(other.command(&["PING"]).await.as_deref(), Some("+PONG"));
}

async fn two_nodes(redis: &Redis, policy: &str) -> (Meridian, Meridian) {
    let rc = redis.runtime_config();
    let rc = rc.to_str().unwrap();
    let a = Meridian::start_with(Some(policy), &["--runtime-config-file", rc]).await;
    let b = Meridian::start_with(Some(policy), &["--runtime-config-file", rc]).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_sharing_redis_stop_exactly_at_the_limit() {
    let mut redis = Redis::start().await;
    let mock = Mock::start(Script::ok("fine")).await;
    let (a, b) = two_nodes(&redis, &policy(&mock)).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();

    // 200 concurrent requests from one tenant, alternating between the two nodes.
    let statuses = at_once(&client, [&a, &b], ACME, 200).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, limited), (100, 100), "{statuses:?}");
    assert_eq!(
        mock.requests().len(),
        100,
        "exactly the admitted requests reached the provider"
    );
    let keys = redis.keys("meridian:v1:t/acme:requests:month:*").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(redis.int(&keys[0]).await, 100);

    // A token limit: each admitted request reserves its bound and settles to the 30 tokens the
    // provider reports; the settled total never passes 3,000 and is exactly 30 per answer.
    let sent_before = mock.requests().len();
    let statuses = at_once(&client, [&a, &b], METERED, 120).await;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    let served = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(mock.requests().len() - sent_before, served);
    settled(&[&a, &b], "metered", 120).await;
    let keys = redis.keys("meridian:v1:t/metered:tokens:month:*").await;
    let settled = redis.int(&keys[0]).await;
    assert_eq!(settled, 30 * served as i64, "settled to the reported usage");
    assert!(settled <= 3000);
    assert!(served >= 1 && statuses.contains(&429), "{statuses:?}");

    // The store goes away: the policy's answer, never a silent pass.
    redis.stop().await;
    let closed = post(&client, &a.url, ACME).await;
    assert_eq!(closed.status(), 503);
    assert_eq!(closed.headers()["retry-after"], "1");
    let closed_id = closed.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: serde_json::Value = closed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "limits_unavailable");
    // No upstream was involved, and the reason is in the log, as docs/limits.md says.
    assert_eq!(body["error"]["type"], "server_error");
    let line = a.log_for(&closed_id).await;
    assert!(line["limits"]["unavailable"].is_string(), "{line}");
    assert!(
        line["error_detail"]
            .as_str()
            .unwrap_or("")
            .starts_with("limits store: "),
        "{line}"
    );
    let open = post(&client, &b.url, OPS).await;
    assert_eq!(open.status(), 200);
    assert!(open.headers()["x-meridian-limits"]
        .to_str()
        .unwrap()
        .starts_with("not counted:"));

    // It comes back with everything it had: acme is still at its limit on both nodes.
    redis.restart().await;
    let keys = redis.keys("meridian:v1:t/acme:requests:month:*").await;
    assert_eq!(redis.int(&keys[0]).await, 100);
    for node in [&a, &b] {
        let mut status = 0;
        // The node's Redis connection comes back on its own: the first call may still fail.
        for _ in 0..20 {
            status = post(&client, &node.url, ACME).await.status().as_u16();
            if status != 503 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(status, 429);
    }
    assert_eq!(redis.int(&keys[0]).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_key_with_a_forged_origin_is_cut_off_at_its_limit() {
    let redis = Redis::start().await;
    let mock = Mock::start(Script::ok("fine")).await;
    let (a, b) = two_nodes(&redis, &policy(&mock)).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..20 {
        // What a script that copied the key from the page sends: any Origin it likes.
        let base = if i % 2 == 0 { &a.url } else { &b.url };
        let r = client
            .post(format!("{base}/v1/chat/completions"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {WEB}"))
            .header("origin", "https://app.example")
            .body(BODY)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            let h = r.headers();
            assert_eq!(h["x-ratelimit-limit-requests"], "5");
            assert_eq!(h["x-ratelimit-remaining-requests"], "0");
            assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 0);
            let body: serde_json::Value = r.json().await.unwrap();
            assert!(body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("rule browser-keys for tenant web"));
        }
    }
    assert_eq!(&statuses[..5], &[200; 5]);
    assert_eq!(&statuses[5..], &[429; 15]);
    assert_eq!(mock.requests().len(), 5);
}

/// The store goes away: once a node has noticed, a request costs it milliseconds, not the store
/// call's timeout (the circuit breaker in meridian-host's Redis store), for a tenant that fails
/// open and one that fails closed alike; the store comes back and counting resumes within
/// seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_costs_milliseconds_and_counting_resumes_within_seconds() {
    let mut redis = Redis::start().await;
    let mock = Mock::start(Script::ok("fine")).await;
    let (a, _b) = two_nodes(&redis, &policy(&mock)).await;
    let client = reqwest::Client::new();
    let timed = |key: &'static str| {
        let (client, url) = (client.clone(), a.url.clone());
        async move {
            let t = std::time::Instant::now();
            let r = post(&client, &url, key).await;
            let limits = r
                .headers()
                .get("x-meridian-limits")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (t.elapsed(), r.status().as_u16(), limits)
        }
    };
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    // With the store: counted.
    let mut up = Vec::new();
    for _ in 0..10 {
        let (d, status, limits) = timed(OPS).await;
        assert_eq!(status, 200);
        assert!(!limits.starts_with("not counted"), "{limits}");
        up.push(d);
    }
    redis.stop().await;
    // Without it: the first request notices (it may wait out the call's timeout), the rest are
    // answered by the policy at once.
    let (_, first, _) = timed(OPS).await;
    assert_eq!(first, 200);
    let mut down = Vec::new();
    for i in 0..20 {
        let (d, status, limits) = timed(if i % 2 == 0 { OPS } else { ACME }).await;
        if i % 2 == 0 {
            assert_eq!(status, 200);
            assert!(limits.starts_with("not counted"), "{limits}");
        } else {
            assert_eq!(status, 503);
        }
        down.push(d);
    }
    let (up, down) = (median(up), median(down));
    assert!(
        down.saturating_sub(up) < Duration::from_millis(10),
        "with the store down a request took {down:?} at the median, against {up:?} with it"
    );
    // Back: counted again within seconds (polled every 100 ms, at most 5 s).
    redis.restart().await;
    let back = std::time::Instant::now();
    let mut counted = false;
    while back.elapsed() < Duration::from_secs(5) {
        let (_, status, limits) = timed(OPS).await;
        if status == 200 && !limits.starts_with("not counted") {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        counted,
        "counting did not resume within 5 s of the store's return"
    );
}

/// A client that hangs up mid-stream: the request leaves a log line (the opening line, written
/// before the first byte, with what it holds; in the WASI 0.3 build, whose instance outlives
/// the client, also the closing line with `client_gone` and the reservation kept), and its
/// `concurrent = 1` slot is free again within seconds: at once where the guest sees the client
/// go, within two slots of the in-flight counter where the runtime ends the instance (Spin and
/// meridian-host under WASI 0.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_stream_leaves_a_line_and_frees_its_slot_within_seconds() {
    let redis = Redis::start().await;
    // The first request streams 200 events 100 ms apart (20 s, longer than the test waits);
    // the rest are answered at once.
    let mock = Mock::with(|_: &support::Recorded, n| {
        if n == 0 {
            Script::Sse {
                events: (0..200)
                    .map(|i| support::mock::chunk(&format!("t{i} ")))
                    .collect(),
                gap_ms: 100,
                end: support::mock::SseEnd::Done,
            }
        } else {
            Script::ok("next")
        }
    })
    .await;
    let (a, _b) = two_nodes(&redis, &policy(&mock)).await;
    let client = reqwest::Client::new();
    let mut resp = client
        .post(a.at("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {CONC}"))
        .body(r#"{"model":"chat-model","max_tokens":20,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let first = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("t0"));
    // Held: a second request from the tenant is refused while the stream runs.
    assert_eq!(post(&client, &a.url, CONC).await.status(), 429);
    drop(resp); // hang up mid-stream
    let gone = std::time::Instant::now();
    // Admitted again within seconds (polled every 250 ms, at most 15 s).
    let mut admitted = None;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if post(&client, &a.url, CONC).await.status() == 200 {
            admitted = Some(gone.elapsed());
            break;
        }
    }
    let admitted = admitted.expect("the slot of a client that hung up was never freed");
    // Two slots of 3 s at most, with a second of slack for a loaded machine.
    assert!(
        admitted <= Duration::from_secs(7),
        "admitted after {admitted:?}"
    );
    // The request's lines: the opening line with what it holds, whatever the runtime did.
    let lines: Vec<serde_json::Value> = a
        .all_logs()
        .into_iter()
        .filter(|l| l["request_id"] == id.as_str())
        .collect();
    let opening = lines
        .iter()
        .find(|l| l["event"] == "stream_open")
        .unwrap_or_else(|| panic!("no opening line: {lines:?}"));
    assert_eq!(opening["tenant"], "conc");
    assert_eq!(opening["provider"], "alpha");
    assert_eq!(
        opening["limits"]["hold"]["counters"][1]["limit"],
        "concurrent"
    );
    if support::meridian::p3() {
        // The instance outlives the client: the closing line says so, and what was kept.
        let mut closing = None;
        for _ in 0..100 {
            closing = a
                .logs()
                .into_iter()
                .find(|l| l["request_id"] == id.as_str());
            if closing.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let closing = closing.expect("no closing line in the WASI 0.3 build");
        assert_eq!(closing["stream_outcome"], "client_gone");
        assert_eq!(closing["limits"]["settlement"]["state"], "kept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_reads_the_headers_and_its_retry_honours_retry_after() {
    let redis = Redis::start().await;
    // The first request (the test's own) takes 5 s: it holds `conc`'s only slot for longer than
    // the SDK takes to start, however loaded the machine; the SDK's own are answered at once.
    let mock = Mock::with(|_: &support::Recorded, n| {
        if n == 0 {
            Script::Delay(5_000, Box::new(Script::ok("slow")))
        } else {
            Script::ok("slow")
        }
    })
    .await;
    let (a, _b) = two_nodes(&redis, &policy(&mock)).await;
    let client = reqwest::Client::new();
    let base = a.url.clone();
    let holder = tokio::spawn(async move { post(&client, &base, CONC).await.status().as_u16() });
    // The holder is in flight (it holds the slot) once the provider has its request.
    for _ in 0..200 {
        if !mock.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        mock.requests().len(),
        1,
        "the holder never reached the provider"
    );
    clients::run(
        &python(),
        "limits_sdk.py",
        &[("MERIDIAN_URL", a.url.as_str()), ("MERIDIAN_KEY", CONC)],
    )
    .await;
    assert_eq!(holder.await.unwrap(), 200);
    // The holder, at least one refusal, the SDK's success.
    settled(&[&a], "conc", 3).await;
    // The SDK's attempts, from the node's log: refused while the slot was taken, each retry at
    // least the `Retry-After` second after the refusal before it, and finally served.
    // Lines are written when requests end: order them by when each started.
    let start =
        |l: &serde_json::Value| l["ts_ms"].as_u64().unwrap() - l["duration_ms"].as_u64().unwrap();
    let mut lines: Vec<serde_json::Value> = a
        .logs()
        .into_iter()
        .filter(|l| l["tenant"] == "conc")
        .collect();
    lines.sort_by_key(start);
    // The first is the test's own request that held the slot.
    let sdk = &lines[1..];
    assert!(sdk.len() >= 2, "{lines:?}");
    assert_eq!(sdk.last().unwrap()["status"], 200);
    for pair in sdk.windows(2) {
        assert_eq!(pair[0]["status"], 429, "{lines:?}");
        assert_eq!(pair[0]["limits"]["refused"]["limit"], "concurrent");
        let gap = start(&pair[1]) - pair[0]["ts_ms"].as_u64().unwrap();
        assert!(gap >= 900, "retried {gap} ms after a Retry-After of 1 s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sqlite_file_keeps_limits_with_nothing_else_installed() {
    // Spin's default store: a SQLite file (`type = "spin"`), here shared by two nodes on one
    // machine, whose increments are immediate transactions on the file.
    let dir = std::env::temp_dir().join(format!("meridian-sqlite-{}", std::process::id()));
    let rc = sqlite_store(&dir);
    let mock = Mock::start(Script::ok("fine")).await;
    let p = policy(&mock).replace("requests_per_month = 100 }", "requests_per_month = 25 }");
    let args = ["--runtime-config-file", rc.to_str().unwrap()];
    let a = Meridian::start_with(Some(&p), &args).await;
    let b = Meridian::start_with(Some(&p), &args).await;
    let client = reqwest::Client::new();
    let statuses = at_once(&client, [&a, &b], ACME, 40).await;
    // On a failure, the log lines of the requests that were neither served nor refused.
    let odd = || -> Vec<String> {
        [&a, &b]
            .iter()
            .flat_map(|m| m.stdout.lock().unwrap().clone())
            .filter(|l| !l.contains("\"status\":200") && !l.contains("\"status\":429"))
            .collect()
    };
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        25,
        "{statuses:?} {:?}",
        odd()
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        15,
        "{statuses:?} {:?}",
        odd()
    );
    assert!(dir.join("kv.db").exists());
    // A node started again reads the same file: still at the limit.
    drop(a);
    drop(b);
    let c = Meridian::start_with(Some(&p), &args).await;
    assert_eq!(post(&client, &c.url, ACME).await.status(), 429);
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Spin's SQLite store (`type = "spin"`) in a file `kv.db` of `dir`: the runtime config's path.
fn sqlite_store(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let rc = dir.join("runtime-config.toml");
    std::fs::write(
        &rc,
        "[key_value_store.default]\ntype = \"spin\"\npath = \"kv.db\"\n",
    )
    .unwrap();
    rc
}

/// An Anthropic stream cut after `message_start` (which reports the input and one output
/// token) keeps its whole reservation in the shared store: the provider bills every token it
/// generated, and the final usage never came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_stream_cut_after_message_start_keeps_its_reservation() {
    let redis = Redis::start().await;
    let start = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[],"stop_reason":null,"usage":{"input_tokens":25,"output_tokens":1}}}"#;
    let block =
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#;
    let delta =
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#;
    let mock = Mock::start(Script::Sse {
        events: vec![start.into(), block.into(), delta.into()],
        gap_ms: 10,
        end: support::mock::SseEnd::Cut,
    })
    .await;
    let policy = format!(
        "version = 1\n[[providers]]\nid = \"claude\"\nkind = \"anthropic\"\nbase_url = \"{}/v1\"\nlocation = \"IE\"\nmodels = {{ \"chat-model\" = {{ id = \"claude-x\", input_price = 1.0, output_price = 2.0 }} }}\n\
         [[tenants]]\nid = \"metered\"\nkeys = [\"sha256:{}\"]\nlimits = {{ tokens_per_month = 100000 }}\n",
        mock.url(),
        hash(METERED)
    );
    let (a, _b) = two_nodes(&redis, &policy).await;
    let body = r#"{"model":"chat-model","max_tokens":400,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = reqwest::Client::new()
        .post(a.at("/v1/messages"))
        .header("content-type", "application/json")
        .header("x-api-key", METERED)
        .header("anthropic-version", "2023-06-01")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap_or_default();
    assert!(text.contains("event: error"), "{text}");
    let lines = settled(&[&a], "metered", 1).await;
    assert_eq!(
        lines[0]["limits"]["settlement"]["state"], "kept",
        "{}",
        lines[0]
    );
    let keys = redis.keys("meridian:v1:t/metered:tokens:month:*").await;
    // Reserved: one token per byte of the body and `max_tokens`; kept in full.
    assert_eq!(redis.int(&keys[0]).await, body.len() as i64 + 400);
}

/// The SQLite store's calls block while another process holds the file (up to the 2 s busy
/// timeout): they run on the host's blocking threads, so the node goes on answering what needs
/// no store while several limited requests wait on the file. The WASI 0.3 build is not tested
/// here: `wasi:keyvalue@0.2.0-draft2`'s functions are synchronous, so a reused instance waits
/// for each call, whatever the host does (docs/limits.md says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_sqlite_file_does_not_hold_up_requests_that_need_no_store() {
    if support::meridian::p3() {
        eprintln!("the WASI 0.3 build's instance waits for its synchronous key-value calls");
        return;
    }
    let dir = std::env::temp_dir().join(format!("meridian-sqlite-busy-{}", std::process::id()));
    let rc = sqlite_store(&dir);
    let mock = Mock::start(Script::ok("fine")).await;
    let args = ["--runtime-config-file", rc.to_str().unwrap()];
    let a = Meridian::start_with(Some(&policy(&mock)), &args).await;
    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, &a.url, ACME).await.status(),
        200,
        "the file exists"
    );
    // Another process takes the file's write lock for 5 s.
    let mut holder = tokio::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys, time\nc = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)\nc.execute('BEGIN IMMEDIATE')\nprint('locked', flush=True)\ntime.sleep(5)\n")
        .arg(dir.join("kv.db"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(holder.stdout.take().unwrap());
    let mut said = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncBufReadExt::read_line(&mut out, &mut said),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(said.trim(), "locked");
    // Six limited requests wait on the file, more than the host has worker threads.
    let waiting: Vec<_> = (0..6)
        .map(|_| {
            let (client, url) = (client.clone(), a.url.clone());
            tokio::spawn(async move {
                let s = post(&client, &url, ACME).await.status().as_u16();
                (s, std::time::Instant::now())
            })
        })
        .collect();
    // Let them reach the store (checked below: they were still waiting when /healthz answered).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    let health = client.get(a.at("/healthz")).send().await.unwrap();
    let took = t.elapsed();
    let answered = std::time::Instant::now();
    assert_eq!(health.status(), 200);
    assert!(
        took < Duration::from_millis(1000),
        "/healthz took {took:?} while limited requests waited on the file"
    );
    for w in waiting {
        // Each is answered by the policy once its store call gives up (503) or gets through,
        // after /healthz was: they were waiting on the file all along.
        let (s, done) = w.await.unwrap();
        assert!(s == 503 || s == 200, "{s}");
        assert!(
            done > answered,
            "a limited request ended before /healthz answered"
        );
    }
    drop(holder);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two nodes on one Redis, an engine that bills the most it may: an image by URL at the
/// model's whole context window, a `service_tier: "priority"` request at twice the price (the
/// model's `option_price_factor`), everything else at one token per byte of the body it got,
/// and every output token asked for. Forty such requests at once cannot push what the engine
/// billed, or the settled counter, over the tenant's $0.05. The engine's bill is worked out
/// here from what it received (the oracle), not from Meridian's estimate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_engine_billing_the_context_window_or_a_dearer_tier_stays_within_the_limit() {
    const WINDOW: u64 = 4_000;
    const KEY: &str = "sk-bound-e2e-limits-0006";
    fn bill(body: &serde_json::Value) -> u64 {
        let text = body.to_string();
        let input = if text.contains("img.example") {
            WINDOW
        } else {
            text.len() as u64
        };
        let output = body["max_tokens"].as_u64().unwrap_or(4_096);
        let factor = if body["service_tier"] == "priority" {
            2
        } else {
            1
        };
        // input_price 1.0 and output_price 1.0 per million tokens: one millionth each.
        (input + output) * factor
    }
    let mock = Mock::with(|rec, _| {
        let text = rec.body.to_string();
        let prompt = if text.contains("img.example") {
            WINDOW
        } else {
            text.len() as u64
        };
        let completion = rec.body["max_tokens"].as_u64().unwrap_or(0);
        Script::Json {
            status: 200,
            body: serde_json::json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
            })
            .to_string(),
            headers: vec![("content-type".into(), "application/json".into())],
        }
    })
    .await;
    let policy = format!(
        "version = 1\n[settings]\nmax_body_bytes = 4096\n\n\
         [[providers]]\nid = \"alpha\"\nbase_url = \"{}/v1\"\nlocation = \"DE\"\ncapabilities = [\"remote_media\", \"priced_options\"]\n\
         models = {{ \"chat-model\" = {{ id = \"m\", input_price = 1.0, output_price = 1.0, context_window = {WINDOW}, option_price_factor = 2.0 }} }}\n\n\
         [[tenants]]\nid = \"bound\"\nkeys = [\"sha256:{}\"]\nlimits = {{ usd_per_month = 0.05 }}\n",
        mock.url(),
        hash(KEY)
    );
    let redis = Redis::start().await;
    let (a, b) = two_nodes(&redis, &policy).await;
    let client = reqwest::Client::new();
    let image = r#"{"model":"chat-model","max_tokens":20,"messages":[{"role":"user","content":[{"type":"text","text":"what is this"},{"type":"image_url","image_url":{"url":"https://img.example/cat.png"}}]}]}"#;
    let priority = r#"{"model":"chat-model","max_tokens":900,"service_tier":"priority","messages":[{"role":"user","content":"hello there"}]}"#;
    let both = image.replace(
        r#""max_tokens":20"#,
        r#""max_tokens":20,"service_tier":"priority""#,
    );
    let bodies = [image.to_string(), priority.to_string(), both];
    let tasks = (0..40).map(|i| {
        let client = client.clone();
        let base = [&a, &b][i % 2].url.clone();
        let body = bodies[i % 3].clone();
        tokio::spawn(async move {
            client
                .post(format!("{base}/v1/chat/completions"))
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {KEY}"))
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    });
    let statuses: Vec<u16> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let served = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(served >= 1 && statuses.contains(&429), "{statuses:?}");
    settled(&[&a, &b], "bound", 40).await;
    let billed: u64 = mock.requests().iter().map(|r| bill(&r.body)).sum();
    assert!(
        billed <= 50_000,
        "the engine billed {billed} millionths, over $0.05"
    );
    let keys = redis.keys("meridian:v1:t/bound:usd:month:*").await;
    let counted = redis.int(&keys[0]).await;
    assert!(
        counted as u64 >= billed && counted <= 50_000,
        "settled {counted}, billed {billed}"
    );
    // Each priority request was settled at twice the catalog's price.
    let line = a
        .logs()
        .into_iter()
        .chain(b.logs())
        .find(|l| {
            l["tenant"] == "bound"
                && l["status"] == 200
                && l["limits"]["settlement"]["actual"]["micro_usd"].is_u64()
                && l["capabilities"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c == "priced_options"))
        })
        .expect("a served priority request");
    let actual = &line["limits"]["settlement"]["actual"];
    assert_eq!(
        actual["micro_usd"].as_u64(),
        actual["tokens"].as_u64().map(|t| 2 * t),
        "{line}"
    );
}
