//! `meridian`: the policy tool. Validates policies, runs their test cases, explains the decision
//! for a request, shows what a policy change does (`diff` over every request the policies can
//! tell apart, `replay` over the component's own log), prints the JSON Schema, hashes tenant
//! keys and turns the component's log into the audit report (`report`). Same code as the
//! component.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod evidence;
mod outbound;
mod pools;
mod record;
mod report;
use meridian::location::{self, Location};
use meridian::policy::{self, Country, Policy};
use meridian::{api, cases, facts};
use serde_json::{Map, Value};

#[derive(Parser)]
#[command(name = "meridian", version, about = "Meridian's policy tool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate policy files; print every error with its line and column.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Fail on warnings too (for CI): a warning is valid policy that is probably not what
        /// the operator wants (location headers without an edge secret, a key over http://,
        /// unstated data handling, anonymous callers spending keys).
        #[arg(long)]
        strict: bool,
        /// A Spin manifest (spin.toml): fail when a host the policy sends requests to (each
        /// provider, each replica of a pool, each external guard) is not in its component's
        /// `allowed_outbound_hosts`, naming the entry to add.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// The manifest's component, when it has more than one.
        #[arg(long, requires = "manifest")]
        component: Option<String>,
    },
    /// Validate policy files and run the [[test]] cases they carry.
    Test {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show the decision for a request: candidates in order, exclusions and why, the plan.
    Explain(Box<ExplainArgs>),
    /// Sum up Meridian's log lines (files, or stdin) for the people who answer for data
    /// protection and cost: a terminal summary, and with --html a self-contained page.
    Report(ReportArgs),
    /// What a policy change does to traffic: both policies decide every request the fact space
    /// can describe; the cases that change are merged into lines. Exit status 1 when anything
    /// changed, 0 when nothing did, 2 on an error.
    Diff {
        old: PathBuf,
        new: PathBuf,
        /// Print the changes as JSON (every covered country listed).
        #[arg(long)]
        json: bool,
    },
    /// Replay logged traffic against a new policy: each request in Meridian's log (files, or
    /// stdin) is decided again; prints what would change (now refused, now served, provider
    /// and jurisdiction moves, the cost at catalog prices) with example request ids. Exit
    /// status 1 when anything changed, 0 when nothing did, 2 on an error.
    Replay(ReplayArgs),
    /// Print the JSON Schema of the policy format.
    Schema,
    /// Validate a policy and print its compiled form, for the `policy` variable (a SpinKube
    /// Secret, `spin up --variable`): read by the component without parsing or validating
    /// again, so a run-time policy costs a request little more than the built-in one. Exit
    /// status 2 when the policy is invalid (nothing is printed then).
    Compile { file: PathBuf },
    /// Print the `sha256:` form of an API key for a tenant's `keys` (reads stdin without KEY).
    HashKey { key: Option<String> },
    /// Check signed receipts offline: every line of a log (files, or stdin) against its receipt
    /// and the public keys, and what the receipts' numbering shows of lines removed or moved;
    /// or one receipt (--receipt). Prints each line that fails and why. Exit status 1 when any
    /// fails, 0 when all verify, 2 on an error.
    Verify(evidence::VerifyArgs),
    /// Make an Ed25519 key for signed receipts: prints the secret for its Spin variable and the
    /// public JWK Set.
    Keygen,
    /// Keep the load summary of the policy's self-hosted pools fresh in the shared store: reads
    /// every replica's metrics each interval and writes one value to Redis that every request
    /// reads once (docs/pools.md). Runs until stopped; --once measures and writes once.
    PoolScrape(pools::ScrapeArgs),
}

#[derive(clap::Args)]
struct ReportArgs {
    /// Log files (one JSON line per request, as the component writes them); none or `-`: stdin.
    files: Vec<PathBuf>,
    /// The policy the requests were served under: every served request is checked against its
    /// residency rules and its tenant's jurisdictions.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Only requests on or after this day (UTC, YYYY-MM-DD).
    #[arg(long)]
    from: Option<String>,
    /// Only requests before this day (UTC, YYYY-MM-DD; exclusive).
    #[arg(long)]
    to: Option<String>,
    /// Only this tenant's requests (`anonymous` for callers without a key).
    #[arg(long)]
    tenant: Option<String>,
    /// Also write the report as a self-contained HTML page here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Print the sums as JSON instead of the text summary.
    #[arg(long)]
    json: bool,
    /// Also say on stderr how many lines were read, how long it took and the peak memory.
    #[arg(long)]
    stats: bool,
    /// The record of processing (GDPR Article 30) for the period instead: recipients with
    /// where they process and keep data, transfers to third countries and their safeguards,
    /// personal-data categories found, retention, purposes per tenant, counts from the log.
    /// Needs --policy; --json prints it as JSON, --html writes its page.
    #[arg(long, requires = "policy")]
    record: bool,
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// The policy to decide the logged requests under.
    policy: PathBuf,
    /// Log files (one JSON line per request, as the component writes them); none or `-`: stdin.
    logs: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also say on stderr how many lines were read, how long it took and the peak memory.
    #[arg(long)]
    stats: bool,
}

/// The longest log line read; a longer one is skipped whole (it is no line the component wrote).
const MAX_LINE: usize = 1 << 20;

/// Calls `f` with each line of the files (none or `-`: stdin), streamed: bytes that are not
/// UTF-8 are replaced and a line longer than [`MAX_LINE`] is passed as empty, never an abort.
/// Returns how many lines were read.
fn each_line(files: &[PathBuf], mut f: impl FnMut(&str)) -> Result<u64, String> {
    use std::io::BufRead;
    let mut lines = 0u64;
    let mut read = |reader: &mut dyn BufRead, name: &str| -> Result<(), String> {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = std::io::Read::take(&mut *reader, MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut buf)
                .map_err(|e| format!("{name}: {e}"))?;
            if n == 0 {
                return Ok(());
            }
            lines += 1;
            if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
                // The rest of the long line, read and dropped in bounded pieces.
                loop {
                    buf.clear();
                    let m = std::io::Read::take(&mut *reader, MAX_LINE as u64)
                        .read_until(b'\n', &mut buf)
                        .map_err(|e| format!("{name}: {e}"))?;
                    if m == 0 || buf.last() == Some(&b'\n') {
                        break;
                    }
                }
                f("");
                continue;
            }
            f(&String::from_utf8_lossy(&buf));
        }
    };
    if files.is_empty() || files.iter().any(|f| f.as_os_str() == "-") {
        let stdin = std::io::stdin();
        read(&mut stdin.lock(), "stdin")?;
    }
    for p in files.iter().filter(|f| f.as_os_str() != "-") {
        let file = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
        read(
            &mut std::io::BufReader::with_capacity(1 << 16, file),
            &p.display().to_string(),
        )?;
    }
    Ok(lines)
}

fn stats(what: &str, lines: u64, started: std::time::Instant) {
    eprintln!(
        "{what}: {lines} lines in {:.2} s, peak memory {}",
        started.elapsed().as_secs_f64(),
        peak_kib().map_or("unknown".to_string(), |k| format!(
            "{:.1} MiB",
            k as f64 / 1024.0
        ))
    );
}

fn replay(a: &ReplayArgs) -> Result<bool, String> {
    let started = std::time::Instant::now();
    let policy = load(&a.policy)?;
    let mut r = meridian::replay::Replay::new(&policy);
    let lines = each_line(&a.logs, |l| r.line(l))?;
    let report = r.finish();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report.text());
    }
    if a.stats {
        stats("replay", lines, started);
    }
    Ok(report.changed > 0)
}

/// The process's peak resident memory in KiB (Linux: `VmHWM`), if known.
fn peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `YYYY-MM-DD` → Unix milliseconds at its start (UTC).
fn day_ms(d: &str) -> Result<u64, String> {
    let bad = || format!("`{d}` is not a date as YYYY-MM-DD");
    let mut parts = d.split('-');
    let (Some(y), Some(m), Some(dd), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let (y, m, dd): (i64, u32, u32) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        dd.parse().map_err(|_| bad())?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&dd) || y < 1970 {
        return Err(bad());
    }
    Ok(meridian::limits::days_from_civil(y, m, dd) as u64 * 86_400_000)
}

fn diff(old: &Path, new: &Path, json: bool) -> Result<bool, String> {
    let (a, b) = (load(old)?, load(new)?);
    let d = meridian::impact::diff(&a, &b);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&d).map_err(|e| e.to_string())?
        );
    } else if d.changes.is_empty() {
        println!("{} → {}: no change in {} cases", d.old, d.new, d.cases);
    } else {
        println!(
            "{} → {}: {} of {} cases change",
            d.old, d.new, d.changed, d.cases
        );
        for c in &d.changes {
            println!("- {}", c.line);
        }
    }
    Ok(d.changed > 0)
}

fn report(a: &ReportArgs) -> Result<(), String> {
    let started = std::time::Instant::now();
    let policy = match &a.policy {
        None => None,
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Some(policy::load(&text, &p.display().to_string()).map_err(|e| e.to_string())?)
        }
    };
    let filter = report::Filter {
        from_ms: a.from.as_deref().map(day_ms).transpose()?,
        to_ms: a.to.as_deref().map(day_ms).transpose()?,
        tenant: a.tenant.clone(),
    };
    if a.record {
        let Some(policy) = policy.as_ref() else {
            return Err("--record needs --policy".into());
        };
        return summarise(a, &mut record::Record::new(policy, filter), started);
    }
    summarise(
        a,
        &mut report::Report::new(filter, policy.as_ref()),
        started,
    )
}

/// What `meridian report` sums a log into: the report, or the record of processing.
trait Summary {
    fn add_line(&mut self, line: &str);
    fn html(&self) -> String;
    fn json(&self) -> Value;
    fn text(&self) -> String;
}

impl Summary for report::Report {
    fn add_line(&mut self, line: &str) {
        report::Report::add_line(self, line)
    }
    fn html(&self) -> String {
        report::Report::html(self)
    }
    fn json(&self) -> Value {
        report::Report::json(self)
    }
    fn text(&self) -> String {
        report::Report::text(self)
    }
}

impl Summary for record::Record<'_> {
    fn add_line(&mut self, line: &str) {
        record::Record::add_line(self, line)
    }
    fn html(&self) -> String {
        record::Record::html(self)
    }
    fn json(&self) -> Value {
        record::Record::json(self)
    }
    fn text(&self) -> String {
        record::Record::text(self)
    }
}

/// Reads the log into `r` and writes what the options ask for.
fn summarise(
    a: &ReportArgs,
    r: &mut impl Summary,
    started: std::time::Instant,
) -> Result<(), String> {
    let lines = each_line(&a.files, |l| r.add_line(l))?;
    if let Some(path) = &a.html {
        std::fs::write(path, r.html()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if a.json {
        println!("{}", r.json());
    } else {
        print!("{}", r.text());
    }
    if a.stats {
        stats("report", lines, started);
    }
    Ok(())
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// The policy file.
    policy: PathBuf,
    /// The model the request asks for (sets the body's `model`).
    #[arg(long)]
    model: Option<String>,
    /// The client's country, delivered through the policy's first trusted country header.
    #[arg(long)]
    country: Option<String>,
    /// The caller's API key (sent as `Authorization: Bearer`).
    #[arg(long)]
    key: Option<String>,
    /// Privacy flags, as the x-meridian-privacy header takes them (e.g. "zdr, no-training").
    #[arg(long)]
    privacy: Option<String>,
    /// A request header, `name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// The edge region the component runs in.
    #[arg(long)]
    edge_region: Option<String>,
    /// Ask for a stream.
    #[arg(long)]
    stream: bool,
    /// chat, completions, embeddings, messages or responses.
    #[arg(long, default_value = "chat")]
    endpoint: String,
    /// The request body (JSON object); --model and --stream are applied on top.
    #[arg(long)]
    body: Option<String>,
    /// The request id (seeds weighted choices).
    #[arg(long, default_value = "explain")]
    request_id: String,
    /// Print the whole decision as JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn load(path: &Path) -> Result<Policy, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    policy::load(&text, &path.display().to_string()).map_err(|e| e.to_string())
}

/// When `file` is tracked by git and its policy's digest differs from HEAD's version: a note
/// naming both digests and the commands that show what the change does to traffic. `None`
/// outside a repository, for a new file, or when the text is the same (the digest is of the
/// text, as the audit names the policy in force).
fn changed_since_head(file: &Path, p: &Policy) -> Option<String> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
    let name = file.file_name()?.to_str()?;
    let mut git = std::process::Command::new("git");
    if let Some(d) = dir {
        git.arg("-C").arg(d);
    }
    let out = git
        .args(["show", &format!("HEAD:./{name}")])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let old = policy::load(&String::from_utf8_lossy(&out.stdout), "HEAD").ok()?;
    if old.digest == p.digest {
        return None;
    }
    let f = file.display();
    let show = match dir {
        Some(d) => format!("git -C {} show HEAD:./{name}", d.display()),
        None => format!("git show HEAD:./{name}"),
    };
    Some(format!(
        "note: {f} changed since git HEAD (digest {} → {}); see what it does to traffic:\n  \
         {show} > /tmp/old.toml && meridian diff /tmp/old.toml {f}\n  \
         meridian replay {f} <log lines>   # the requests a deployment really served",
        old.digest, p.digest
    ))
}

fn summary(p: &Policy) -> String {
    format!(
        "{} ({} providers, {} tenants, {} rules, {} test cases)",
        p.version_label(),
        p.providers.len(),
        p.tenants.len(),
        p.rules.len(),
        p.cases.len()
    )
}

fn check(
    files: &[PathBuf],
    strict: bool,
    manifest: Option<&Path>,
    component: Option<&str>,
) -> ExitCode {
    let mut ok = true;
    for f in files {
        match load(f) {
            Ok(p) => {
                if let Some(m) = manifest {
                    match outbound::missing(&p, m, component) {
                        Ok(missing) if missing.is_empty() => {}
                        Ok(missing) => {
                            ok = false;
                            for line in missing {
                                eprintln!("{}: {line}", f.display());
                            }
                            continue;
                        }
                        Err(e) => {
                            ok = false;
                            eprintln!("{e}");
                            continue;
                        }
                    }
                }
                for w in &p.warnings {
                    eprintln!("{}:{w}", f.display());
                }
                if strict && !p.warnings.is_empty() {
                    ok = false;
                    eprintln!(
                        "{}: {} warning(s), and --strict fails on warnings",
                        f.display(),
                        p.warnings.len()
                    );
                    continue;
                }
                println!("ok: {}: {}", f.display(), summary(&p));
                if let Some(note) = changed_since_head(f, &p) {
                    eprintln!("{note}");
                }
            }
            Err(e) => {
                ok = false;
                eprintln!("{e}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn test(files: &[PathBuf]) -> ExitCode {
    let (mut passed, mut failed, mut invalid) = (0, 0, 0);
    for f in files {
        let p = match load(f) {
            Ok(p) => p,
            Err(e) => {
                invalid += 1;
                eprintln!("{e}");
                continue;
            }
        };
        println!("{}: {}", f.display(), summary(&p));
        for r in cases::run(&p) {
            match &r.failure {
                None => {
                    passed += 1;
                    println!("  ok    {}", r.name);
                }
                Some(why) => {
                    failed += 1;
                    println!("  FAIL  {} ({}:{}): {why}", r.name, f.display(), r.line);
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed, {invalid} invalid policies");
    if failed == 0 && invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn explain(a: &ExplainArgs) -> Result<(), String> {
    let p = load(&a.policy)?;
    let mut headers: Vec<(String, String)> = Vec::new();
    for h in &a.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("--header `{h}` must look like `name: value`"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    if let Some(k) = &a.key {
        headers.push(("authorization".into(), format!("Bearer {k}")));
    }
    if let Some(f) = &a.privacy {
        headers.push((facts::PRIVACY_HEADER.into(), f.clone()));
    }
    let mut body: Map<String, Value> = match &a.body {
        Some(b) => match serde_json::from_str(b) {
            Ok(Value::Object(m)) => m,
            _ => return Err("--body must be a JSON object".into()),
        },
        None => Map::new(),
    };
    if let Some(m) = &a.model {
        body.insert("model".into(), Value::String(m.clone()));
    }
    if a.stream {
        body.insert("stream".into(), Value::Bool(true));
    }
    body.insert("endpoint".into(), Value::String(a.endpoint.clone()));
    let raw = serde_json::to_vec(&Value::Object(body)).map_err(|e| e.to_string())?;
    // `--country` states the client's country; otherwise it is read from the `--header`s by the
    // policy's location source (with no IP table: the CLI has none built in).
    let location = match &a.country {
        Some(c) => Location::given(Some(Country::parse_assigned(c).ok_or_else(|| {
            format!("--country `{c}` is not a country code (ISO 3166-1 alpha-2, e.g. `DE`)")
        })?)),
        None => location::locate(&p.settings.client, &headers, None, None),
    };
    let out = api::explain_request(
        &p,
        &a.request_id,
        a.edge_region.clone(),
        &headers,
        &raw,
        location,
        Vec::new(),
    )
    .map_err(|e| {
        format!(
            "the request is refused before routing ({} {}): {}",
            e.status, e.code, e.message
        )
    })?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", out["text"].as_str().unwrap_or_default());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            files,
            strict,
            manifest,
            component,
        } => check(&files, strict, manifest.as_deref(), component.as_deref()),
        Command::PoolScrape(a) => match pools::run(&a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("meridian pool-scrape: {e}");
                ExitCode::from(2)
            }
        },
        Command::Test { files } => test(&files),
        Command::Explain(a) => match explain(&a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("meridian explain: {e}");
                ExitCode::from(2)
            }
        },
        Command::Report(a) => match report(&a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("meridian report: {e}");
                ExitCode::from(2)
            }
        },
        Command::Diff { old, new, json } => match diff(&old, &new, json) {
            Ok(changed) => ExitCode::from(u8::from(changed)),
            Err(e) => {
                eprintln!("meridian diff: {e}");
                ExitCode::from(2)
            }
        },
        Command::Replay(a) => match replay(&a) {
            Ok(changed) => ExitCode::from(u8::from(changed)),
            Err(e) => {
                eprintln!("meridian replay: {e}");
                ExitCode::from(2)
            }
        },
        Command::Schema => {
            println!("{}", policy::SCHEMA.trim_end());
            ExitCode::SUCCESS
        }
        Command::Compile { file } => match load(&file) {
            Ok(p) => {
                for w in &p.warnings {
                    eprintln!("{}:{w}", file.display());
                }
                println!("{}", policy::compiled::compile(&p));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Verify(a) => match evidence::verify(&a) {
            Ok(ok) => ExitCode::from(u8::from(!ok)),
            Err(e) => {
                eprintln!("meridian verify: {e}");
                ExitCode::from(2)
            }
        },
        Command::Keygen => match evidence::keygen() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("meridian keygen: {e}");
                ExitCode::from(2)
            }
        },
        Command::HashKey { key } => {
            let key = match key {
                Some(k) => k,
                None => {
                    let mut s = String::new();
                    if let Err(e) = std::io::stdin().read_to_string(&mut s) {
                        eprintln!("meridian hash-key: cannot read stdin: {e}");
                        return ExitCode::from(2);
                    }
                    s.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if key.is_empty() {
                eprintln!("meridian hash-key: the key is empty");
                return ExitCode::from(2);
            }
            println!("sha256:{}", hex::encode(policy::hash_key(&key)));
            ExitCode::SUCCESS
        }
    }
}
