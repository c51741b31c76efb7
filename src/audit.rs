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
/// The caller's tenant, or `anonymous`.
pub const TENANT: &str = "x-meridian-tenant";
/// The client's country and where it came from: `DE; header cf-ipcountry`.
pub const CLIENT_COUNTRY: &str = "x-meridian-client-country";

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
    TENANT,
    CLIENT_COUNTRY,
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

/// Replaces anything that looks like a credential (an `sk-…` key, a long run of mixed letters
/// and digits, a masked key fragment such as `sk-proj-****abcd`) with `[masked]`, for text that
/// goes to the log from outside (upstream error bodies).
pub fn mask_keys(text: &str) -> String {
    fn key_like(run: &str) -> bool {
        let lower = run.to_ascii_lowercase();
        let prefixed = ["sk-", "sk_", "pk-", "pk_", "rk-", "key-", "gsk_", "xai-"]
            .iter()
            .any(|p| lower.starts_with(p));
        let letters = run.bytes().any(|b| b.is_ascii_alphabetic());
        let digits = run.bytes().any(|b| b.is_ascii_digit());
        (prefixed && run.len() >= 8)
            || run.contains("***")
            || (run.len() >= 20 && letters && digits)
    }
    let is_key_byte = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '.');
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        // A sentence's full stop after a key is not part of it.
        let word = run.trim_end_matches('.');
        if key_like(word) {
            out.push_str("[masked]");
            out.push_str(&run[word.len()..]);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if is_key_byte(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptLog {
    pub provider: String,
    pub outcome: String,
    pub ms: u64,
    /// What only the operator sees (e.g. which secret is unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
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
    /// Where the country came from, or why it is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country_source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge: Option<crate::location::Edge>,
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
    /// An upstream error body (keys masked, cut at 2 KiB): the client gets a summary only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_error: Option<&'a str>,
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

#[cfg(test)]
mod tests {
    use super::mask_keys;

    #[test]
    fn masks_keys_and_fragments_keeps_words() {
        let openai_401 = "Incorrect API key provided: sk-proj-abcd****************************wxyz. You can find your API key at https://platform.openai.com/account/api-keys.";
        let m = mask_keys(openai_401);
        assert!(!m.contains("abcd") && !m.contains("wxyz"), "{m}");
        assert!(
            m.starts_with("Incorrect API key provided: [masked]. You can find"),
            "{m}"
        );
        assert_eq!(
            mask_keys("token gsk_0123456789abcdef0123 and A1B2C3D4E5F6G7H8I9J0K1"),
            "token [masked] and [masked]"
        );
        assert_eq!(
            mask_keys("max_tokens is too large: 100000"),
            "max_tokens is too large: 100000"
        );
    }
}
