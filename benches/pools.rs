//! A simulation of a self-hosted pool (docs/pools.md), since no GPU is available here: mock
//! engines that model a KV cache and a queue, driven by a workload of many conversations that
//! share a few system prompts, routed three ways in the same run: round robin, `least_load`
//! and `prefix`. The last two call Meridian's own choice (`meridian::pool::choose`) on a load
//! summary refreshed as `meridian pool-scrape` would refresh it, and key prompts with its own
//! `PrefixHasher`. It prints time to first token (p50, p99), the cache hit rate and the
//! replicas' balance, and the model's parameters.
//!
//! It is a model, not a measurement of an engine: its figures show how the strategies differ
//! under these stated assumptions, not what a given GPU does.
//!
//! `POOL_SIM_SECONDS` (default 900) sets the simulated time; `POOL_SIM_SEED` the seed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use meridian::policy::{Balance, BaseUrl, CountrySet, Pool, Replica};
use meridian::pool::{choose, Load, PoolLoad, PrefixHasher};

/// The model's parameters, printed with the results.
struct Model {
    replicas: usize,
    /// Requests an engine runs at once (its batch); more wait in its queue.
    slots: usize,
    /// Prefixes an engine's KV cache holds (least recently used out first).
    cache_entries: usize,
    /// Prefill with nothing cached; with the system prompt cached; with the conversation cached.
    prefill_ms: f64,
    system_hit_factor: f64,
    conversation_hit_factor: f64,
    /// Decoding after the first token (the slot stays taken).
    decode_ms: f64,
    apps: usize,
    turns: usize,
    think_ms: f64,
    conversations_per_s: f64,
    scrape_ms: f64,
    seconds: f64,
}

const MODEL: Model = Model {
    replicas: 6,
    slots: 8,
    cache_entries: 48,
    prefill_ms: 600.0,
    system_hit_factor: 2.0,
    conversation_hit_factor: 8.0,
    decode_ms: 1_500.0,
    apps: 8,
    turns: 6,
    think_ms: 4_000.0,
    conversations_per_s: 3.6,
    scrape_ms: 1_000.0,
    seconds: 900.0,
};

#[derive(Clone, Copy, PartialEq)]
enum Strategy {
    RoundRobin,
    LeastLoad,
    Prefix,
}

impl Strategy {
    fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round robin",
            Strategy::LeastLoad => "least_load",
            Strategy::Prefix => "prefix",
        }
    }
}

/// splitmix64: a small, seeded generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

struct Conversation {
    app: usize,
    key: u64,
    turns_left: usize,
}

struct Waiting {
    conversation: usize,
    arrived: f64,
}

struct Engine {
    running: usize,
    queue: VecDeque<Waiting>,
    /// Cached prefixes, most recent last: `(true, app)` a system prompt, `(false, c)` a
    /// conversation.
    cache: VecDeque<(bool, usize)>,
    served: u64,
}

impl Engine {
    fn touch(&mut self, entry: (bool, usize), cap: usize) -> bool {
        let hit = if let Some(i) = self.cache.iter().position(|e| *e == entry) {
            self.cache.remove(i);
            true
        } else {
            false
        };
        self.cache.push_back(entry);
        while self.cache.len() > cap {
            self.cache.pop_front();
        }
        hit
    }
}

/// A time in the simulation, ordered by `total_cmp`.
struct At(f64);
impl PartialEq for At {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o).is_eq()
    }
}
impl Eq for At {}
impl PartialOrd for At {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for At {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A conversation's next request arrives.
    Arrive(usize),
    /// An engine finishes a conversation's request.
    Finish(usize, usize),
    /// The scraper measures every engine.
    Scrape,
    /// A new conversation starts.
    Start,
}

struct Outcome {
    ttft: Vec<f64>,
    conversation_hits: u64,
    system_hits: u64,
    requests: u64,
    served: Vec<u64>,
}

fn pool(balance: Balance) -> Pool {
    let replicas: Vec<Replica> = (0..MODEL.replicas)
        .map(|i| {
            let url: String = format!("http://engine-{i}:8000/v1");
            Replica {
                name: format!("engine-{i}").into(),
                base_url: BaseUrl(url.clone().into()),
                metrics_url: BaseUrl(url.into()),
                location: "DE".into(),
                countries: CountrySet::new(),
                single_country: None,
            }
        })
        .collect();
    Pool {
        balance,
        engine: Default::default(),
        replicas: replicas.into(),
        max_queue: None,
        load_bound: Pool::DEFAULT_LOAD_BOUND,
        prefix_bytes: Pool::DEFAULT_PREFIX_BYTES,
        stale_after_s: Pool::DEFAULT_STALE_AFTER_S,
    }
}

/// What each app's system prompt says (about 150 bytes: the conversation's first question
/// falls inside the 256-byte prefix).
fn system_prompt(app: usize) -> String {
    format!(
        "You are the assistant of shop number {app}. Answer questions about orders, invoices and returns in two sentences; be polite; never promise a refund."
    )
}

fn run(strategy: Strategy, seed: u64, seconds: f64, scrape_ms: f64) -> Outcome {
    let m = &MODEL;
    let p = pool(match strategy {
        Strategy::LeastLoad => Balance::LeastLoad,
        _ => Balance::Prefix,
    });
    let mut rng = Rng(seed);
    let mut engines: Vec<Engine> = (0..m.replicas)
        .map(|_| Engine {
            running: 0,
            queue: VecDeque::new(),
            cache: VecDeque::new(),
            served: 0,
        })
        .collect();
    let mut conversations: Vec<Conversation> = Vec::new();
    let mut events: BinaryHeap<Reverse<(At, Event)>> = BinaryHeap::new();
    let mut summary: Option<PoolLoad> = None;
    let mut rr = 0usize;
    let end = seconds * 1000.0;
    let mut out = Outcome {
        ttft: Vec::new(),
        conversation_hits: 0,
        system_hits: 0,
        requests: 0,
        served: Vec::new(),
    };
    events.push(Reverse((At(0.0), Event::Start)));
    events.push(Reverse((At(0.0), Event::Scrape)));
    // Starts the request at the head of `e`'s queue when a slot is free.
    let start = |e: usize,
                 now: f64,
                 engines: &mut Vec<Engine>,
                 conversations: &[Conversation],
                 events: &mut BinaryHeap<Reverse<(At, Event)>>,
                 out: &mut Outcome| {
        while engines[e].running < m.slots {
            let Some(w) = engines[e].queue.pop_front() else {
                return;
            };
            let c = &conversations[w.conversation];
            let conv_hit = engines[e].touch((false, w.conversation), m.cache_entries);
            let sys_hit = engines[e].touch((true, c.app), m.cache_entries);
            let prefill = if conv_hit {
                out.conversation_hits += 1;
                m.prefill_ms / m.conversation_hit_factor
            } else if sys_hit {
                out.system_hits += 1;
                m.prefill_ms / m.system_hit_factor
            } else {
                m.prefill_ms
            };
            out.ttft.push(now - w.arrived + prefill);
            out.requests += 1;
            engines[e].running += 1;
            engines[e].served += 1;
            let done = now + prefill + m.decode_ms;
            events.push(Reverse((At(done), Event::Finish(e, w.conversation))));
        }
    };
    while let Some(Reverse((At(now), ev))) = events.pop() {
        match ev {
            Event::Start => {
                if now < end {
                    let app = (rng.next() % m.apps as u64) as usize;
                    let id = conversations.len();
                    let mut h = PrefixHasher::new(vec![p.prefix_bytes]);
                    h.feed(&system_prompt(app));
                    h.feed(&format!(
                        "Customer {id}: where is my order {}?",
                        rng.next() % 100_000
                    ));
                    let key = h.finish()[0].1;
                    conversations.push(Conversation {
                        app,
                        key,
                        turns_left: m.turns,
                    });
                    events.push(Reverse((At(now), Event::Arrive(id))));
                    let next = now + rng.exp(1000.0 / m.conversations_per_s);
                    events.push(Reverse((At(next), Event::Start)));
                }
            }
            Event::Scrape => {
                summary = Some(PoolLoad {
                    at_ms: now as u64,
                    replicas: engines
                        .iter()
                        .enumerate()
                        .map(|(i, e)| {
                            (
                                format!("engine-{i}"),
                                Load {
                                    waiting: e.queue.len() as u32,
                                    running: e.running as u32,
                                    kv: Some(e.cache.len() as f64 / m.cache_entries as f64),
                                    healthy: true,
                                },
                            )
                        })
                        .collect(),
                });
                if now < end || events.iter().any(|Reverse((_, e))| *e != Event::Scrape) {
                    events.push(Reverse((At(now + scrape_ms), Event::Scrape)));
                }
            }
            Event::Arrive(c) => {
                conversations[c].turns_left -= 1;
                let e = match strategy {
                    Strategy::RoundRobin => {
                        rr += 1;
                        rr % m.replicas
                    }
                    Strategy::LeastLoad => {
                        // Each request its own order among equals, as a request id gives.
                        let choice = choose(&p, p.all(), rng.next(), summary.as_ref(), now as u64);
                        choice.order[0]
                    }
                    Strategy::Prefix => {
                        let choice = choose(
                            &p,
                            p.all(),
                            conversations[c].key,
                            summary.as_ref(),
                            now as u64,
                        );
                        choice.order[0]
                    }
                };
                engines[e].queue.push_back(Waiting {
                    conversation: c,
                    arrived: now,
                });
                start(e, now, &mut engines, &conversations, &mut events, &mut out);
            }
            Event::Finish(e, c) => {
                engines[e].running -= 1;
                if conversations[c].turns_left > 0 {
                    let next = now + rng.exp(m.think_ms);
                    events.push(Reverse((At(next), Event::Arrive(c))));
                }
                start(e, now, &mut engines, &conversations, &mut events, &mut out);
            }
        }
    }
    out.served = engines.iter().map(|e| e.served).collect();
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let seconds: f64 = std::env::var("POOL_SIM_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(MODEL.seconds);
    let seed: u64 = std::env::var("POOL_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let m = &MODEL;
    println!("pool simulation (a model, not a GPU measurement): {} engines × {} slots, KV cache of {} prefixes each (LRU);", m.replicas, m.slots, m.cache_entries);
    println!(
        "  prefill {} ms uncached, ÷{} with the system prompt cached, ÷{} with the conversation cached; decode {} ms;",
        m.prefill_ms, m.system_hit_factor, m.conversation_hit_factor, m.decode_ms
    );
    println!(
        "  {:.1} conversations/s over {} system prompts, {} turns each, {} ms mean think time; {seconds} s simulated, seed {seed}",
        m.conversations_per_s, m.apps, m.turns, m.think_ms
    );
    for scrape_ms in [m.scrape_ms, m.scrape_ms / 4.0] {
        table(seed, seconds, scrape_ms);
    }
}

/// The three strategies on the same workload, the load scraped every `scrape_ms`.
fn table(seed: u64, seconds: f64, scrape_ms: f64) {
    println!();
    println!("load scraped every {scrape_ms} ms:");
    println!(
        "{:<12} {:>9} {:>11} {:>11} {:>14} {:>12} {:>22}",
        "strategy",
        "requests",
        "TTFT p50",
        "TTFT p99",
        "conv. hits",
        "sys. hits",
        "busiest / mean engine"
    );
    let mut rows = Vec::new();
    for s in [Strategy::RoundRobin, Strategy::LeastLoad, Strategy::Prefix] {
        let mut o = run(s, seed, seconds, scrape_ms);
        o.ttft.sort_by(f64::total_cmp);
        let mean = o.served.iter().sum::<u64>() as f64 / o.served.len() as f64;
        let max = *o.served.iter().max().unwrap_or(&0) as f64;
        let p50 = percentile(&o.ttft, 0.5);
        let p99 = percentile(&o.ttft, 0.99);
        println!(
            "{:<12} {:>9} {:>8.0} ms {:>8.0} ms {:>13.1}% {:>11.1}% {:>22.2}",
            s.name(),
            o.requests,
            p50,
            p99,
            100.0 * o.conversation_hits as f64 / o.requests.max(1) as f64,
            100.0 * o.system_hits as f64 / o.requests.max(1) as f64,
            max / mean
        );
        rows.push((s, p50, p99));
    }
    let base = rows[0];
    for (s, p50, p99) in &rows[1..] {
        println!(
            "{} against round robin: TTFT p50 {:.2}×, p99 {:.2}×",
            s.name(),
            p50 / base.1,
            p99 / base.2
        );
    }
}
