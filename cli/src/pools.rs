//! `meridian pool-scrape`: keeps every pool's load summary fresh in the shared store.
//!
//! A WASI 0.2 instance lives for one request, so nothing inside the component can measure
//! engines continuously. This loop can: beside Spin, as a SpinKube sidecar or as its own
//! Deployment (docs/deploying.md). Every `--interval-ms` it reads each replica's metrics
//! endpoint (at most `--timeout-ms` each, all replicas at once) and writes one value, the
//! summary every request reads once (`meridian:v1:pools`), to the Redis the runtime config's
//! key-value store points at.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meridian::policy::{Engine, Policy};
use meridian::pool::{Load, PoolLoad, Summary, KEY};

#[derive(clap::Args)]
pub struct ScrapeArgs {
    /// The policy whose pools to measure (its `[providers.pool]` replicas).
    #[arg(long)]
    pub policy: PathBuf,
    /// The shared store: the Redis that the runtime config's `[key_value_store.default]`
    /// points at.
    #[arg(
        long,
        env = "MERIDIAN_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis: String,
    /// How often to measure, in milliseconds (keep it well under the pools' `stale_after_s`).
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// The most one replica's metrics may take, in milliseconds; a replica slower than this is
    /// written as down.
    #[arg(long, default_value_t = 500)]
    pub timeout_ms: u64,
    /// Measure once, write, print the summary and exit (for a cron job or a test).
    #[arg(long)]
    pub once: bool,
}

/// One replica to measure.
struct Target {
    provider: String,
    replica: String,
    url: String,
    engine: Engine,
}

fn targets(policy: &Policy) -> Vec<Target> {
    let mut out = Vec::new();
    for p in policy.providers.iter() {
        let Some(pool) = &p.pool else { continue };
        for r in pool.replicas.iter() {
            out.push(Target {
                provider: p.id.to_string(),
                replica: r.name.to_string(),
                url: r.metrics_url.as_str().to_string(),
                engine: pool.engine,
            });
        }
    }
    out
}

pub fn run(a: &ScrapeArgs) -> Result<(), String> {
    let policy = super::load(&a.policy)?;
    let targets = targets(&policy);
    if targets.is_empty() {
        return Err(format!(
            "{}: no provider has a `[providers.pool]`: nothing to measure",
            a.policy.display()
        ));
    }
    let client =
        redis::Client::open(a.redis.as_str()).map_err(|e| format!("--redis {}: {e}", a.redis))?;
    let timeout = Duration::from_millis(a.timeout_ms.max(1));
    let agent = ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(0)
        .build();
    let mut conn: Option<redis::Connection> = None;
    let mut last_error: Option<String> = None;
    loop {
        let started = Instant::now();
        let mut summary = measure(&agent, &targets);
        // Engines without metrics: Meridian's own in-flight counts, from the same store.
        let counted = in_flight(&client, &mut conn, timeout, &targets, &mut summary);
        let json = serde_json::to_string(&summary).map_err(|e| e.to_string())?;
        let written = counted.and_then(|()| write(&client, &mut conn, timeout, &json));
        match (&written, &last_error) {
            (Err(e), Some(prev)) if e == prev => {}
            (Err(e), _) => eprintln!("meridian pool-scrape: cannot write {KEY}: {e}"),
            (Ok(()), Some(_)) => eprintln!("meridian pool-scrape: writing {KEY} again"),
            (Ok(()), None) => {}
        }
        last_error = written.as_ref().err().cloned();
        if a.once {
            println!("{json}");
            return written.map_err(|e| format!("cannot write {KEY}: {e}"));
        }
        let interval = Duration::from_millis(a.interval_ms.max(100));
        if let Some(rest) = interval.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

/// The connection, made when there is none; every wait bounded by `timeout`.
fn connection<'a>(
    client: &redis::Client,
    conn: &'a mut Option<redis::Connection>,
    timeout: Duration,
) -> Result<&'a mut redis::Connection, String> {
    if conn.is_none() {
        let c = client
            .get_connection_with_timeout(timeout)
            .map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        c.set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        *conn = Some(c);
    }
    conn.as_mut().ok_or_else(|| "no connection".to_string())
}

fn write(
    client: &redis::Client,
    conn: &mut Option<redis::Connection>,
    timeout: Duration,
    json: &str,
) -> Result<(), String> {
    let c = connection(client, conn, timeout)?;
    let r: redis::RedisResult<()> = redis::cmd("SET").arg(KEY).arg(json).query(c);
    r.map_err(|e| {
        // Connect again next time.
        *conn = None;
        e.to_string()
    })
}

/// For each replica of an engine without metrics that answered: the requests Meridian counts in
/// flight there (this slot's count and the previous one's, as in-flight limits read them), as
/// its `running`. One `MGET` for all of them.
fn in_flight(
    client: &redis::Client,
    conn: &mut Option<redis::Connection>,
    timeout: Duration,
    targets: &[Target],
    summary: &mut Summary,
) -> Result<(), String> {
    let counted: Vec<&Target> = targets
        .iter()
        .filter(|t| t.engine == Engine::None)
        .collect();
    if counted.is_empty() {
        return Ok(());
    }
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let slot = meridian::limits::CONCURRENCY_SLOT_S;
    let mut keys = Vec::with_capacity(counted.len() * 2);
    for t in &counted {
        keys.push(meridian::pool::inflight_key(&t.provider, &t.replica, now_s));
        keys.push(meridian::pool::inflight_key(
            &t.provider,
            &t.replica,
            now_s.saturating_sub(slot),
        ));
    }
    let c = connection(client, conn, timeout)?;
    let r: redis::RedisResult<Vec<Option<i64>>> = redis::cmd("MGET").arg(&keys).query(c);
    let values = r.map_err(|e| {
        *conn = None;
        e.to_string()
    })?;
    for (t, pair) in counted.iter().zip(values.chunks(2)) {
        let n: i64 = pair.iter().map(|v| v.unwrap_or(0)).sum();
        add_running(summary, t, n);
    }
    Ok(())
}

/// Sets a replica's `running` to Meridian's count, when it answered.
fn add_running(summary: &mut Summary, t: &Target, n: i64) {
    if let Some(l) = summary
        .get_mut(&t.provider)
        .and_then(|p| p.replicas.get_mut(&t.replica))
        .filter(|l| l.healthy)
    {
        l.running = u32::try_from(n.max(0)).unwrap_or(u32::MAX);
    }
}

/// Measures every replica at once; each pool's `at_ms` is when its measuring began.
fn measure(agent: &ureq::Agent, targets: &[Target]) -> Summary {
    let at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let loads: Vec<Load> = std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .map(|t| s.spawn(|| read_one(agent, t)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(DOWN))
            .collect()
    });
    let mut summary: Summary = BTreeMap::new();
    for (t, load) in targets.iter().zip(loads) {
        summary
            .entry(t.provider.clone())
            .or_insert_with(|| PoolLoad {
                at_ms,
                replicas: BTreeMap::new(),
            })
            .replicas
            .insert(t.replica.clone(), load);
    }
    summary
}

const DOWN: Load = Load {
    waiting: 0,
    running: 0,
    kv: None,
    healthy: false,
};

/// The most of a metrics page read (engines' pages are tens of kilobytes).
const MAX_METRICS_BYTES: u64 = 4 * 1024 * 1024;

fn read_one(agent: &ureq::Agent, t: &Target) -> Load {
    let Ok(resp) = agent.get(&t.url).call() else {
        return DOWN;
    };
    if t.engine == Engine::None {
        return Load {
            healthy: true,
            ..DOWN
        };
    }
    let mut text = String::new();
    use std::io::Read as _;
    if resp
        .into_reader()
        .take(MAX_METRICS_BYTES)
        .read_to_string(&mut text)
        .is_err()
    {
        return DOWN;
    }
    parse_metrics(t.engine, &text).unwrap_or(DOWN)
}

/// The metric names each engine exposes: waiting, running, and the KV cache's use (0 to 1).
/// vLLM's older `vllm:gpu_cache_usage_perc` is read where `vllm:kv_cache_usage_perc` is absent.
fn names(engine: Engine) -> (&'static str, &'static str, &'static [&'static str]) {
    match engine {
        Engine::Vllm => (
            "vllm:num_requests_waiting",
            "vllm:num_requests_running",
            &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
        ),
        Engine::Sglang => (
            "sglang:num_queue_reqs",
            "sglang:num_running_reqs",
            &["sglang:token_usage"],
        ),
        Engine::Llamacpp => (
            "llamacpp:requests_deferred",
            "llamacpp:requests_processing",
            &[],
        ),
        Engine::None => ("", "", &[]),
    }
}

/// The samples of a Prometheus text exposition (format 0.0.4): each line's metric name and
/// value; comments, blank lines and lines that do not parse are skipped. Written here because
/// the published parsers reject the names engines use: Prometheus allows `:` in metric names
/// and vLLM, SGLang and llama.cpp all put one there (`vllm:num_requests_waiting`), which
/// `prometheus-parse` 0.2 (`\w+`) and `openmetrics-parser` 0.4 (lower case, digits and `_`)
/// do not read.
fn samples(text: &str) -> Vec<(&str, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let end = line
            .find(|c: char| c == '{' || c.is_ascii_whitespace())
            .unwrap_or(line.len());
        let (name, mut rest) = line.split_at(end);
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        {
            continue;
        }
        if rest.starts_with('{') {
            // Labels: quoted values may hold `}` and escaped quotes.
            let mut quoted = false;
            let mut escaped = false;
            let mut close = None;
            for (i, c) in rest.char_indices().skip(1) {
                match (quoted, escaped, c) {
                    (true, true, _) => escaped = false,
                    (true, false, '\\') => escaped = true,
                    (_, false, '"') => quoted = !quoted,
                    (false, _, '}') => {
                        close = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let Some(close) = close else { continue };
            rest = &rest[close + 1..];
        }
        let Some(value) = rest.split_ascii_whitespace().next() else {
            continue;
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        out.push((name, value));
    }
    out
}

/// A replica's load from its Prometheus text: waiting and running summed over every series
/// (an engine may label one per model or per data-parallel rank), KV use the highest. `None`
/// when the page is not Prometheus text or holds neither count: the replica is not what the
/// pool says it is, and is written as down.
pub fn parse_metrics(engine: Engine, text: &str) -> Option<Load> {
    let samples = samples(text);
    let (waiting, running, kv) = names(engine);
    let sum = |name: &str| -> Option<f64> {
        samples
            .iter()
            .filter(|(n, v)| *n == name && v.is_finite() && *v >= 0.0)
            .map(|(_, v)| *v)
            .reduce(|a, b| a + b)
    };
    let w = sum(waiting);
    let r = sum(running);
    if w.is_none() && r.is_none() {
        return None;
    }
    let kv = kv.iter().find_map(|name| {
        samples
            .iter()
            .filter(|(n, v)| n == name && v.is_finite())
            .map(|(_, v)| *v)
            .reduce(f64::max)
    });
    let count = |v: Option<f64>| v.map_or(0, |v| v.round().min(f64::from(u32::MAX)) as u32);
    Some(Load {
        waiting: count(w),
        running: count(r),
        kv: kv.map(|k| k.clamp(0.0, 1.0)),
        healthy: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written here in each engine's exposition format, with the metric names their sources
    // define (vLLM `vllm/v1/metrics/loggers.py`, SGLang `python/sglang/srt/metrics/collector.py`,
    // llama.cpp `tools/server/server.cpp`).
    const VLLM: &str =
        "# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 3.0
vllm:num_requests_running{engine=\"1\",model_name=\"m\"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 7.0
vllm:num_requests_waiting{engine=\"1\",model_name=\"m\"} 1.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.42
vllm:kv_cache_usage_perc{engine=\"1\",model_name=\"m\"} 0.61
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine=\"0\",model_name=\"m\"} 12345.0
";

    #[test]
    fn vllm_counts_are_summed_over_series_and_kv_is_the_highest() {
        let l = parse_metrics(Engine::Vllm, VLLM).unwrap();
        assert_eq!((l.waiting, l.running, l.healthy), (8, 5, true));
        assert_eq!(l.kv, Some(0.61));
    }

    #[test]
    fn older_vllm_reports_kv_as_gpu_cache_usage() {
        let text = "vllm:num_requests_waiting{model_name=\"m\"} 0\nvllm:num_requests_running{model_name=\"m\"} 1\nvllm:gpu_cache_usage_perc{model_name=\"m\"} 0.25\n";
        let l = parse_metrics(Engine::Vllm, text).unwrap();
        assert_eq!((l.waiting, l.running, l.kv), (0, 1, Some(0.25)));
    }

    #[test]
    fn sglang_and_llamacpp_names() {
        let sg = "# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs{model_name=\"m\"} 4\n# TYPE sglang:num_running_reqs gauge\nsglang:num_running_reqs{model_name=\"m\"} 9\n# TYPE sglang:token_usage gauge\nsglang:token_usage{model_name=\"m\"} 0.5\n";
        let l = parse_metrics(Engine::Sglang, sg).unwrap();
        assert_eq!((l.waiting, l.running, l.kv), (4, 9, Some(0.5)));
        let ll = "# HELP llamacpp:requests_processing Number of requests processing.\n# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 2\n# HELP llamacpp:requests_deferred Number of requests deferred.\n# TYPE llamacpp:requests_deferred gauge\nllamacpp:requests_deferred 6\n";
        let l = parse_metrics(Engine::Llamacpp, ll).unwrap();
        assert_eq!((l.waiting, l.running, l.kv), (6, 2, None));
    }

    #[test]
    fn label_values_may_hold_braces_quotes_and_spaces() {
        let text = "vllm:num_requests_waiting{model_name=\"a } \\\" b\",x=\"{\"} 5 1700000000000\nvllm:num_requests_running 2\nbroken{ 9\nvllm:num_requests_waiting{model_name=\"c\"} NaN\n";
        let l = parse_metrics(Engine::Vllm, text).unwrap();
        assert_eq!((l.waiting, l.running), (5, 2));
    }

    #[test]
    fn a_page_without_the_engines_counts_is_no_load() {
        // Another engine's page, or not metrics at all: the replica is written as down.
        assert_eq!(
            parse_metrics(Engine::Vllm, VLLM.replace("vllm:", "sglang:").as_str()),
            None
        );
        assert_eq!(parse_metrics(Engine::Sglang, "<html>hello</html>"), None);
        assert_eq!(parse_metrics(Engine::Vllm, ""), None);
    }
}
