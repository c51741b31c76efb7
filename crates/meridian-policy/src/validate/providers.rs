//! `[[providers]]`: the catalog, its locations and model maps.

use super::*;

pub(super) fn read_providers(sink: &mut Sink, top: &Obj, cx: &mut Ctx) -> Vec<Provider> {
    let mut out = Vec::new();
    let tables = top.tables(sink, "providers");
    if tables.is_empty() && top.key_span("providers").is_some() {
        // An empty catalog is legal but serves nothing; nothing to add.
    }
    for t in tables {
        t.deny_unknown(sink, PROVIDER_KEYS);
        let id = t.req_str(sink, "id");
        if let Some(id) = &id {
            if !is_id(&id.value) {
                sink.error(id.span.as_ref(), bad_id_message("provider", &id.value));
            } else if cx.provider_ids.contains(&id.value) {
                sink.error_help(
                    id.span.as_ref(),
                    format!("duplicate provider id `{}`", id.value),
                    "each provider needs its own id",
                );
            }
        }
        let kind = match t.str(sink, "kind") {
            None => Some(WireKind::OpenAi),
            Some(k) => match k.value.as_str() {
                "openai" => Some(WireKind::OpenAi),
                "azure" => Some(WireKind::Azure),
                "anthropic" => Some(WireKind::Anthropic),
                other => {
                    sink.error_help(
                        k.span.as_ref(),
                        format!("unknown provider kind `{other}`"),
                        suggest(other, KINDS),
                    );
                    None
                }
            },
        };
        let pooled = t.raw("pool").is_some();
        if pooled && t.raw("base_url").is_some() {
            sink.error_help(
                t.key_span("base_url").as_ref(),
                "a pool's provider has no `base_url` of its own: each of its replicas has one",
                "move it into a `[[providers.pool.replicas]]` entry",
            );
        }
        let base_url = if pooled {
            None
        } else {
            t.req_str(sink, "base_url")
        }
        .and_then(|u| read_base_url(sink, &u));
        let key_secret = read_key_secret(sink, &t);
        let location = if pooled {
            t.str(sink, "location")
        } else {
            t.req_str(sink, "location")
        };
        let countries = location
            .as_ref()
            .map(|l| resolve_residency(sink, cx, std::slice::from_ref(l)).countries);
        let models = read_models(sink, &t, cx);
        let weight = t.uint(sink, "weight").unwrap_or(1);
        let latency = t.uint(sink, "latency_ms");
        let retention = t.uint(sink, "retention_days");
        let trains_on_inputs = t.bool(sink, "trains_on_inputs");
        let zdr = t.bool(sink, "zdr").unwrap_or(false);
        let self_hosted = t.bool(sink, "self_hosted").unwrap_or(false);
        let api_version = t.str(sink, "api_version").map(|v| v.value);
        if let (Some(v), Some(WireKind::OpenAi)) = (&api_version, kind) {
            sink.error_help(
                t.key_span("api_version").as_ref(),
                format!("`api_version` `{v}` applies to `azure` and `anthropic` providers only"),
                "remove it, or set `kind`",
            );
        }
        if api_version.as_ref().is_some_and(|v| {
            v.is_empty()
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }) {
            sink.error(
                t.key_span("api_version").as_ref(),
                "`api_version` must be letters, digits, `-` and `.`, e.g. `2024-10-21`",
            );
        }
        let max_tokens = t
            .uint(sink, "max_tokens")
            .and_then(|n| u32::try_from(n).ok());
        if max_tokens.is_some() && kind != Some(WireKind::Anthropic) {
            sink.error_help(
                t.key_span("max_tokens").as_ref(),
                "`max_tokens` (the default for requests that give none) applies to `anthropic` providers only",
                "remove it; tenants' `max_tokens` caps what requests may ask for",
            );
        }
        if let (Some(_), Some(u)) = (&key_secret, &base_url) {
            if let Ok(url) = u.url() {
                let loopback = match url.host() {
                    Some(url::Host::Domain(d)) => d == "localhost",
                    Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                    None => false,
                };
                if url.scheme() == "http" && !loopback {
                    sink.warn(
                        t.key_span("base_url").as_ref(),
                        format!(
                            "provider `{}` sends the operator's key over plain `http://`: anyone on the path can read it",
                            id.as_ref().map_or("?", |i| i.value.as_str())
                        ),
                        "use `https://`, or drop `key_secret` for a keyless engine on a private network",
                    );
                }
            }
        }
        if trains_on_inputs.is_none() || (retention.is_none() && !zdr) {
            let missing: Vec<&str> = [
                trains_on_inputs.is_none().then_some("`trains_on_inputs`"),
                (retention.is_none() && !zdr).then_some("`retention_days`"),
            ]
            .into_iter()
            .flatten()
            .collect();
            sink.warn(
                t.span.as_ref(),
                format!(
                    "provider `{}` does not state {}: unstated is unknown, and an unknown never satisfies `no-training` or `no-data-collection`",
                    id.as_ref().map_or("?", |i| i.value.as_str()),
                    missing.join(" or ")
                ),
                "state what the provider's terms say, e.g. `trains_on_inputs = false` and `retention_days = 30`",
            );
        }
        let capabilities = match t.str_list(sink, "capabilities") {
            Some(l) => read_capabilities(sink, &l),
            None if self_hosted => CapSet::EMPTY,
            None => CapSet::HOSTED_DEFAULT,
        };
        if capabilities.contains(Capability::Store) && zdr {
            sink.error_help(
                t.key_span("capabilities").as_ref(),
                "a provider with `zdr = true` cannot be granted `store`: stored conversations are retained",
                "remove `store` from `capabilities`, or `zdr`",
            );
        }
        let anthropic_betas: Vec<Glob> = match t.str_list(sink, "anthropic_beta") {
            Some(l) => {
                if kind != Some(WireKind::Anthropic) {
                    sink.error_help(
                        t.key_span("anthropic_beta").as_ref(),
                        "`anthropic_beta` applies to `anthropic` providers only",
                        "remove it, or set `kind = \"anthropic\"`",
                    );
                }
                l.iter().map(|g| Glob::new(&g.value)).collect()
            }
            None => DEFAULT_ANTHROPIC_BETAS
                .iter()
                .map(|g| Glob::new(g))
                .collect(),
        };
        if let Some(id) = &id {
            cx.provider_ids.push(id.value.clone());
        }
        let responses = t.bool(sink, "responses").unwrap_or(false);
        if responses && kind.is_some_and(|k| k != WireKind::OpenAi) {
            sink.error_help(
                t.key_span("responses").as_ref(),
                "`responses = true` applies to `openai` providers only",
                "remove it: Meridian translates /v1/responses requests to chat for this provider",
            );
        }
        let pool = t.table(sink, "pool").and_then(|pt| {
            super::pools::read_pool(
                sink,
                cx,
                &pt,
                id.as_ref().map_or("?", |i| i.value.as_str()),
                location.as_ref().zip(countries.as_ref()),
                self_hosted,
            )
        });
        if let (Some(p), Some(id)) = (&pool, &id) {
            cx.replicas.extend(
                p.replicas
                    .iter()
                    .map(|r| format!("{}@{}", id.value, r.name)),
            );
        }
        // A pool's provider stands for its replicas: it processes data wherever any does.
        let (base_url, location, countries) = match &pool {
            Some(p) => (
                p.replicas.first().map(|r| r.base_url.clone()),
                Some(Sp {
                    value: p.places(p.all()),
                    span: t.key_span("pool"),
                }),
                Some(p.countries()),
            ),
            None if pooled => (None, None, None),
            None => (base_url, location, countries),
        };
        let (storage, safeguard) = super::evidence::read_recipient(
            sink,
            &t,
            cx,
            "provider",
            id.as_ref().map_or("", |i| i.value.as_str()),
            countries.as_ref(),
        );
        let (Some(id), Some(kind), Some(base_url), Some(location), Some(countries)) =
            (id, kind, base_url, location, countries)
        else {
            continue;
        };
        out.push(Provider {
            id: ProviderId(id.value.into()),
            kind,
            base_url,
            key_secret: key_secret.map(Into::into),
            location: location.value.into(),
            single_country: countries.single(),
            countries,
            retention_days: retention.map(|r| u32::try_from(r).unwrap_or(u32::MAX)),
            trains_on_inputs,
            zdr,
            self_hosted,
            models: models.into(),
            latency_ms: latency.map(|l| u32::try_from(l).unwrap_or(u32::MAX)),
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
            api_version: api_version.map(Into::into),
            max_tokens,
            capabilities,
            anthropic_betas: anthropic_betas.into(),
            responses,
            storage,
            safeguard,
            pool,
        });
    }
    out
}

/// A `base_url`: http or https with a host, no query or fragment.
pub(super) fn read_base_url(sink: &mut Sink, u: &Sp<String>) -> Option<BaseUrl> {
    match url::Url::parse(&u.value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            if url.query().is_some() || url.fragment().is_some() {
                sink.error(
                    u.span.as_ref(),
                    "`base_url` must not have a query or fragment",
                );
                None
            } else {
                Some(BaseUrl::new(&url))
            }
        }
        Ok(_) => {
            sink.error_help(
                u.span.as_ref(),
                format!(
                    "`base_url` `{}` must be an http or https URL with a host",
                    u.value
                ),
                "e.g. `https://api.openai.com/v1`",
            );
            None
        }
        Err(e) => {
            sink.error(
                u.span.as_ref(),
                format!("`base_url` `{}` is not a URL: {e}", u.value),
            );
            None
        }
    }
}

pub(super) fn read_models(sink: &mut Sink, t: &Obj, cx: &mut Ctx) -> BTreeMap<String, ModelEntry> {
    let mut models = BTreeMap::new();
    let Some(m) = t.table(sink, "models") else {
        if t.key_span("models").is_some() && t.span.is_some() {
            // mistyped: already reported by `table`
        } else {
            t_missing_models(sink, t);
        }
        return models;
    };
    for (name, item) in m.entries() {
        let entry = if let Some(s) = item.as_str() {
            Some(ModelEntry {
                upstream: s.to_string().into(),
                input_price: None,
                output_price: None,
                cache_read_price: None,
                cache_write_price: None,
                context_window: None,
                max_output: None,
                option_price_factor: None,
            })
        } else if item.is_table_like() {
            m.table(sink, &name.value).map(|e| {
                e.deny_unknown(sink, MODEL_KEYS);
                let upstream = e
                    .str(sink, "id")
                    .map_or_else(|| name.value.clone(), |s| s.value);
                ModelEntry {
                    upstream: upstream.into(),
                    input_price: e.number(sink, "input_price").map(|v| v.value),
                    output_price: e.number(sink, "output_price").map(|v| v.value),
                    cache_read_price: e.number(sink, "cache_read_price").map(|v| v.value),
                    cache_write_price: e.number(sink, "cache_write_price").map(|v| v.value),
                    context_window: e.uint(sink, "context_window"),
                    max_output: e.uint(sink, "max_output"),
                    option_price_factor: e.number(sink, "option_price_factor").and_then(|v| {
                        if v.value >= 1.0 {
                            Some(v.value)
                        } else {
                            sink.error_help(
                                v.span.as_ref(),
                                format!("`{}.option_price_factor` is {}: it multiplies the prices, so it is at least 1", e.path, v.value),
                                "e.g. `option_price_factor = 2.0` where the dearest option doubles the price",
                            );
                            None
                        }
                    }),
                }
            })
        } else {
            sink.error_help(
                name.span.as_ref(),
                format!("model `{}` must be a string or a table", name.value),
                "e.g. `\"gpt-4o-mini\" = \"gpt-4o-mini-2024-07-18\"` or `{ id = \"…\", input_price = 0.15, output_price = 0.6 }`",
            );
            None
        };
        if let Some(e) = entry {
            cx.models.insert(name.value.clone());
            models.insert(name.value, e);
        }
    }
    models
}

pub(super) fn t_missing_models(sink: &mut Sink, t: &Obj) {
    sink.error_help(
        t.span.as_ref(),
        format!("`{}` is missing the required key `models`", t.path),
        "add `models = { \"public-name\" = \"provider-model-id\" }`",
    );
}
