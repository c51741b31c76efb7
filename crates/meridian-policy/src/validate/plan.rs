//! `plan` tables (in `[settings]` and in rules): timeouts, retries, fallback triggers, hedging.

use super::*;

pub(super) fn read_plan(sink: &mut Sink, p: &Obj) -> PlanPatch {
    p.deny_unknown(sink, PLAN_KEYS);
    let mut patch = PlanPatch {
        attempt_timeout_ms: p.uint(sink, "attempt_timeout_ms"),
        first_byte_timeout_ms: p.uint(sink, "first_byte_timeout_ms"),
        idle_timeout_ms: p.uint(sink, "idle_timeout_ms"),
        deadline_ms: p.uint(sink, "deadline_ms"),
        stream_deadline_ms: p.uint(sink, "stream_deadline_ms"),
        retries: p
            .uint(sink, "retries")
            .map(|r| u32::try_from(r.min(10)).unwrap_or(10)),
        backoff_ms: p.uint(sink, "backoff_ms"),
        fallback_on: None,
        hedge_after_ms: p.uint(sink, "hedge_after_ms"),
    };
    if let Some(r) = p.int(sink, "retries") {
        if r.value > 10 {
            sink.error_help(
                r.span.as_ref(),
                "`retries` must be at most 10",
                "use fallbacks to other providers instead",
            );
        }
    }
    for key in [
        "attempt_timeout_ms",
        "first_byte_timeout_ms",
        "idle_timeout_ms",
        "deadline_ms",
        "stream_deadline_ms",
    ] {
        if let Some(v) = p.int(sink, key) {
            if v.value == 0 {
                sink.error(v.span.as_ref(), format!("`{key}` must be positive"));
            }
        }
    }
    if let Some(vals) = p.values(sink, "fallback_on") {
        let mut f = FallbackOn {
            connect: false,
            timeout: false,
            malformed: false,
            statuses: Default::default(),
        };
        let mut statuses = BTreeSet::new();
        for v in vals {
            match &v.value {
                Value::Integer(i) => match u16::try_from(*i.value()) {
                    Ok(code) if (400..600).contains(&code) => {
                        statuses.insert(code);
                    }
                    _ => sink.error(
                        v.span.as_ref(),
                        format!("`{}` is not an HTTP error status (400 to 599)", i.value()),
                    ),
                },
                Value::String(s) => match s.value().as_str() {
                    "connect" => f.connect = true,
                    "timeout" => f.timeout = true,
                    "malformed" => f.malformed = true,
                    "4xx" => statuses.extend(400..500),
                    "5xx" => statuses.extend(500..600),
                    other => sink.error_help(
                        v.span.as_ref(),
                        format!("unknown fallback trigger `{other}`"),
                        match crate::diag::did_you_mean(other, FALLBACK_WORDS.iter().copied()) {
                            Some(k) => format!("did you mean `{k}`?"),
                            None => "use `connect`, `timeout`, `malformed`, `4xx`, `5xx` or a status code such as 503".into(),
                        },
                    ),
                },
                _ => sink.error(v.span.as_ref(), "fallback triggers are strings or status codes"),
            }
        }
        f.statuses = statuses.into_iter().collect::<Vec<_>>().into();
        patch.fallback_on = Some(f);
    }
    patch
}
