//! Routing across models end to end, in the built component: a route whose first model's
//! providers all answer 503 is served by the next model in the same request, the audit naming
//! both; a long prompt skips the model whose context window it does not fit; and two providers
//! whose measured latencies disagree with the policy's priors swap order, measured by two nodes
//! sharing a real redis-server.

mod support;

use std::time::Duration;

use support::redis::Redis;
use support::{Meridian, Mock, Script};

fn chat(model: &str, content: &str) -> serde_json::Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": content}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_falls_across_models_and_skips_one_too_small() {
    let down = Mock::start(Script::status(503)).await;
    let up = Mock::start(Script::ok("from mid")).await;
    let small = Mock::start(Script::ok("from small")).await;
    let policy = format!(
        "version = 1\n[settings]\nallow_anonymous = true\n\
         [[providers]]\nid = \"big-1\"\nbase_url = \"{}/v1\"\nlocation = \"DE\"\nmodels = {{ big = \"big-up\" }}\n\
         [[providers]]\nid = \"mid-1\"\nbase_url = \"{}/v1\"\nlocation = \"DE\"\nmodels = {{ mid = \"mid-up\" }}\n\
         [[providers]]\nid = \"small-1\"\nbase_url = \"{}/v1\"\nlocation = \"DE\"\nmodels = {{ small = {{ id = \"small-up\", context_window = 1000 }} }}\n\
         [[routes]]\nid = \"smart\"\nmodels = [\"big\", \"mid\"]\n\
         [[routes]]\nid = \"cheap\"\nmodels = [\"small\", \"mid\"]\n",
        down.url(),
        up.url(),
        small.url()
    );
    let m = Meridian::with_policy(&policy, &[]).await;
    let client = reqwest::Client::new();
    let r = client
        .post(m.at("/v1/chat/completions"))
        .json(&chat("smart", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["x-meridian-served-model"], "mid");
    assert_eq!(h["x-meridian-provider"], "mid-1");
    assert_eq!(h["x-meridian-failures"], "big-1=status 503");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "from mid");
    assert_eq!(down.requests()[0].body["model"], "big-up");
    assert_eq!(up.requests()[0].body["model"], "mid-up");
    let id = h["x-request-id"].to_str().unwrap().to_string();
    let line = m.log_for(&id).await;
    assert_eq!(line["model"], "smart");
    assert_eq!(line["served_model"], "mid");

    // A prompt of about 2,000 tokens does not fit `small`'s 1,000: `mid` serves it.
    let long = "word ".repeat(1_600);
    let r = client
        .post(m.at("/v1/chat/completions"))
        .json(&chat("cheap", &long))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-meridian-served-model"], "mid");
    assert!(small.requests().is_empty());
    // Asked for `small` alone, it is refused, and the exclusion names the model and its window.
    let r = client
        .post(m.at("/v1/chat/completions"))
        .json(&chat("small", &long))
        .send()
        .await
        .unwrap();
    assert!(r.status().as_u16() >= 400);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("its model `small` has a context window of 1000 tokens"),
        "{text}"
    );
    // A short one goes to `small` first.
    let r = client
        .post(m.at("/v1/chat/completions"))
        .json(&chat("cheap", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-meridian-served-model"], "small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_measure_latency_in_the_shared_store_and_swap_the_order() {
    let redis = Redis::start().await;
    let slow = Mock::start(Script::Delay(150, Box::new(Script::ok("slow")))).await;
    let fast = Mock::start(Script::ok("fast")).await;
    // The policy's priors say the opposite of what is measured.
    let policy = format!(
        "version = 1\n[settings]\nallow_anonymous = true\n\
         [[providers]]\nid = \"slow\"\nbase_url = \"{}/v1\"\nlocation = \"DE\"\nlatency_ms = 10\nmodels = {{ m = \"m\" }}\n\
         [[providers]]\nid = \"fast\"\nbase_url = \"{}/v1\"\nlocation = \"DE\"\nlatency_ms = 60\nmodels = {{ m = \"m\" }}\n\
         [[rules]]\nid = \"quick\"\nprefer = {{ sort = \"latency\" }}\n",
        slow.url(),
        fast.url()
    );
    let rc = redis.runtime_config();
    let args = ["--runtime-config-file", rc.to_str().unwrap()];
    let a = Meridian::start_with(Some(&policy), &args).await;
    let b = Meridian::start_with(Some(&policy), &args).await;
    let client = reqwest::Client::new();
    let mut served = Vec::new();
    for i in 0..12 {
        let node = if i % 2 == 0 { &a } else { &b };
        let r = client
            .post(node.at("/v1/chat/completions"))
            .json(&chat("m", "hi"))
            .send()
            .await
            .unwrap();
        served.push(
            r.headers()["x-meridian-provider"]
                .to_str()
                .unwrap()
                .to_string(),
        );
        // The node writes its measurement after answering.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // `slow` leads on the priors until it has five samples (about 150 ms, above `fast`'s prior
    // of 60) from both nodes; from then on every node sends `fast` first. (A sample can be lost
    // when a store call fails under load, so the swap may come a request later.)
    let leading_slow = served.iter().take_while(|p| *p == "slow").count();
    assert!(leading_slow >= 5, "{served:?}");
    assert!(leading_slow < served.len(), "never swapped: {served:?}");
    assert!(
        served[leading_slow..].iter().all(|p| p == "fast"),
        "{served:?}"
    );
    let stored = redis
        .command(&["GET", "meridian:v1:latency:-"])
        .await
        .unwrap();
    assert!(
        stored.contains("\"slow\"") && stored.contains("\"fast\""),
        "{stored}"
    );
}
