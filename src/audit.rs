//! Audit headers (names are constants, so clients and tests agree) and the decision log line.

use serde::Serialize;

pub const REQUEST_ID: &str = "x-request-id";
pub const PROVIDER: &str = "x-meridian-provider";
pub const UPSTREAM_MODEL: &str = "x-meridian-model";
pub const JURISDICTION: &str = "x-meridian-jurisdiction";
pub const RULES: &str = "x-meridian-rules";
pub const ATTEMPTS: &str = "x-meridian-attempts";
/// Each failed attempt as `provider=reason`, separated by `, `.
pub const FAILURES: &str = "x-meridian-failures";
pub const POLICY: &str = "x-meridian-policy";
pub const COST: &str = "x-meridian-cost-usd";
pub const HEDGED: &str = "x-meridian-hedged";

/// Every audit header, for `Access-Control-Expose-Headers`.
pub const ALL: &[&str] = &[
    REQUEST_ID,
    PROVIDER,
    UPSTREAM_MODEL,
    JURISDICTION,
    RULES,
    ATTEMPTS,
    FAILURES,
    POLICY,
    COST,
    HEDGED,
];

/// Header values must be visible ASCII; anything else (from ids or upstream text) is replaced.
pub fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptLog {
    pub provider: String,
    pub outcome: String,
    pub ms: u64,
}

/// One JSON line per request on stdout. Never prompt text, never keys.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine<'a> {
    pub ts_ms: u64,
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub policy: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_model: Option<&'a str>,
    pub rules: Vec<&'a str>,
    pub candidates: Vec<&'a str>,
    pub excluded: Vec<&'a str>,
    pub attempts: Vec<AttemptLog>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_outcome: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::sse::Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    pub duration_ms: u64,
}

impl LogLine<'_> {
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{\"log\":\"unserialisable\"}".into())
    }
}
