//! Self-hosted pools end to end: two meridian-host nodes serving the deployed component on one
//! real `redis-server`, three mock engines that expose vLLM's metrics, and `meridian
//! pool-scrape` writing the load summary. Both nodes route by it: a conversation keeps landing
//! on one replica, whichever node serves it; a replica whose queue grows stops receiving new
//! requests and takes them again when it drains; the replica in the US never receives an EU
//! client's request; with every allowed replica full, an EU client gets 503 with `Retry-After`.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::redis::Redis;
use support::{Meridian, Mock, Script};

/// A mock engine: chat answers name it; `/metrics` shows its queue as vLLM writes it (a queue
/// of `u32::MAX`: its metrics fail with a 500).
async fn engine(name: &'static str, waiting: Arc<AtomicU32>) -> Mock {
    Mock::with(move |req, _| {
        if req.path == "/metrics" && waiting.load(Ordering::SeqCst) == u32::MAX {
            Script::status(500)
        } else if req.path == "/metrics" {
            let w = waiting.load(Ordering::SeqCst);
            Script::Json {
                status: 200,
                body: format!(
                    "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
                     # TYPE vllm:num_requests_running gauge\n\
                     vllm:num_requests_running{{engine=\"0\",model_name=\"llama\"}} 1.0\n\
                     # HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n\
                     # TYPE vllm:num_requests_waiting gauge\n\
                     vllm:num_requests_waiting{{engine=\"0\",model_name=\"llama\"}} {w}.0\n\
                     # HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n\
                     # TYPE vllm:kv_cache_usage_perc gauge\n\
                     vllm:kv_cache_usage_perc{{engine=\"0\",model_name=\"llama\"}} 0.3\n"
                ),
                headers: vec![("content-type".into(), "text/plain; version=0.0.4".into())],
            }
        } else {
            Script::ok(name)
        }
    })
    .await
}

fn policy(de1: &Mock, de2: &Mock, us1: &Mock) -> String {
    format!(
        "version = 1\nname = \"pools-e2e\"\nrevision = \"1\"\n\n[settings]\ntrusted_country_headers = [\"cf-ipcountry\"]\nallow_anonymous = true\n\n\
         [[providers]]\nid = \"home\"\nself_hosted = true\nlocation = \"DE\"\ntrains_on_inputs = false\nretention_days = 0\n\
         models = {{ \"chat-model\" = \"llama\" }}\n\
         [providers.pool]\nmax_queue = 5\nstale_after_s = 5\n\
         [[providers.pool.replicas]]\nname = \"de-1\"\nbase_url = \"{}/v1\"\n\
         [[providers.pool.replicas]]\nname = \"de-2\"\nbase_url = \"{}/v1\"\n\
         [[providers.pool.replicas]]\nname = \"us-1\"\nbase_url = \"{}/v1\"\nlocation = \"US\"\n\n\
         [[rules]]\nid = \"eu-stays-in-eu\"\nwhen = {{ client_jurisdiction = [\"eu\"] }}\nrequire = {{ jurisdiction = [\"eu\"] }}\n",
        de1.url(),
        de2.url(),
        us1.url()
    )
}

const SYSTEM: &str = "You are the support assistant of Example GmbH. Answer in two sentences, politely, and never promise a refund. ";

fn conversation(id: usize, turns: usize) -> String {
    let mut messages = vec![serde_json::json!({"role": "system", "content": SYSTEM})];
    messages.push(serde_json::json!({"role": "user", "content": format!("Customer {id}: my order has not arrived.")}));
    for t in 1..turns {
        messages.push(serde_json::json!({"role": "assistant", "content": "Sorry to hear that."}));
        messages
            .push(serde_json::json!({"role": "user", "content": format!("Turn {t}: any news?")}));
    }
    serde_json::json!({"model": "chat-model", "messages": messages}).to_string()
}

struct Sent {
    status: u16,
    replica: Option<String>,
    pool: Option<String>,
    retry_after: Option<String>,
}

async fn send(http: &reqwest::Client, node: &Meridian, country: &str, body: &str) -> Sent {
    let r = http
        .post(node.at("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("cf-ipcountry", country)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let h = |n: &str| {
        r.headers()
            .get(n)
            .map(|v| v.to_str().unwrap_or_default().to_string())
    };
    Sent {
        status: r.status().as_u16(),
        replica: h("x-meridian-replica"),
        pool: h("x-meridian-pool"),
        retry_after: h("retry-after"),
    }
}

/// `meridian pool-scrape --once`: measures every replica and writes the summary.
fn scrape(policy: &std::path::Path, redis: &Redis) -> serde_json::Value {
    let cli = support::meridian::root().join("target/debug/meridian");
    assert!(
        cli.exists(),
        "{} is missing: ./scripts/test builds it (cargo build -p meridian-cli)",
        cli.display()
    );
    let o = std::process::Command::new(&cli)
        .args(["pool-scrape", "--once", "--redis", &redis.url(), "--policy"])
        .arg(policy)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_route_a_pool_by_the_scraped_load() {
    let redis = Redis::start().await;
    let queues: Vec<Arc<AtomicU32>> = (0..3).map(|_| Arc::new(AtomicU32::new(0))).collect();
    let de1 = engine("de-1", queues[0].clone()).await;
    let de2 = engine("de-2", queues[1].clone()).await;
    let us1 = engine("us-1", queues[2].clone()).await;
    let text = policy(&de1, &de2, &us1);
    let dir = std::env::temp_dir().join(format!("meridian-e2e-pools-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pools.toml");
    std::fs::write(&file, &text).unwrap();
    let rc = redis.runtime_config();
    let rc = rc.to_str().unwrap();
    let a = Meridian::start_with(Some(&text), &["--runtime-config-file", rc]).await;
    let b = Meridian::start_with(Some(&text), &["--runtime-config-file", rc]).await;
    let http = reqwest::Client::new();

    // The scraper writes one summary: every replica, healthy, with its queue.
    let s = scrape(&file, &redis);
    let home = &s["home"]["replicas"];
    for r in ["de-1", "de-2", "us-1"] {
        assert_eq!(home[r]["healthy"], true, "{s}");
        assert_eq!(home[r]["waiting"], 0, "{s}");
        assert_eq!(home[r]["running"], 1, "{s}");
        assert_eq!(home[r]["kv"], 0.3, "{s}");
    }
    let stored = redis.command(&["GET", "meridian:v1:pools"]).await.unwrap();
    assert!(stored.contains("\"de-1\""), "{stored}");

    // Both nodes read it, and a conversation lands on one replica whichever node serves it.
    let mut homes = Vec::new();
    for id in 0..12 {
        let mut seen = Vec::new();
        for turn in 1..=4 {
            let node = if turn % 2 == 0 { &a } else { &b };
            let r = send(&http, node, "DE", &conversation(id, turn)).await;
            assert_eq!(r.status, 200);
            assert!(
                r.pool
                    .as_deref()
                    .is_some_and(|p| p.starts_with("prefix; load=fresh")),
                "{:?}",
                r.pool
            );
            seen.push(r.replica.unwrap());
        }
        assert!(
            seen.iter().all(|r| *r == seen[0]),
            "conversation {id}: {seen:?}"
        );
        homes.push(seen[0].clone());
    }
    // From Germany: only the German replicas, both used by some conversation.
    assert!(homes.iter().all(|h| h.starts_with("de-")), "{homes:?}");
    assert!(
        homes.contains(&"de-1".to_string()) && homes.contains(&"de-2".to_string()),
        "{homes:?}"
    );
    assert!(
        us1.requests().iter().all(|r| r.path == "/metrics"),
        "the US replica got an EU client's request"
    );
    // From the US the third replica is allowed too, and receives some.
    let mut us_homes = Vec::new();
    for id in 100..130 {
        let r = send(&http, &a, "US", &conversation(id, 1)).await;
        us_homes.push(r.replica.unwrap());
    }
    assert!(us_homes.contains(&"us-1".to_string()), "{us_homes:?}");

    // de-1's queue grows past max_queue: once scraped, neither node sends it a new request;
    // its conversations move to de-2.
    let on_de1: Vec<usize> = (0..12).filter(|i| homes[*i] == "de-1").collect();
    queues[0].store(7, Ordering::SeqCst);
    scrape(&file, &redis);
    let before = de1.requests().len();
    for (k, id) in on_de1.iter().enumerate() {
        let node = if k % 2 == 0 { &a } else { &b };
        let r = send(&http, node, "DE", &conversation(*id, 5)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.replica.as_deref(), Some("de-2"));
    }
    assert_eq!(
        de1.requests().len(),
        before,
        "de-1 received a request while full"
    );
    // It drains: its conversations come back to it (their KV cache is there).
    queues[0].store(0, Ordering::SeqCst);
    scrape(&file, &redis);
    if let Some(id) = on_de1.first() {
        let r = send(&http, &b, "DE", &conversation(*id, 6)).await;
        assert_eq!(r.replica.as_deref(), Some("de-1"));
    }

    // Both German replicas full: an EU client gets 503 and when to come back; nothing is sent.
    queues[0].store(9, Ordering::SeqCst);
    queues[1].store(5, Ordering::SeqCst);
    scrape(&file, &redis);
    let sent_before = de1.requests().len() + de2.requests().len() + us1.requests().len();
    let r = send(&http, &a, "DE", &conversation(7, 1)).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.retry_after.as_deref(), Some("2"));
    assert_eq!(
        de1.requests().len() + de2.requests().len() + us1.requests().len(),
        sent_before
    );
    // A US client still has the US replica.
    let r = send(&http, &b, "US", &conversation(7, 1)).await;
    assert_eq!((r.status, r.replica.as_deref()), (200, Some("us-1")));
    // The US replica's metrics fail: written down, it takes nothing; the German ones drain.
    queues[0].store(0, Ordering::SeqCst);
    queues[1].store(0, Ordering::SeqCst);
    queues[2].store(u32::MAX, Ordering::SeqCst);
    let s = scrape(&file, &redis);
    assert_eq!(s["home"]["replicas"]["us-1"]["healthy"], false, "{s}");
    let before = us1
        .requests()
        .iter()
        .filter(|r| r.path != "/metrics")
        .count();
    for id in 100..110 {
        let r = send(&http, &a, "US", &conversation(id, 1)).await;
        assert_eq!(r.status, 200);
        assert_ne!(r.replica.as_deref(), Some("us-1"));
    }
    assert_eq!(
        us1.requests()
            .iter()
            .filter(|r| r.path != "/metrics")
            .count(),
        before
    );

    // The summary goes stale (nothing scrapes for longer than stale_after_s = 5): it is
    // ignored, said so, and the pool is routed by the prefix alone.
    tokio::time::sleep(Duration::from_millis(5_600)).await;
    let r = send(&http, &a, "DE", &conversation(7, 1)).await;
    assert_eq!(r.status, 200);
    assert!(
        r.pool
            .as_deref()
            .is_some_and(|p| p.contains("stale") && p.contains("(ignored)")),
        "{:?}",
        r.pool
    );
    let lines: Vec<serde_json::Value> = a.logs().into_iter().chain(b.logs()).collect();
    assert!(lines
        .iter()
        .any(|l| l["pool"]["queued"] == serde_json::json!(["de-1"])));
    assert!(lines.iter().any(|l| l["error_code"] == "pool_saturated"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// An engine that exposes no metrics (Ollama): Meridian counts its own requests in flight at
/// each replica, and the scraper writes that count as the replica's `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_engine_without_metrics_is_measured_by_meridians_own_count() {
    let redis = Redis::start().await;
    let slow = || {
        Mock::with(|req, _| {
            if req.path == "/" {
                Script::Json {
                    status: 200,
                    body: "Ollama is running".into(),
                    headers: vec![],
                }
            } else {
                Script::Delay(1_500, Box::new(Script::ok("slowly")))
            }
        })
    };
    let (one, two) = (slow().await, slow().await);
    let text = format!(
        "version = 1\n[settings]\nallow_anonymous = true\n\n\
         [[providers]]\nid = \"ollama\"\nself_hosted = true\nlocation = \"DE\"\nmodels = {{ \"chat-model\" = \"llama3.1:8b\" }}\n\
         [providers.pool]\nengine = \"none\"\n\
         [[providers.pool.replicas]]\nname = \"one\"\nbase_url = \"{}/v1\"\n\
         [[providers.pool.replicas]]\nname = \"two\"\nbase_url = \"{}/v1\"\n",
        one.url(),
        two.url()
    );
    let dir = std::env::temp_dir().join(format!("meridian-e2e-pools-none-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ollama.toml");
    std::fs::write(&file, &text).unwrap();
    let rc = redis.runtime_config();
    let m = Meridian::start_with(
        Some(&text),
        &["--runtime-config-file", rc.to_str().unwrap()],
    )
    .await;
    let http = reqwest::Client::new();
    // Three turns of one conversation at once: one replica, three in flight.
    let body = conversation(1, 1);
    let sends: Vec<_> = (0..3)
        .map(|_| {
            let (http, url, body) = (http.clone(), m.at("/v1/chat/completions"), body.clone());
            tokio::spawn(async move {
                http.post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap()
            })
        })
        .collect();
    // While they run (the engine answers after 1.5 s), the scraper reads the count.
    let mut during = serde_json::Value::Null;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        during = scrape(&file, &redis);
        let r = &during["ollama"]["replicas"];
        if r["one"]["running"].as_u64().unwrap_or(0) + r["two"]["running"].as_u64().unwrap_or(0)
            == 3
        {
            break;
        }
    }
    let mut served = Vec::new();
    for s in sends {
        let r = s.await.unwrap();
        assert_eq!(r.status(), 200);
        served.push(
            r.headers()["x-meridian-replica"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    assert!(served.iter().all(|r| *r == served[0]), "{served:?}");
    let r = &during["ollama"]["replicas"];
    assert_eq!(r[served[0].as_str()]["running"], 3, "{during}");
    assert_eq!(r[served[0].as_str()]["healthy"], true, "{during}");
    // Given back at each request's end.
    let after = scrape(&file, &redis);
    assert_eq!(
        after["ollama"]["replicas"][served[0].as_str()]["running"],
        0,
        "{after}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A vLLM replica is asked to report its load on each answer; an instance that serves many
/// requests (the WASI 0.3 build) steers its next requests by it, an instance per request (WASI
/// 0.2) cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replicas_report_on_its_answer_steers_the_instance_that_read_it() {
    let redis = Redis::start().await;
    let reporting = |name: &'static str, waiting: u32| {
        Mock::with(move |req, _| {
            if req.path == "/metrics" {
                Script::Json {
                    status: 200,
                    body: "vllm:num_requests_waiting{model_name=\"m\"} 0\nvllm:num_requests_running{model_name=\"m\"} 0\n".into(),
                    headers: vec![],
                }
            } else {
                let mut answer = Script::ok(name);
                if let Script::Json { headers, .. } = &mut answer {
                    headers.push((
                        "endpoint-load-metrics".into(),
                        format!("TEXT named_metrics.kv_cache_usage_perc=0.9, named_metrics.num_requests_waiting={waiting}.0"),
                    ));
                }
                answer
            }
        })
    };
    // Both replicas say they are full when they answer; the scraped summary says idle.
    let (r1, r2) = (reporting("r1", 9).await, reporting("r2", 9).await);
    let text = format!(
        "version = 1\n[settings]\nallow_anonymous = true\n\n\
         [[providers]]\nid = \"home\"\nself_hosted = true\nlocation = \"DE\"\nmodels = {{ \"chat-model\" = \"llama\" }}\n\
         [providers.pool]\nmax_queue = 4\n\
         [[providers.pool.replicas]]\nname = \"r1\"\nbase_url = \"{}/v1\"\n\
         [[providers.pool.replicas]]\nname = \"r2\"\nbase_url = \"{}/v1\"\n",
        r1.url(),
        r2.url()
    );
    let dir = std::env::temp_dir().join(format!("meridian-e2e-pools-orca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pool.toml");
    std::fs::write(&file, &text).unwrap();
    scrape(&file, &redis);
    let rc = redis.runtime_config();
    let m = Meridian::start_with(
        Some(&text),
        &["--runtime-config-file", rc.to_str().unwrap()],
    )
    .await;
    let http = reqwest::Client::new();
    let body = conversation(3, 1);
    let first = send(&http, &m, "DE", &body).await;
    let second = send(&http, &m, "DE", &body).await;
    let third = send(&http, &m, "DE", &body).await;
    // Every chat request asked for the report.
    for r in r1
        .requests()
        .iter()
        .chain(r2.requests().iter())
        .filter(|r| r.path != "/metrics")
    {
        assert_eq!(r.header("endpoint-load-metrics-format"), Some("text"));
    }
    let (first, second) = (first.replica.unwrap(), second.replica.unwrap());
    if support::meridian::p3() {
        // The instance read that its replica is full: the next request goes to the other one,
        // and the one after that finds both full by their reports: 503, nothing sent.
        assert_ne!(first, second);
        assert_eq!(third.status, 503);
        assert_eq!(third.retry_after.as_deref(), Some("2"));
    } else {
        // Each request has an instance of its own: the summary alone decides, the same replica.
        assert_eq!(first, second);
        assert_eq!(third.replica.as_deref(), Some(first.as_str()));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
