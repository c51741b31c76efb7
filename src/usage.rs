//! Usage and prices: token counts as upstreams report them (OpenAI's `usage`, Anthropic's usage
//! objects, added without overflow) and what they cost at the catalog's prices.

use serde::{Deserialize, Serialize};

use crate::json::Object;

/// Token counts as OpenAI's `usage` reports them. `prompt_tokens` includes cached ones:
/// `prompt_tokens_details.cached_tokens` (reads) and, from Anthropic answers,
/// `prompt_tokens_details.cache_write_tokens` (writes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Object<RawUsage>")]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub cached_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Deserialize)]
struct RawUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<Object<RawDetails>>,
    /// Meridian's own form (its log line): the details at the top.
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct RawDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

impl From<Object<RawUsage>> for Usage {
    fn from(Object(r): Object<RawUsage>) -> Usage {
        let d = r
            .prompt_tokens_details
            .map(|Object(d)| d)
            .unwrap_or_default();
        Usage {
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            total_tokens: r.total_tokens,
            cached_tokens: d.cached_tokens.or(r.cached_tokens).unwrap_or(0),
            cache_write_tokens: d.cache_write_tokens.or(r.cache_write_tokens).unwrap_or(0),
        }
    }
}

/// A model's prices, USD per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prices {
    pub input: Option<f64>,
    pub output: Option<f64>,
    /// Cached prompt tokens read; `input` when absent.
    pub cache_read: Option<f64>,
    /// Prompt tokens written to the cache; `input` when absent.
    pub cache_write: Option<f64>,
}

impl Usage {
    /// Takes what an Anthropic usage object reports (an event may carry only some counts):
    /// cache reads and writes are prompt tokens too.
    pub fn add_anthropic(&mut self, AnthropicUsage(a): &AnthropicUsage) {
        if let Some(n) = a.input_tokens {
            let cached = a.cache_read_input_tokens.unwrap_or(0);
            let written = a.cache_creation_input_tokens.unwrap_or(0);
            self.prompt_tokens = n.saturating_add(cached).saturating_add(written);
            self.cached_tokens = cached;
            self.cache_write_tokens = written;
        }
        if let Some(n) = a.output_tokens {
            self.completion_tokens = n;
        }
        self.total_tokens = self.prompt_tokens.saturating_add(self.completion_tokens);
    }

    /// From a whole Anthropic usage object (JSON).
    pub fn from_anthropic(u: &serde_json::Value) -> Usage {
        let mut usage = Usage::default();
        let a = AnthropicUsage::deserialize(u).unwrap_or_default();
        usage.add_anthropic(&a);
        usage
    }

    /// OpenAI's `usage` object.
    pub fn to_openai(&self) -> serde_json::Value {
        let mut details = serde_json::json!({"cached_tokens": self.cached_tokens});
        if self.cache_write_tokens > 0 {
            details["cache_write_tokens"] = self.cache_write_tokens.into();
        }
        serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": details,
        })
    }

    /// USD, from prices per million tokens; cache reads and writes at their own prices when
    /// the catalog gives them.
    pub fn cost(&self, p: Prices) -> Option<f64> {
        if p.input.is_none() && p.output.is_none() {
            return None;
        }
        let input = p.input.unwrap_or(0.0);
        let cached = self.cached_tokens.min(self.prompt_tokens);
        let written = self.cache_write_tokens.min(self.prompt_tokens - cached);
        let plain = self.prompt_tokens - cached - written;
        let c = plain as f64 * input
            + cached as f64 * p.cache_read.unwrap_or(input)
            + written as f64 * p.cache_write.unwrap_or(input)
            + self.completion_tokens as f64 * p.output.unwrap_or(0.0);
        Some(c / 1_000_000.0)
    }
}

/// Anthropic's usage object, as `message_start`, `message_delta` and whole answers carry it.
#[derive(Deserialize, Default)]
#[serde(from = "Object<AnthropicCounts>")]
pub struct AnthropicUsage(AnthropicCounts);

impl From<Object<AnthropicCounts>> for AnthropicUsage {
    fn from(Object(c): Object<AnthropicCounts>) -> AnthropicUsage {
        AnthropicUsage(c)
    }
}

#[derive(Deserialize, Default)]
struct AnthropicCounts {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A usage object is read from a JSON object only: serde's derived structs would read the
    /// counts from an array in order.
    #[test]
    fn usage_is_read_from_an_object_only() {
        let u: Usage =
            serde_json::from_str(r#"{"prompt_tokens":5,"completion_tokens":6}"#).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (5, 6));
        assert!(serde_json::from_str::<Usage>("[5, 6, 11]").is_err());
        assert!(serde_json::from_str::<AnthropicUsage>("[5, 0, 0, 6]").is_err());
        // At every depth: cached tokens are priced apart.
        assert!(serde_json::from_str::<Usage>(
            r#"{"prompt_tokens":5,"completion_tokens":6,"prompt_tokens_details":[3]}"#
        )
        .is_err());
        let u: Usage = serde_json::from_str(
            r#"{"prompt_tokens":5,"completion_tokens":6,"prompt_tokens_details":{"cached_tokens":3}}"#,
        )
        .unwrap();
        assert_eq!(u.cached_tokens, 3);
        let a: AnthropicUsage =
            serde_json::from_str(r#"{"input_tokens":5,"output_tokens":6}"#).unwrap();
        let mut u = Usage::default();
        u.add_anthropic(&a);
        assert_eq!((u.prompt_tokens, u.completion_tokens), (5, 6));
        // From a JSON value, as whole Anthropic answers are read: an array gives no counts.
        assert_eq!(
            Usage::from_anthropic(&serde_json::json!([5, 0, 0, 6])),
            Usage::default()
        );
    }

    #[test]
    fn cost_from_prices() {
        let u = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 500_000,
            ..Usage::default()
        };
        let p = |input, output| Prices {
            input,
            output,
            ..Prices::default()
        };
        assert_eq!(u.cost(p(Some(0.15), Some(0.6))), Some(0.45));
        assert_eq!(u.cost(p(None, None)), None);
    }

    #[test]
    fn cached_prompt_tokens_are_priced_as_the_catalog_says() {
        // OpenAI's shape, and Anthropic's translated: 1M prompt tokens of which 600k were read
        // from the cache and 100k written to it.
        let u: Usage = serde_json::from_str(
            r#"{"prompt_tokens":1000000,"completion_tokens":0,"total_tokens":1000000,
                "prompt_tokens_details":{"cached_tokens":600000,"cache_write_tokens":100000}}"#,
        )
        .unwrap();
        assert_eq!((u.cached_tokens, u.cache_write_tokens), (600_000, 100_000));
        let prices = Prices {
            input: Some(3.0),
            output: Some(15.0),
            cache_read: Some(0.3),
            cache_write: Some(3.75),
        };
        // 300k plain × 3 + 600k × 0.30 + 100k × 3.75, per million.
        let want = (300_000.0 * 3.0 + 600_000.0 * 0.3 + 100_000.0 * 3.75) / 1e6;
        assert!((u.cost(prices).unwrap() - want).abs() < 1e-9);
        // Without cache prices every prompt token costs the input price.
        let plain = Prices {
            cache_read: None,
            cache_write: None,
            ..prices
        };
        assert!((u.cost(plain).unwrap() - 3.0).abs() < 1e-9);
    }
}
