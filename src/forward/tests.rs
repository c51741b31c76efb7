//! The attempt loop against a scripted transport on tokio's paused clock: time only moves when
//! every task waits, so timeouts, backoff and hedging are exact and instant.

use super::*;
use crate::decide::{Candidate, Decision};
use crate::policy::{Plan, ProviderId};
use crate::testing::{ok_json, status, Fake, FakeBody, Step};

/// The providers a test decision names; decisions borrow their ids from a catalog.
struct Catalog(Vec<(ProviderId, String)>);

impl Catalog {
    fn new(providers: &[&str]) -> Self {
        Catalog(
            providers
                .iter()
                .map(|p| (ProviderId(p.to_string().into()), format!("{p}-m")))
                .collect(),
        )
    }

    fn decision(&self, plan: Plan) -> Decision<'_> {
        Decision {
            request_id: "r".into(),
            model: "m".into(),
            tenant: None,
            client_country: crate::policy::Country::UNKNOWN,
            client_jurisdictions: vec![],
            edge_region: None,
            privacy: vec![],
            matched_rules: vec![],
            pii: None,
            guards: vec![],
            candidates: self
                .0
                .iter()
                .enumerate()
                .map(|(i, (id, model))| Candidate {
                    provider: id,
                    index: i,
                    model,
                    upstream_model: model,
                    location: "US",
                    storage: "US",
                    input_price: None,
                    output_price: None,
                    cache_read_price: None,
                    cache_write_price: None,
                    unpriced: false,
                    replicas: 0,
                    replica: None,
                })
                .collect(),
            excluded: vec![],
            plan,
            refusal: None,
        }
    }
}

fn build(c: &Candidate, _seq: u32) -> Result<OutboundRequest, Failure> {
    if c.provider.0 == "nokey" {
        return Err(Failure::Config("its key is not set".into()));
    }
    Ok(OutboundRequest {
        url: format!("http://{}/v1/chat/completions", c.provider),
        headers: vec![],
        body: vec![],
        wire: crate::wire::Wire::OpenAi,
        idle_timeout_ms: 0,
        method: Default::default(),
        all_headers: false,
        read_load: false,
    })
}

const LIMITS: Limits = Limits {
    max_response_bytes: 1 << 20,
};

fn served(f: &Forwarded<FakeBody>) -> Option<(usize, u16)> {
    match &f.outcome {
        Outcome::Complete {
            candidate, status, ..
        }
        | Outcome::Stream {
            candidate, status, ..
        } => Some((*candidate, *status)),
        Outcome::Exhausted { .. } => None,
    }
}

/// A non-stream forward over the named candidates with this plan.
async fn run(t: &Fake, providers: &[&str], plan: Plan) -> Forwarded<FakeBody> {
    run_gated(t, providers, plan, &mut super::Open).await
}

async fn run_gated(
    t: &Fake,
    providers: &[&str],
    plan: Plan,
    gate: &mut impl super::Gate,
) -> Forwarded<FakeBody> {
    forward(
        t,
        &Catalog::new(providers).decision(plan),
        build,
        false,
        LIMITS,
        gate,
    )
    .await
}

fn failures(f: &Forwarded<FakeBody>) -> Vec<String> {
    f.attempts
        .iter()
        .map(|a| {
            let outcome = a
                .failure
                .as_ref()
                .map_or_else(|| "ok".into(), Failure::label);
            format!("{}:{outcome}", a.provider)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn falls_back_on_503_and_records_the_failure() {
    let t = Fake::new(vec![
        ("a", vec![status(503, None)]),
        ("b", vec![ok_json(0)]),
    ]);
    let f = run(&t, &["a", "b"], Plan::default()).await;
    assert_eq!(served(&f), Some((1, 200)));
    assert_eq!(failures(&f), ["a:status 503", "b:ok"]);
    if let Outcome::Complete { usage, .. } = &f.outcome {
        assert_eq!(usage.unwrap().completion_tokens, 2);
    }
}

#[tokio::test(start_paused = true)]
async fn does_not_fall_back_on_400_unless_the_plan_says_so() {
    let t = Fake::new(vec![
        ("a", vec![status(400, None)]),
        ("b", vec![ok_json(0)]),
    ]);
    let f = run(&t, &["a", "b"], Plan::default()).await;
    assert_eq!(served(&f), Some((0, 400)));
    assert_eq!(t.sent_to(), ["a"]);

    let mut plan = Plan::default();
    plan.fallback_on.statuses.to_mut().push(400);
    let t = Fake::new(vec![
        ("a", vec![status(400, None)]),
        ("b", vec![ok_json(0)]),
    ]);
    let f = run(&t, &["a", "b"], plan).await;
    assert_eq!(served(&f), Some((1, 200)));
}

/// Every request, streamed or not, tells the transport the plan's idle timeout, so the runtime
/// can enforce it between bytes (the WASI adapters then need no timer of their own for a read
/// that may wait that long).
#[tokio::test(start_paused = true)]
async fn every_request_carries_the_plans_idle_timeout() {
    let plan = Plan {
        idle_timeout_ms: 1234,
        ..Plan::default()
    };
    for stream in [true, false] {
        let t = Fake::new(vec![
            ("a", vec![status(503, None)]),
            ("b", vec![ok_json(0)]),
        ]);
        let catalog = Catalog::new(&["a", "b"]);
        let d = catalog.decision(plan.clone());
        forward(&t, &d, build, stream, LIMITS, &mut super::Open).await;
        let sent = t.requests.borrow().clone();
        assert_eq!(sent.len(), 2);
        assert!(
            sent.iter().all(|r| r.idle_timeout_ms == 1234),
            "{stream}: {sent:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn retries_the_same_provider_after_retry_after_when_it_fits() {
    let plan = Plan {
        retries: 1,
        backoff_ms: 10,
        ..Plan::default()
    };
    let t = Fake::new(vec![
        ("a", vec![status(429, Some("2")), ok_json(0)]),
        ("b", vec![ok_json(0)]),
    ]);
    let f = run(&t, &["a", "b"], plan).await;
    assert_eq!(served(&f), Some((0, 200)));
    let sent = t.sent.borrow().clone();
    assert_eq!(sent.len(), 2);
    assert!(
        sent[1].1 - sent[0].1 >= 2000,
        "waited for Retry-After: {sent:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn moves_on_when_retry_after_does_not_fit_the_deadline() {
    let plan = Plan {
        retries: 3,
        deadline_ms: 5_000,
        ..Plan::default()
    };
    let t = Fake::new(vec![
        ("a", vec![status(429, Some("60"))]),
        ("b", vec![ok_json(0)]),
    ]);
    let f = run(&t, &["a", "b"], plan).await;
    assert_eq!(served(&f), Some((1, 200)));
    assert!(t.now_ms() < 1000, "did not wait 60 s");
}

#[tokio::test(start_paused = true)]
async fn header_timeout_moves_to_the_next_candidate() {
    let plan = Plan {
        attempt_timeout_ms: 500,
        ..Plan::default()
    };
    let t = Fake::new(vec![("a", vec![ok_json(10_000)]), ("b", vec![ok_json(0)])]);
    let f = run(&t, &["a", "b"], plan).await;
    assert_eq!(served(&f), Some((1, 200)));
    assert_eq!(failures(&f)[0], "a:timeout (headers)");
    assert!(t.now_ms() >= 500 && t.now_ms() < 1000);
}

#[tokio::test(start_paused = true)]
async fn stream_first_byte_timeout_falls_back_before_anything_is_sent() {
    let plan = Plan {
        first_byte_timeout_ms: 300,
        ..Plan::default()
    };
    let slow = Step::Answer {
        after_ms: 0,
        status: 200,
        headers: vec![],
        chunks: vec![(5_000, Ok(b"data: {}\n\n".to_vec()))],
    };
    let fast = Step::Answer {
        after_ms: 0,
        status: 200,
        headers: vec![],
        chunks: vec![(0, Ok(b"data: {}\n\n".to_vec()))],
    };
    let t = Fake::new(vec![("a", vec![slow]), ("b", vec![fast])]);
    let catalog = Catalog::new(&["a", "b"]);
    let f = forward(
        &t,
        &catalog.decision(plan),
        build,
        true,
        LIMITS,
        &mut super::Open,
    )
    .await;
    assert!(matches!(f.outcome, Outcome::Stream { candidate: 1, .. }));
    assert_eq!(failures(&f)[0], "a:timeout (first byte)");
}

#[tokio::test(start_paused = true)]
async fn malformed_json_and_missing_keys_fall_back() {
    let bad = Step::Answer {
        after_ms: 0,
        status: 200,
        headers: vec![],
        chunks: vec![(0, Ok(b"{oops".to_vec()))],
    };
    let t = Fake::new(vec![("a", vec![bad]), ("b", vec![ok_json(0)])]);
    let f = run(&t, &["nokey", "a", "b"], Plan::default()).await;
    assert_eq!(served(&f), Some((2, 200)));
    let fl = failures(&f);
    assert!(fl[0].starts_with("nokey:not configured"), "{fl:?}");
    assert!(fl[1].starts_with("a:malformed response"), "{fl:?}");
    assert_eq!(
        t.sent_to(),
        ["a", "b"],
        "the keyless candidate was never sent"
    );
}

/// An answer that is a JSON array is no answer, and a usage that is one no usage (serde would
/// read a struct's fields from an array in order): it falls back like any malformed answer.
#[tokio::test(start_paused = true)]
async fn an_answer_that_is_a_json_array_falls_back() {
    for body in [
        &b"[{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}]"[..],
        b" [null]",
        b"{\"choices\":[],\"usage\":[1,2,3]}",
    ] {
        let bad = Step::Answer {
            after_ms: 0,
            status: 200,
            headers: vec![],
            chunks: vec![(0, Ok(body.to_vec()))],
        };
        let t = Fake::new(vec![("a", vec![bad]), ("b", vec![ok_json(0)])]);
        let f = run(&t, &["a", "b"], Plan::default()).await;
        assert_eq!(served(&f), Some((1, 200)));
        assert_eq!(
            failures(&f),
            ["a:malformed response", "b:ok"],
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn deadline_ends_with_timed_out() {
    let plan = Plan {
        attempt_timeout_ms: 1_000,
        deadline_ms: 1_500,
        ..Plan::default()
    };
    let t = Fake::new(vec![
        ("a", vec![ok_json(9_000)]),
        ("b", vec![ok_json(9_000)]),
        ("c", vec![ok_json(0)]),
    ]);
    let f = run(&t, &["a", "b", "c"], plan).await;
    assert!(matches!(
        f.outcome,
        Outcome::Exhausted {
            timed_out: true,
            ..
        }
    ));
    assert_eq!(
        t.sent_to(),
        ["a", "b"],
        "c was never started: no time was left"
    );
    assert!(t.now_ms() <= 1_500);
}

#[tokio::test(start_paused = true)]
async fn hedging_starts_the_next_candidate_and_cancels_the_slower_one() {
    let plan = Plan {
        hedge_after_ms: Some(100),
        ..Plan::default()
    };
    let t = Fake::new(vec![("a", vec![ok_json(1_000)]), ("b", vec![ok_json(50)])]);
    let f = run(&t, &["a", "b"], plan).await;
    assert_eq!(served(&f), Some((1, 200)));
    let sent = t.sent.borrow().clone();
    assert_eq!(sent, [("a".to_string(), 0), ("b".to_string(), 100)]);
    assert_eq!(t.now_ms(), 150, "answered by b, without waiting for a");
    assert_eq!(
        *t.dropped.borrow(),
        ["a"],
        "the slower request was cancelled"
    );
    assert_eq!(
        failures(&f),
        ["a:cancelled (another candidate answered first)", "b:ok"]
    );
    assert!(f.attempts[1].hedge);
}

#[tokio::test(start_paused = true)]
async fn hedging_keeps_the_first_when_it_answers_in_time() {
    let plan = Plan {
        hedge_after_ms: Some(100),
        ..Plan::default()
    };
    let t = Fake::new(vec![("a", vec![ok_json(50)]), ("b", vec![ok_json(0)])]);
    let f = run(&t, &["a", "b"], plan).await;
    assert_eq!(served(&f), Some((0, 200)));
    assert_eq!(t.sent_to(), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn connect_errors_are_not_retried_when_the_plan_removes_them() {
    let mut plan = Plan::default();
    plan.fallback_on.connect = false;
    let t = Fake::new(vec![
        (
            "a",
            vec![Step::Fail {
                after_ms: 0,
                failure: Failure::Connect("refused".into()),
            }],
        ),
        ("b", vec![ok_json(0)]),
    ]);
    let f = run(&t, &["a", "b"], plan).await;
    assert!(matches!(
        f.outcome,
        Outcome::Exhausted {
            timed_out: false,
            ..
        }
    ));
    assert_eq!(t.sent_to(), ["a"]);
}

/// A read that fails after the whole wait is the runtime's idle timeout and reads as one; a
/// read that fails early stays the transport failure it is.
#[tokio::test(start_paused = true)]
async fn a_read_failing_after_the_whole_wait_is_a_timeout() {
    let t0 = tokio::time::Instant::now();
    let now = || t0.elapsed().as_millis() as u64;
    let fail = |after: u64| FakeBody(vec![(after, Err(Failure::Transport("read".into())))].into());
    let late = next_within(now, &mut fail(1000), 1000, 0).await;
    assert_eq!(late, Some(Err(Failure::Timeout("body"))));
    let began = now();
    let early = next_within(now, &mut fail(100), 1000, began).await;
    assert_eq!(early, Some(Err(Failure::Transport("read".into()))));
}

/// `Waits` against a clock it is handed: whatever the gaps between chunks, no wait may run past
/// the deadline (the oracle: the actual time plus the wait granted, read from the scripted
/// clock, never exceeds it), the waits end exactly when the deadline has passed, and the clock
/// is read far less often than once per chunk while the deadline is far.
/// After a send that took at most its grant, the answer's waits still end by the deadline, and
/// the first reads the clock only when what the grant left is shorter than an idle wait.
#[test]
fn waits_after_a_send_count_its_grant_and_keep_the_deadline() {
    use crate::transport::Waits;
    use std::cell::Cell;
    let (deadline, idle) = (121_000u64, 60_000u64);
    for (at, grant, took) in [
        (1_000u64, 30_000u64, 12u64),
        (1_000, 30_000, 30_000),
        (50_000, 30_000, 29_000),
        (80_000, 30_000, 100),
        (100_000, 21_000, 21_000),
    ] {
        let clock = Cell::new(at + took);
        let reads = Cell::new(0u32);
        let now = || {
            reads.set(reads.get() + 1);
            clock.get()
        };
        let mut waits = Waits::after(deadline, idle, at, grant);
        let must_read = deadline - at - grant < idle;
        let mut first = true;
        while let Some(wait) = waits.next(now) {
            if first {
                assert_eq!(reads.get() == 1, must_read, "at {at}, grant {grant}");
                first = false;
            }
            assert!(
                clock.get() + wait <= deadline,
                "a wait of {wait} ms at {} runs past the deadline",
                clock.get()
            );
            // A silent body: each wait runs out in full.
            clock.set(clock.get() + wait);
        }
        assert!(
            clock.get() >= deadline.min(at + took + 1),
            "ended early at {}",
            clock.get()
        );
        assert!(clock.get() <= deadline);
    }
}

#[test]
fn waits_keep_the_deadline_and_read_the_clock_only_when_they_must() {
    use crate::transport::Waits;
    use std::cell::Cell;
    let deadline = 600_000u64;
    let idle = 60_000u64;
    for gaps in [
        vec![5u64; 2000],
        vec![59_999; 12],
        (0..3000).map(|i| (i * 7919) % 1300).collect::<Vec<u64>>(),
        vec![0; 50],
    ] {
        let clock = Cell::new(1_000u64);
        let reads = Cell::new(0u32);
        let now = || {
            reads.set(reads.get() + 1);
            clock.get()
        };
        let mut waits = Waits::new(deadline, idle);
        let mut chunks = 0u32;
        let mut ended = false;
        for gap in &gaps {
            let Some(wait) = waits.next(now) else {
                ended = true;
                break;
            };
            assert!(wait >= 1 && wait <= idle);
            assert!(
                clock.get() + wait <= deadline,
                "a wait of {wait} ms at {} runs past the deadline",
                clock.get()
            );
            assert!(waits.read_ms() <= clock.get());
            // The chunk arrives within the wait (a longer silence is the timeout, not a chunk).
            clock.set(clock.get() + gap.min(&wait));
            chunks += 1;
        }
        let elapsed: u64 = clock.get();
        // Ended by the deadline only once it has passed, and not before.
        assert_eq!(ended, elapsed >= deadline, "ended {ended} at {elapsed}");
        if chunks >= 100 && elapsed + 2 * idle < deadline {
            assert!(
                reads.get() * 5 <= chunks,
                "{} clock reads for {chunks} chunks",
                reads.get()
            );
        }
    }
    // Near the deadline every wait reads the clock and is cut to what is left.
    let clock = Cell::new(deadline - 1_500);
    let mut waits = Waits::new(deadline, idle);
    assert_eq!(waits.next(|| clock.get()), Some(1_500));
    clock.set(deadline - 200);
    assert_eq!(waits.next(|| clock.get()), Some(200));
    clock.set(deadline);
    assert_eq!(waits.next(|| clock.get()), None);
}
