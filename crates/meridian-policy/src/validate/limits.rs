//! `limits = { … }` on tenants and rules, `[settings.limits]` and `[settings.health]`.

use super::*;
use crate::limits::{
    limit_keys, Health, LimitPer, LimitSettings, Limits, Metric, Window, WindowLimit,
};

pub const LIMIT_SETTINGS_KEYS: &[&str] = &["fail_open", "default_max_tokens"];
pub const HEALTH_KEYS: &[&str] = &["failures", "window_s", "cooldown_s"];

/// A `limits` table: `requests_per_minute = 60`, `usd_per_month = 50.0`, `concurrent = 4`,
/// `per = "key"`.
pub(super) fn read_limits(sink: &mut Sink, t: &Obj) -> Limits {
    let known = limit_keys();
    let known: Vec<&str> = known.iter().map(String::as_str).collect();
    t.deny_unknown(sink, &known);
    let mut windows = Vec::new();
    for metric in [Metric::Requests, Metric::Tokens, Metric::Usd] {
        for window in Window::ALL {
            let key = format!("{}_per_{}", metric.name(), window.name());
            let max = match metric {
                Metric::Usd => t.number(sink, &key).map(|v| {
                    // Dollars to millionths, rounded down: the limit is never loosened.
                    (v.value * 1_000_000.0).floor().min(u64::MAX as f64) as u64
                }),
                _ => t.uint(sink, &key),
            };
            if let Some(max) = max {
                windows.push(WindowLimit {
                    metric,
                    window,
                    max,
                });
            }
        }
    }
    let concurrent = t.uint(sink, "concurrent");
    if concurrent == Some(0) {
        sink.error_help(
            t.key_span("concurrent").as_ref(),
            "`concurrent = 0` would refuse every request",
            "give the most requests that may be in flight at once, or remove it",
        );
    }
    let per = t
        .choice(
            sink,
            "per",
            &[
                ("caller", LimitPer::Caller),
                ("tenant", LimitPer::Caller),
                ("key", LimitPer::Key),
            ],
            "`\"caller\"` (the default: a tenant's keys, or all anonymous callers, share the counters) or `\"key\"` (each API key counts on its own)",
        )
        .unwrap_or(LimitPer::Caller);
    Limits {
        per,
        windows: windows.into(),
        concurrent,
    }
}

pub(super) fn read_limit_settings(sink: &mut Sink, t: &Obj) -> LimitSettings {
    t.deny_unknown(sink, LIMIT_SETTINGS_KEYS);
    let mut s = LimitSettings::default();
    if let Some(list) = t.str_list(sink, "fail_open") {
        s.fail_open = list.into_iter().map(|v| TenantId(v.value.into())).collect();
    }
    if let Some(n) = t.uint(sink, "default_max_tokens") {
        if n == 0 {
            sink.error(
                t.key_span("default_max_tokens").as_ref(),
                "`default_max_tokens` must be positive",
            );
        }
        s.default_max_tokens = n;
    }
    s
}

pub(super) fn read_health(sink: &mut Sink, t: &Obj) -> Option<Health> {
    t.deny_unknown(sink, HEALTH_KEYS);
    let failures = t.uint(sink, "failures").unwrap_or(5);
    let window_s = t.uint(sink, "window_s").unwrap_or(30);
    let cooldown_s = t.uint(sink, "cooldown_s").unwrap_or(30);
    for (k, v) in [
        ("failures", failures),
        ("window_s", window_s),
        ("cooldown_s", cooldown_s),
    ] {
        if v == 0 {
            sink.error(t.key_span(k).as_ref(), format!("`{k}` must be positive"));
            return None;
        }
    }
    Some(Health {
        failures,
        window_s,
        cooldown_s,
    })
}

/// Names in `fail_open` must be tenants (or `anonymous`).
pub(super) fn check_fail_open(sink: &mut Sink, top: &Obj, s: &LimitSettings, cx: &Ctx) {
    for t in s.fail_open.iter() {
        if t.as_str() != "anonymous" && !cx.tenant_ids.iter().any(|id| id == t.as_str()) {
            let span = top
                .table(&mut Sink::new(""), "settings")
                .and_then(|s| s.table(&mut Sink::new(""), "limits"))
                .and_then(|l| l.key_span("fail_open"));
            sink.error_help(
                span.as_ref(),
                format!("`fail_open` names `{t}`, which is not a tenant"),
                "name tenants by their `id`, or `anonymous` for callers without a key",
            );
        }
    }
}

/// A browser key's plaintext is in every page that uses it: without a limit, anyone who copies
/// it can spend the operator's credit (its `Origin` check stops browsers, not scripts).
pub(super) fn warn_unlimited(
    sink: &mut Sink,
    top: &Obj,
    tenants: &[Tenant],
    rules: &[Rule],
    settings: &Settings,
) {
    let limited_by_rule = |pred: &dyn Fn(&When) -> bool| {
        rules
            .iter()
            .any(|r| r.limits.as_ref().is_some_and(|l| !l.is_empty()) && pred(&r.when))
    };
    let mut quiet = Sink::new("");
    for (i, t) in tenants.iter().enumerate() {
        if t.origins.is_empty() || t.limits.is_some() {
            continue;
        }
        let covered = limited_by_rule(&|w: &When| {
            w.browser == Some(true)
                || w.tenants
                    .as_ref()
                    .is_some_and(|ts| ts.iter().any(|x| x == &t.id))
        });
        if !covered {
            let span = top
                .tables(&mut quiet, "tenants")
                .get(i)
                .and_then(|o| o.key_span("origins"));
            sink.warn(
                span.as_ref(),
                format!(
                    "tenant `{}` has a browser key (`origins`) and no limit: the key is in every page that uses it, and `Origin` is a header any script can set",
                    t.id
                ),
                "give it `limits = { requests_per_minute = 30, usd_per_day = 5.0 }` (or a rule with `when = { browser = true }` and `limits`)",
            );
        }
    }
    // `concurrent` counts a request in the 15-minute slot it started in and the next; a request
    // allowed to run longer stops being counted.
    let concurrent = tenants
        .iter()
        .filter_map(|t| t.limits.as_ref())
        .chain(rules.iter().filter_map(|r| r.limits.as_ref()))
        .any(|l| l.concurrent.is_some());
    let longest = rules
        .iter()
        .flat_map(|r| [r.plan.deadline_ms, r.plan.stream_deadline_ms])
        .flatten()
        .chain([settings.plan.deadline_ms, settings.plan.stream_deadline_ms])
        .max()
        .unwrap_or(0);
    if concurrent && longest > 900_000 {
        sink.warn(
            top.key_span("settings").as_ref(),
            format!("a request may run {} s, longer than the 900 s for which `concurrent` limits count it", longest / 1000),
            "keep `deadline_ms` and `stream_deadline_ms` at 900000 or less where `concurrent` limits apply",
        );
    }
    if settings.anonymous == Anonymous::Paid
        && !limited_by_rule(&|w: &When| w.anonymous == Some(true))
    {
        let span = top
            .table(&mut quiet, "settings")
            .and_then(|s| s.key_span("allow_anonymous"));
        sink.warn(
            span.as_ref(),
            "anonymous callers may spend the providers' keys and no rule limits them",
            "add a rule with `when = { anonymous = true }` and `limits = { requests_per_minute = 10, usd_per_day = 1.0 }`",
        );
    }
}
