//! Replica choice: the rendezvous hash's stability, bounded loads, queues, down replicas,
//! stale and missing summaries, the prefix key; and residency per replica in the decision.

use std::collections::BTreeMap;

use super::*;
use crate::policy::{Balance, BaseUrl, CountrySet, Pool, Replica};

fn replica(name: &str) -> Replica {
    let url = format!("http://{name}.internal:8000/v1");
    Replica {
        name: name.to_string().into(),
        base_url: BaseUrl(url.clone().into()),
        metrics_url: BaseUrl(url.into()),
        location: "DE".into(),
        countries: CountrySet::new(),
        single_country: None,
    }
}

fn pool(names: &[&str], balance: Balance) -> Pool {
    Pool {
        balance,
        engine: Default::default(),
        replicas: names.iter().map(|n| replica(n)).collect::<Vec<_>>().into(),
        max_queue: None,
        load_bound: 1.25,
        prefix_bytes: 256,
        stale_after_s: 10,
    }
}

fn load(at_ms: u64, loads: &[(&str, u32, u32)]) -> PoolLoad {
    PoolLoad {
        at_ms,
        replicas: loads
            .iter()
            .map(|(n, waiting, running)| {
                (
                    n.to_string(),
                    Load {
                        waiting: *waiting,
                        running: *running,
                        kv: None,
                        healthy: true,
                    },
                )
            })
            .collect(),
    }
}

/// The first replica by name for `key`, computed here from the scores alone.
fn first_by_score(names: &[&str], key: u64) -> String {
    names
        .iter()
        .max_by_key(|n| score(key, n))
        .unwrap()
        .to_string()
}

fn first(p: &Pool, key: u64, l: Option<&PoolLoad>, now_ms: u64) -> String {
    let c = choose(p, p.all(), key, l, now_ms);
    p.replicas[c.order[0]].name.to_string()
}

#[test]
fn without_load_each_prompt_goes_to_its_highest_scoring_replica() {
    let names = ["a", "b", "c", "d"];
    let p = pool(&names, Balance::Prefix);
    let mut seen = BTreeMap::new();
    for key in 0..2000u64 {
        let k = mix(key);
        assert_eq!(first(&p, k, None, 0), first_by_score(&names, k));
        *seen.entry(first(&p, k, None, 0)).or_insert(0) += 1;
    }
    // Spread over every replica, roughly evenly (each near 500 of 2000).
    assert_eq!(seen.len(), 4);
    assert!(seen.values().all(|n| (350..650).contains(n)), "{seen:?}");
}

#[test]
fn a_replica_leaving_or_joining_moves_only_its_own_share() {
    let before = pool(&["a", "b", "c", "d"], Balance::Prefix);
    let left = pool(&["a", "b", "d"], Balance::Prefix);
    let joined = pool(&["a", "b", "c", "d", "e"], Balance::Prefix);
    let (mut moved_leave, mut moved_join) = (0, 0);
    for key in 0..4000u64 {
        let k = mix(key ^ 0xABCD);
        let was = first(&before, k, None, 0);
        let now = first(&left, k, None, 0);
        if was != "c" {
            assert_eq!(was, now, "a prompt not on `c` moved when `c` left");
        } else {
            moved_leave += 1;
        }
        let now = first(&joined, k, None, 0);
        if now != "e" {
            assert_eq!(was, now, "a prompt moved elsewhere than to the new `e`");
        } else {
            moved_join += 1;
        }
    }
    // About a quarter left with `c`, about a fifth went to `e`.
    assert!((800..1200).contains(&moved_leave), "{moved_leave}");
    assert!((600..1000).contains(&moved_join), "{moved_join}");
}

#[test]
fn bounded_loads_never_overfill_a_replica_while_another_has_room() {
    // One hot prefix: every request has the same key, so without bounds all would land on
    // one replica. Requests arrive one by one and stay (the load only grows).
    let names = ["a", "b", "c", "d"];
    let p = pool(&names, Balance::Prefix);
    let key = 42;
    let home = first_by_score(&names, key);
    let mut loads: BTreeMap<String, u32> = names.iter().map(|n| (n.to_string(), 0)).collect();
    for n in 0..200u32 {
        let l = PoolLoad {
            at_ms: 1_000,
            replicas: loads
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        Load {
                            waiting: 0,
                            running: *v,
                            kv: None,
                            healthy: true,
                        },
                    )
                })
                .collect(),
        };
        let c = choose(&p, p.all(), key, Some(&l), 1_500);
        let chosen = p.replicas[c.order[0]].name.to_string();
        // The bound, computed here: 1.25 × (load so far + this request) / replicas, rounded up.
        let bound = ((1.25 * f64::from(n + 1)) / 4.0).ceil() as u32;
        assert!(
            loads[&chosen] < bound,
            "request {n}: `{chosen}` at {} with bound {bound}",
            loads[&chosen]
        );
        // The prompt's own replica whenever it has room.
        if loads[&home] < bound {
            assert_eq!(chosen, home, "request {n}");
            assert_eq!(c.why, Why::Prefix);
        } else {
            assert!(matches!(c.why, Why::Spilled { .. }), "{:?}", c.why);
            assert!(
                c.describe().starts_with("prefix, spilled past ")
                    && c.describe().ends_with(" over its bound"),
                "{}",
                c.describe()
            );
        }
        *loads.get_mut(&chosen).unwrap() += 1;
    }
    // The bound after 200: ⌈1.25 × 200 / 4⌉ = 63; no replica is above it.
    assert!(loads.values().all(|l| *l <= 63), "{loads:?}");
    assert_eq!(loads.values().sum::<u32>(), 200);
    // Replicas fill in the prompt's own order (its rendezvous ranking): each holds at least
    // as much as every replica after it.
    let mut ranked: Vec<&str> = names.to_vec();
    ranked.sort_by_key(|n| std::cmp::Reverse(score(key, n)));
    assert_eq!(ranked[0], home);
    let held: Vec<u32> = ranked.iter().map(|n| loads[*n]).collect();
    assert!(held.windows(2).all(|w| w[0] >= w[1]), "{ranked:?} {held:?}");
}

#[test]
fn stale_and_missing_summaries_are_ignored_and_said() {
    let names = ["a", "b", "c"];
    let p = pool(&names, Balance::Prefix);
    let key = 7;
    let home = first_by_score(&names, key);
    // The prompt's own replica is swamped: a fresh summary moves the request off it.
    let swamped = load(100_000, &[(home.as_str(), 50, 50)]);
    let fresh = choose(&p, p.all(), key, Some(&swamped), 101_200);
    assert_ne!(p.replicas[fresh.order[0]].name.as_ref(), home);
    assert_eq!(fresh.measured, Measured::Fresh { age_ms: 1_200 });
    assert_eq!(fresh.measured.describe(), "fresh 1.2s");
    // Eleven seconds later the same summary is stale (stale_after_s = 10): ignored.
    let stale = choose(&p, p.all(), key, Some(&swamped), 111_000);
    assert_eq!(p.replicas[stale.order[0]].name.as_ref(), home);
    assert_eq!(stale.measured, Measured::Stale { age_ms: 11_000 });
    assert_eq!(stale.measured.describe(), "stale 11s (ignored)");
    let missing = choose(&p, p.all(), key, None, 111_000);
    assert_eq!(p.replicas[missing.order[0]].name.as_ref(), home);
    assert_eq!(missing.measured.describe(), "unmeasured");
    // A summary that does not name a replica leaves it unmeasured, not down.
    let partial = load(100_000, &[("zzz", 3, 3)]);
    let c = choose(&p, p.all(), key, Some(&partial), 100_500);
    assert_eq!(c.order.len(), 3);
}

#[test]
fn full_queues_and_down_replicas_take_nothing_and_allowed_masks_hold() {
    let names = ["a", "b", "c"];
    let mut p = pool(&names, Balance::Prefix);
    p.max_queue = Some(4);
    let mut l = load(1_000, &[("a", 4, 1), ("b", 3, 9), ("c", 0, 0)]);
    l.replicas.get_mut("c").unwrap().healthy = false;
    let c = choose(&p, p.all(), 99, Some(&l), 1_000);
    assert_eq!(c.order, vec![1], "only `b` has room and is up");
    assert_eq!(c.queued, vec![0]);
    assert_eq!(c.down, vec![2]);
    // `b` not allowed (its place, say): nothing left.
    let c = choose(&p, 0b101, 99, Some(&l), 1_000);
    assert!(c.order.is_empty());
    assert_eq!((c.queued.len(), c.down.len()), (1, 1));
    // A stale summary says nothing about queues or health: everything allowed is tried.
    let c = choose(&p, 0b101, 99, Some(&l), 60_000);
    let mut got = c.order.clone();
    got.sort_unstable();
    assert_eq!(got, vec![0, 2]);
}

#[test]
fn least_load_takes_the_lighter_of_two_choices_then_orders_by_waiting_kv_running() {
    let names = ["a", "b", "c", "d"];
    let p = pool(&names, Balance::LeastLoad);
    let mut l = load(5_000, &[("a", 2, 0), ("b", 0, 9), ("c", 0, 1), ("d", 0, 1)]);
    l.replicas.get_mut("c").unwrap().kv = Some(0.9);
    l.replicas.get_mut("d").unwrap().kv = Some(0.1);
    // The loads' order, computed here: `b` (0 waiting, no KV figure: 0), `d` (0 waiting, 10%
    // KV), `c` (90%), `a` (2 waiting).
    let by_load = ["b", "d", "c", "a"];
    let rank = |n: &str| by_load.iter().position(|x| *x == n).unwrap();
    let mut firsts = BTreeMap::new();
    for key in 0..400u64 {
        let k = mix(key);
        let c = choose(&p, p.all(), k, Some(&l), 5_000);
        let order: Vec<&str> = c
            .order
            .iter()
            .map(|&i| p.replicas[i].name.as_ref())
            .collect();
        assert_eq!(c.why, Why::LeastLoad);
        // The first is the less loaded of the request's own first two (by score).
        let mut ranked = names.to_vec();
        ranked.sort_by_key(|n| std::cmp::Reverse(score(k, n)));
        let want = if rank(ranked[1]) < rank(ranked[0]) {
            ranked[1]
        } else {
            ranked[0]
        };
        assert_eq!(order[0], want, "key {k}");
        // The rest by load.
        let rest: Vec<usize> = order[1..].iter().map(|n| rank(n)).collect();
        assert!(rest.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        *firsts.entry(order[0]).or_insert(0) += 1;
    }
    // Spread (a summary a scrape old would herd every request to the one least loaded), and
    // never the most loaded: it loses every draw.
    assert!(firsts.len() >= 3, "{firsts:?}");
    assert!(!firsts.contains_key("a"), "{firsts:?}");
    assert!(firsts["b"] > firsts["c"], "{firsts:?}");
    // One replica allowed, or none: the obvious order.
    let c = choose(&p, 0b1, 1, Some(&l), 5_000);
    assert_eq!(c.order, vec![0]);
    let c = choose(&p, 0, 1, Some(&l), 5_000);
    assert!(c.order.is_empty());
}

#[test]
fn the_prefix_key_is_the_leading_bytes_of_the_text() {
    let key = |texts: &[&str], bounds: Vec<u32>| {
        let mut h = PrefixHasher::new(bounds);
        for t in texts {
            h.feed(t);
        }
        h.finish()
    };
    let system = "You are a support agent for Example GmbH. Answer briefly. ".repeat(3);
    let a = key(&[&system, "How do I reset my password?"], vec![64, 256]);
    let b = key(&[&system, "Where is my invoice?"], vec![64, 256]);
    // The first 64 bytes are the shared system prompt: the same key; 256 reach the question.
    assert_eq!(a[0], b[0]);
    assert_ne!(a[1], b[1]);
    assert_eq!((a[0].0, a[1].0), (64, 256));
    // The next turn of a conversation starts with the same bytes: the same key.
    let next = key(
        &[
            &system,
            "How do I reset my password?",
            "Click 'Forgot'.",
            "Thanks, and my email?",
        ],
        vec![64, 256],
    );
    let first_turn_long = key(&[&system, "How do I reset my password?"], vec![64, 1024]);
    assert_eq!(next[0], a[0]);
    // A bound longer than the text: the whole text's key, and it differs once the text grows.
    let next_long = key(
        &[&system, "How do I reset my password?", "Click 'Forgot'."],
        vec![64, 1024],
    );
    assert_ne!(first_turn_long[1], next_long[1]);
    // Texts are separated: moving a boundary changes the key.
    assert_ne!(
        key(&["ab", "c"], vec![16])[0],
        key(&["a", "bc"], vec![16])[0]
    );
    // Only the leading bytes count: what follows the bound does not.
    assert_eq!(
        key(&[&"x".repeat(300), "tail one"], vec![256])[0],
        key(&[&"x".repeat(300), "tail two"], vec![256])[0]
    );
}

/// The key a request's reading gives, for a bound: through the one reading of the body.
fn key_of(endpoint: crate::request::Endpoint, body: serde_json::Value, bound: u32) -> u64 {
    let mut body = body.as_object().unwrap().clone();
    let cx = crate::facts::Context {
        location: crate::location::Location::given(None),
        request_id: "r".into(),
        endpoint,
        tenant: None,
        edge_region: None,
        headers: &[],
        pii: None,
        unknown_fields: Default::default(),
        injection: false,
        prefix_bounds: vec![bound],
        rule_headers: true,
    };
    crate::facts::from_request(cx, &mut body)
        .unwrap()
        .prefix_key(bound)
}

#[test]
fn a_conversations_key_stays_as_it_grows_in_every_protocol() {
    use crate::request::Endpoint;
    use serde_json::json;
    let system = "You answer questions about invoices.";
    let turns = |n: usize| {
        let mut m = vec![
            json!({"role": "system", "content": system}),
            json!({"role": "user", "content": "Where is invoice 17?"}),
        ];
        for i in 1..n {
            m.push(json!({"role": "assistant", "content": format!("Answer {i}.")}));
            m.push(json!({"role": "user", "content": format!("Follow-up {i}?")}));
        }
        m
    };
    for bound in [64, 256, 4096] {
        let first = key_of(
            Endpoint::Chat,
            json!({"model": "m", "messages": turns(1)}),
            bound,
        );
        for n in 2..5 {
            let later = key_of(
                Endpoint::Chat,
                json!({"model": "m", "messages": turns(n)}),
                bound,
            );
            assert_eq!(first, later, "chat, bound {bound}, turn {n}");
        }
        // Another conversation's opening: another key (its first question differs within the
        // first 64 bytes: the system prompt is 36).
        let other = key_of(
            Endpoint::Chat,
            json!({"model": "m", "messages": [{"role": "system", "content": system}, {"role": "user", "content": "Why was I charged twice?"}]}),
            bound,
        );
        assert_ne!(first, other, "bound {bound}");
        // Anthropic's Messages: `system` and the first user turn; the assistant's turns end it.
        let messages = |n: usize| {
            let mut m = vec![json!({"role": "user", "content": "Where is invoice 17?"})];
            for i in 1..n {
                m.push(json!({"role": "assistant", "content": [{"type": "text", "text": format!("Answer {i}.")}]}));
                m.push(json!({"role": "user", "content": format!("Follow-up {i}?")}));
            }
            m
        };
        let a1 = key_of(
            Endpoint::Messages,
            json!({"model": "m", "max_tokens": 10, "system": system, "messages": messages(1)}),
            bound,
        );
        let a3 = key_of(
            Endpoint::Messages,
            json!({"model": "m", "max_tokens": 10, "system": system, "messages": messages(3)}),
            bound,
        );
        assert_eq!(a1, a3, "messages, bound {bound}");
        // Responses: `instructions` and the first input message.
        let input = |n: usize| {
            let mut m = vec![json!({"role": "user", "content": "Where is invoice 17?"})];
            for i in 1..n {
                m.push(json!({"role": "assistant", "content": format!("Answer {i}.")}));
                m.push(json!({"role": "user", "content": format!("Follow-up {i}?")}));
            }
            m
        };
        let r1 = key_of(
            Endpoint::Responses,
            json!({"model": "m", "instructions": system, "input": input(1)}),
            bound,
        );
        let r3 = key_of(
            Endpoint::Responses,
            json!({"model": "m", "instructions": system, "input": input(3)}),
            bound,
        );
        assert_eq!(r1, r3, "responses, bound {bound}");
    }
}

#[test]
fn a_load_report_is_read_in_vllms_text_form_only() {
    assert_eq!(
        parse_load_report(
            "TEXT named_metrics.kv_cache_usage_perc=0.4, named_metrics.num_requests_waiting=2.0"
        ),
        Some((Some(2), Some(0.4)))
    );
    assert_eq!(
        parse_load_report("TEXT named_metrics.num_requests_waiting=7"),
        Some((Some(7), None))
    );
    // KV use above 1 is 1; negative and unparsable figures are left out.
    assert_eq!(
        parse_load_report(
            "TEXT named_metrics.kv_cache_usage_perc=1.7, named_metrics.num_requests_waiting=-3"
        ),
        Some((None, Some(1.0)))
    );
    assert_eq!(parse_load_report("TEXT named_metrics.other=3"), None);
    assert_eq!(
        parse_load_report(r#"JSON {"named_metrics": {"num_requests_waiting": 2.0}}"#),
        None
    );
    assert_eq!(parse_load_report("garbage"), None);
}

mod residency {
    use crate::decide::decide;
    use crate::facts::{self, Endpoint};
    use crate::location::Location;
    use crate::policy::{self, Country};

    const POLICY: &str = r#"version = 1
[settings]
allow_anonymous = true
[[providers]]
id = "home"
self_hosted = true
trains_on_inputs = false
retention_days = 0
models = { m = "m" }
[[providers.pool.replicas]]
name = "de-1"
base_url = "http://de-1:8000/v1"
location = "DE"
[[providers.pool.replicas]]
name = "us-1"
base_url = "http://us-1:8000/v1"
location = "US"
[[providers.pool.replicas]]
name = "fr-1"
base_url = "http://fr-1:8000/v1"
location = "FR"
[[providers]]
id = "cloud"
base_url = "https://cloud.example/v1"
location = "US"
trains_on_inputs = false
retention_days = 0
models = { m = "m" }
[[rules]]
id = "eu-stays-in-eu"
when = { client_jurisdiction = ["eu"] }
require = { jurisdiction = ["eu"] }
[[rules]]
id = "germany-only"
when = { header = { "x-germany-only" = "1" } }
require = { jurisdiction = ["DE"] }
[[rules]]
id = "nowhere-in-the-us"
when = { header = { "x-japan" = "1" } }
require = { jurisdiction = ["JP"] }
"#;

    fn decided(country: &str, headers: &[(&str, &str)]) -> (Vec<String>, Vec<String>) {
        let p = policy::load(POLICY, "t").unwrap_or_else(|e| panic!("{e}"));
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut body =
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
                .as_object()
                .unwrap()
                .clone();
        let cx = facts::Context {
            location: Location::given(Country::parse(country)),
            request_id: "r".into(),
            endpoint: Endpoint::Chat,
            tenant: None,
            edge_region: None,
            headers: &headers,
            pii: None,
            unknown_fields: Default::default(),
            injection: false,
            prefix_bounds: p.prefix_bounds(),
            rule_headers: p.rules_read_headers(),
        };
        let f = facts::from_request(cx, &mut body).unwrap();
        let d = decide(&p, &f);
        let (cands, chosen) =
            crate::pool::expand(&p, d.candidates.clone(), &f, &Default::default(), 0);
        assert_eq!(
            chosen.len(),
            usize::from(d.candidates.iter().any(|c| c.provider.as_str() == "home"))
        );
        let got = cands
            .iter()
            .map(|c| match c.replica {
                Some((r, _)) => format!("home@{r} in {}", c.location),
                None => format!("{} in {}", c.provider, c.location),
            })
            .collect();
        let excluded = d
            .excluded
            .iter()
            .flat_map(|e| {
                e.reasons
                    .iter()
                    .map(move |r| format!("{}: {r}", e.provider))
            })
            .collect();
        (got, excluded)
    }

    fn sorted_replicas(got: &[String]) -> Vec<String> {
        let mut v: Vec<String> = got
            .iter()
            .filter(|g| g.starts_with("home@"))
            .cloned()
            .collect();
        v.sort();
        v
    }

    #[test]
    fn an_eu_client_never_reaches_the_us_replica() {
        let (got, excluded) = decided("FR", &[]);
        assert_eq!(
            sorted_replicas(&got),
            ["home@de-1 in DE", "home@fr-1 in FR"]
        );
        assert!(
            !got.iter()
                .any(|g| g.contains("us-1") || g.starts_with("cloud")),
            "{got:?}"
        );
        assert!(
            excluded.iter().any(|e| e.starts_with("cloud:")),
            "{excluded:?}"
        );
        // A US client may use all three, and the hosted provider.
        let (got, _) = decided("US", &[]);
        assert_eq!(
            sorted_replicas(&got),
            ["home@de-1 in DE", "home@fr-1 in FR", "home@us-1 in US"]
        );
        assert!(got.iter().any(|g| g == "cloud in US"));
    }

    #[test]
    fn constraints_together_narrow_the_replicas_and_none_left_excludes_the_pool() {
        // EU and Germany: only de-1.
        let (got, _) = decided("FR", &[("x-germany-only", "1")]);
        assert_eq!(sorted_replicas(&got), ["home@de-1 in DE"]);
        // Japan: no replica is there; the pool is excluded, by that rule, with the places.
        let (got, excluded) = decided("US", &[("x-japan", "1")]);
        assert!(got.is_empty(), "{got:?}");
        assert!(
            excluded.iter().any(|e| e
                == "home: rule `nowhere-in-the-us` processes data in `DE, US, FR`, outside the allowed `JP`"),
            "{excluded:?}"
        );
    }
}
