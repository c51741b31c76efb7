//! `[[guards]]`, the catalog of guards, and `[[rules.guards]]`, a rule's uses of them.

use super::*;

pub const GUARD_KEYS: &[&str] = &[
    "id",
    "kind",
    "wire",
    "url",
    "model",
    "key_secret",
    "location",
    "retention_days",
    "trains_on_inputs",
    "zdr",
    "self_hosted",
    "price_per_call",
    "labels",
    "max_input_bytes",
    "storage",
    "transfer_safeguard",
];
pub const GUARD_USE_KEYS: &[&str] = &[
    "guard",
    "on",
    "action",
    "route",
    "threshold",
    "labels",
    "timeout_ms",
    "fail",
    "before_send",
];
const GUARD_KINDS: &[&str] = &["injection", "moderation", "classifier"];
const GUARD_WIRES: &[&str] = &[
    "builtin",
    "openai_moderation",
    "llama_guard",
    "http_classifier",
];
const EXTERNAL_ONLY: &[&str] = &[
    "url",
    "model",
    "key_secret",
    "location",
    "retention_days",
    "trains_on_inputs",
    "zdr",
    "self_hosted",
    "price_per_call",
    "max_input_bytes",
];

/// What rules need to know of a guard while they are read.
pub(super) struct GuardRef {
    id: String,
    wire: GuardWire,
    /// Where it processes and where it keeps data (external guards), as written and resolved.
    location: String,
    countries: CountrySet,
    storage: Option<crate::evidence::Storage>,
}

/// A string setting that must be one of `choices`: its position in them.
fn one_of(sink: &mut Sink, t: &Obj, key: &str, choices: &[&str]) -> Option<usize> {
    let v = t.str(sink, key)?;
    let found = choices.iter().position(|c| *c == v.value);
    if found.is_none() {
        sink.error_help(
            v.span.as_ref(),
            format!("unknown `{key}` `{}`", v.value),
            suggest(&v.value, choices),
        );
    }
    found
}

/// As [`one_of`], for a setting a guard must have.
fn required_choice(sink: &mut Sink, t: &Obj, key: &str, choices: &[&str]) -> Option<usize> {
    if t.raw(key).is_none() {
        let quoted: Vec<String> = choices.iter().map(|c| format!("`\"{c}\"`")).collect();
        sink.error_help(
            t.span.as_ref(),
            format!("a guard needs `{key}`"),
            format!("`{key} = ` one of {}", quoted.join(", ")),
        );
        return None;
    }
    one_of(sink, t, key, choices)
}

pub(super) fn read_guards(sink: &mut Sink, top: &Obj, cx: &mut Ctx) -> Vec<Guard> {
    let mut out = Vec::new();
    for t in top.tables(sink, "guards") {
        t.deny_unknown(sink, GUARD_KEYS);
        let id = t.req_str(sink, "id");
        if let Some(id) = &id {
            if !is_id(&id.value) {
                sink.error(id.span.as_ref(), bad_id_message("guard", &id.value));
            } else if cx.guards.iter().any(|g| g.id == id.value) {
                sink.error_help(
                    id.span.as_ref(),
                    format!("duplicate guard id `{}`", id.value),
                    "each guard needs its own id",
                );
            }
        }
        let kind = required_choice(sink, &t, "kind", GUARD_KINDS).map(|i| {
            [
                GuardKind::Injection,
                GuardKind::Moderation,
                GuardKind::Classifier,
            ][i]
        });
        let wire = required_choice(sink, &t, "wire", GUARD_WIRES).map(|i| {
            [
                GuardWire::Builtin,
                GuardWire::OpenAiModeration,
                GuardWire::LlamaGuard,
                GuardWire::HttpClassifier,
            ][i]
        });
        let labels: Vec<Text> = t
            .str_list(sink, "labels")
            .unwrap_or_default()
            .into_iter()
            .map(|l| Text::from(l.value))
            .collect();
        let name = id.as_ref().map_or("?", |i| i.value.as_str()).to_string();
        if wire == Some(GuardWire::Builtin) {
            if kind.is_some_and(|k| k != GuardKind::Injection) {
                sink.error_help(
                    t.key_span("kind").as_ref(),
                    "the built-in guard detects prompt injection only",
                    "set `kind = \"injection\"`, or use an external wire for moderation and classifiers",
                );
            }
            for key in EXTERNAL_ONLY {
                if t.raw(key).is_some() {
                    sink.error_help(
                        t.key_span(key).as_ref(),
                        format!("`{key}` applies to external guards only"),
                        "the built-in detector runs inside Meridian and sends nothing anywhere: remove it",
                    );
                }
            }
            let (Some(id), Some(kind)) = (id, kind) else {
                continue;
            };
            cx.guards.push(GuardRef {
                id: id.value.clone(),
                wire: GuardWire::Builtin,
                location: "meridian".into(),
                countries: CountrySet::new(),
                storage: None,
            });
            out.push(Guard::builtin(id.value.into(), kind, labels.into()));
            continue;
        }
        let url = t.req_str(sink, "url").and_then(|u| match url::Url::parse(&u.value) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(BaseUrl::new(&url))
            }
            _ => {
                sink.error_help(
                    u.span.as_ref(),
                    format!("`url` `{}` is not an http or https URL with a host", u.value),
                    "e.g. `https://api.openai.com/v1` (the wire's path is appended) or, for `http_classifier`, the full URL",
                );
                None
            }
        });
        let model = t.str(sink, "model").map(|m| Text::from(m.value));
        if wire == Some(GuardWire::LlamaGuard) && model.is_none() {
            sink.error_help(
                t.span.as_ref(),
                format!("guard `{name}` with `wire = \"llama_guard\"` needs `model`"),
                "the engine's name for the guard model, e.g. `model = \"meta-llama/Llama-Guard-3-8B\"`",
            );
        }
        if wire == Some(GuardWire::HttpClassifier) && labels.is_empty() {
            sink.error_help(
                t.span.as_ref(),
                format!("guard `{name}` with `wire = \"http_classifier\"` needs `labels`"),
                "the labels its answers use for a hit, e.g. `labels = [\"INJECTION\", \"JAILBREAK\"]`",
            );
        }
        let key_secret = read_key_secret(sink, &t).map(Text::from);
        let location = t.req_str(sink, "location");
        let countries = location
            .as_ref()
            .map(|l| resolve_residency(sink, cx, std::slice::from_ref(l)).countries);
        let retention = t.uint(sink, "retention_days");
        let trains_on_inputs = t.bool(sink, "trains_on_inputs");
        let zdr = t.bool(sink, "zdr").unwrap_or(false);
        let self_hosted = t.bool(sink, "self_hosted").unwrap_or(false);
        if trains_on_inputs.is_none() || (retention.is_none() && !zdr) {
            sink.warn(
                t.span.as_ref(),
                format!(
                    "guard `{name}` does not state `trains_on_inputs` and `retention_days`: unstated is unknown, and an unknown never satisfies `no-training` or `no-data-collection`"
                ),
                "state what the guard service's terms say, e.g. `trains_on_inputs = false` and `retention_days = 0`",
            );
        }
        let price = t.number(sink, "price_per_call").map(|p| p.value);
        let max_input_bytes = t
            .uint(sink, "max_input_bytes")
            .map_or(DEFAULT_MAX_INPUT_BYTES, |n| {
                u32::try_from(n).unwrap_or(u32::MAX)
            });
        let (storage, safeguard) =
            super::evidence::read_recipient(sink, &t, cx, "guard", &name, countries.as_ref());
        let (Some(id), Some(kind), Some(wire), Some(url), Some(location), Some(countries)) =
            (id, kind, wire, url, location, countries)
        else {
            continue;
        };
        cx.guards.push(GuardRef {
            id: id.value.clone(),
            wire,
            location: location.value.clone(),
            countries,
            storage: storage.clone(),
        });
        out.push(Guard {
            id: id.value.into(),
            kind,
            wire,
            url: Some(url),
            model,
            key_secret,
            location: location.value.into(),
            single_country: countries.single(),
            countries,
            retention_days: retention.map(|r| u32::try_from(r).unwrap_or(u32::MAX)),
            trains_on_inputs,
            zdr,
            self_hosted,
            price_per_call: price,
            labels: labels.into(),
            max_input_bytes,
            storage,
            safeguard,
        });
    }
    out
}

/// A guard that fails closed and that the rule's own `require` forbids to be sent the text:
/// every request the rule matches would be refused (403 `guardrail_not_allowed`).
fn unreachable_closed(sink: &mut Sink, t: &Obj, g: &GuardRef, require: &Require, fail_open: bool) {
    if fail_open || g.wire == GuardWire::Builtin {
        return;
    }
    let outside = |what: &str, res: &Residency, at: &str| {
        format!(
            "guard `{}` fails closed, but it {what} in `{at}`, outside the rule's own `{}`: every request this rule matches would be refused (403 guardrail_not_allowed)",
            g.id,
            res.names.join(", ")
        )
    };
    let help = "use a guard inside the rule's jurisdictions, or `fail = \"open\"` to serve unjudged (recorded)";
    if let Some(res) = &require.jurisdiction {
        if !g.countries.is_nonempty_subset(&res.countries) {
            sink.warn(
                t.span.as_ref(),
                outside("processes data", res, &g.location),
                help,
            );
            return;
        }
    }
    if let Some(res) = &require.storage {
        let (at, kept) = match &g.storage {
            Some(s) => (s.location.as_ref(), &s.countries),
            None => (g.location.as_str(), &g.countries),
        };
        if !kept.is_nonempty_subset(&res.countries) {
            sink.warn(t.span.as_ref(), outside("keeps data", res, at), help);
        }
    }
}

/// A rule's `[[rules.guards]]`, appended to `uses` with the rule's position.
pub(super) fn read_uses(
    sink: &mut Sink,
    rule: &Obj,
    index: u32,
    cx: &Ctx,
    require: &Require,
    uses: &mut Vec<GuardUse>,
) {
    for t in rule.tables(sink, "guards") {
        t.deny_unknown(sink, GUARD_USE_KEYS);
        let guard = t.req_str(sink, "guard").and_then(|g| {
            let found = cx.guards.iter().position(|r| r.id == g.value);
            if found.is_none() {
                let known: Vec<&str> = cx.guards.iter().map(|r| r.id.as_str()).collect();
                sink.error_help(
                    g.span.as_ref(),
                    format!(
                        "`guard` names `{}`, which is not a `[[guards]]` id",
                        g.value
                    ),
                    if known.is_empty() {
                        "define it as `[[guards]]` with `id`, `kind` and `wire`".to_string()
                    } else {
                        suggest(&g.value, &known)
                    },
                );
            }
            found
        });
        let on = match one_of(sink, &t, "on", &["input", "output"]) {
            Some(1) => GuardOn::Output,
            _ => GuardOn::Input,
        };
        let route = t.str(sink, "route");
        let action = match one_of(sink, &t, "action", &["refuse", "flag", "route"]) {
            None | Some(0) => Some(GuardAction::Refuse),
            Some(1) => Some(GuardAction::Flag),
            _ => match &route {
                Some(r) => check_route(sink, cx, r).map(GuardAction::Route),
                None => {
                    sink.error_help(
                        t.key_span("action").as_ref(),
                        "`action = \"route\"` needs `route`, the `[[routes]]` that serves a request the guard stops",
                        "e.g. `route = \"self-hosted\"`",
                    );
                    None
                }
            },
        };
        if route.is_some() && !matches!(action, Some(GuardAction::Route(_)) | None) {
            sink.error_help(
                t.key_span("route").as_ref(),
                "`route` applies to `action = \"route\"` only",
                "remove it, or set `action = \"route\"`",
            );
        }
        if on == GuardOn::Output && matches!(action, Some(GuardAction::Route(_))) {
            sink.error_help(
                t.key_span("action").as_ref(),
                "an output guard cannot route: the answer has been made",
                "use `action = \"refuse\"` or `\"flag\"`",
            );
        }
        let threshold = t.number(sink, "threshold").map(|n| n.value);
        if let Some(th) = threshold {
            if th > 1.0 {
                sink.error(
                    t.key_span("threshold").as_ref(),
                    "`threshold` is a score from 0 to 1",
                );
            }
        }
        let labels: Vec<Text> = t
            .str_list(sink, "labels")
            .unwrap_or_default()
            .into_iter()
            .map(|l| Text::from(l.value))
            .collect();
        let timeout_ms = t
            .uint(sink, "timeout_ms")
            .unwrap_or(DEFAULT_GUARD_TIMEOUT_MS);
        if timeout_ms == 0 {
            sink.error(
                t.key_span("timeout_ms").as_ref(),
                "`timeout_ms` must be at least 1",
            );
        }
        let fail_open = matches!(one_of(sink, &t, "fail", &["open", "closed"]), Some(0));
        let before_send = t.bool(sink, "before_send").unwrap_or(false);
        if before_send && on == GuardOn::Output {
            sink.error_help(
                t.key_span("before_send").as_ref(),
                "`before_send` applies to input guards only",
                "remove it",
            );
        }
        if let Some(g) = guard.map(|g| &cx.guards[g]) {
            unreachable_closed(sink, &t, g, require, fail_open);
            if g.wire == GuardWire::Builtin && t.raw("fail").is_some() {
                sink.warn(
                    t.key_span("fail").as_ref(),
                    format!("guard `{}` is the built-in detector, which cannot fail: `fail` has no effect", g.id),
                    "remove it",
                );
            }
        }
        let (Some(guard), Some(action)) = (guard, action) else {
            continue;
        };
        uses.push(GuardUse {
            rule: index,
            guard: u32::try_from(guard).unwrap_or(u32::MAX),
            on,
            action,
            threshold,
            labels: labels.into(),
            timeout_ms,
            fail_open,
            before_send,
        });
    }
}
