//! Shared by the end-to-end tests: mock upstreams and a running Meridian.
#![allow(dead_code, unused_imports)]

pub mod clients;
pub mod meridian;
pub mod mock;
pub mod otlp;
pub mod redis;

pub use meridian::Meridian;
pub use mock::{Mock, Recorded, Script};

/// A policy whose providers point at the given mocks: (id, mock, location, extra TOML). Providers
/// are keyless unless the extra TOML sets `key_secret`.
pub fn policy_for(providers: &[(&str, &Mock, &str, &str)], extra: &str) -> String {
    let mut s = String::from(
        "version = 1\nname = \"e2e\"\nrevision = \"1\"\n\n[settings]\ntrusted_country_headers = [\"cf-ipcountry\"]\nallow_anonymous = true\nmax_body_bytes = 4096\n\n",
    );
    for (id, mock, location, more) in providers {
        s.push_str(&format!(
            "[[providers]]\nid = \"{id}\"\nbase_url = \"{}/v1\"\nlocation = \"{location}\"\nmodels = {{ \"chat-model\" = {{ id = \"{id}-upstream-model\", input_price = 1.0, output_price = 2.0 }}, \"embed-model\" = \"{id}-embed\" }}\n{more}\n\n",
            mock.url()
        ));
    }
    s.push_str(extra);
    s
}

/// `n` chat requests to `url`, one after another, each read to its end; each one's latency in
/// milliseconds (the benchmarks' client).
pub async fn chat_latencies(url: &str, n: usize) -> Vec<f64> {
    let c = reqwest::Client::new();
    let body = r#"{"model":"chat-model","messages":[{"role":"user","content":"hello there"}]}"#;
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let start = std::time::Instant::now();
        let r = c
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{url}");
        r.bytes().await.unwrap();
        lat.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    lat
}

/// Each Meridian's chat latencies (ms) over `n` requests, after a warm-up of `warm`, in
/// `rounds` interleaved rounds so machine noise hits them alike (the benchmarks' comparison).
pub async fn interleaved_latencies(
    nodes: &[&Meridian],
    n: usize,
    rounds: usize,
    warm: usize,
) -> Vec<Vec<f64>> {
    for m in nodes {
        chat_latencies(&m.at("/v1/chat/completions"), warm).await;
    }
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); nodes.len()];
    for _ in 0..rounds {
        for (i, m) in nodes.iter().enumerate() {
            lat[i].extend(chat_latencies(&m.at("/v1/chat/completions"), n / rounds).await);
        }
    }
    lat
}

/// Sends a request and parses its JSON answer.
pub async fn json_of(rb: reqwest::RequestBuilder) -> serde_json::Value {
    rb.send().await.unwrap().json().await.unwrap()
}

/// The `id`s of an OpenAI list object (e.g. `/v1/models`).
pub fn list_ids(list: &serde_json::Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect()
}
