//! What both adapters need from the `wasi:http` runtime, in one home: header fields converted
//! to and from the host's form, the upstream URL split the way `wasi:http` takes it, and what a
//! runtime error code means for the attempt loop. Pure; the adapters do the host calls.

/// Header fields as a WASI host gives them, as (lower-case name, value) pairs, repeated names
/// kept. The host's strings are kept as they come (names are already lower case under wasmtime
/// and Spin); a value that is not UTF-8 is replaced lossily.
pub fn header_pairs(entries: Vec<(String, Vec<u8>)>) -> Vec<(String, String)> {
    entries
        .into_iter()
        .map(|(mut k, v)| {
            k.make_ascii_lowercase();
            let v = String::from_utf8(v)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            (k, v)
        })
        .collect()
}

/// (name, value) pairs as a WASI host takes them.
pub fn field_list(headers: Vec<(String, String)>) -> Vec<(String, Vec<u8>)> {
    headers
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect()
}

/// A request's method as its name (without `fmt`). The WASI 0.2 and 0.3 bindings have the same
/// variants under different types, so each adapter expands this for its own:
/// `meridian::method_name!(Method, m)`.
#[macro_export]
macro_rules! method_name {
    ($method:ident, $m:expr) => {{
        let name: String = match $m {
            $method::Get => "GET".into(),
            $method::Head => "HEAD".into(),
            $method::Post => "POST".into(),
            $method::Put => "PUT".into(),
            $method::Delete => "DELETE".into(),
            $method::Connect => "CONNECT".into(),
            $method::Options => "OPTIONS".into(),
            $method::Trace => "TRACE".into(),
            $method::Patch => "PATCH".into(),
            $method::Other(s) => s,
        };
        name
    }};
}

/// What a `wasi:http` error code means for the attempt loop. The WASI 0.2 and 0.3 bindings have
/// the same variants under different types, so each adapter expands this for its own:
/// `meridian::failure_of_error_code!(ErrorCode, &e)`.
#[macro_export]
macro_rules! failure_of_error_code {
    ($code:ident, $e:expr) => {{
        use $crate::transport::Failure;
        match $e {
            $code::ConnectionTimeout
            | $code::ConnectionReadTimeout
            | $code::ConnectionWriteTimeout
            | $code::HttpResponseTimeout
            | $code::DnsTimeout => Failure::Timeout("headers"),
            $code::HttpRequestDenied => {
                Failure::Config("its host is not in the component's allowed_outbound_hosts".into())
            }
            e @ ($code::ConnectionRefused
            | $code::DnsError(_)
            | $code::DestinationNotFound
            | $code::DestinationUnavailable
            | $code::DestinationIpUnroutable
            | $code::DestinationIpProhibited
            | $code::TlsProtocolError
            | $code::TlsCertificateError
            | $code::ConnectionTerminated
            | $code::ConnectionLimitReached) => Failure::Connect(format!("{e:?}")),
            other => Failure::Transport(format!("{other:?}")),
        }
    }};
}

/// `WasiStore`, the store limits are kept in, over `wasi:keyvalue@0.2.0-draft2` (Spin 3.0+):
/// the store labelled `default` in spin.toml's `key_value_stores`, whose backend Spin's runtime
/// config chooses, opened on first use (a request no limit applies to makes no key-value call).
/// Both adapters bind the same interfaces under different types, so each expands this where
/// `kv` names its bindings: `use …::wasi::keyvalue as kv; meridian::wasi_key_value_store!();`.
#[macro_export]
macro_rules! wasi_key_value_store {
    () => {
        #[derive(Default)]
        struct WasiStore {
            bucket: std::cell::OnceCell<Result<kv::store::Bucket, String>>,
        }

        fn kv_error(e: kv::store::Error) -> String {
            match e {
                kv::store::Error::NoSuchStore => {
                    "no store named `default` (spin.toml: key_value_stores)".into()
                }
                kv::store::Error::AccessDenied => {
                    "access to the store `default` denied (spin.toml: key_value_stores = [\"default\"])".into()
                }
                kv::store::Error::Other(m) => m,
            }
        }

        impl WasiStore {
            fn bucket(&self) -> Result<&kv::store::Bucket, String> {
                self.bucket
                    .get_or_init(|| kv::store::open("default").map_err(kv_error))
                    .as_ref()
                    .map_err(Clone::clone)
            }
        }

        impl $crate::limits::Store for WasiStore {
            fn increment<'a>(
                &'a self,
                key: &'a str,
                delta: i64,
            ) -> $crate::limits::LocalBoxFuture<'a, Result<i64, String>> {
                Box::pin(async move {
                    kv::atomics::increment(self.bucket()?, key, delta).map_err(kv_error)
                })
            }

            fn get<'a>(
                &'a self,
                key: &'a str,
            ) -> $crate::limits::LocalBoxFuture<'a, Result<Option<Vec<u8>>, String>> {
                Box::pin(async move { self.bucket()?.get(key).map_err(kv_error) })
            }

            fn set<'a>(
                &'a self,
                key: &'a str,
                value: Vec<u8>,
            ) -> $crate::limits::LocalBoxFuture<'a, Result<(), String>> {
                Box::pin(async move { self.bucket()?.set(key, &value).map_err(kv_error) })
            }
        }
    };
}

/// Where an outbound request goes, split the way `wasi:http` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    /// `host[:port]`, the port left out when it is the scheme's default.
    pub authority: String,
    /// Path and query (never empty), without the fragment.
    pub path_and_query: String,
}

impl Target {
    /// Splits an `http` or `https` URL. The plain form every policy's base URLs take (lower-case
    /// host name or IPv4 address, optional port, a path of ordinary characters) is split in
    /// place; anything else goes through the `url` crate's parser, whose normalisation (default
    /// ports, case, dot segments, percent-encoding) the fast path never has to reproduce.
    pub fn parse(raw: &str) -> Option<Target> {
        Self::plain(raw).or_else(|| Self::parsed(raw))
    }

    fn plain(raw: &str) -> Option<Target> {
        let (https, rest) = if let Some(r) = raw.strip_prefix("https://") {
            (true, r)
        } else {
            (false, raw.strip_prefix("http://")?)
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let host_ok = !host.is_empty()
            && !host.starts_with(['.', '-'])
            && !host.ends_with('.')
            && host
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        // A host whose last label starts with a digit is read as an IPv4 address (WHATWG URL:
        // "ends in a number", hex and octal included); only the plain dotted form stays here.
        let last = host.rsplit('.').find(|l| !l.is_empty()).unwrap_or(host);
        let dotted_quad = || {
            let mut n = 0;
            host.split('.').all(|o| {
                n += 1;
                !o.is_empty()
                    && o.len() <= 3
                    && (o == "0" || !o.starts_with('0'))
                    && o.bytes().all(|b| b.is_ascii_digit())
                    && o.parse::<u8>().is_ok()
            }) && n == 4
        };
        let ipv4_ok = !last.starts_with(|c: char| c.is_ascii_digit()) || dotted_quad();
        let port_ok = match port {
            None => true,
            Some(p) => {
                !p.is_empty()
                    && p.len() <= 5
                    && !p.starts_with('0')
                    && p.bytes().all(|b| b.is_ascii_digit())
                    && p.parse::<u16>()
                        .is_ok_and(|n| n != if https { 443 } else { 80 })
            }
        };
        let path = path.split('#').next().unwrap_or_default();
        let path_ok = path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/?&=-_.~:@!$'()*+,;".contains(&b))
            && !path.contains("/.")
            && !path.starts_with('?');
        if !(host_ok && ipv4_ok && port_ok && path_ok) {
            return None;
        }
        Some(Target {
            https,
            authority: authority.to_string(),
            path_and_query: if path.is_empty() {
                "/".into()
            } else {
                path.to_string()
            },
        })
    }

    fn parsed(raw: &str) -> Option<Target> {
        let url = url::Url::parse(raw).ok()?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let host = url.host_str()?;
        Some(Target {
            https,
            authority: match url.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_string(),
            },
            path_and_query: match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_string(),
            },
        })
    }
}

#[cfg(test)]
mod tests;

/// Hands a request's telemetry ([`crate::otel::render`]) to the host through `wasi:otel`
/// (`0.2.0-rc.2`, linked by Spin with `--experimental-wasi-otel` and by meridian-host with the
/// same flag), and reads the host's span for the request. Both adapters bind the interfaces
/// under their own types, so each expands this where `otel_tracing`, `otel_metrics` and
/// `OtelDatetime` name its bindings; it defines `otel_host_span()` and `otel_emit(&Telemetry)`.
///
/// Spans are reported after the fact with their real times: each is started (`on-start`),
/// then ended children first (`on-end`), since the host ends only spans it saw start. Metrics
/// go in one `export` as deltas of this request.
#[macro_export]
macro_rules! wasi_otel {
    () => {
        /// The host's span for this request, when the host is tracing.
        fn otel_host_span() -> Option<$crate::trace::HostSpan> {
            let c = otel_tracing::outer_span_context();
            $crate::trace::HostSpan::from_hex(
                &c.trace_id,
                &c.span_id,
                c.trace_flags.contains(otel_tracing::TraceFlags::SAMPLED),
            )
        }

        fn otel_time(unix_ns: u64) -> OtelDatetime {
            OtelDatetime {
                seconds: unix_ns / 1_000_000_000,
                nanoseconds: (unix_ns % 1_000_000_000) as u32,
            }
        }

        fn otel_attrs(attrs: &[(&'static str, $crate::otel::Value)]) -> Vec<otel_types::KeyValue> {
            attrs
                .iter()
                .map(|(k, v)| otel_types::KeyValue {
                    key: (*k).to_string(),
                    value: v.json(),
                })
                .collect()
        }

        fn otel_scope() -> otel_types::InstrumentationScope {
            otel_types::InstrumentationScope {
                name: $crate::otel::SCOPE.to_string(),
                version: Some($crate::otel::VERSION.to_string()),
                schema_url: Some($crate::otel::SCHEMA_URL.to_string()),
                attributes: Vec::new(),
            }
        }

        fn otel_emit(t: &$crate::otel::Telemetry) {
            let contexts: Vec<otel_tracing::SpanContext> = t
                .spans
                .iter()
                .map(|s| otel_tracing::SpanContext {
                    trace_id: s.trace_id_hex(),
                    span_id: s.span_id_hex(),
                    trace_flags: if s.sampled {
                        otel_tracing::TraceFlags::SAMPLED
                    } else {
                        otel_tracing::TraceFlags::empty()
                    },
                    is_remote: false,
                    trace_state: Vec::new(),
                })
                .collect();
            for c in &contexts {
                otel_tracing::on_start(c);
            }
            for (s, c) in t.spans.iter().zip(contexts).rev() {
                otel_tracing::on_end(&otel_tracing::SpanData {
                    span_context: c,
                    parent_span_id: s.parent_id_hex(),
                    span_kind: if s.client {
                        otel_tracing::SpanKind::Client
                    } else {
                        otel_tracing::SpanKind::Internal
                    },
                    name: s.name.clone(),
                    start_time: otel_time(s.start_unix_ns),
                    end_time: otel_time(s.end_unix_ns),
                    attributes: otel_attrs(&s.attributes),
                    events: Vec::new(),
                    links: Vec::new(),
                    status: match &s.error {
                        Some(e) => otel_tracing::Status::Error(e.clone()),
                        None => otel_tracing::Status::Unset,
                    },
                    instrumentation_scope: otel_scope(),
                    dropped_attributes: 0,
                    dropped_events: 0,
                    dropped_links: 0,
                });
            }
            if !t.metrics.is_empty() {
                otel_export_metrics(t);
            }
        }

        /// One metric as `wasi:otel` has it (delta temporality: this request's contribution).
        fn otel_metric(
            metric: &$crate::otel::Metric,
            start: OtelDatetime,
            time: OtelDatetime,
        ) -> otel_metrics::Metric {
            use otel_metrics as m;
            let number = |n: $crate::otel::Number| match n {
                $crate::otel::Number::U64(v) => m::MetricNumber::U64(v),
                $crate::otel::Number::F64(v) => m::MetricNumber::F64(v),
            };
            let floats = metric
                .points
                .first()
                .is_some_and(|(_, n)| matches!(n, $crate::otel::Number::F64(_)));
            let data = match metric.instrument {
                $crate::otel::Instrument::Histogram(bounds) => {
                    let h = m::Histogram {
                        data_points: metric
                            .points
                            .iter()
                            .map(|(attrs, n)| m::HistogramDataPoint {
                                attributes: otel_attrs(attrs),
                                count: 1,
                                bounds: bounds.to_vec(),
                                bucket_counts: $crate::otel::buckets(bounds, n.as_f64()),
                                min: Some(number(*n)),
                                max: Some(number(*n)),
                                sum: number(*n),
                                exemplars: Vec::new(),
                            })
                            .collect(),
                        start_time: start,
                        time,
                        temporality: m::Temporality::Delta,
                    };
                    if floats {
                        m::MetricData::F64Histogram(h)
                    } else {
                        m::MetricData::U64Histogram(h)
                    }
                }
                $crate::otel::Instrument::Counter => {
                    let sum = m::Sum {
                        data_points: metric
                            .points
                            .iter()
                            .map(|(attrs, n)| m::SumDataPoint {
                                attributes: otel_attrs(attrs),
                                value: number(*n),
                                exemplars: Vec::new(),
                            })
                            .collect(),
                        start_time: start,
                        time,
                        temporality: m::Temporality::Delta,
                        is_monotonic: true,
                    };
                    if floats {
                        m::MetricData::F64Sum(sum)
                    } else {
                        m::MetricData::U64Sum(sum)
                    }
                }
            };
            m::Metric {
                name: metric.name.to_string(),
                description: metric.description.to_string(),
                unit: metric.unit.to_string(),
                data,
            }
        }

        /// This request's metrics, exported with the service's resource.
        fn otel_export_metrics(t: &$crate::otel::Telemetry) {
            use otel_metrics as m;
            let (start, time) = (otel_time(t.start_unix_ns), otel_time(t.end_unix_ns));
            let metrics = t
                .metrics
                .iter()
                .map(|metric| otel_metric(metric, start, time))
                .collect();
            let _ = m::export(&m::ResourceMetrics {
                resource: otel_types::Resource {
                    attributes: otel_attrs(&[
                        ("service.name", $crate::otel::Value::Str("meridian".into())),
                        (
                            "service.version",
                            $crate::otel::Value::Str($crate::otel::VERSION.into()),
                        ),
                    ]),
                    schema_url: None,
                },
                scope_metrics: vec![m::ScopeMetrics {
                    scope: otel_scope(),
                    metrics,
                }],
            });
        }
    };
}
