//! Spend and rate limits (`limits = { … }` on a tenant or a rule, `[settings.limits]`) and
//! provider health (`[settings.health]`): the policy's side. Counting them is the component's
//! (`meridian::limits`), against the platform's key-value store.

use serde::{Deserialize, Serialize};

use crate::model::{List, TenantId};

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Requests let through.
    Requests,
    /// Input plus output tokens, as the provider reports them.
    Tokens,
    /// Cost at the catalog's prices, in millionths of a US dollar.
    Usd,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Requests => "requests",
            Metric::Tokens => "tokens",
            Metric::Usd => "usd",
        }
    }
}

/// A calendar window in UTC: the counter starts again at its boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    Minute,
    Hour,
    Day,
    Month,
}

impl Window {
    pub fn name(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Month => "month",
        }
    }

    pub const ALL: [Window; 4] = [Window::Minute, Window::Hour, Window::Day, Window::Month];
}

/// One limit: at most `max` of `metric` per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowLimit {
    pub metric: Metric,
    pub window: Window,
    /// Requests, tokens, or millionths of a US dollar.
    pub max: u64,
}

impl WindowLimit {
    /// As written in the policy: `requests_per_minute`, `usd_per_month`.
    pub fn key(&self) -> String {
        format!("{}_per_{}", self.metric.name(), self.window.name())
    }

    /// The limit in the unit people read: dollars as dollars.
    pub fn max_display(&self) -> String {
        match self.metric {
            Metric::Usd => format!("${}", micro_usd_display(self.max)),
            _ => self.max.to_string(),
        }
    }
}

/// Millionths of a dollar as a decimal number of dollars (`1.5`, `0.000125`).
pub fn micro_usd_display(micro: u64) -> String {
    let whole = micro / 1_000_000;
    let frac = micro % 1_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let f = format!("{frac:06}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

/// Who shares one set of counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitPer {
    /// A tenant's limits count all of its keys together; a rule's count each caller (tenant,
    /// or every anonymous caller together).
    #[default]
    Caller,
    /// Each API key on its own (a tenant with several keys).
    Key,
}

/// The limits on a tenant or a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub per: LimitPer,
    pub windows: List<WindowLimit>,
    /// Requests in flight at once.
    pub concurrent: Option<u64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.concurrent.is_none()
    }

    /// Whether any limit depends on what a request costs (tokens or dollars).
    pub fn counts_usage(&self) -> bool {
        self.windows.iter().any(|w| w.metric != Metric::Requests)
    }
}

/// `[settings.limits]`: how limits are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitSettings {
    /// Tenants served (uncounted, and said so in the audit) when the store cannot be reached;
    /// everyone else gets a 503. `anonymous` names callers without a key.
    pub fail_open: List<TenantId>,
    /// The output a request without `max_tokens` is limited to when a token or dollar limit
    /// applies to it, so that its reservation bounds what it can cost.
    pub default_max_tokens: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            fail_open: List::Borrowed(&[]),
            default_max_tokens: 4096,
        }
    }
}

impl LimitSettings {
    pub fn fails_open(&self, tenant: Option<&str>) -> bool {
        let who = tenant.unwrap_or("anonymous");
        self.fail_open.iter().any(|t| t.as_str() == who)
    }
}

/// `[settings.health]`: a provider that failed `failures` times within `window_s` seconds is
/// skipped by every node for `cooldown_s` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub failures: u64,
    pub window_s: u64,
    pub cooldown_s: u64,
}

/// The keys a `limits` table accepts.
pub fn limit_keys() -> Vec<String> {
    let mut keys = vec!["per".to_string(), "concurrent".to_string()];
    for m in [Metric::Requests, Metric::Tokens, Metric::Usd] {
        for w in Window::ALL {
            keys.push(format!("{}_per_{}", m.name(), w.name()));
        }
    }
    keys
}
