//! Where a deployment learns the client's location: one platform profile per deployment.
//!
//! Each edge platform sets its own headers, and none strips another platform's names, so a policy
//! names the one platform it runs behind and Meridian reads only that platform's headers. The
//! profiles below know each platform's header names and value forms.

use serde::{Deserialize, Serialize};

/// The platforms Meridian knows, by the name a policy uses in `settings.client.platform`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// No location source: every client's country is unknown.
    None,
    Cloudflare,
    Cloudfront,
    Vercel,
    Fastly,
    Akamai,
    /// Spin (or SpinKube) facing clients directly: the connection's address.
    Spin,
    Custom,
    /// The pre-`[settings.client]` form, `trusted_country_headers` with one header.
    Legacy,
}

/// Names accepted in `settings.client.platform`.
pub const PLATFORM_NAMES: &[&str] = &[
    "none",
    "cloudflare",
    "cloudfront",
    "vercel",
    "fastly",
    "akamai",
    "spin",
    "custom",
];

impl Platform {
    pub fn from_name(name: &str) -> Option<Platform> {
        Some(match name {
            "none" => Platform::None,
            "cloudflare" => Platform::Cloudflare,
            "cloudfront" => Platform::Cloudfront,
            "vercel" => Platform::Vercel,
            "fastly" => Platform::Fastly,
            "akamai" => Platform::Akamai,
            "spin" => Platform::Spin,
            "custom" => Platform::Custom,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Platform::None => "none",
            Platform::Cloudflare => "cloudflare",
            Platform::Cloudfront => "cloudfront",
            Platform::Vercel => "vercel",
            Platform::Fastly => "fastly",
            Platform::Akamai => "akamai",
            Platform::Spin => "spin",
            Platform::Custom => "custom",
            Platform::Legacy => "trusted_country_headers",
        }
    }

    /// The platform's fixed headers: (country header and its form, address header and its form).
    /// Fastly and custom have none fixed: the policy names them.
    pub fn fixed(self) -> Option<(Option<CountryHeader>, Option<AddressHeader>)> {
        let c = |name: &str, form| {
            Some(CountryHeader {
                name: name.to_string().into(),
                form,
            })
        };
        let a = |name: &str, form| {
            Some(AddressHeader {
                name: name.to_string().into(),
                form,
            })
        };
        Some(match self {
            Platform::None => (None, None),
            Platform::Cloudflare => (
                c("cf-ipcountry", CountryForm::Iso),
                a("cf-connecting-ip", AddressForm::Ip),
            ),
            Platform::Cloudfront => (
                c("cloudfront-viewer-country", CountryForm::Iso),
                a("cloudfront-viewer-address", AddressForm::IpPort),
            ),
            Platform::Vercel => (
                c("x-vercel-ip-country", CountryForm::Iso),
                a("x-real-ip", AddressForm::Ip),
            ),
            Platform::Akamai => (
                c("x-akamai-edgescape", CountryForm::Edgescape),
                a("true-client-ip", AddressForm::Ip),
            ),
            Platform::Spin => (None, a("spin-client-addr", AddressForm::IpPort)),
            Platform::Fastly | Platform::Custom | Platform::Legacy => return None,
        })
    }
}

/// Every header name a built-in profile reads, with the platform that sets it: a custom source
/// that mixes two platforms' names trusts headers one of them does not strip.
pub fn platform_of_header(name: &str) -> Option<Platform> {
    [
        Platform::Cloudflare,
        Platform::Cloudfront,
        Platform::Vercel,
        Platform::Akamai,
        Platform::Spin,
    ]
    .into_iter()
    .find(|p| {
        p.fixed().is_some_and(|(c, a)| {
            c.is_some_and(|c| c.name == name) || a.is_some_and(|a| a.name == name)
        })
    })
    .or_else(|| (name == "fastly-client-ip").then_some(Platform::Fastly))
}

/// How a country header writes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CountryForm {
    /// An ISO 3166-1 alpha-2 code, e.g. `DE`.
    Iso,
    /// Akamai EdgeScape: `georegion=…,country_code=DE,…`.
    Edgescape,
}

/// How an address header writes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddressForm {
    /// One IP address.
    Ip,
    /// An address and a port: `192.0.2.1:443`, `[2001:db8::1]:443` or `2001:db8::1:443`.
    IpPort,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountryHeader {
    /// Lower case.
    pub name: crate::model::Text,
    pub form: CountryForm,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressHeader {
    /// Lower case.
    pub name: crate::model::Text,
    pub form: AddressForm,
}

/// A shared secret the CDN in front of Meridian adds to every request it forwards, proving that
/// it (and not a client calling the origin directly) set the location headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeSecret {
    /// The header the CDN sets (lower case).
    pub header: crate::model::Text,
    /// The Spin variable holding the expected value.
    pub secret: crate::model::Text,
}

/// The deployment's one source of client location facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSource {
    pub platform: Platform,
    pub country: Option<CountryHeader>,
    pub address: Option<AddressHeader>,
    pub edge_secret: Option<EdgeSecret>,
}

impl Default for ClientSource {
    fn default() -> Self {
        ClientSource {
            platform: Platform::None,
            country: None,
            address: None,
            edge_secret: None,
        }
    }
}

impl ClientSource {
    /// Whether any request can carry a location (a country header, or an address to look up).
    pub fn can_locate(&self) -> bool {
        self.country.is_some() || self.address.is_some()
    }

    /// Whether the location comes from headers a client could send itself when it reaches the
    /// origin directly (every platform's but Spin's own, which the runtime sets).
    pub fn reads_client_headers(&self) -> bool {
        self.can_locate() && !matches!(self.platform, Platform::None | Platform::Spin)
    }
}

/// Who may call without a tenant key, and what they may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Anonymous {
    /// `allow_anonymous = false`: a key is required (401 without one).
    Deny,
    /// `allow_anonymous = true`: callers without a tenant key are served only by providers that
    /// need no key of the operator's (no `key_secret`), such as a self-hosted engine.
    Keyless,
    /// `allow_anonymous = "paid"`: callers without a tenant key may spend the operator's provider
    /// keys too.
    Paid,
}

impl Anonymous {
    pub fn allowed(self) -> bool {
        self != Anonymous::Deny
    }
}
