//! Starts the exact component that spin.toml deploys, in meridian-host (wasmtime 48), and stops it.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct Meridian {
    pub url: String,
    child: Child,
    /// Every line the component printed on stdout (the JSON log lines).
    pub stdout: Arc<Mutex<Vec<String>>>,
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn host_binary() -> PathBuf {
    if let Ok(p) = std::env::var("MERIDIAN_HOST") {
        return PathBuf::from(p);
    }
    let target = std::env::var("MERIDIAN_HOST_TARGET")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/meridian/host-target")
        });
    target.join("release/meridian-host")
}

/// Builds the component into `target/<dir>` (so the artifact the other tests run is untouched)
/// with the given build environment (`MERIDIAN_POLICY`, `MERIDIAN_GEOIP`); the first build there
/// compiles the dependencies once. Returns cargo's output and the component's path.
pub async fn build_component(dir: &str, env: &[(&str, &str)]) -> (std::process::Output, PathBuf) {
    let p3 = p3();
    let target = root()
        .join("target")
        .join(if p3 { format!("{dir}-p3") } else { dir.into() });
    cargo_build(target, p3, &[], env).await
}

/// The WASI 0.2 component built with `wasi:otel` (`--features otel`, spin-otel.toml) into
/// `target/otel`, whichever build the other tests run.
pub async fn build_otel_component() -> (std::process::Output, PathBuf) {
    cargo_build(
        root().join("target/otel"),
        false,
        &["--features", "otel"],
        &[],
    )
    .await
}

/// `cargo build` of the WASI 0.2 component (or, `p3`, the WASI 0.3 one) into `target`, with
/// `args` and the build environment `env` (nothing inherited), bounded in time.
async fn cargo_build(
    target: PathBuf,
    p3: bool,
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Output, PathBuf) {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root())
        .args([
            "build",
            "--target",
            "wasm32-wasip2",
            "--release",
            "--locked",
        ])
        .args(
            p3.then_some(["--manifest-path", "adapters/spin-p3/Cargo.toml"])
                .into_iter()
                .flatten(),
        )
        .args(args)
        .arg("--target-dir")
        .arg(&target)
        .env_remove("MERIDIAN_POLICY")
        .env_remove("MERIDIAN_GEOIP")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(1800), cmd.output())
        .await
        .expect("the build finished within 30 minutes")
        .expect("cargo runs");
    let wasm = if p3 {
        "meridian_p3.wasm"
    } else {
        "meridian.wasm"
    };
    (out, target.join("wasm32-wasip2/release").join(wasm))
}

/// Which build the end-to-end tests run: the WASI 0.2 component spin.toml deploys, or, with
/// `MERIDIAN_COMPONENT=p3`, the WASI 0.3 build (`adapters/spin-p3`, spin-p3.toml) that serves
/// many requests per instance.
pub fn p3() -> bool {
    std::env::var("MERIDIAN_COMPONENT").as_deref() == Ok("p3")
}

pub fn component() -> PathBuf {
    if p3() {
        root().join("target/p3/wasm32-wasip2/release/meridian_p3.wasm")
    } else {
        root().join("target/wasm32-wasip2/release/meridian.wasm")
    }
}

impl Meridian {
    /// With the embedded default policy.
    pub async fn default_policy(env: &[(&str, &str)]) -> Meridian {
        Meridian::start(None, env, None, &[]).await
    }

    pub async fn with_policy(policy: &str, env: &[(&str, &str)]) -> Meridian {
        Meridian::start(Some(policy), env, None, &[]).await
    }

    /// Another component in the same host and manifest settings (the benchmark's references).
    pub async fn other_component(wasm: &std::path::Path) -> Meridian {
        Meridian::start(None, &[], Some(wasm), &[]).await
    }

    /// With a run-time policy (None: the embedded one) and extra meridian-host arguments, e.g.
    /// `--tcp-nodelay`.
    pub async fn start_with(policy: Option<&str>, host_args: &[&str]) -> Meridian {
        Meridian::start(policy, &[], None, host_args).await
    }

    /// With the embedded default policy (or `wasm`, another component) and extra meridian-host
    /// arguments, e.g. `--tcp-nodelay`.
    pub async fn with_host_args(wasm: Option<&std::path::Path>, host_args: &[&str]) -> Meridian {
        Meridian::start(None, &[], wasm, host_args).await
    }

    /// Another build of Meridian (e.g. with the IP table) with a run-time policy.
    pub async fn build_with_policy(
        wasm: &std::path::Path,
        policy: &str,
        env: &[(&str, &str)],
    ) -> Meridian {
        Meridian::start(Some(policy), env, Some(wasm), &[]).await
    }

    /// Another build of Meridian with a run-time policy and extra meridian-host arguments.
    pub async fn build_with_policy_and_args(
        wasm: &std::path::Path,
        policy: &str,
        host_args: &[&str],
    ) -> Meridian {
        Meridian::start(Some(policy), &[], Some(wasm), host_args).await
    }

    /// As `build_with_policy`, with meridian-host taking the client's connection address from
    /// the `x-test-peer` header (`--test-peer-header`), so a test can stand in for a client
    /// anywhere; the component sees it in `spin-client-addr` exactly as under Spin.
    pub async fn build_with_policy_and_peer_header(
        wasm: &std::path::Path,
        policy: &str,
    ) -> Meridian {
        Meridian::start(
            Some(policy),
            &[],
            Some(wasm),
            &["--test-peer-header", "x-test-peer"],
        )
        .await
    }

    /// Only the outbound hosts `host_args` allow (`--allow-outbound …`), beside spin.toml's:
    /// not the usual `http://127.0.0.1:*` for the tests' mock upstreams.
    pub async fn with_exact_outbound(
        wasm: Option<&std::path::Path>,
        policy: Option<&str>,
        host_args: &[&str],
    ) -> Meridian {
        Meridian::launch(policy, &[], wasm, host_args, false, None).await
    }

    /// Any component (None: the one the tests run) with a run-time policy, environment and
    /// meridian-host arguments.
    pub async fn custom(
        wasm: Option<&std::path::Path>,
        policy: &str,
        env: &[(&str, &str)],
        host_args: &[&str],
    ) -> Meridian {
        Meridian::start(Some(policy), env, wasm, host_args).await
    }

    async fn start(
        policy: Option<&str>,
        env: &[(&str, &str)],
        other: Option<&std::path::Path>,
        host_args: &[&str],
    ) -> Meridian {
        Meridian::launch(policy, env, other, host_args, true, None).await
    }

    /// The default component under a limit of `nofile` open files (util-linux's `prlimit`), its
    /// standard error written to `stderr`.
    pub async fn with_file_limit(nofile: u32, stderr: &std::path::Path) -> Meridian {
        let limit = (format!("--nofile={nofile}:{nofile}"), stderr.to_path_buf());
        Meridian::launch(None, &[], None, &[], true, Some(limit)).await
    }

    async fn launch(
        policy: Option<&str>,
        env: &[(&str, &str)],
        other: Option<&std::path::Path>,
        host_args: &[&str],
        mocks_allowed: bool,
        limit: Option<(String, PathBuf)>,
    ) -> Meridian {
        let host = host_binary();
        let wasm = other.map(PathBuf::from).unwrap_or_else(component);
        assert!(
            host.exists() && wasm.exists(),
            "{} or {} is missing: run ./scripts/test (or ./scripts/setup), which builds both",
            host.display(),
            wasm.display()
        );
        let mut attempt = 0;
        let (port, child, lines) = loop {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let mut cmd = match &limit {
                Some((nofile, _)) => {
                    let mut c = Command::new("prlimit");
                    c.arg(nofile).arg(&host);
                    c
                }
                None => Command::new(&host),
            };
            cmd.current_dir(root())
                .args([
                    "--manifest",
                    "spin.toml",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                ])
                .args(
                    mocks_allowed
                        .then_some(["--allow-outbound", "http://127.0.0.1:*"])
                        .into_iter()
                        .flatten(),
                )
                .args(host_args)
                .args(
                    (other.is_some() || p3())
                        .then(|| ["--component".as_ref(), wasm.as_os_str()])
                        .into_iter()
                        .flatten(),
                )
                .env_remove("SPIN_VARIABLE_POLICY")
                .stdout(Stdio::piped())
                .stderr(match &limit {
                    Some((_, path)) => Stdio::from(std::fs::File::create(path).unwrap()),
                    None => Stdio::inherit(),
                })
                .kill_on_drop(true);
            if let Some(p) = policy {
                cmd.env("SPIN_VARIABLE_POLICY", p);
            }
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("start meridian-host");
            let stdout = child.stdout.take().unwrap();
            let lines = Arc::new(Mutex::new(Vec::new()));
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let lines2 = lines.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stdout).lines();
                let mut ready = Some(ready_tx);
                while let Ok(Some(line)) = reader.next_line().await {
                    if line.starts_with("meridian-host: serving") {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    lines2.lock().unwrap().push(line);
                }
            });
            let started = tokio::time::timeout(Duration::from_secs(120), ready_rx)
                .await
                .expect("meridian-host did not start within 120 s");
            // The port was free when picked and released for the host to bind; something else
            // (another test's server, an outgoing connection's ephemeral port) may take it in
            // between. A host that exits before serving is started again on another port, twice.
            if started.is_err() && attempt < 2 {
                attempt += 1;
                continue;
            }
            started.expect("meridian-host exited before serving");
            break (port, child, lines);
        };
        Meridian {
            url: format!("http://127.0.0.1:{port}"),
            child,
            stdout: lines,
        }
    }

    /// The host process id (for CPU accounting in the benchmark).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The requests' JSON log lines printed so far (a stream's opening line left out: see
    /// [`Meridian::all_logs`]).
    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.all_logs()
            .into_iter()
            .filter(|l| l["event"] != "stream_open")
            .collect()
    }

    /// Every JSON line printed so far, streams' opening lines included.
    pub fn all_logs(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (bounded) for the log line of a request id.
    pub async fn log_for(&self, request_id: &str) -> serde_json::Value {
        for _ in 0..100 {
            if let Some(l) = self
                .logs()
                .into_iter()
                .find(|l| l["request_id"] == request_id)
            {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no log line for {request_id}");
    }
}

impl Drop for Meridian {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
