//! `[[test]]` cases: request facts and what the decision must be.

use super::*;

pub(super) fn toml_to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::String(s) => serde_json::Value::String(s.value().clone()),
        Value::Integer(i) => serde_json::Value::from(*i.value()),
        Value::Float(f) => serde_json::Number::from_f64(*f.value())
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Boolean(b) => serde_json::Value::Bool(*b.value()),
        Value::Datetime(d) => serde_json::Value::String(d.value().to_string()),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(toml_to_json).collect()),
        Value::InlineTable(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, v)| (k.to_string(), toml_to_json(v)))
                .collect(),
        ),
    }
}

pub(super) fn read_cases(
    sink: &mut Sink,
    top: &Obj,
    cx: &Ctx,
    countries_deliverable: bool,
) -> Vec<Case> {
    let mut out = Vec::new();
    for (i, t) in top.tables(sink, "test").into_iter().enumerate() {
        t.deny_unknown(sink, TEST_KEYS);
        let line = sink.position(t.span.as_ref()).0;
        let name = t
            .str(sink, "name")
            .map_or_else(|| format!("test #{}", i + 1), |s| s.value);
        // An unknown model is a legitimate thing to test (expect_status = 404), so no check.
        let model = t.req_str(sink, "model");
        let country = t.str(sink, "country").and_then(|c| {
            if !countries_deliverable {
                sink.error_help(
                    c.span.as_ref(),
                    "this case gives a `country`, but the policy has no location source, so no request can carry one",
                    "name the platform Meridian runs behind, e.g. `[settings.client]` with `platform = \"cloudflare\"`",
                );
            }
            if let Some(code) = Country::parse(&c.value) {
                Some(code)
            } else {
                sink.error(
                    c.span.as_ref(),
                    format!("`{}` is not a country code", c.value),
                );
                None
            }
        });
        let tenant = t
            .str(sink, "tenant")
            .map(|id| check_tenant_ref(sink, cx, &id));
        let privacy_list = t.str_list(sink, "privacy");
        let privacy = read_privacy(sink, privacy_list);
        let mut headers = Vec::new();
        if let Some(h) = t.table(sink, "headers") {
            for (k, item) in h.entries() {
                match item.as_str() {
                    Some(v) => headers.push((k.value.to_ascii_lowercase(), v.to_string())),
                    None => sink.error(k.span.as_ref(), "header values must be strings"),
                }
            }
        }
        let provider = t
            .table(sink, "provider")
            .and_then(|_| t_value_json(&t, "provider"));
        let expect_order = t.str_list(sink, "expect");
        let expect_first = t.str(sink, "expect_first");
        let expect_status = t.uint(sink, "expect_status");
        let expect = match (expect_order, expect_first, expect_status) {
            (Some(o), None, None) => Some(Expectation::Order(
                o.iter().map(|p| check_provider_ref(sink, cx, p)).collect(),
            )),
            (None, Some(f), None) => Some(Expectation::First(check_provider_ref(sink, cx, &f))),
            (None, None, Some(s)) => match u16::try_from(s) {
                Ok(s) if (400..600).contains(&s) => Some(Expectation::Refusal(s)),
                _ => {
                    sink.error(
                        t.key_span("expect_status").as_ref(),
                        "`expect_status` must be 400 to 599",
                    );
                    None
                }
            },
            _ => {
                sink.error_help(
                    t.span.as_ref(),
                    format!("test `{name}` needs exactly one of `expect`, `expect_first`, `expect_status`"),
                    "`expect = [\"a\", \"b\"]` for the whole order, `expect_first = \"a\"`, or `expect_status = 451` for a refusal",
                );
                None
            }
        };
        let prompt = t.str(sink, "prompt").map(|s| s.value);
        let expect_pii = t.str_list(sink, "expect_pii").map(|names| {
            names
                .into_iter()
                .filter_map(|n| {
                    if cx.pii.kind_of(&n.value).is_some() {
                        Some(n.value)
                    } else {
                        let known: Vec<&str> = (0..cx.pii.kind_count())
                            .map(|k| cx.pii.kind_name(k))
                            .collect();
                        sink.error_help(
                            n.span.as_ref(),
                            format!("unknown personal-data kind `{}`", n.value),
                            suggest(&n.value, &known),
                        );
                        None
                    }
                })
                .collect::<Vec<_>>()
        });
        if expect_pii.is_some() && prompt.is_none() {
            sink.error_help(
                t.key_span("expect_pii").as_ref(),
                "`expect_pii` checks what is found in the case's prompt, but it has none",
                "add `prompt = \"…\"`",
            );
        }
        let expect_replicas = t.str_list(sink, "expect_replicas").map(|names| {
            names
                .into_iter()
                .filter_map(|n| {
                    if cx.replicas.contains(&n.value) {
                        Some(n.value)
                    } else {
                        let known: Vec<&str> = cx.replicas.iter().map(String::as_str).collect();
                        sink.error_help(
                            n.span.as_ref(),
                            format!("unknown replica `{}`: write `provider@replica`", n.value),
                            suggest(&n.value, &known),
                        );
                        None
                    }
                })
                .collect::<Vec<_>>()
        });
        let (Some(model), Some(expect)) = (model, expect) else {
            continue;
        };
        out.push(Case {
            request_id: t
                .str(sink, "request_id")
                .map_or_else(|| format!("test-{}", i + 1), |s| s.value),
            name,
            line,
            model: model.value,
            country,
            edge_region: t.str(sink, "edge_region").map(|s| s.value),
            tenant,
            privacy,
            stream: t.bool(sink, "stream").unwrap_or(false),
            headers,
            provider,
            prompt,
            expect_pii,
            expect_replicas,
            expect,
        });
    }
    out
}

pub(super) fn t_value_json(t: &Obj, key: &str) -> Option<serde_json::Value> {
    let item: &Item = t.raw(key)?;
    match item {
        Item::Value(v) => Some(toml_to_json(v)),
        Item::Table(tbl) => Some(serde_json::Value::Object(
            tbl.iter()
                .filter_map(|(k, v)| v.as_value().map(|v| (k.to_string(), toml_to_json(v))))
                .collect(),
        )),
        _ => None,
    }
}
