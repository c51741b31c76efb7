//! An OTLP/HTTP receiver on 127.0.0.1, started by a test: it keeps every trace and metrics
//! export it is sent, decoded with the OpenTelemetry project's own protobuf types.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;

#[derive(Default)]
pub struct Received {
    pub traces: Vec<ExportTraceServiceRequest>,
    pub metrics: Vec<ExportMetricsServiceRequest>,
    /// Requests that were not OTLP/protobuf to a known path.
    pub bad: Vec<String>,
}

pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Received::default()));
        let g = got.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let g = g.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let g = g.clone();
                            async move {
                                let path = req.uri().path().to_string();
                                let ctype = req
                                    .headers()
                                    .get("content-type")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_string();
                                let body = req.into_body().collect().await.map(|b| b.to_bytes());
                                let mut g = g.lock().unwrap();
                                match (path.as_str(), body) {
                                    ("/v1/traces", Ok(b)) if ctype == "application/x-protobuf" => {
                                        match ExportTraceServiceRequest::decode(b) {
                                            Ok(t) => g.traces.push(t),
                                            Err(e) => g.bad.push(format!("traces: {e}")),
                                        }
                                    }
                                    ("/v1/metrics", Ok(b)) if ctype == "application/x-protobuf" => {
                                        match ExportMetricsServiceRequest::decode(b) {
                                            Ok(m) => g.metrics.push(m),
                                            Err(e) => g.bad.push(format!("metrics: {e}")),
                                        }
                                    }
                                    (p, _) => g.bad.push(format!("{p} ({ctype})")),
                                }
                                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                            }
                        },
                    );
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(conn), service)
                        .await;
                });
            }
        });
        Receiver { url, got, task }
    }

    /// Every span received so far, with its scope's name.
    pub fn spans(&self) -> Vec<(String, Span)> {
        let g = self.got.lock().unwrap();
        g.traces
            .iter()
            .flat_map(|t| &t.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| {
                let name = s.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default();
                s.spans.iter().map(move |sp| (name.clone(), sp.clone()))
            })
            .collect()
    }

    /// Every metric received so far.
    pub fn metrics(&self) -> Vec<Metric> {
        let g = self.got.lock().unwrap();
        g.metrics
            .iter()
            .flat_map(|m| &m.resource_metrics)
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| s.metrics.clone())
            .collect()
    }

    /// Waits (at most 20 s) until `done` holds for what has been received.
    pub async fn until(&self, what: &str, done: impl Fn(&Receiver) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} within 20 s; received {} spans, {} metrics, bad: {:?}",
                self.spans().len(),
                self.metrics().len(),
                self.got.lock().unwrap().bad
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An attribute's value, if the span or point has it.
pub fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

pub fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attrs, key) {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

pub fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key) {
        Some(any_value::Value::IntValue(n)) => Some(*n),
        _ => None,
    }
}
