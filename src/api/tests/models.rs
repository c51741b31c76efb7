//! Routing across models: a model route tried step by step (every constraint applying to each),
//! context windows that skip a model, rules that match the request's shape and pick a route, and
//! OpenRouter's `models` array narrowing a route but never widening what the policy allows.

use super::*;

/// `big` (on `b1`, DE), `mid` (on `m1`, US) and `small` (on `s1`, DE, an 8k context window and
/// 1k output); the route `smart` = big → mid → small, the route `cheap-first` = small → mid.
/// Tenants: `acme` (any model), `narrow` (only `big*`). `extra` is more TOML.
fn models_policy(extra: &str) -> Policy {
    let h = |k: &str| hex::encode(policy::hash_key(k));
    let text = format!(
        "version = 1\n[settings]\nallow_anonymous = true\n[settings.client]\nplatform = \"cloudflare\"\n\
         [[providers]]\nid = \"b1\"\nbase_url = \"http://b1/v1\"\nlocation = \"DE\"\nmodels = {{ big = {{ id = \"big-up\", context_window = 128000 }} }}\n\
         [[providers]]\nid = \"m1\"\nbase_url = \"http://m1/v1\"\nlocation = \"US\"\nmodels = {{ mid = \"mid-up\" }}\n\
         [[providers]]\nid = \"s1\"\nbase_url = \"http://s1/v1\"\nlocation = \"DE\"\nmodels = {{ small = {{ id = \"small-up\", context_window = 8000, max_output = 1000 }} }}\n\
         [[routes]]\nid = \"smart\"\nmodels = [\"big\", \"mid\", \"small\"]\n\
         [[routes]]\nid = \"cheap-first\"\nmodels = [\"small\", \"mid\"]\n\
         [[tenants]]\nid = \"acme\"\nkeys = [\"sha256:{}\"]\n\
         [[tenants]]\nid = \"narrow\"\nkeys = [\"sha256:{}\"]\nmodels = [\"big*\", \"smart\"]\n{extra}",
        h("sk-acme"),
        h("sk-narrow")
    );
    policy::load(&text, "models").unwrap_or_else(|e| panic!("{e}"))
}

/// A chat for the routed model `smart`.
const SMART: &str = r#"{"model":"smart","messages":[{"role":"user","content":"hi"}]}"#;

async fn ask(p: &Policy, t: &Fake, key: Option<&str>, body: &str) -> Answer {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut h = vec![JSON, ("cf-ipcountry", "DE")];
    if let Some(a) = &auth {
        h.push(("authorization", a));
    }
    chat(p, t, &h, body).await
}

fn candidates(a: &Answer) -> Vec<String> {
    a.record.candidates.clone()
}

#[tokio::test(start_paused = true)]
async fn a_route_falls_to_the_next_model_when_every_provider_of_one_fails() {
    let p = models_policy("");
    let t = Fake::new(vec![
        ("b1", vec![status(503, None)]),
        ("m1", vec![ok_json(0)]),
    ]);
    let a = ask(&p, &t, Some("sk-acme"), SMART).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(candidates(&a), ["b1", "m1", "s1"]);
    assert_eq!(t.sent_to(), ["b1", "m1"]);
    assert_eq!(a.header("x-meridian-served-model"), Some("mid"));
    assert_eq!(a.header("x-meridian-model"), Some("mid-up"));
    assert_eq!(a.header("x-meridian-failures"), Some("b1=status 503"));
    // The client's named model stays in the log.
    let line: serde_json::Value = serde_json::from_str(&a.record.log_line(0, 0)).unwrap();
    assert_eq!(line["model"], "smart");
    assert_eq!(line["served_model"], "mid");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&t.requests.borrow()[1].body).unwrap()["model"],
        "mid-up"
    );
}

#[tokio::test(start_paused = true)]
async fn every_constraint_applies_to_every_step() {
    // EU clients stay in the EU: `mid` (US) is no step for them.
    let p = models_policy(
        "[[rules]]\nid = \"eu\"\nwhen = { client_jurisdiction = [\"eu\"] }\nrequire = { jurisdiction = [\"eu\"] }\n",
    );
    let t = Fake::new(vec![("b1", vec![ok_json(0)])]);
    let a = ask(&p, &t, Some("sk-acme"), SMART).await;
    assert_eq!(candidates(&a), ["b1", "s1"]);
    assert_eq!(a.record.excluded, ["m1"]);
    // A tenant's model scope binds the steps too.
    let a = ask(&p, &t, Some("sk-narrow"), SMART).await;
    assert_eq!(candidates(&a), ["b1"]);
}

#[tokio::test(start_paused = true)]
async fn a_model_whose_context_window_is_too_small_is_skipped_with_the_reason() {
    let p = models_policy("");
    let long = "word ".repeat(8_000); // 40,000 bytes: about 10,000 tokens, over small's 8,000
    let body =
        format!(r#"{{"model":"cheap-first","messages":[{{"role":"user","content":"{long}"}}]}}"#);
    let t = Fake::new(vec![("m1", vec![ok_json(0)])]);
    let a = ask(&p, &t, Some("sk-acme"), &body).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(candidates(&a), ["m1"]);
    assert_eq!(a.record.excluded, ["s1"]);
    // Only `small` and a long prompt: the refusal names the window.
    let only_small =
        format!(r#"{{"model":"small","messages":[{{"role":"user","content":"{long}"}}]}}"#);
    let a = ask(&p, &no_script(), Some("sk-acme"), &only_small).await;
    assert!(a.status >= 400);
    assert!(
        a.text()
            .contains("its model `small` has a context window of 8000 tokens"),
        "{}",
        a.text()
    );
    // More output than the model generates.
    let a = ask(
        &p,
        &no_script(),
        Some("sk-acme"),
        r#"{"model":"small","max_tokens":4000,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert!(
        a.text().contains(
            "its model `small` generates at most 1000 output tokens; the request asks for 4000"
        ),
        "{}",
        a.text()
    );
}

#[tokio::test(start_paused = true)]
async fn a_rule_on_the_requests_shape_picks_the_route() {
    // Short prompts without tools go to the small model first.
    let p = models_policy(
        "[[rules]]\nid = \"short\"\nwhen = { model = [\"smart\"], input_tokens = { max = 200 }, tools = false }\nroute = \"cheap-first\"\n",
    );
    let t = Fake::new(vec![]);
    let short = ask(&p, &t, Some("sk-acme"), SMART).await;
    assert_eq!(short.record.rules.as_deref().unwrap_or_default(), ["short"]);
    assert_eq!(candidates(&short), ["s1", "m1"]);
    let with_tools = ask(
        &p,
        &t,
        Some("sk-acme"),
        r#"{"model":"smart","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{}}}]}"#,
    )
    .await;
    assert_eq!(candidates(&with_tools), ["b1", "m1", "s1"]);
    let long = format!(
        r#"{{"model":"smart","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(2_000)
    );
    let long = ask(&p, &t, Some("sk-acme"), &long).await;
    assert_eq!(candidates(&long), ["b1", "m1", "s1"]);
    // Images count as media.
    let p = models_policy(
        "[[rules]]\nid = \"pictures\"\nwhen = { media = true }\nroute = \"cheap-first\"\n",
    );
    let img = ask(
        &p,
        &t,
        Some("sk-acme"),
        r#"{"model":"smart","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}"#,
    )
    .await;
    assert_eq!(candidates(&img), ["s1", "m1"]);
}

#[tokio::test(start_paused = true)]
async fn the_clients_models_array_narrows_a_route_and_never_widens_it() {
    let p = models_policy("");
    let t = Fake::new(vec![]);
    let narrowed = ask(
        &p,
        &t,
        Some("sk-acme"),
        r#"{"model":"smart","models":["small","big"],"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(candidates(&narrowed), ["s1", "b1"]);
    // Not in the route: ignored, the route stands.
    let outside = ask(
        &p,
        &t,
        Some("sk-acme"),
        r#"{"model":"cheap-first","models":["big"],"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(candidates(&outside), ["s1", "m1"]);
    // Without a route, `models` adds fallbacks, each within the tenant's scope.
    let fallbacks = ask(
        &p,
        &t,
        Some("sk-acme"),
        r#"{"model":"big","models":["mid"],"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(candidates(&fallbacks), ["b1", "m1"]);
    let scoped = ask(
        &p,
        &t,
        Some("sk-narrow"),
        r#"{"model":"big","models":["mid","small"],"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(candidates(&scoped), ["b1"]);
    // A malformed `models` is the client's to fix.
    let bad = ask(
        &p,
        &t,
        Some("sk-acme"),
        r#"{"model":"big","models":"mid","messages":[]}"#,
    )
    .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test(start_paused = true)]
async fn routes_are_models_to_clients() {
    let p = models_policy("");
    let a = call(
        &p,
        &no_script(),
        "GET",
        "/v1/models",
        &[("authorization", "Bearer sk-acme")],
        "",
    )
    .await;
    let ids: Vec<String> = a.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        ids.contains(&"smart".to_string()) && ids.contains(&"cheap-first".to_string()),
        "{ids:?}"
    );
    let route = a.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "smart")
        .cloned()
        .unwrap();
    assert_eq!(
        route["meridian"]["providers"],
        serde_json::json!(["b1", "m1", "s1"])
    );
}

#[tokio::test(start_paused = true)]
async fn measured_latency_overrides_the_prior_after_enough_samples() {
    // The policy thinks `slow` is faster (50 against 100 ms); it answers in 300 ms, `fast` in 20.
    let p = policy::load(
        "version = 1\n[settings]\nallow_anonymous = true\n\
         [[providers]]\nid = \"slow\"\nbase_url = \"http://slow/v1\"\nlocation = \"DE\"\nlatency_ms = 50\nmodels = { m = \"m\" }\n\
         [[providers]]\nid = \"fast\"\nbase_url = \"http://fast/v1\"\nlocation = \"DE\"\nlatency_ms = 100\nmodels = { m = \"m\" }\n\
         [[rules]]\nid = \"quick\"\nprefer = { sort = \"latency\" }\n",
        "latency",
    )
    .unwrap();
    // One store: what the nodes of one edge region share.
    let store = crate::testing::MemStore::default();
    let mut first = Vec::new();
    for _ in 0..8 {
        let t = Fake::new(vec![
            ("slow", vec![ok_json(300)]),
            ("fast", vec![ok_json(20)]),
        ]);
        let a = call_store(
            Ok(&p),
            &|_| None,
            Some(&store),
            &t,
            "POST",
            "/v1/chat/completions",
            &[JSON],
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
        first.push(a.record.candidates[0].clone());
    }
    // Five samples of `slow` (300 ms, above `fast`'s prior of 100), then `fast` leads.
    assert_eq!(
        first,
        ["slow", "slow", "slow", "slow", "slow", "fast", "fast", "fast"]
    );
    let m = crate::limits::latency::Measured::parse(
        store
            .blobs
            .borrow()
            .get("meridian:v1:latency:-")
            .map(Vec::as_slice),
    );
    assert_eq!(m.0["slow"].n, 5);
    assert_eq!(m.0["fast"].n, 3);
    assert_eq!(m.usable(), [("slow".to_string(), 300)]);
}

#[tokio::test(start_paused = true)]
async fn nearest_orders_providers_by_distance_from_the_client() {
    let mut text = String::from(
        "version = 1\n[settings]\nallow_anonymous = true\n[settings.client]\nplatform = \"cloudflare\"\n",
    );
    for (id, loc) in [
        ("us", "US"),
        ("de", "DE"),
        ("jp", "JP"),
        ("br", "BR"),
        ("au", "AU"),
    ] {
        text.push_str(&format!(
            "[[providers]]\nid = \"{id}\"\nbase_url = \"http://{id}/v1\"\nlocation = \"{loc}\"\nmodels = {{ m = \"m\" }}\n"
        ));
    }
    text.push_str("[[rules]]\nid = \"near\"\nprefer = { sort = \"nearest\" }\n");
    let p = policy::load(&text, "nearest").unwrap();
    let first = |country: &'static str| {
        let p = &p;
        async move {
            let t = Fake::new(vec![]);
            let a = chat(
                p,
                &t,
                &[JSON, ("cf-ipcountry", country)],
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            )
            .await;
            a.record.candidates.clone()
        }
    };
    assert_eq!(first("FR").await[0], "de");
    assert_eq!(first("CA").await[0], "us");
    assert_eq!(first("KR").await[0], "jp");
    assert_eq!(first("AR").await[0], "br");
    assert_eq!(first("NZ").await[0], "au");
    // The whole order, from Germany (Berlin to Washington about 6,700 km, Tokyo 8,900,
    // Brasília 9,600, Canberra 16,000).
    assert_eq!(first("DE").await, ["de", "us", "jp", "br", "au"]);
    // No country: the catalog's order stands.
    assert_eq!(first("XX").await, ["us", "de", "jp", "br", "au"]);
}
