//! Outbound plain-HTTP requests over kept-alive, reused connections (hyper-util's pooled
//! client), with wasi:http's request options honoured: the first-byte timeout bounds the wait
//! for response headers (connecting included) and the between-bytes timeout each body read.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

#[derive(Clone)]
pub struct Pool {
    client: Client<HttpConnector, WasiBody>,
}

impl Pool {
    /// `nodelay`: set TCP_NODELAY on outbound connections (Spin's outbound HTTP does not).
    pub fn new(nodelay: bool) -> Pool {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(nodelay);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Pool { client }
    }

    pub async fn send(
        &self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
        const DEFAULT: Duration = Duration::from_secs(600);
        let connect = options.and_then(|o| o.connect_timeout).unwrap_or(DEFAULT);
        let first_byte = options
            .and_then(|o| o.first_byte_timeout)
            .unwrap_or(DEFAULT);
        let between = options
            .and_then(|o| o.between_bytes_timeout)
            .unwrap_or(DEFAULT)
            .max(Duration::from_nanos(1));
        let wait = connect.max(first_byte);
        let response = match tokio::time::timeout(wait, self.client.request(request)).await {
            Err(_) => return Err(Error::ConnectionReadTimeout),
            Ok(Err(e)) if e.is_connect() => {
                let refused = std::error::Error::source(&e)
                    .and_then(|s| s.source())
                    .and_then(|s| s.downcast_ref::<std::io::Error>())
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
                return Err(if refused {
                    Error::ConnectionRefused
                } else {
                    Error::Connect(std::io::Error::other(e.to_string()))
                });
            }
            Ok(Err(e)) => {
                return Err(
                    match std::error::Error::source(&e)
                        .and_then(|s| s.downcast_ref::<hyper::Error>())
                    {
                        Some(h) if h.is_incomplete_message() => Error::HttpResponseIncomplete,
                        _ => Error::HttpProtocolError,
                    },
                )
            }
            Ok(Ok(r)) => r,
        };
        let mut interval = tokio::time::interval(between);
        interval.reset();
        let response = response.map(|incoming| TimedBody { incoming, interval }.boxed_unsync());
        Ok((response, Box::new(async { Ok(()) }) as IoFuture))
    }
}

/// A response body whose reads fail once `interval` passes without a frame.
struct TimedBody {
    incoming: hyper::body::Incoming,
    interval: tokio::time::Interval,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(if e.is_timeout() {
                Error::HttpResponseTimeout
            } else {
                Error::from(e)
            }))),
            Poll::Ready(Some(Ok(frame))) => {
                self.interval.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => match self.interval.poll_tick(cx) {
                Poll::Ready(_) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}
