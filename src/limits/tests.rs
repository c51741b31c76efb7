//! The reservation arithmetic on a scripted store: windows, refusals, settlements, lost
//! replies, a store that is down, the clock at a window's edge; and a property test of the
//! promise (the settled total never exceeds the limit and equals what the admitted requests
//! used) under interleaved concurrent requests.

use super::*;
use crate::policy::{Limits, Metric, Window, WindowLimit};
use crate::testing::MemStore;

fn limits(windows: &[(Metric, Window, u64)], concurrent: Option<u64>) -> Limits {
    Limits {
        per: LimitPer::Caller,
        windows: windows
            .iter()
            .map(|&(metric, window, max)| WindowLimit {
                metric,
                window,
                max,
            })
            .collect(),
        concurrent,
    }
}

fn anon() -> Caller<'static> {
    Caller {
        tenant: None,
        key_hash: None,
    }
}

fn need(tokens_in: u64, out: u64, micro: u64) -> Need {
    Need {
        input_tokens: tokens_in,
        output_tokens: out,
        micro_usd: micro,
        parallel: 1,
    }
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// 2026-12-02T16:20:30Z, independently: `date -u -d 2026-12-02T16:20:30Z +%s`.
const T: u64 = 1_796_228_430;

#[test]
fn windows_are_calendar_aligned_in_utc() {
    // Oracle values from `date -u -d … +%s`.
    assert_eq!(
        window_bounds(Window::Minute, T),
        (1_796_228_400, 1_796_228_460)
    );
    assert_eq!(
        window_bounds(Window::Hour, T),
        (1_796_227_200, 1_796_230_800)
    );
    // 2026-12-02T00:00:00Z and 2026-12-03T00:00:00Z.
    assert_eq!(
        window_bounds(Window::Day, T),
        (1_796_169_600, 1_796_256_000)
    );
    // 2026-12-01T00:00:00Z and 2027-01-01T00:00:00Z: December wraps into the next year.
    assert_eq!(
        window_bounds(Window::Month, T),
        (1_796_083_200, 1_798_761_600)
    );
    // February of a leap year: 2028-02-01 and 2028-03-01 (29 days).
    let feb = 1_832_976_000 + 86_400 * 10; // 2028-02-11
    assert_eq!(
        window_bounds(Window::Month, feb),
        (1_832_976_000, 1_835_481_600)
    );
    // The last second of a window is in it; the next starts the next one.
    assert_eq!(
        window_bounds(Window::Minute, 1_796_228_459).0,
        1_796_228_400
    );
    assert_eq!(
        window_bounds(Window::Minute, 1_796_228_460).0,
        1_796_228_460
    );
    assert_eq!(rfc3339(1_798_761_600), "2027-01-01T00:00:00Z");
    assert_eq!(duration(23), "23s");
    assert_eq!(duration(360), "6m0s");
    assert_eq!(duration(3_723), "1h2m3s");
}

#[test]
fn a_reservation_settles_to_what_was_used() {
    run(async {
        let store = MemStore::default();
        let l = limits(
            &[
                (Metric::Requests, Window::Minute, 10),
                (Metric::Tokens, Window::Day, 10_000),
                (Metric::Usd, Window::Month, 50_000),
            ],
            Some(2),
        );
        let n = need(300, 1_000, 2_300);
        let cs = counters(&[(None, &l)], anon(), &n, T * 1000);
        assert_eq!(cs.len(), 4);
        let hold = reserve(&store, cs.clone(), n).await.unwrap();
        assert_eq!(store.value(&cs[0].key), 1);
        assert_eq!(store.value(&cs[1].key), 1_300);
        assert_eq!(store.value(&cs[2].key), 2_300);
        assert_eq!(store.value(&cs[3].key), 1, "one request in flight");
        assert_eq!(hold.counters[1].remaining(), 8_700);
        let s = hold
            .settle(
                &store,
                Some(Actual {
                    tokens: 42,
                    micro_usd: 61,
                }),
            )
            .await;
        assert_eq!(s.state, "settled");
        assert_eq!(store.value(&cs[0].key), 1, "a request stays counted");
        assert_eq!(store.value(&cs[1].key), 42);
        assert_eq!(store.value(&cs[2].key), 61);
        assert_eq!(store.value(&cs[3].key), 0, "no longer in flight");
    });
}

#[test]
fn a_request_that_would_go_over_is_refused_and_leaves_nothing_counted() {
    run(async {
        let store = MemStore::default();
        let l = limits(
            &[
                (Metric::Requests, Window::Minute, 10),
                (Metric::Tokens, Window::Day, 1_000),
            ],
            None,
        );
        let first = need(100, 500, 0);
        let cs = counters(&[(None, &l)], anon(), &first, T * 1000);
        let h = reserve(&store, cs.clone(), first).await.unwrap();
        assert_eq!(store.value(&cs[1].key), 600);
        // 600 + 500 > 1,000: refused by the token limit, and its request count given back.
        let second = need(100, 400, 0);
        let cs2 = counters(&[(None, &l)], anon(), &second, T * 1000);
        match reserve(&store, cs2, second).await {
            Err(Refusal::Exceeded { counter, used }) => {
                assert_eq!(counter.limit, "tokens_per_day");
                assert_eq!(used, 600);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(store.value(&cs[0].key), 1);
        assert_eq!(store.value(&cs[1].key), 600);
        // Settling the first frees what it did not use: now the second fits.
        h.settle(
            &store,
            Some(Actual {
                tokens: 100,
                micro_usd: 0,
            }),
        )
        .await;
        let third = need(100, 400, 0);
        let cs3 = counters(&[(None, &l)], anon(), &third, T * 1000);
        assert!(reserve(&store, cs3, third).await.is_ok());
        assert_eq!(store.value(&cs[1].key), 600);
    });
}

#[test]
fn a_lost_reply_never_counts_twice() {
    run(async {
        let store = MemStore::default();
        let l = limits(&[(Metric::Tokens, Window::Day, 10_000)], None);
        let n = need(100, 900, 0);
        let cs = counters(&[(None, &l)], anon(), &n, T * 1000);
        let h = reserve(&store, cs.clone(), n).await.unwrap();
        // The settlement's increment is applied, but its reply is lost.
        store.lose_next_replies.set(1);
        let s = h
            .settle(
                &store,
                Some(Actual {
                    tokens: 10,
                    micro_usd: 0,
                }),
            )
            .await;
        assert_eq!(s.state, "kept");
        assert_eq!(s.failed.len(), 1);
        assert_eq!(store.value(&cs[0].key), 10, "applied once, never retried");
        // A second settle of the same request (the audit's guard) does nothing.
        let mut audit = Audit {
            hold: Some(h),
            settlement: Some(s),
            ..Audit::default()
        };
        audit
            .settle(
                Some(&store),
                Some(Actual {
                    tokens: 10,
                    micro_usd: 0,
                }),
            )
            .await;
        assert_eq!(store.value(&cs[0].key), 10);
    });
}

#[test]
fn a_reservation_whose_reply_is_lost_is_refused_and_stays_high_never_low() {
    run(async {
        let store = MemStore::default();
        let l = limits(&[(Metric::Tokens, Window::Day, 10_000)], None);
        let n = need(100, 900, 0);
        let cs = counters(&[(None, &l)], anon(), &n, T * 1000);
        store.lose_next_replies.set(1);
        assert!(matches!(
            reserve(&store, cs.clone(), n).await,
            Err(Refusal::Unavailable(_))
        ));
        assert_eq!(store.value(&cs[0].key), 1_000);
    });
}

#[test]
fn a_store_that_is_down_refuses_and_what_was_reserved_is_given_back() {
    run(async {
        let store = MemStore::default();
        let l = limits(
            &[
                (Metric::Requests, Window::Minute, 10),
                (Metric::Tokens, Window::Day, 10_000),
            ],
            None,
        );
        let n = need(1, 1, 0);
        let cs = counters(&[(None, &l)], anon(), &n, T * 1000);
        // The first increment works, the second fails: the first is given back.
        store.fail_next.set(0);
        let s2 = &store;
        let r = {
            // Fail exactly the second call.
            struct FailSecond<'a>(&'a MemStore, std::cell::Cell<u32>);
            impl Store for FailSecond<'_> {
                fn increment<'a>(
                    &'a self,
                    key: &'a str,
                    d: i64,
                ) -> LocalBoxFuture<'a, Result<i64, String>> {
                    let n = self.1.get();
                    self.1.set(n + 1);
                    if n == 1 {
                        return Box::pin(async { Err("down".to_string()) });
                    }
                    self.0.increment(key, d)
                }
                fn get<'a>(
                    &'a self,
                    key: &'a str,
                ) -> LocalBoxFuture<'a, Result<Option<Vec<u8>>, String>> {
                    self.0.get(key)
                }
                fn set<'a>(
                    &'a self,
                    key: &'a str,
                    v: Vec<u8>,
                ) -> LocalBoxFuture<'a, Result<(), String>> {
                    self.0.set(key, v)
                }
            }
            reserve(&FailSecond(s2, std::cell::Cell::new(0)), cs.clone(), n).await
        };
        assert!(matches!(r, Err(Refusal::Unavailable(_))));
        assert_eq!(store.value(&cs[0].key), 0);
        store.down.set(true);
        assert!(matches!(
            reserve(&store, cs, n).await,
            Err(Refusal::Unavailable(_))
        ));
    });
}

#[test]
fn at_a_window_edge_the_next_window_starts_empty() {
    run(async {
        let store = MemStore::default();
        let l = limits(&[(Metric::Requests, Window::Minute, 1)], None);
        let n = need(0, 0, 0);
        let edge = 1_796_228_460_000; // 16:21:00.000Z
        let cs = counters(&[(None, &l)], anon(), &n, edge - 1);
        reserve(&store, cs.clone(), n).await.unwrap();
        assert_eq!(cs[0].reset_s, 1_796_228_460);
        let again = counters(&[(None, &l)], anon(), &n, edge - 1);
        assert!(matches!(
            reserve(&store, again, n).await,
            Err(Refusal::Exceeded { .. })
        ));
        let next = counters(&[(None, &l)], anon(), &n, edge);
        assert_ne!(next[0].key, cs[0].key);
        assert!(reserve(&store, next, n).await.is_ok());
    });
}

#[test]
fn in_flight_requests_of_the_previous_slot_still_count() {
    run(async {
        let store = MemStore::default();
        let l = limits(&[], Some(2));
        let n = need(0, 0, 0);
        let slot_end = (T / CONCURRENCY_SLOT_S + 1) * CONCURRENCY_SLOT_S;
        let a = counters(&[(None, &l)], anon(), &n, (slot_end - 1) * 1000);
        let ha = reserve(&store, a, n).await.unwrap();
        let b = counters(&[(None, &l)], anon(), &n, slot_end * 1000);
        let _hb = reserve(&store, b, n).await.unwrap();
        // Two in flight across the slot boundary: a third is refused.
        let c = counters(&[(None, &l)], anon(), &n, slot_end * 1000);
        assert!(matches!(
            reserve(&store, c, n).await,
            Err(Refusal::Exceeded { used: 2, .. })
        ));
        ha.settle(&store, None).await;
        let d = counters(&[(None, &l)], anon(), &n, slot_end * 1000);
        assert!(reserve(&store, d, n).await.is_ok());
    });
}

/// A request that runs for many slots keeps its in-flight count by renewing its lease; one
/// whose instance ended mid-request (no more renewals) stops counting within two slots.
#[test]
fn a_lease_keeps_a_running_request_counted_and_a_dead_one_expires_within_two_slots() {
    run(async {
        let store = MemStore::default();
        let l = limits(&[], Some(1));
        let n = need(0, 0, 0);
        let start = (T / CONCURRENCY_SLOT_S) * CONCURRENCY_SLOT_S; // a slot's first second
        let at = |s: u64| counters(&[(None, &l)], anon(), &n, s * 1000);
        let mut held = reserve(&store, at(start), n).await.unwrap();
        let mut lease = held.lease().expect("a concurrent limit leases its slot");
        // It runs for 20 slots, renewing once in each: nobody else gets in meanwhile.
        for k in 1..=20 {
            let now = start + k * CONCURRENCY_SLOT_S;
            lease.renew(&store, now).await;
            for probe in [now, now + CONCURRENCY_SLOT_S - 1] {
                assert!(
                    matches!(
                        reserve(&store, at(probe), n).await,
                        Err(Refusal::Exceeded { used: 1, .. })
                    ),
                    "slot {k}, second {}",
                    probe - now
                );
            }
        }
        // It ends: its settlement releases the slot the lease moved it to.
        held.end_lease(lease);
        held.settle(&store, None).await;
        let now = start + 20 * CONCURRENCY_SLOT_S + 1;
        let other = reserve(&store, at(now), n).await.unwrap();
        // This one's instance dies at once: no renewal, no settlement. It is still counted in
        // its own slot and the next, and not after.
        let _ = other;
        assert!(reserve(&store, at(now + CONCURRENCY_SLOT_S), n)
            .await
            .is_err());
        let freed = (now / CONCURRENCY_SLOT_S + 2) * CONCURRENCY_SLOT_S;
        assert!(freed - now <= 2 * CONCURRENCY_SLOT_S);
        assert!(
            reserve(&store, at(freed), n).await.is_ok(),
            "a dead request stops counting"
        );
    });
}

#[test]
fn per_key_limits_count_each_key_and_rule_limits_each_caller() {
    let policy = crate::policy::load(
        &format!(
            "version = 1\n[[providers]]\nid = \"p\"\nbase_url = \"http://p/v1\"\nlocation = \"DE\"\nmodels = {{ m = \"m\" }}\n\
             [[tenants]]\nid = \"acme\"\nkeys = [\"sha256:{}\", \"sha256:{}\"]\nlimits = {{ per = \"key\", requests_per_hour = 5 }}\n\
             [[rules]]\nid = \"cap\"\nlimits = {{ usd_per_day = 1.5 }}\n",
            hex::encode(crate::policy::hash_key("sk-one-aaaaaaaaaaaa")),
            hex::encode(crate::policy::hash_key("sk-two-bbbbbbbbbbbb")),
        ),
        "t",
    )
    .unwrap();
    let t = policy.tenant("acme");
    let rule = &policy.rules[0];
    let applicable = applicable(&policy, t, &[&rule.id]);
    assert_eq!(applicable.len(), 2);
    let n = need(0, 0, 0);
    let one = counters(
        &applicable,
        Caller {
            tenant: t,
            key_hash: Some(crate::policy::hash_key("sk-one-aaaaaaaaaaaa")),
        },
        &n,
        T * 1000,
    );
    let two = counters(
        &applicable,
        Caller {
            tenant: t,
            key_hash: Some(crate::policy::hash_key("sk-two-bbbbbbbbbbbb")),
        },
        &n,
        T * 1000,
    );
    assert_ne!(
        one[0].key, two[0].key,
        "each key has its own requests_per_hour"
    );
    assert_eq!(
        one[1].key, two[1].key,
        "the rule counts the tenant as one caller"
    );
    assert_eq!(one[1].max, 1_500_000);
    assert!(one[1].key.starts_with("meridian:v1:r/cap/t/acme:usd:day:"));
    let anonymous = counters(&applicable[1..], anon(), &n, T * 1000);
    assert!(anonymous[0]
        .key
        .starts_with("meridian:v1:r/cap/anon:usd:day:"));
}

#[test]
fn the_need_bounds_input_output_and_the_dearest_candidate() {
    let c = [
        Priced {
            provider: "cheap".into(),
            input: Some(0.5),
            output: Some(1.0),
        },
        Priced {
            provider: "dear".into(),
            input: Some(3.0),
            output: Some(15.0),
        },
    ];
    let n = need_for_test(1_000, 2, 500, &c, true);
    assert_eq!(n.input_tokens, 1_000 + 2 * TOKENS_PER_MEDIA_PART);
    // At the dear prices: 5,000 × 3 + 500 × 15 = 22,500 millionths; twice when hedging.
    assert_eq!(n.micro_usd, 22_500);
    assert_eq!(n.usd(), 45_000);
    assert_eq!(n.tokens(), 2 * (5_000 + 500));
    let body: serde_json::Value = serde_json::json!({
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
            {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}
        ]}],
        "max_completion_tokens": 300, "n": 3
    });
    let mut body = body.as_object().unwrap().clone();
    let r = crate::request::read(
        crate::request::Endpoint::Chat,
        &mut body,
        &[],
        crate::policy::UnknownFields::Refuse,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(r.media, 2);
    assert_eq!(r.output_bound(), Some(900));
    assert_eq!(r.unseen_media, 1, "the image by URL");
}

fn need_for_test(b: usize, m: u64, o: u64, c: &[Priced], h: bool) -> Need {
    super::need(b, m, o, c, h)
}

mod property {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct Req {
        input: u64,
        output: u64,
        /// What the provider reports, at most the reservation.
        used_frac: u8,
        /// Whether the usage never arrives (a stream cut short).
        lost_usage: bool,
    }

    fn req() -> impl Strategy<Value = Req> {
        (1u64..400, 0u64..600, 0u8..=100, prop::bool::weighted(0.1)).prop_map(
            |(input, output, used_frac, lost_usage)| Req {
                input,
                output,
                used_frac,
                lost_usage,
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Any number of concurrent requests against one token limit: the settled total never
        /// exceeds it, and (with every request settled) it is exactly the sum of what the
        /// admitted requests used, their reservation where the usage never arrived.
        #[test]
        fn settled_never_exceeds_the_limit(
            reqs in prop::collection::vec(req(), 1..40),
            max in 100u64..5_000,
        ) {
            let store = MemStore::default();
            let l = limits(&[(Metric::Tokens, Window::Day, max)], None);
            let results = run(async {
                let tasks = reqs.iter().map(|r| {
                    let store = &store;
                    let l = &l;
                    async move {
                        let n = need(r.input, r.output, 0);
                        let cs = counters(&[(None, l)], anon(), &n, T * 1000);
                        match reserve(store, cs, n).await {
                            Err(_) => None,
                            Ok(h) => {
                                tokio::task::yield_now().await;
                                let reserved = r.input + r.output;
                                let used = reserved * u64::from(r.used_frac) / 100;
                                let actual = (!r.lost_usage).then_some(Actual { tokens: used, micro_usd: 0 });
                                h.settle(store, actual).await;
                                Some(if r.lost_usage { reserved } else { used })
                            }
                        }
                    }
                });
                futures::future::join_all(tasks).await
            });
            let key = counters(&[(None, &l)], anon(), &need(0, 0, 0), T * 1000)[0].key.clone();
            let total = store.value(&key);
            let oracle: u64 = results.iter().flatten().sum();
            prop_assert!(total as u64 <= max, "settled {total} > limit {max}");
            prop_assert_eq!(total as u64, oracle);
        }
    }
}
