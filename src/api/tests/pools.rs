//! Self-hosted pools through `serve`: the replica each request goes to and why, in the audit
//! headers and the log; the load summary read once; queues and down replicas skipped; the pool
//! shed to the next provider or refused with 503 and `Retry-After`; a failing replica skipped
//! for the request and cooled alone; residency per replica.

use super::*;
use crate::pool::{Load, PoolLoad, Summary, KEY};
use crate::testing::{MemStore, UNIX_AT_START_MS};

/// `home`: a vLLM pool of three (two in Germany, one in the US), prefix balance, queues of 4 at
/// most; `cloud` (US) serves the same model. Anonymous callers; Cloudflare's country header.
fn pooled(extra: &str, cloud: bool) -> Policy {
    let cloud = if cloud {
        "[[providers]]\nid = \"cloud\"\nbase_url = \"http://cloud/v1\"\nlocation = \"US\"\nmodels = { \"chat-model\" = \"c-m\", \"us-model\" = \"c-us\" }\n"
    } else {
        ""
    };
    let text = format!(
        "version = 1\n[settings]\nallow_anonymous = true\n[settings.client]\nplatform = \"cloudflare\"\n{extra}\n\
         [[providers]]\nid = \"home\"\nself_hosted = true\nlocation = \"DE\"\nmodels = {{ \"chat-model\" = \"llama\" }}\n\
         [providers.pool]\nmax_queue = 4\n\
         [[providers.pool.replicas]]\nname = \"de-1\"\nbase_url = \"http://de-1/v1\"\n\
         [[providers.pool.replicas]]\nname = \"de-2\"\nbase_url = \"http://de-2/v1\"\n\
         [[providers.pool.replicas]]\nname = \"us-1\"\nbase_url = \"http://us-1/v1\"\nlocation = \"US\"\n\
         {cloud}\
         [[rules]]\nid = \"eu-stays-in-eu\"\nwhen = {{ client_jurisdiction = [\"eu\"] }}\nrequire = {{ jurisdiction = [\"eu\"] }}\n"
    );
    policy::load(&text, "pools").unwrap_or_else(|e| panic!("{e}"))
}

const SYSTEM: &str = "You are the support assistant of Example GmbH. Answer in two sentences at most, politely, and never promise refunds. ";

fn conversation(turns: &[&str]) -> String {
    let mut messages = vec![serde_json::json!({"role": "system", "content": SYSTEM})];
    for (i, t) in turns.iter().enumerate() {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(serde_json::json!({"role": role, "content": t}));
    }
    serde_json::json!({"model": "chat-model", "messages": messages}).to_string()
}

fn from(country: &str) -> [(&'static str, String); 2] {
    [
        ("content-type", "application/json".to_string()),
        ("cf-ipcountry", country.to_string()),
    ]
}

async fn send(p: &Policy, store: Option<&MemStore>, t: &Fake, country: &str, body: &str) -> Answer {
    let h = from(country);
    let headers: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    call_store(
        Ok(p),
        &|_| None,
        store.map(|s| s as &dyn crate::limits::Store),
        t,
        "POST",
        "/v1/chat/completions",
        &headers,
        body,
    )
    .await
}

fn log(a: &Answer) -> serde_json::Value {
    serde_json::from_str(&a.log).unwrap()
}

fn summary(age_ms: u64, loads: &[(&str, u32, bool)]) -> Vec<u8> {
    let mut s = Summary::new();
    s.insert(
        "home".into(),
        PoolLoad {
            at_ms: UNIX_AT_START_MS - age_ms,
            replicas: loads
                .iter()
                .map(|(n, waiting, healthy)| {
                    (
                        n.to_string(),
                        Load {
                            waiting: *waiting,
                            running: 0,
                            kv: None,
                            healthy: *healthy,
                        },
                    )
                })
                .collect(),
        },
    );
    serde_json::to_vec(&s).unwrap()
}

fn store_with(bytes: Vec<u8>) -> MemStore {
    let s = MemStore::default();
    s.blobs.borrow_mut().insert(KEY.to_string(), bytes);
    s
}

fn everyone_answers() -> Fake {
    Fake::responding(|_, _| ok_json(0))
}

#[tokio::test(start_paused = true)]
async fn a_conversation_keeps_landing_on_one_replica_which_the_audit_names() {
    let p = pooled("", false);
    let t = everyone_answers();
    let first = send(
        &p,
        None,
        &t,
        "DE",
        &conversation(&["How do I reset my password?"]),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let replica = first.header("x-meridian-replica").unwrap().to_string();
    assert!(["de-1", "de-2"].contains(&replica.as_str()), "{replica}");
    assert_eq!(t.sent_to(), std::slice::from_ref(&replica));
    assert_eq!(first.header("x-meridian-provider"), Some("home"));
    assert_eq!(first.header("x-meridian-jurisdiction"), Some("DE"));
    assert_eq!(
        first.header("x-meridian-pool"),
        Some("prefix; load=unmeasured")
    );
    let line = log(&first);
    assert_eq!(line["replica"], replica.as_str());
    assert_eq!(line["pool"]["why"], "prefix");
    assert_eq!(line["pool"]["load"], "unmeasured");
    assert_eq!(line["attempts"][0]["replica"], replica.as_str());
    // A receipt attests the replica, and each attempt's.
    let claims = crate::receipt::claims(line.as_object().unwrap(), true);
    assert_eq!(claims["replica"], replica.as_str());
    assert_eq!(claims["attempts"][0]["replica"], replica.as_str());
    // The conversation's next turns start with the same bytes: the same replica.
    for turns in [
        &[
            "How do I reset my password?",
            "Use 'Forgot password'.",
            "And my email?",
        ][..],
        &[
            "How do I reset my password?",
            "Use 'Forgot password'.",
            "And my email?",
            "Under Settings.",
            "Thanks!",
        ][..],
    ] {
        let a = send(&p, None, &t, "DE", &conversation(turns)).await;
        assert_eq!(a.header("x-meridian-replica"), Some(replica.as_str()));
    }
    assert!(
        t.sent_to().iter().all(|r| *r == replica),
        "{:?}",
        t.sent_to()
    );
}

#[tokio::test(start_paused = true)]
async fn an_eu_client_is_never_sent_to_the_replica_outside_the_eu() {
    let p = pooled("", false);
    let t = everyone_answers();
    // Many different prompts from Germany: only the German replicas; from the US, all three.
    for i in 0..40 {
        let body = format!(
            r#"{{"model":"chat-model","messages":[{{"role":"user","content":"question number {i}"}}]}}"#
        );
        let a = send(&p, None, &t, "DE", &body).await;
        assert_eq!(a.status, 200);
        send(&p, None, &t, "US", &body).await;
    }
    let sent = t.sent_to();
    let eu: Vec<&String> = sent.iter().step_by(2).collect();
    let us: Vec<&String> = sent.iter().skip(1).step_by(2).collect();
    assert!(eu.iter().all(|r| r.starts_with("de-")), "{eu:?}");
    assert!(eu.iter().any(|r| *r == "de-1") && eu.iter().any(|r| *r == "de-2"));
    assert!(us.iter().any(|r| *r == "us-1"), "{us:?}");
}

#[tokio::test(start_paused = true)]
async fn the_summary_is_read_once_and_a_full_queue_takes_no_new_request() {
    let p = pooled("", false);
    let body = conversation(&["Where is my invoice?"]);
    // Where this prompt goes when the pool is idle.
    let t = everyone_answers();
    let idle = send(&p, None, &t, "DE", &body).await;
    let home = idle.header("x-meridian-replica").unwrap().to_string();
    let other = if home == "de-1" { "de-2" } else { "de-1" };
    // Its replica has 4 waiting (max_queue = 4): the other German replica takes it.
    let store = store_with(summary(500, &[(home.as_str(), 4, true), (other, 1, true)]));
    let t = everyone_answers();
    let a = send(&p, Some(&store), &t, "DE", &body).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(t.sent_to(), [other.to_string()]);
    assert_eq!(a.header("x-meridian-replica"), Some(other));
    assert_eq!(a.header("x-meridian-pool"), Some("prefix; load=fresh 0.5s"));
    let line = log(&a);
    assert_eq!(line["pool"]["queued"], serde_json::json!([home]));
    // One store call: the summary (no limits, no health in this policy).
    assert_eq!(store.calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn every_replica_full_goes_to_the_next_provider_or_gets_503_with_retry_after() {
    let full = summary(
        200,
        &[("de-1", 9, true), ("de-2", 4, true), ("us-1", 7, true)],
    );
    // From the US, `cloud` is allowed: the request goes there, the pool's reason in the audit.
    let p = pooled("", true);
    let store = store_with(full.clone());
    let t = everyone_answers();
    let a = send(&p, Some(&store), &t, "US", CHAT).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(t.sent_to(), ["cloud"]);
    assert_eq!(a.header("x-meridian-provider"), Some("cloud"));
    assert!(a.header("x-meridian-replica").is_none());
    let line = log(&a);
    assert_eq!(line["excluded"], serde_json::json!(["home"]));
    // From Germany nothing else is allowed: 503, Retry-After, the reason; nothing sent.
    let t = everyone_answers();
    let a = send(&p, Some(&store), &t, "DE", CHAT).await;
    assert_eq!(a.status, 503, "{}", a.text());
    assert_eq!(a.code(), "pool_saturated");
    assert_eq!(a.header("retry-after"), Some("2"));
    assert!(t.sent_to().is_empty());
    let v = a.json();
    let all = v["error"]["meridian"]["excluded"]
        .as_array()
        .unwrap()
        .clone();
    let excluded = all.iter().find(|e| e["provider"] == "home").unwrap();
    assert_eq!(excluded["reasons"][0]["kind"], "load");
    assert_eq!(excluded["reasons"][0]["by"], "pool load:");
    let reasons = excluded.to_string();
    assert!(
        reasons.contains("every allowed replica (2) has 4 or more requests waiting (`max_queue`)"),
        "{reasons}"
    );
    assert_eq!(log(&a)["refused_by"], "load");
}

#[tokio::test(start_paused = true)]
async fn down_replicas_are_skipped_and_a_stale_summary_is_ignored_and_said() {
    let p = pooled("", false);
    let body = conversation(&["Can I change my plan?"]);
    let t = everyone_answers();
    let home = send(&p, None, &t, "DE", &body)
        .await
        .header("x-meridian-replica")
        .unwrap()
        .to_string();
    let other = if home == "de-1" { "de-2" } else { "de-1" };
    let down = summary(1_000, &[(home.as_str(), 0, false), (other, 0, true)]);
    let t = everyone_answers();
    let a = send(&p, Some(&store_with(down.clone())), &t, "DE", &body).await;
    assert_eq!(t.sent_to(), [other.to_string()]);
    assert_eq!(log(&a)["pool"]["down"], serde_json::json!([home]));
    // The same summary 11 s old (stale_after_s = 10): ignored, and said.
    let stale = summary(11_000, &[(home.as_str(), 0, false), (other, 0, true)]);
    let t = everyone_answers();
    let a = send(&p, Some(&store_with(stale)), &t, "DE", &body).await;
    assert_eq!(t.sent_to(), std::slice::from_ref(&home));
    assert_eq!(
        a.header("x-meridian-pool"),
        Some("prefix; load=stale 11s (ignored)")
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_replica_is_skipped_for_the_request_and_cooled_alone() {
    let p = pooled(
        "[settings.health]\nfailures = 1\nwindow_s = 60\ncooldown_s = 30\n",
        false,
    );
    let body = conversation(&["Is the service down?"]);
    let t = everyone_answers();
    let store = MemStore::default();
    let home = send(&p, Some(&store), &t, "DE", &body)
        .await
        .header("x-meridian-replica")
        .unwrap()
        .to_string();
    let other = if home == "de-1" { "de-2" } else { "de-1" };
    // Its replica refuses connections: the other German replica answers in the same request.
    let failing = home.clone();
    let t = Fake::responding(move |host, _| {
        if host == failing {
            Step::Fail {
                after_ms: 0,
                failure: Failure::Connect("connection refused".into()),
            }
        } else {
            ok_json(0)
        }
    });
    let a = send(&p, Some(&store), &t, "DE", &body).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(t.sent_to(), [home.clone(), other.to_string()]);
    assert_eq!(a.header("x-meridian-replica"), Some(other));
    let line = log(&a);
    assert_eq!(line["attempts"][0]["replica"], home.as_str());
    assert_eq!(line["attempts"][0]["outcome"], "connect error");
    // Cooled as `home@<replica>`, not the whole pool: the next request skips it, and says so.
    let t = everyone_answers();
    let a = send(&p, Some(&store), &t, "DE", &body).await;
    assert_eq!(t.sent_to(), [other.to_string()]);
    let cooling = a
        .header("x-meridian-cooling")
        .unwrap_or_default()
        .to_string();
    assert!(
        cooling.contains(&format!("home@{home} cooling down until")),
        "{cooling}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_without_a_pool_among_its_candidates_reads_nothing() {
    // `us-model` is served by `cloud` alone: no summary read, no pool in the audit.
    let p = pooled("", true);
    let store = store_with(summary(100, &[("de-1", 0, true)]));
    let t = everyone_answers();
    let body = r#"{"model":"us-model","messages":[{"role":"user","content":"hi"}]}"#;
    let a = send(&p, Some(&store), &t, "US", body).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(t.sent_to(), ["cloud"]);
    assert_eq!(store.calls.get(), 0);
    assert!(a.header("x-meridian-pool").is_none() && a.header("x-meridian-replica").is_none());
    assert!(log(&a).get("pool").is_none());
}

#[tokio::test(start_paused = true)]
async fn retry_after_follows_a_short_stale_after() {
    // The pool with `stale_after_s = 1`: the summary is measured again within a second.
    let mut p = pooled("", false);
    let mut providers = p.providers.clone().into_owned();
    if let Some(pool) = providers[0].pool.as_mut() {
        pool.stale_after_s = 1;
    }
    p.providers = providers.into();
    let full = summary(
        200,
        &[("de-1", 9, true), ("de-2", 9, true), ("us-1", 9, true)],
    );
    let t = everyone_answers();
    let a = send(&p, Some(&store_with(full)), &t, "US", CHAT).await;
    assert_eq!(a.status, 503, "{}", a.text());
    assert_eq!(a.header("retry-after"), Some("1"));
}

#[tokio::test(start_paused = true)]
async fn replay_sees_a_change_to_the_replicas_a_request_may_reach() {
    // Served under the pool policy: from Germany (the German replicas), from the US (all).
    let p = pooled("", false);
    let t = everyone_answers();
    let mut lines = Vec::new();
    for (i, country) in ["DE", "US", "DE", "US"].iter().enumerate() {
        let body = format!(
            r#"{{"model":"chat-model","messages":[{{"role":"user","content":"question {i}"}}]}}"#
        );
        let a = send(&p, None, &t, country, &body).await;
        assert_eq!(a.status, 200);
        lines.push(a.log.clone());
    }
    // The log keeps where the first choice may process: its allowed replicas' places.
    let first =
        |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap()["facts"]["first"].clone();
    assert_eq!(first(&lines[0])["location"], "DE");
    assert_eq!(first(&lines[1])["location"], "DE, US");
    // The same policy again: nothing moves.
    let mut r = crate::replay::Replay::new(&p);
    for l in &lines {
        r.line(l);
    }
    let report = r.finish();
    assert_eq!(
        (report.replayed, report.changed),
        (4, 0),
        "{}",
        report.text()
    );
    // A new rule keeps every client in the EU: the US clients' requests lose the US replica.
    let eu_only = pooled(
        "[[rules]]\nid = \"everyone-in-eu\"\nrequire = { jurisdiction = [\"eu\"] }\n",
        false,
    );
    let mut r = crate::replay::Replay::new(&eu_only);
    for l in &lines {
        r.line(l);
    }
    let report = r.finish();
    assert_eq!(
        (report.replayed, report.changed),
        (4, 2),
        "{}",
        report.text()
    );
    assert!(report.provider_moves.is_empty(), "{}", report.text());
    let m = &report.jurisdiction_moves;
    assert_eq!(m.len(), 1, "{}", report.text());
    assert_eq!((m[0].from.as_str(), m[0].to.as_str()), ("DE, US", "DE"));
    assert_eq!(m[0].bucket.requests, 2);
}

#[tokio::test(start_paused = true)]
async fn an_engine_without_metrics_is_counted_in_flight_and_given_back_at_the_end() {
    let mut p = pooled("", false);
    let mut providers = p.providers.clone().into_owned();
    if let Some(pool) = providers[0].pool.as_mut() {
        pool.engine = crate::policy::Engine::None;
    }
    p.providers = providers.into();
    let store = MemStore::default();
    let t = everyone_answers();
    let a = send(&p, Some(&store), &t, "DE", &conversation(&["Hello?"])).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let replica = a.header("x-meridian-replica").unwrap().to_string();
    let key = crate::pool::inflight_key("home", &replica, UNIX_AT_START_MS / 1000);
    // Counted (the key exists) and given back at the end: nothing left in flight.
    assert_eq!(
        store.values.borrow().get(&key).copied(),
        Some(0),
        "{:?}",
        store.values.borrow()
    );
    // A vLLM pool is measured by its own metrics: nothing counted.
    let p = pooled("", false);
    let store = MemStore::default();
    send(
        &p,
        Some(&store),
        &everyone_answers(),
        "DE",
        &conversation(&["Hello?"]),
    )
    .await;
    assert!(store
        .values
        .borrow()
        .keys()
        .all(|k| !k.contains(":inflight:")));
}

#[tokio::test(start_paused = true)]
async fn what_a_replica_reports_on_its_answer_steers_this_instances_next_requests() {
    let p = pooled("", false);
    let body = conversation(&["Is my parcel lost?"]);
    let home = send(&p, None, &everyone_answers(), "DE", &body)
        .await
        .header("x-meridian-replica")
        .unwrap()
        .to_string();
    let other = if home == "de-1" { "de-2" } else { "de-1" };
    // The summary says both German replicas are idle; the prompt's own replica answers that it
    // now has 6 waiting (max_queue = 4), as vLLM reports when asked.
    let store = store_with(summary(500, &[(home.as_str(), 0, true), (other, 0, true)]));
    let busy = home.clone();
    let t = Fake::responding(move |host, _| {
        let mut answer = ok_json(0);
        if host == busy {
            if let Step::Answer { headers, .. } = &mut answer {
                headers.push((
                    "endpoint-load-metrics".into(),
                    "TEXT named_metrics.kv_cache_usage_perc=0.5, named_metrics.num_requests_waiting=6.0".into(),
                ));
            }
        }
        answer
    });
    let a = send(&p, Some(&store), &t, "DE", &body).await;
    assert_eq!(a.header("x-meridian-replica"), Some(home.as_str()));
    // It was asked to report its load.
    let asked = t.requests.borrow()[0]
        .headers
        .iter()
        .any(|(k, v)| k == "endpoint-load-metrics-format" && v == "text");
    assert!(asked);
    assert!(t.requests.borrow()[0].read_load);
    // The next request of the conversation: its replica is full by what it said; the other one.
    let b = send(&p, Some(&store), &t, "DE", &body).await;
    assert_eq!(b.header("x-meridian-replica"), Some(other));
    let line = log(&b);
    assert_eq!(line["pool"]["learned"], serde_json::json!([home]));
    assert_eq!(line["pool"]["queued"], serde_json::json!([home]));
    // A stale summary is not mended by what one instance saw: ignored whole.
    let stale = store_with(summary(
        60_000,
        &[(home.as_str(), 0, true), (other, 0, true)],
    ));
    let c = send(&p, Some(&stale), &t, "DE", &body).await;
    assert_eq!(c.header("x-meridian-replica"), Some(home.as_str()));
    assert!(log(&c)["pool"].get("learned").is_none());
}
