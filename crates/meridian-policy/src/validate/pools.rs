//! `[providers.pool]`: a self-hosted provider's replicas and how one is chosen.

use super::*;
use crate::pool::{Balance, Engine, Pool, Replica};

/// Reads a provider's pool. `place`: the provider's own `location` and its countries, the
/// default of every replica that states none.
pub(super) fn read_pool(
    sink: &mut Sink,
    cx: &Ctx,
    t: &Obj,
    provider: &str,
    place: Option<(&Sp<String>, &CountrySet)>,
    self_hosted: bool,
) -> Option<Pool> {
    t.deny_unknown(sink, POOL_KEYS);
    if !self_hosted {
        sink.error_help(
            t.span.as_ref(),
            format!("provider `{provider}` has a pool but is not `self_hosted`: pools are the operator's own engines, chosen by their load"),
            "add `self_hosted = true`, or give it one `base_url` instead of a pool",
        );
    }
    let balance = match t.str(sink, "balance") {
        None => Some(Balance::Prefix),
        Some(b) => Balance::parse(&b.value).or_else(|| {
            sink.error_help(
                b.span.as_ref(),
                format!("unknown balance `{}`", b.value),
                suggest(&b.value, Balance::NAMES),
            );
            None
        }),
    };
    let engine = match t.str(sink, "engine") {
        None => Some(Engine::Vllm),
        Some(e) => Engine::parse(&e.value).or_else(|| {
            sink.error_help(
                e.span.as_ref(),
                format!("unknown engine `{}`", e.value),
                suggest(&e.value, Engine::NAMES),
            );
            None
        }),
    };
    let max_queue = t.uint(sink, "max_queue").and_then(|n| {
        if n == 0 {
            sink.error_help(
                t.key_span("max_queue").as_ref(),
                "`max_queue = 0` sheds every request",
                "the waiting requests a replica may have before it takes no new one, e.g. `max_queue = 16`",
            );
            return None;
        }
        Some(u32::try_from(n).unwrap_or(u32::MAX))
    });
    let load_bound = match t.number(sink, "load_bound") {
        None => Some(Pool::DEFAULT_LOAD_BOUND),
        Some(v) if v.value > 1.0 && v.value.is_finite() => Some(v.value),
        Some(v) => {
            sink.error_help(
                v.span.as_ref(),
                format!("`load_bound` is {}: it is the most a replica may carry as a multiple of the pool's mean load, so above 1", v.value),
                "e.g. `load_bound = 1.25`",
            );
            None
        }
    };
    let prefix_bytes = match t.uint(sink, "prefix_bytes") {
        None => Some(Pool::DEFAULT_PREFIX_BYTES),
        Some(n) if (16..=65_536).contains(&n) => u32::try_from(n).ok(),
        Some(n) => {
            sink.error_help(
                t.key_span("prefix_bytes").as_ref(),
                format!("`prefix_bytes = {n}` is out of range"),
                "16 to 65536 leading bytes of the prompt, e.g. `prefix_bytes = 256`",
            );
            None
        }
    };
    let stale_after_s = match t.uint(sink, "stale_after_s") {
        None => Some(Pool::DEFAULT_STALE_AFTER_S),
        Some(n) if (1..=3600).contains(&n) => u32::try_from(n).ok(),
        Some(n) => {
            sink.error_help(
                t.key_span("stale_after_s").as_ref(),
                format!("`stale_after_s = {n}` is out of range"),
                "1 to 3600 seconds, a few times the scraper's interval, e.g. `stale_after_s = 10`",
            );
            None
        }
    };
    let tables = t.tables(sink, "replicas");
    if tables.is_empty() {
        sink.error_help(
            t.span.as_ref(),
            format!("the pool of provider `{provider}` has no replicas"),
            "add `[[providers.pool.replicas]]` entries, each with `name` and `base_url`",
        );
    }
    if tables.len() > Pool::MAX_REPLICAS {
        sink.error(
            t.key_span("replicas").as_ref(),
            format!(
                "the pool of provider `{provider}` has {} replicas; at most {} are supported",
                tables.len(),
                Pool::MAX_REPLICAS
            ),
        );
    }
    let mut replicas: Vec<Replica> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut complete = true;
    for r in tables.iter().take(Pool::MAX_REPLICAS) {
        r.deny_unknown(sink, REPLICA_KEYS);
        let name = r.req_str(sink, "name");
        if let Some(n) = &name {
            if !is_id(&n.value) {
                sink.error(n.span.as_ref(), bad_id_message("replica", &n.value));
            } else if names.contains(&n.value) {
                sink.error_help(
                    n.span.as_ref(),
                    format!("duplicate replica `{}` in provider `{provider}`", n.value),
                    "each replica of a pool needs its own name",
                );
            }
            names.push(n.value.clone());
        }
        let base_url = r
            .req_str(sink, "base_url")
            .and_then(|u| super::providers::read_base_url(sink, &u));
        let metrics_url = match r.str(sink, "metrics_url") {
            Some(u) => super::providers::read_base_url(sink, &u).map(Some),
            None => Some(None),
        };
        let own = r.str(sink, "location");
        let located = match (&own, place) {
            (Some(l), _) => {
                let countries = resolve_residency(sink, cx, std::slice::from_ref(l)).countries;
                Some((l.value.clone(), countries))
            }
            (None, Some((l, c))) => Some((l.value.clone(), *c)),
            (None, None) => {
                sink.error_help(
                    r.span.as_ref(),
                    format!(
                        "replica `{}` of provider `{provider}` has no `location`, and neither has its provider",
                        name.as_ref().map_or("?", |n| n.value.as_str())
                    ),
                    "give the replica a `location` (a country code or jurisdiction), or the provider one for all its replicas",
                );
                None
            }
        };
        let (Some(name), Some(base_url), Some(metrics_url), Some((location, countries))) =
            (name, base_url, metrics_url, located)
        else {
            complete = false;
            continue;
        };
        let metrics_url = match metrics_url {
            Some(u) => u,
            None => default_metrics_url(&base_url, engine.unwrap_or_default())?,
        };
        replicas.push(Replica {
            name: name.value.into(),
            base_url,
            metrics_url,
            location: location.into(),
            single_country: countries.single(),
            countries,
        });
    }
    let (Some(balance), Some(engine), Some(load_bound), Some(prefix_bytes), Some(stale_after_s)) =
        (balance, engine, load_bound, prefix_bytes, stale_after_s)
    else {
        return None;
    };
    if !complete || replicas.is_empty() {
        return None;
    }
    Some(Pool {
        balance,
        engine,
        replicas: replicas.into(),
        max_queue,
        load_bound,
        prefix_bytes,
        stale_after_s,
    })
}

/// Where the scraper reads a replica's load by default: its origin's `/metrics` (vLLM, SGLang,
/// llama.cpp server with `--metrics`), or `/` for an engine without metrics (Ollama answers
/// there when it is up).
fn default_metrics_url(base: &BaseUrl, engine: Engine) -> Option<BaseUrl> {
    let mut u = base.url().ok()?;
    u.set_path(if engine == Engine::None {
        "/"
    } else {
        "/metrics"
    });
    Some(BaseUrl::new(&u))
}
