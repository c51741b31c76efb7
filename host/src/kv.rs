//! `wasi:keyvalue@0.2.0-draft2` (`store`, `atomics`, `batch`), as Spin 3.0+ provides it: stores
//! are named by label, a component may open only the labels in its `key_value_stores`, and
//! Spin's runtime-config file gives each label a backend:
//!
//! ```toml
//! [key_value_store.default]
//! type = "spin"                  # a SQLite file (Spin's default: .spin/sqlite_key_value.db)
//! path = ".spin/kv.db"
//!
//! [key_value_store.default]
//! type = "redis"
//! url = "redis://127.0.0.1:6379"
//! ```
//!
//! Without a runtime config the label `default` is the SQLite file `.spin/sqlite_key_value.db`
//! next to spin.toml, as with `spin up`. Integers are kept as decimal text (what Redis `INCRBY`
//! keeps), so `increment` and `get` agree on both backends. Every backend call has a deadline;
//! no call is retried (an increment whose reply is lost may have been applied); only opening
//! a SQLite file, which changes nothing a guest counts, is tried again within its deadline.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use wasmtime::component::{Linker, Resource};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/wasi-keyvalue",
        world: "wasi:keyvalue/imports",
        imports: { default: async },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
            "wasi:keyvalue/atomics.cas": super::Cas,
        },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};

/// How long one backend call may take before the guest gets an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a store found unreachable is tried again in the background, while every call
/// fails at once (the circuit breaker).
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// A Redis store that could not be reached: until a background probe reaches it again, every
/// call fails at once instead of waiting out its timeout, so an outage costs a request
/// microseconds once noticed, and the policy decides what the request gets (503, or served
/// uncounted where it fails open).
#[derive(Default)]
pub struct Breaker {
    open: std::sync::atomic::AtomicBool,
}

/// An open store, as the guest holds it.
pub struct Bucket {
    backend: Arc<Backend>,
}

/// A compare-and-swap handle: the key and the value it was read with.
pub struct Cas {
    backend: Arc<Backend>,
    key: String,
    current: Option<Vec<u8>>,
}

pub enum Backend {
    /// The file, opened on first use (a component that never uses its store never creates it).
    Sqlite {
        path: PathBuf,
        conn: Arc<Mutex<Option<rusqlite::Connection>>>,
    },
    Redis {
        url: String,
        conn: Arc<tokio::sync::Mutex<Option<redis::aio::ConnectionManager>>>,
        breaker: Arc<Breaker>,
    },
}

/// The stores a component may open, by label.
pub struct Stores {
    allowed: Vec<String>,
    backends: HashMap<String, Arc<Backend>>,
}

#[derive(serde::Deserialize)]
struct RuntimeConfig {
    #[serde(default)]
    key_value_store: HashMap<String, StoreConfig>,
}

#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum StoreConfig {
    Spin { path: Option<PathBuf> },
    Redis { url: String },
}

impl Stores {
    /// The stores of a component (`key_value_stores`), with backends from the runtime config
    /// (`None`: Spin's default SQLite file for `default`), paths relative to `dir`.
    pub fn new(allowed: Vec<String>, runtime_config: Option<&Path>, dir: &Path) -> Result<Stores> {
        let mut configs: HashMap<String, StoreConfig> = HashMap::new();
        // Paths in a runtime config are relative to its own directory, as in Spin.
        let mut dir = dir.to_path_buf();
        if let Some(path) = runtime_config {
            dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let rc: RuntimeConfig =
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            configs = rc.key_value_store;
        }
        if !configs.contains_key("default") {
            configs.insert("default".into(), StoreConfig::Spin { path: None });
        }
        let mut backends = HashMap::new();
        for label in &allowed {
            let Some(cfg) = configs.remove(label) else {
                bail!("the component's key_value_stores names `{label}`, which the runtime config does not define");
            };
            let backend = match cfg {
                StoreConfig::Spin { path } => Backend::Sqlite {
                    path: dir.join(path.unwrap_or_else(|| ".spin/sqlite_key_value.db".into())),
                    conn: Arc::new(Mutex::new(None)),
                },
                StoreConfig::Redis { url } => {
                    redis::Client::open(url.as_str())
                        .with_context(|| format!("the Redis URL `{url}`"))?;
                    Backend::Redis {
                        url,
                        conn: Arc::new(tokio::sync::Mutex::new(None)),
                        breaker: Arc::new(Breaker::default()),
                    }
                }
            };
            backends.insert(label.clone(), Arc::new(backend));
        }
        Ok(Stores { allowed, backends })
    }

    pub fn describe(&self) -> String {
        let mut out: Vec<String> = self
            .allowed
            .iter()
            .map(|l| {
                let kind = match self.backends.get(l).map(|b| &**b) {
                    Some(Backend::Sqlite { .. }) => "SQLite file",
                    Some(Backend::Redis { .. }) => "Redis",
                    None => "?",
                };
                format!("{l} ({kind})")
            })
            .collect();
        out.sort();
        if out.is_empty() {
            "no key-value stores".into()
        } else {
            format!("key-value {}", out.join(", "))
        }
    }
}

type KvResult<T> = std::result::Result<T, store::Error>;

/// Why a Redis call failed: the store could not be reached (it opens the circuit), or it
/// answered with an error (it does not).
enum Unreachable {
    TimedOut,
    Io(String),
    Answer(String),
    /// Already a store error (connecting, or the circuit open).
    Store(store::Error),
}

impl From<store::Error> for Unreachable {
    fn from(e: store::Error) -> Self {
        Unreachable::Store(e)
    }
}

impl Unreachable {
    fn text(&self) -> String {
        match self {
            Unreachable::TimedOut => "Redis did not answer in time".into(),
            Unreachable::Io(e) | Unreachable::Answer(e) => e.clone(),
            Unreachable::Store(store::Error::Other(e)) => e.clone(),
            Unreachable::Store(e) => format!("{e:?}"),
        }
    }

    fn error(self) -> store::Error {
        match self {
            Unreachable::Store(e) => e,
            other => store::Error::Other(other.text()),
        }
    }
}

fn other(e: impl std::fmt::Display) -> store::Error {
    store::Error::Other(e.to_string())
}

impl Backend {
    async fn redis(&self) -> KvResult<redis::aio::ConnectionManager> {
        let Backend::Redis { url, conn, breaker } = self else {
            return Err(other("not a Redis store"));
        };
        if breaker.open.load(std::sync::atomic::Ordering::Acquire) {
            return Err(other(
                "Redis is unreachable (the circuit is open; it is retried in the background every 250 ms)",
            ));
        }
        let mut guard = conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let client = redis::Client::open(url.as_str()).map_err(other)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(CALL_TIMEOUT)
            .set_response_timeout(CALL_TIMEOUT)
            .set_number_of_retries(1);
        let c = tokio::time::timeout(
            CALL_TIMEOUT,
            redis::aio::ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| other("Redis did not answer in time"))?
        .map_err(other)?;
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn cmd<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> KvResult<T> {
        let mut c = self.unbroken(self.redis().await)?;
        let r = tokio::time::timeout(CALL_TIMEOUT, cmd.query_async(&mut c)).await;
        self.unbroken(r.map_err(|_| Unreachable::TimedOut).and_then(|r| {
            r.map_err(|e| {
                if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                {
                    Unreachable::Io(e.to_string())
                } else {
                    Unreachable::Answer(e.to_string())
                }
            })
        }))
    }

    /// A call's result; a store that could not be reached opens the circuit (see [`Breaker`])
    /// and starts the probe that closes it.
    fn unbroken<T, E: Into<Unreachable>>(&self, r: std::result::Result<T, E>) -> KvResult<T> {
        let e = match r {
            Ok(v) => return Ok(v),
            Err(e) => e.into(),
        };
        let Backend::Redis { url, conn, breaker } = self else {
            return Err(e.error());
        };
        if !matches!(e, Unreachable::Answer(_))
            && !breaker.open.swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            eprintln!("meridian-host: the Redis store is unreachable ({}); failing fast until a probe reaches it", e.text());
            let (url, conn, breaker) = (url.clone(), conn.clone(), breaker.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(PROBE_EVERY).await;
                    let Ok(client) = redis::Client::open(url.as_str()) else {
                        continue;
                    };
                    let probe = async {
                        let mut c = client.get_multiplexed_async_connection().await?;
                        redis::cmd("PING").query_async::<String>(&mut c).await
                    };
                    if let Ok(Ok(_)) = tokio::time::timeout(CALL_TIMEOUT, probe).await {
                        // The old connection may be broken: the next call opens a new one.
                        *conn.lock().await = None;
                        breaker
                            .open
                            .store(false, std::sync::atomic::Ordering::Release);
                        eprintln!("meridian-host: the Redis store is reachable again");
                        return;
                    }
                }
            });
        }
        Err(e.error())
    }

    /// Runs `f` on the SQLite connection. Its calls block (up to the 2 s busy timeout while
    /// another process holds the file), so they run on the runtime's blocking threads and the
    /// request awaits them: the runtime's workers, and a WASI 0.3 instance's other requests, go
    /// on meanwhile.
    async fn sqlite<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> KvResult<T> {
        let Backend::Sqlite { path, conn } = self else {
            return Err(other("not a SQLite store"));
        };
        let (path, conn) = (path.clone(), conn.clone());
        tokio::task::spawn_blocking(move || sqlite_now(&path, &conn, f))
            .await
            .map_err(other)?
    }

    async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        let owned = key.to_string();
        match self {
            Backend::Sqlite { .. } => {
                self.sqlite(move |c| {
                    let key = owned.as_str();
                    sql_get(c, key)
                })
                .await
            }
            Backend::Redis { .. } => self.cmd(redis::cmd("GET").arg(key).clone()).await,
        }
    }

    async fn set(&self, key: &str, value: &[u8]) -> KvResult<()> {
        let (owned, value_owned) = (key.to_string(), value.to_vec());
        match self {
            Backend::Sqlite { .. } => {
                self.sqlite(move |c| {
                    let (key, value) = (owned.as_str(), value_owned.as_slice());
                    sql_put(c, key, value)
                })
                .await
            }
            Backend::Redis { .. } => {
                self.cmd(redis::cmd("SET").arg(key).arg(value).clone())
                    .await
            }
        }
    }

    async fn delete(&self, key: &str) -> KvResult<()> {
        let owned = key.to_string();
        match self {
            Backend::Sqlite { .. } => {
                self.sqlite(move |c| {
                    let key = owned.as_str();
                    c.execute(
                        "DELETE FROM spin_key_value WHERE store = 'default' AND key = ?1",
                        [key],
                    )
                    .map(|_| ())
                })
                .await
            }
            Backend::Redis { .. } => {
                self.cmd::<i64>(redis::cmd("DEL").arg(key).clone()).await?;
                Ok(())
            }
        }
    }

    async fn keys(&self) -> KvResult<Vec<String>> {
        match self {
            Backend::Sqlite { .. } => {
                self.sqlite(move |c| {
                    let mut st = c.prepare(
                        "SELECT key FROM spin_key_value WHERE store = 'default' ORDER BY key",
                    )?;
                    let rows = st.query_map([], |r| r.get::<_, String>(0))?;
                    rows.collect()
                })
                .await
            }
            Backend::Redis { .. } => self.cmd(redis::cmd("KEYS").arg("*").clone()).await,
        }
    }

    /// Atomic: Redis `INCRBY`; in SQLite one immediate transaction (also across processes
    /// sharing the file).
    async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        let owned = key.to_string();
        match self {
            Backend::Sqlite { .. } => {
                self.sqlite(move |c| {
                    let key = owned.as_str();
                    let tx =
                        c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let old = match sql_get(&tx, key)? {
                        None => 0,
                        Some(b) => std::str::from_utf8(&b)
                            .ok()
                            .and_then(|s| s.trim().parse::<i64>().ok())
                            .ok_or_else(|| {
                                rusqlite::Error::InvalidParameterName(format!(
                                    "the value at `{key}` is not an integer"
                                ))
                            })?,
                    };
                    let new = old.checked_add(delta).ok_or_else(|| {
                        rusqlite::Error::InvalidParameterName("increment overflows".into())
                    })?;
                    sql_put(&tx, key, new.to_string().as_bytes())?;
                    tx.commit()?;
                    Ok(new)
                })
                .await
            }
            Backend::Redis { .. } => {
                self.cmd(redis::cmd("INCRBY").arg(key).arg(delta).clone())
                    .await
            }
        }
    }

    /// Writes `value` only if the key still holds `expected`; `false` when it changed.
    async fn swap(&self, key: &str, expected: Option<&[u8]>, value: &[u8]) -> KvResult<bool> {
        let (owned, expected_owned, value_owned) = (
            key.to_string(),
            expected.map(<[u8]>::to_vec),
            value.to_vec(),
        );
        match self {
            Backend::Sqlite { .. } => {
                self.sqlite(move |c| {
                    let (key, expected, value) = (
                        owned.as_str(),
                        expected_owned.as_deref(),
                        value_owned.as_slice(),
                    );
                    let tx =
                        c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    if sql_get(&tx, key)?.as_deref() != expected {
                        return Ok(false);
                    }
                    sql_put(&tx, key, value)?;
                    tx.commit()?;
                    Ok(true)
                })
                .await
            }
            Backend::Redis { .. } => {
                let script = redis::Script::new(
                    r"local cur = redis.call('GET', KEYS[1])
                      if ARGV[1] == '0' then
                        if cur then return 0 end
                      elseif cur ~= ARGV[2] then return 0 end
                      redis.call('SET', KEYS[1], ARGV[3])
                      return 1",
                );
                let mut inv = script.key(key);
                inv.arg(if expected.is_some() { "1" } else { "0" })
                    .arg(expected.unwrap_or_default())
                    .arg(value);
                let mut c = self.unbroken(self.redis().await)?;
                let r = tokio::time::timeout(CALL_TIMEOUT, inv.invoke_async::<i64>(&mut c)).await;
                let done = self.unbroken(
                    r.map_err(|_| Unreachable::TimedOut)
                        .and_then(|r| r.map_err(|e| Unreachable::Io(e.to_string()))),
                )?;
                Ok(done == 1)
            }
        }
    }
}

/// The value at `key` in Spin's key-value table (the store `default`).
fn sql_get(c: &rusqlite::Connection, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    use rusqlite::OptionalExtension;
    c.query_row(
        "SELECT value FROM spin_key_value WHERE store = 'default' AND key = ?1",
        [key],
        |r| r.get(0),
    )
    .optional()
}

/// Writes `value` at `key` in Spin's key-value table, replacing what was there.
fn sql_put(c: &rusqlite::Connection, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO spin_key_value (store, key, value) VALUES ('default', ?1, ?2)
         ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
        rusqlite::params![key, value],
    )
    .map(|_| ())
}

/// Opens the file on first use and runs `f` on its connection (blocking).
fn sqlite_now<T>(
    path: &std::path::Path,
    conn: &Mutex<Option<rusqlite::Connection>>,
    f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T>,
) -> KvResult<T> {
    let mut guard = conn
        .lock()
        .map_err(|_| other("the store's lock is poisoned"))?;
    if guard.is_none() {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(other)?;
        }
        *guard = Some(open_sqlite(path).map_err(other)?);
    }
    let c = guard
        .as_mut()
        .ok_or_else(|| other("the store is not open"))?;
    f(c).map_err(other)
}

/// Opens the SQLite file and makes it ready: WAL journal, the table Spin keeps.
///
/// Two processes opening a new file at once race to switch its journal to WAL, and SQLite
/// answers the loser `SQLITE_BUSY` at once, without waiting in its busy handler (two nodes
/// given their first requests together lost one in five of these races). The setup changes
/// nothing a guest counts, so it is tried again until the call's deadline.
fn open_sqlite(path: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    let c = rusqlite::Connection::open(path)?;
    c.busy_timeout(CALL_TIMEOUT)?;
    let deadline = std::time::Instant::now() + CALL_TIMEOUT;
    loop {
        let setup = c.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS spin_key_value (
                 store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                 PRIMARY KEY (store, key));",
        );
        match setup {
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other.map(|()| c),
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// What the host state gives the key-value bindings.
pub struct KvView<'a> {
    pub stores: &'a Stores,
    pub table: &'a mut wasmtime::component::ResourceTable,
}

pub trait HasKv {
    fn kv(&mut self) -> KvView<'_>;
}

struct KvData;

impl wasmtime::component::HasData for KvData {
    type Data<'a> = KvView<'a>;
}

pub fn add_to_linker<T: HasKv + Send + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    fn get<T: HasKv>(t: &mut T) -> KvView<'_> {
        t.kv()
    }
    store::add_to_linker::<T, KvData>(linker, get)?;
    atomics::add_to_linker::<T, KvData>(linker, get)?;
    batch::add_to_linker::<T, KvData>(linker, get)?;
    Ok(())
}

impl KvView<'_> {
    fn backend(&self, b: &Resource<Bucket>) -> KvResult<Arc<Backend>> {
        Ok(self.table.get(b).map_err(other)?.backend.clone())
    }
}

impl store::Host for KvView<'_> {
    async fn open(&mut self, identifier: String) -> KvResult<Resource<Bucket>> {
        if !self.stores.allowed.contains(&identifier) {
            return Err(store::Error::AccessDenied);
        }
        let backend = self
            .stores
            .backends
            .get(&identifier)
            .cloned()
            .ok_or(store::Error::NoSuchStore)?;
        self.table.push(Bucket { backend }).map_err(other)
    }
}

impl store::HostBucket for KvView<'_> {
    async fn get(&mut self, b: Resource<Bucket>, key: String) -> KvResult<Option<Vec<u8>>> {
        self.backend(&b)?.get(&key).await
    }

    async fn set(&mut self, b: Resource<Bucket>, key: String, value: Vec<u8>) -> KvResult<()> {
        self.backend(&b)?.set(&key, &value).await
    }

    async fn delete(&mut self, b: Resource<Bucket>, key: String) -> KvResult<()> {
        self.backend(&b)?.delete(&key).await
    }

    async fn exists(&mut self, b: Resource<Bucket>, key: String) -> KvResult<bool> {
        Ok(self.backend(&b)?.get(&key).await?.is_some())
    }

    async fn list_keys(
        &mut self,
        b: Resource<Bucket>,
        _cursor: Option<String>,
    ) -> KvResult<store::KeyResponse> {
        Ok(store::KeyResponse {
            keys: self.backend(&b)?.keys().await?,
            cursor: None,
        })
    }

    async fn drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    async fn increment(&mut self, b: Resource<Bucket>, key: String, delta: i64) -> KvResult<i64> {
        self.backend(&b)?.increment(&key, delta).await
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> std::result::Result<(), atomics::CasError> {
        let c = self
            .table
            .delete(cas)
            .map_err(|e| atomics::CasError::StoreError(other(e)))?;
        match c.backend.swap(&c.key, c.current.as_deref(), &value).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                let current = c
                    .backend
                    .get(&c.key)
                    .await
                    .map_err(atomics::CasError::StoreError)?;
                let fresh = self
                    .table
                    .push(Cas {
                        backend: c.backend.clone(),
                        key: c.key,
                        current,
                    })
                    .map_err(|e| atomics::CasError::StoreError(other(e)))?;
                Err(atomics::CasError::CasFailed(fresh))
            }
            Err(e) => Err(atomics::CasError::StoreError(e)),
        }
    }
}

impl atomics::HostCas for KvView<'_> {
    async fn new(&mut self, b: Resource<Bucket>, key: String) -> KvResult<Resource<Cas>> {
        let backend = self.backend(&b)?;
        let current = backend.get(&key).await?;
        self.table
            .push(Cas {
                backend,
                key,
                current,
            })
            .map_err(other)
    }

    async fn current(&mut self, cas: Resource<Cas>) -> KvResult<Option<Vec<u8>>> {
        Ok(self.table.get(&cas).map_err(other)?.current.clone())
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        b: Resource<Bucket>,
        keys: Vec<String>,
    ) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        let backend = self.backend(&b)?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let v = backend.get(&k).await?;
            out.push((k, v));
        }
        Ok(out)
    }

    async fn set_many(
        &mut self,
        b: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        let backend = self.backend(&b)?;
        for (k, v) in key_values {
            backend.set(&k, &v).await?;
        }
        Ok(())
    }

    async fn delete_many(&mut self, b: Resource<Bucket>, keys: Vec<String>) -> KvResult<()> {
        let backend = self.backend(&b)?;
        for k in keys {
            backend.delete(&k).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two nodes whose first requests come together open a new SQLite file at once: both get
    /// a ready store (before the retry, the loser of the race to switch the journal to WAL got
    /// `database is locked` at once, and its request a 503).
    #[test]
    fn two_nodes_opening_a_new_file_at_once_both_get_the_store() {
        let dir = std::env::temp_dir().join(format!("meridian-kv-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut failed = Vec::new();
        for round in 0..100 {
            let path = dir.join(format!("kv-{round}.db"));
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let nodes: Vec<_> = (0..2)
                .map(|_| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        open_sqlite(&path).map(|_| ()).map_err(|e| e.to_string())
                    })
                })
                .collect();
            for n in nodes {
                if let Err(e) = n.join().unwrap() {
                    failed.push(format!("round {round}: {e}"));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert!(failed.is_empty(), "{failed:?}");
    }
}
