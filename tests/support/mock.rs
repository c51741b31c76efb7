//! A mock OpenAI-compatible upstream whose every answer is scripted by the test, faults included.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The query string, without `?` (empty when none).
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How the upstream answers one request.
#[derive(Clone)]
pub enum Script {
    Json {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// SSE events and `[DONE]` in one body, sent in one piece (a short or cached answer).
    SseAtOnce(Vec<String>),
    /// SSE events (each written as `data: <e>\n\n`), with a pause before each after the first.
    Sse {
        events: Vec<String>,
        gap_ms: u64,
        end: SseEnd,
    },
    /// Waits before sending the response headers.
    Delay(u64, Box<Script>),
    /// Accepts the request and never answers.
    Hang,
}

#[derive(Clone)]
pub enum SseEnd {
    Done,
    /// The connection is cut after the events (no terminating chunk, no [DONE]).
    Cut,
    /// Waits for `release` before sending the rest (the events after index 0) and [DONE].
    HoldAfterFirst(Arc<Notify>),
}

pub fn chat_json(content: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
    })
    .to_string()
}

pub fn chunk(content: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]
    })
    .to_string()
}

impl Script {
    pub fn ok(content: &str) -> Script {
        Script::Json {
            status: 200,
            body: chat_json(content),
            headers: vec![],
        }
    }
    pub fn status(status: u16) -> Script {
        Script::Json {
            status,
            body: format!("{{\"error\":{{\"message\":\"mock {status}\",\"type\":\"server_error\",\"code\":null}}}}"),
            headers: vec![],
        }
    }
    pub fn stream(words: &[&str]) -> Script {
        Script::Sse {
            events: words.iter().map(|w| chunk(w)).collect(),
            gap_ms: 0,
            end: SseEnd::Done,
        }
    }
}

type Responder = Arc<dyn Fn(&Recorded, usize) -> Script + Send + Sync>;

pub struct Mock {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<Recorded>>>,
    /// Requests whose handling was dropped before finishing (e.g. a cancelled hedge loser).
    pub dropped: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct DropCounter(Arc<Mutex<usize>>, bool);
impl Drop for DropCounter {
    fn drop(&mut self) {
        if !self.1 {
            *self.0.lock().unwrap() += 1;
        }
    }
}

impl Mock {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// The same script for every request.
    pub async fn start(script: Script) -> Mock {
        Mock::with(move |_, _| script.clone()).await
    }

    /// Scripts chosen per request (`n` counts requests from 0).
    pub async fn with(f: impl Fn(&Recorded, usize) -> Script + Send + Sync + 'static) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Mock::serve(listener, Arc::new(f))
    }

    /// The same script for every request, at a fixed address (e.g. where the default policy's
    /// self-hosted engine lives); `None` when that address is taken.
    pub async fn start_at(addr: &str, script: Script) -> Option<Mock> {
        let listener = TcpListener::bind(addr).await.ok()?;
        Some(Mock::serve(listener, Arc::new(move |_, _| script.clone())))
    }

    /// At a fixed address, answering each request as `f` says; `None` if the address is taken.
    pub async fn with_at(
        addr: &str,
        f: impl Fn(&Recorded, usize) -> Script + Send + Sync + 'static,
    ) -> Option<Mock> {
        let listener = TcpListener::bind(addr).await.ok()?;
        Some(Mock::serve(listener, Arc::new(f)))
    }

    fn serve(listener: TcpListener, responder: Responder) -> Mock {
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let dropped = Arc::new(Mutex::new(0));
        let (log2, dropped2) = (log.clone(), dropped.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                // As inference servers do (uvicorn, Go's net/http): each write leaves at once, so
                // the mock's own sends never wait on Nagle's algorithm.
                let _ = conn.set_nodelay(true);
                let (responder, log, dropped) = (responder.clone(), log2.clone(), dropped2.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (responder, log, dropped) =
                                (responder.clone(), log.clone(), dropped.clone());
                            async move {
                                let mut guard = DropCounter(dropped, false);
                                let method = req.method().to_string();
                                let path = req.uri().path().to_string();
                                let query = req.uri().query().unwrap_or("").to_string();
                                let headers = req
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| {
                                        (
                                            k.as_str().to_string(),
                                            v.to_str().unwrap_or("").to_string(),
                                        )
                                    })
                                    .collect();
                                let bytes = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let body = serde_json::from_slice(&bytes)
                                    .unwrap_or(serde_json::Value::Null);
                                let rec = Recorded {
                                    method,
                                    path,
                                    query,
                                    headers,
                                    body,
                                };
                                let n = {
                                    let mut l = log.lock().unwrap();
                                    l.push(rec.clone());
                                    l.len() - 1
                                };
                                let resp = respond(responder(&rec, n)).await;
                                guard.1 = true;
                                Ok::<_, Infallible>(resp)
                            }
                        },
                    );
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(conn), service)
                        .await;
                });
            }
        });
        Mock {
            addr,
            log,
            dropped,
            task,
        }
    }

    /// An address where nothing listens: connections are refused.
    pub async fn refused_url() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        format!("http://{addr}")
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

fn respond(
    script: Script,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = hyper::Response<Body>> + Send>> {
    Box::pin(async move {
        match script {
            Script::Json {
                status,
                body,
                headers,
            } => {
                let mut b = hyper::Response::builder()
                    .status(status)
                    .header("content-type", "application/json");
                for (k, v) in headers {
                    b = b.header(k, v);
                }
                b.body(
                    Full::new(Bytes::from(body))
                        .map_err(|e: Infallible| match e {})
                        .boxed(),
                )
                .unwrap()
            }
            Script::SseAtOnce(events) => {
                let mut body = String::new();
                for e in events {
                    body.push_str(&sse_event(&e));
                }
                body.push_str("data: [DONE]\n\n");
                hyper::Response::builder()
                    .status(200)
                    .header("content-type", "text/event-stream")
                    .body(
                        Full::new(Bytes::from(body))
                            .map_err(|e: Infallible| match e {})
                            .boxed(),
                    )
                    .unwrap()
            }
            Script::Delay(ms, inner) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                respond(*inner).await
            }
            Script::Hang => {
                std::future::pending::<()>().await;
                unreachable!()
            }
            Script::Sse {
                events,
                gap_ms,
                end,
            } => {
                let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
                tokio::spawn(async move {
                    if let (SseEnd::HoldAfterFirst(n), true) = (&end, events.is_empty()) {
                        n.notified().await; // headers only: the first byte is held
                    }
                    for (i, e) in events.iter().enumerate() {
                        if i > 0 {
                            if let SseEnd::HoldAfterFirst(n) = &end {
                                if i == 1 {
                                    n.notified().await;
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(gap_ms)).await;
                        }
                        if tx
                            .send(Ok(Frame::data(Bytes::from(sse_event(e)))))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    match end {
                        SseEnd::Cut => {
                            let _ = tx.send(Err(std::io::Error::other("cut"))).await;
                        }
                        SseEnd::Done | SseEnd::HoldAfterFirst(_) => {
                            let _ = tx
                                .send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
                                .await;
                        }
                    }
                });
                let stream = tokio_stream_from(rx);
                hyper::Response::builder()
                    .status(200)
                    .header("content-type", "text/event-stream")
                    .body(BodyExt::boxed(StreamBody::new(stream)))
                    .unwrap()
            }
        }
    })
}

/// One SSE event: `data: <e>`, or `e` as written when it names itself (`event: …\ndata: …`, as
/// Anthropic's API writes its events).
fn sse_event(e: &str) -> String {
    if e.starts_with("event: ") {
        format!("{e}\n\n")
    } else {
        format!("data: {e}\n\n")
    }
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
