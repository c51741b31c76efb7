//! `[[rules]]`: `when`, `require`, `prefer`, `plan`, and the warnings rules earn.

use super::*;

pub(super) fn read_rules(sink: &mut Sink, top: &Obj, cx: &Ctx) -> (Vec<Rule>, Vec<GuardUse>) {
    let mut out = Vec::new();
    let mut uses = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for t in top.tables(sink, "rules") {
        t.deny_unknown(sink, RULE_KEYS);
        let id = t.req_str(sink, "id");
        if let Some(id) = &id {
            if !is_id(&id.value) {
                sink.error(id.span.as_ref(), bad_id_message("rule", &id.value));
            } else if ids.contains(&id.value) {
                sink.error(
                    id.span.as_ref(),
                    format!("duplicate rule id `{}`", id.value),
                );
            }
        }
        let when = t
            .table(sink, "when")
            .map(|w| read_when(sink, &w, cx))
            .unwrap_or_default();
        let require = t
            .table(sink, "require")
            .map(|r| read_require(sink, &r, cx))
            .unwrap_or_default();
        let prefer = t
            .table(sink, "prefer")
            .map(|p| read_prefer(sink, &p, cx, &require))
            .unwrap_or_default();
        let plan = t
            .table(sink, "plan")
            .map(|p| read_plan(sink, &p))
            .unwrap_or_default();
        let pii = super::pii::read_action(sink, &t, &when, &cx.pii);
        let limits = t
            .table(sink, "limits")
            .map(|l| super::limits::read_limits(sink, &l))
            .filter(|l| !l.is_empty());
        let route = t.str(sink, "route").and_then(|r| check_route(sink, cx, &r));
        let Some(id) = id else { continue };
        let index = u32::try_from(out.len()).unwrap_or(u32::MAX);
        super::guards::read_uses(sink, &t, index, cx, &require, &mut uses);
        ids.push(id.value.clone());
        out.push(Rule {
            id: RuleId(id.value.into()),
            when,
            require,
            prefer,
            plan,
            pii,
            limits,
            route,
        });
    }
    (out, uses)
}

pub(super) fn read_when(sink: &mut Sink, w: &Obj, cx: &Ctx) -> When {
    w.deny_unknown(sink, WHEN_KEYS);
    let edge_verified = w.bool(sink, "edge_verified");
    if edge_verified.is_some() && !cx.edge_secret {
        sink.error_help(
            w.key_span("edge_verified").as_ref(),
            "`edge_verified` needs an edge secret to verify",
            "set `[settings.client] edge_secret = { header = \"x-edge-secret\", secret = \"edge_secret\" }`",
        );
    }
    let mut client_countries: Option<CountrySet> = None;
    if let Some(cs) = w.str_list(sink, "client_country") {
        let mut set = CountrySet::new();
        for c in cs {
            if let Some(code) = Country::parse(&c.value) {
                set.insert(code);
            } else {
                sink.error_help(
                    c.span.as_ref(),
                    format!("`{}` is not a country code", c.value),
                    "use ISO 3166-1 alpha-2 in upper case, e.g. `FR`; `XX` matches clients whose country is unknown",
                );
            }
        }
        client_countries = Some(set);
    }
    if let Some(js) = w.str_list(sink, "client_jurisdiction") {
        let r = resolve_residency(sink, cx, &js);
        client_countries
            .get_or_insert_with(CountrySet::new)
            .union_with(&r.countries);
    }
    let tenants = w
        .str_list(sink, "tenant")
        .map(|ts| ts.iter().map(|t| check_tenant_ref(sink, cx, t)).collect());
    let models = w
        .str_list(sink, "model")
        .map(|g| check_model_globs(sink, cx, &g));
    let privacy = w
        .str_list(sink, "privacy")
        .map(|l| read_privacy(sink, Some(l)));
    let mut headers = Vec::new();
    if let Some(h) = w.table(sink, "header") {
        for (name, item) in h.entries() {
            if http::HeaderName::from_bytes(name.value.as_bytes()).is_err() {
                sink.error(
                    name.span.as_ref(),
                    format!("`{}` is not a valid header name", name.value),
                );
            }
            let lower = name.value.to_ascii_lowercase();
            if crate::CREDENTIAL_HEADERS.contains(&lower.as_str())
                || cx.edge_secret_header.as_deref() == Some(lower.as_str())
            {
                sink.error_help(
                    name.span.as_ref(),
                    format!(
                        "a rule may not match on `{}`: it carries a credential, and the log keeps what a rule's condition reads (for `meridian replay`)",
                        name.value
                    ),
                    "match the caller with `tenant = [...]` or `browser = true`, or have the client send a header of its own",
                );
                continue;
            }
            let value = match item.as_value() {
                Some(Value::String(s)) => Some(s.value().clone()),
                Some(Value::Boolean(b)) if *b.value() => None,
                _ => {
                    sink.error_help(
                        name.span.as_ref(),
                        format!(
                            "header condition `{}` must be a string or `true`",
                            name.value
                        ),
                        "`true` matches any value; a string matches that exact value",
                    );
                    continue;
                }
            };
            headers.push((name.value.to_ascii_lowercase(), value));
        }
    }
    let endpoints = w.str_list(sink, "endpoint").map(|es| {
        es.into_iter()
            .filter_map(|e| {
                if ENDPOINTS.contains(&e.value.as_str()) {
                    Some(Text::from(e.value))
                } else {
                    sink.error_help(
                        e.span.as_ref(),
                        format!("unknown endpoint `{}`", e.value),
                        suggest(&e.value, ENDPOINTS),
                    );
                    None
                }
            })
            .collect()
    });
    When {
        client_countries,
        edge_regions: w
            .str_list(sink, "edge_region")
            .map(|rs| rs.into_iter().map(|r| Text::from(r.value)).collect()),
        tenants,
        anonymous: w.bool(sink, "anonymous"),
        models: models.map(Into::into),
        privacy,
        headers: headers
            .into_iter()
            .map(|(k, v)| (Text::from(k), v.map(Text::from)))
            .collect(),
        stream: w.bool(sink, "stream"),
        browser: w.bool(sink, "browser"),
        input_tokens: w.table(sink, "input_tokens").map(|r| {
            r.deny_unknown(sink, &["max", "min"]);
            TokenRange {
                min: r.uint(sink, "min"),
                max: r.uint(sink, "max"),
            }
        }),
        tools: w.bool(sink, "tools"),
        media: w.bool(sink, "media"),
        endpoints,
        edge_verified,
        pii: super::pii::read_when_pii(sink, w, &cx.pii),
    }
}

/// Warns when residency rules cover known client locations but none covers the unknown one
/// (`XX`): a client whose location is unknown would then be served without residency.
pub(super) fn warn_unknown_country(sink: &mut Sink, top: &Obj, rules: &[Rule]) {
    let located_residency = rules.iter().any(|r| {
        r.require.jurisdiction.is_some()
            && r.when
                .client_countries
                .as_ref()
                .is_some_and(|cs| !cs.contains(Country::UNKNOWN))
    });
    let unknown_covered = rules.iter().any(|r| {
        r.when
            .client_countries
            .as_ref()
            .is_none_or(|cs| cs.contains(Country::UNKNOWN))
            && r.when.edge_regions.is_none()
            && r.when.tenants.is_none()
            && r.when.anonymous.is_none()
            && r.when.models.is_none()
            && r.when.privacy.is_none()
            && r.when.headers.is_empty()
            && r.when.stream.is_none()
            && r.when.endpoints.is_none()
            && r.when.edge_verified.is_none()
            && r.when.pii.is_none()
            && (r.require.jurisdiction.is_some()
                || r.require.self_hosted
                || r.require.providers.is_some())
    });
    if located_residency && !unknown_covered {
        sink.warn(
            top.key_span("rules").as_ref(),
            "residency rules apply to clients whose country is known, but no rule decides for clients whose country is unknown (`XX`): they are served without residency",
            "add a rule such as `when = { client_country = [\"XX\"] }` with `require = { jurisdiction = [\"eu\"] }` (or `self_hosted = true`)",
        );
    }
}

pub(super) fn read_price(sink: &mut Sink, p: &Obj) -> MaxPrice {
    p.deny_unknown(sink, PRICE_KEYS);
    MaxPrice {
        input: p.number(sink, "input").map(|v| v.value),
        output: p.number(sink, "output").map(|v| v.value),
    }
}

pub(super) fn read_require(sink: &mut Sink, r: &Obj, cx: &Ctx) -> Require {
    r.deny_unknown(sink, REQUIRE_KEYS);
    let privacy_list = r.str_list(sink, "privacy");
    Require {
        jurisdiction: r
            .str_list(sink, "jurisdiction")
            .map(|names| resolve_residency(sink, cx, &names)),
        self_hosted: r.bool(sink, "self_hosted").unwrap_or(false),
        privacy: read_privacy(sink, privacy_list),
        providers: r
            .str_list(sink, "providers")
            .map(|ps| provider_set(sink, cx, &ps)),
        deny: r
            .str_list(sink, "deny")
            .map(|ps| provider_set(sink, cx, &ps))
            .unwrap_or_default(),
        max_price: r
            .table(sink, "max_price")
            .map(|p| read_price(sink, &p))
            .unwrap_or_default(),
        capabilities: r
            .str_list(sink, "capabilities")
            .map(|l| read_capabilities(sink, &l)),
        storage: r
            .str_list(sink, "storage")
            .map(|names| resolve_residency(sink, cx, &names)),
    }
}

pub(super) fn read_prefer(sink: &mut Sink, p: &Obj, cx: &Ctx, require: &Require) -> Prefer {
    p.deny_unknown(sink, PREFER_KEYS);
    let order: Vec<ProviderId> = p
        .str_list(sink, "order")
        .unwrap_or_default()
        .iter()
        .map(|id| check_provider_ref(sink, cx, id))
        .collect();
    let sort = p.str(sink, "sort").and_then(|s| match s.value.as_str() {
        "price" => Some(Sort::Price),
        "latency" => Some(Sort::Latency),
        "weighted" => Some(Sort::Weighted),
        "nearest" => Some(Sort::Nearest),
        other => {
            sink.error_help(
                s.span.as_ref(),
                format!("unknown sort `{other}`"),
                suggest(other, SORTS),
            );
            None
        }
    });
    let mut weights = BTreeMap::new();
    if let Some(w) = p.table(sink, "weights") {
        for (id, item) in w.entries() {
            let at = find_ref(sink, &cx.provider_ids, "provider", &id);
            let pid = ProviderId(id.value.clone().into());
            let Some(n) = item.as_integer().and_then(|n| u32::try_from(n).ok()) else {
                sink.error(
                    id.span.as_ref(),
                    format!("weight of `{}` must be a non-negative integer", id.value),
                );
                continue;
            };
            if at.is_some_and(|i| {
                require.deny.contains(i)
                    || require
                        .providers
                        .as_ref()
                        .is_some_and(|allow| !allow.contains(i))
            }) {
                sink.error_help(
                    id.span.as_ref(),
                    format!(
                        "weight for `{}` cannot apply: this rule's `require` excludes it",
                        id.value
                    ),
                    "remove the weight or the exclusion",
                );
            }
            weights.insert(pid, n);
        }
        if !weights.is_empty() && weights.values().all(|w| *w == 0) {
            sink.error_help(
                p.key_span("weights").as_ref(),
                "every weight is zero, so no weighted choice can be made",
                "give at least one provider a positive weight",
            );
        }
    }
    Prefer {
        order: order.into(),
        sort,
        weights: weights.into_iter().collect(),
    }
}
