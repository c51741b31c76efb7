//! A real `redis-server` (Debian's package, installed by ./scripts/setup) on 127.0.0.1, started
//! and stopped by the test, with its data in a temporary directory (append-only file, so a
//! restart keeps what was written).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn binary() -> String {
    std::env::var("MERIDIAN_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

impl Redis {
    pub async fn start() -> Redis {
        // A free port is picked, let go and then bound by redis-server: another process may
        // take it in between, and the server then exits. A few tries, each on a new port.
        let mut tries = 0;
        loop {
            tries += 1;
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let dir =
                std::env::temp_dir().join(format!("meridian-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let mut r = Redis {
                port,
                dir,
                child: None,
            };
            match r.try_run().await {
                Ok(()) => return r,
                Err(why) if tries < 5 => {
                    eprintln!("redis-server on port {port}: {why}; another port")
                }
                Err(why) => panic!("redis-server did not start ({why})"),
            }
        }
    }

    /// A server not started yet, to be started on `port` ([`Redis::try_run`]): for testing
    /// how a start on a port already taken fails.
    pub fn on_port(port: u16) -> Redis {
        let dir = std::env::temp_dir().join(format!(
            "meridian-redis-{}-{port}-taken",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Redis {
            port,
            dir,
            child: None,
        }
    }

    async fn run(&mut self) {
        if let Err(why) = self.try_run().await {
            panic!(
                "redis-server did not start again on port {} ({why})",
                self.port
            );
        }
    }

    /// Starts the server on `self.port`; `Err` when it exits before it answers `PING`, or
    /// does not answer within 15 s.
    pub async fn try_run(&mut self) -> Result<(), String> {
        let child = Command::new(binary())
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): run ./scripts/setup, which installs Debian's redis-server")
            });
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.command(&["PING"]).await.as_deref() != Some("+PONG") {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("it exited ({status}), its port taken?"));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err("no answer to PING within 15 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The answer must be this server's, not another test's that took the port first.
        let pid = self.child.as_ref().and_then(Child::id).unwrap_or(0);
        let info = self.command(&["INFO", "server"]).await.unwrap_or_default();
        if info.contains("process_id:") && !info.contains(&format!("process_id:{pid}\r")) {
            self.stop().await;
            return Err("another redis-server answers on this port".into());
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (as an outage would), keeping its data directory.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }

    /// Starts it again on the same port with the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.run().await;
    }

    /// One command over RESP; the reply's first line (`+PONG`, `:42`, `$-1`, `$2` …).
    pub async fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(("127.0.0.1", self.port)),
        )
        .await
        .ok()?
        .ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        Some(text.trim_end().to_string())
    }

    /// The integer at `key` (0 when absent).
    pub async fn int(&self, key: &str) -> i64 {
        let reply = self.command(&["GET", key]).await.expect("redis GET");
        match reply.lines().nth(1) {
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| panic!("{key} holds {reply:?}")),
            None => 0,
        }
    }

    /// Keys matching a pattern.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let reply = self.command(&["KEYS", pattern]).await.expect("redis KEYS");
        reply
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with('$'))
            .map(str::to_string)
            .collect()
    }

    /// A runtime-config file giving the store `default` this server.
    pub fn runtime_config(&self) -> PathBuf {
        let p = self.dir.join("runtime-config.toml");
        std::fs::write(
            &p,
            format!(
                "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
                self.url()
            ),
        )
        .unwrap();
        p
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
