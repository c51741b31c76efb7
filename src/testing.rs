//! A scripted transport on tokio's paused clock, for native tests of the attempt loop and of
//! whole requests: time only moves when every task waits, so timeouts, backoff and hedging are
//! exact and instant. Requests are routed by the URL's host, which tests name after providers.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

use tokio::time::{sleep, Duration, Instant};

use crate::transport::{BodyStream, Failure, OutboundRequest, Transport, UpResponse};

/// The wall clock when a `Fake` starts: Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example).
pub const UNIX_AT_START_MS: u64 = 784_111_777_000;

#[derive(Debug, Clone)]
pub enum Step {
    /// Headers after `after_ms`, then body chunks, each after its delay.
    Answer {
        after_ms: u64,
        status: u16,
        headers: Vec<(String, String)>,
        chunks: Vec<(u64, Result<Vec<u8>, Failure>)>,
    },
    Fail {
        after_ms: u64,
        failure: Failure,
    },
}

pub fn ok_json(after_ms: u64) -> Step {
    Step::Answer {
        after_ms,
        status: 200,
        headers: vec![],
        chunks: vec![(
            0,
            Ok(br#"{"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#.to_vec()),
        )],
    }
}

pub fn status(code: u16, retry_after: Option<&str>) -> Step {
    Step::Answer {
        after_ms: 0,
        status: code,
        headers: retry_after
            .map(|r| vec![("retry-after".to_string(), r.to_string())])
            .unwrap_or_default(),
        chunks: vec![(0, Ok(b"{\"error\":{}}".to_vec()))],
    }
}

pub struct Fake {
    steps: RefCell<HashMap<String, VecDeque<Step>>>,
    /// Each request sent: (provider, when).
    pub sent: RefCell<Vec<(String, u64)>>,
    /// The full requests sent, in order.
    pub requests: RefCell<Vec<OutboundRequest>>,
    /// Providers whose request was dropped before it answered (cancelled).
    pub dropped: RefCell<Vec<String>>,
    /// Answers computed from each request (provider, request), in place of the script.
    responder: Option<Box<Responder>>,
    t0: Instant,
}

type Responder = dyn Fn(&str, &OutboundRequest) -> Step;

impl Fake {
    pub fn new(steps: Vec<(&str, Vec<Step>)>) -> Fake {
        Fake {
            steps: RefCell::new(
                steps
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.into()))
                    .collect(),
            ),
            sent: RefCell::new(Vec::new()),
            requests: RefCell::new(Vec::new()),
            dropped: RefCell::new(Vec::new()),
            responder: None,
            t0: Instant::now(),
        }
    }

    /// A fake whose every answer `f` makes from the provider's name and the request it got.
    pub fn responding(f: impl Fn(&str, &OutboundRequest) -> Step + 'static) -> Fake {
        Fake {
            responder: Some(Box::new(f)),
            ..Fake::new(Vec::new())
        }
    }
    pub fn sent_to(&self) -> Vec<String> {
        self.sent.borrow().iter().map(|(p, _)| p.clone()).collect()
    }
}

pub struct FakeBody(pub VecDeque<(u64, Result<Vec<u8>, Failure>)>);

impl BodyStream for FakeBody {
    async fn next_chunk(&mut self, timeout_ms: u64) -> Option<Result<Vec<u8>, Failure>> {
        let (delay, item) = self.0.pop_front()?;
        if delay > timeout_ms {
            sleep(Duration::from_millis(timeout_ms)).await;
            return Some(Err(Failure::Timeout("body")));
        }
        sleep(Duration::from_millis(delay)).await;
        Some(item)
    }
}

/// Notes a send whose future was dropped before it finished (a cancelled request).
struct Cancel<'a>(&'a Fake, String, bool);
impl Drop for Cancel<'_> {
    fn drop(&mut self) {
        if !self.2 {
            self.0.dropped.borrow_mut().push(self.1.clone());
        }
    }
}

impl Transport for Fake {
    type Body = FakeBody;
    async fn send(
        &self,
        req: OutboundRequest,
        timeout_ms: u64,
    ) -> Result<UpResponse<FakeBody>, Failure> {
        let provider = req
            .url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        self.sent
            .borrow_mut()
            .push((provider.clone(), self.now_ms()));
        self.requests.borrow_mut().push(req.clone());
        let mut guard = Cancel(self, provider.clone(), false);
        let step = match &self.responder {
            Some(f) => Some(f(&provider, &req)),
            None => self
                .steps
                .borrow_mut()
                .get_mut(&provider)
                .and_then(|q| q.pop_front()),
        };
        let result = match step {
            None => Err(Failure::Connect("no script".into())),
            Some(Step::Fail { after_ms, failure }) => {
                sleep(Duration::from_millis(after_ms.min(timeout_ms))).await;
                Err(if after_ms > timeout_ms {
                    Failure::Timeout("headers")
                } else {
                    failure
                })
            }
            Some(Step::Answer {
                after_ms,
                status,
                headers,
                chunks,
            }) => {
                if after_ms > timeout_ms {
                    sleep(Duration::from_millis(timeout_ms)).await;
                    Err(Failure::Timeout("headers"))
                } else {
                    sleep(Duration::from_millis(after_ms)).await;
                    Ok(UpResponse {
                        status,
                        headers,
                        body: FakeBody(chunks.into()),
                        dialect: crate::sse::Dialect::OpenAi,
                    })
                }
            }
        };
        guard.2 = true;
        result
    }
    async fn sleep(&self, ms: u64) {
        sleep(Duration::from_millis(ms)).await
    }
    fn now_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }
    fn unix_ms(&self) -> u64 {
        UNIX_AT_START_MS + self.now_ms()
    }
}

/// A key-value store in memory, scripted to fail: the double of `wasi:keyvalue` for the limits'
/// tests. `fail_next` fails the next calls without applying them; `lose_next_replies` applies
/// the next increments and then reports an error (a lost reply).
#[derive(Default)]
pub struct MemStore {
    pub values: RefCell<HashMap<String, i64>>,
    pub blobs: RefCell<HashMap<String, Vec<u8>>>,
    pub fail_next: std::cell::Cell<u32>,
    pub lose_next_replies: std::cell::Cell<u32>,
    /// Fails every call while set (the store is down).
    pub down: std::cell::Cell<bool>,
    pub calls: std::cell::Cell<u32>,
}

impl MemStore {
    pub fn value(&self, key: &str) -> i64 {
        self.values.borrow().get(key).copied().unwrap_or(0)
    }

    fn failing(&self) -> bool {
        self.calls.set(self.calls.get() + 1);
        if self.down.get() {
            return true;
        }
        let n = self.fail_next.get();
        if n > 0 {
            self.fail_next.set(n - 1);
            return true;
        }
        false
    }
}

impl crate::limits::Store for MemStore {
    fn increment<'a>(
        &'a self,
        key: &'a str,
        delta: i64,
    ) -> futures::future::LocalBoxFuture<'a, Result<i64, String>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            if self.failing() {
                return Err("store unreachable".into());
            }
            let mut v = self.values.borrow_mut();
            let e = v.entry(key.to_string()).or_insert(0);
            *e += delta;
            let now = *e;
            let lost = self.lose_next_replies.get();
            if lost > 0 {
                self.lose_next_replies.set(lost - 1);
                return Err("connection reset after the command was sent".into());
            }
            Ok(now)
        })
    }

    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> futures::future::LocalBoxFuture<'a, Result<Option<Vec<u8>>, String>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            if self.failing() {
                return Err("store unreachable".into());
            }
            if let Some(b) = self.blobs.borrow().get(key) {
                return Ok(Some(b.clone()));
            }
            Ok(self
                .values
                .borrow()
                .get(key)
                .map(|n| n.to_string().into_bytes()))
        })
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
    ) -> futures::future::LocalBoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            if self.failing() {
                return Err("store unreachable".into());
            }
            self.blobs.borrow_mut().insert(key.to_string(), value);
            Ok(())
        })
    }
}
