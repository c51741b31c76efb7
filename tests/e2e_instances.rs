//! The WASI 0.3 build, where one instance serves many requests at once: requests of three
//! tenants, from three countries, streamed and whole, interleaved in ONE instance. Each must
//! keep its own request id, tenant, facts, decision and audit record: nothing about one request
//! may leak into another through instance state.
//!
//! Runs against the WASI 0.3 artifact whatever `MERIDIAN_COMPONENT` says (the WASI 0.2 build
//! never shares an instance).

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::meridian::root;
use support::mock::{chat_json, chunk, SseEnd};
use support::{Meridian, Mock, Script};

/// (tenant, key, client country, the only provider its rule allows)
const TENANTS: [(&str, &str, &str, &str); 3] = [
    ("acme", "sk-acme-instance-test", "DE", "p-acme"),
    ("globex", "sk-globex-instance-test", "US", "p-globex"),
    ("initech", "sk-initech-instance-test", "FR", "p-initech"),
];
const PER_TENANT: usize = 12;

fn policy(mocks: &[Mock]) -> String {
    let mut s = String::from(
        "version = 1\nname = \"instances\"\nrevision = \"1\"\n[settings]\nallow_anonymous = false\n\
         [settings.client]\nplatform = \"cloudflare\"\n",
    );
    for ((tenant, key, country, provider), mock) in TENANTS.iter().zip(mocks) {
        s.push_str(&format!(
            "[[providers]]\nid = \"{provider}\"\nbase_url = \"{}/v1\"\nlocation = \"{country}\"\n\
             models = {{ \"chat-model\" = \"{provider}-m\" }}\n\
             [[tenants]]\nid = \"{tenant}\"\nkeys = [\"sha256:{}\"]\n\
             [[rules]]\nid = \"{tenant}-own-provider\"\nwhen = {{ tenant = [\"{tenant}\"] }}\n\
             require = {{ providers = [\"{provider}\"] }}\n",
            mock.url(),
            hex::encode(meridian::policy::hash_key(key)),
        ));
    }
    s
}

/// An upstream that answers with the request id it received, so a response proves which
/// upstream request it came from. Streams send one event and then wait for `release`; whole
/// answers come after a delay that differs per request, so requests finish out of order.
async fn upstream(tenant: &'static str, release: Arc<tokio::sync::Notify>) -> Mock {
    Mock::with(move |rec, n| {
        let rid = rec.header("x-request-id").unwrap_or("none").to_string();
        let text = format!("{tenant}:{rid}");
        if rec.body["stream"] == true {
            Script::Sse {
                events: vec![chunk(&text), chunk(" second")],
                gap_ms: 0,
                end: SseEnd::HoldAfterFirst(release.clone()),
            }
        } else {
            Script::Delay(
                300 + (n as u64 % 5) * 60,
                Box::new(Script::Json {
                    status: 200,
                    body: chat_json(&text),
                    headers: vec![],
                }),
            )
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interleaved_tenants_in_one_instance_keep_their_own_facts() {
    let wasm = root().join("target/p3/wasm32-wasip2/release/meridian_p3.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: run ./scripts/setup",
        wasm.display()
    );
    let release = Arc::new(tokio::sync::Notify::new());
    let mut mocks = Vec::new();
    for (tenant, ..) in TENANTS {
        mocks.push(upstream(tenant, release.clone()).await);
    }
    let m = Meridian::build_with_policy_and_args(
        &wasm,
        &policy(&mocks),
        &[
            "--max-instance-concurrent-reuse-count",
            "64",
            "--max-instance-reuse-count",
            "1000",
        ],
    )
    .await;

    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..PER_TENANT {
        for (t, (tenant, key, country, provider)) in TENANTS.iter().enumerate() {
            let stream = (i + t) % 2 == 0;
            let rid = format!("{tenant}-{i}");
            let rb = client
                .post(m.at("/v1/chat/completions"))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .header("x-request-id", &rid)
                .header("cf-ipcountry", *country)
                .body(format!(
                    r#"{{"model":"chat-model","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
                ));
            let before = mocks.iter().map(|m| m.requests().len()).sum::<usize>();
            tasks.push(tokio::spawn(async move {
                let r = rb.send().await.expect("response");
                let h = |n: &str| {
                    r.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                let heads = (
                    r.status().as_u16(),
                    h("x-request-id"),
                    h("x-meridian-tenant"),
                    h("x-meridian-provider"),
                    h("x-meridian-client-country"),
                );
                let body = r.text().await.unwrap_or_default();
                (rid, *tenant, *country, *provider, heads, body)
            }));
            // The next request goes once this one waits on its upstream: wasmtime (and Spin)
            // give a request to a busy instance only while all its requests wait on I/O, and
            // start another instance otherwise.
            for _ in 0..400 {
                if mocks.iter().map(|m| m.requests().len()).sum::<usize>() > before {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }
    // Every request reaches its upstream before any stream may finish: the streams are all in
    // flight at once, with whole answers finishing among them.
    let total = TENANTS.len() * PER_TENANT;
    let mut arrived = 0;
    for _ in 0..400 {
        arrived = mocks.iter().map(|m| m.requests().len()).sum::<usize>();
        if arrived == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if arrived != total {
        let first = tasks.remove(0).await.expect("task");
        panic!("{arrived} of {total} requests reached an upstream; the first answer: {first:?}");
    }
    let releaser = tokio::spawn({
        let release = release.clone();
        async move {
            loop {
                release.notify_waiters();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    for task in tasks {
        let (rid, tenant, country, provider, heads, body) =
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("answered within 60 s")
                .expect("task");
        let (status, got_rid, got_tenant, got_provider, got_country) = heads;
        assert_eq!(status, 200, "{rid}: {body}");
        assert_eq!(got_rid, rid);
        assert_eq!(got_tenant, tenant, "{rid}");
        assert_eq!(got_provider, provider, "{rid}");
        assert!(got_country.starts_with(country), "{rid}: {got_country}");
        assert!(
            body.contains(&format!("{tenant}:{rid}")),
            "{rid} got another request's answer: {body}"
        );
        let log = m.log_for(&rid).await;
        assert_eq!(log["tenant"], tenant, "{rid}: {log}");
        assert_eq!(log["provider"], provider, "{rid}: {log}");
        assert_eq!(log["country"], country, "{rid}: {log}");
        assert_eq!(log["status"], 200, "{rid}: {log}");
    }
    releaser.abort();
    for ((tenant, ..), mock) in TENANTS.iter().zip(&mocks) {
        let reqs = mock.requests();
        assert_eq!(reqs.len(), PER_TENANT, "{tenant}'s upstream");
        for r in reqs {
            let rid = r.header("x-request-id").unwrap_or_default();
            assert!(
                rid.starts_with(&format!("{tenant}-")),
                "{tenant}'s upstream got {rid}"
            );
        }
    }
    let instances = m
        .stdout
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("meridian-host: instance started"))
        .count();
    assert_eq!(instances, 1, "all requests were served by one instance");
}
