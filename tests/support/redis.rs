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
        r.run().await;
        r
    }

    async fn run(&mut self) {
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
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not answer PING within 15 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
