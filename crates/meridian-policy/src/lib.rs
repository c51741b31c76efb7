//! The routing policy: format, validation and the validated model.
//!
//! Stages are separate, as in Cedar: parse (TOML with spans) → validate (collect every error,
//! each with line, column and a hint) → the [`Policy`] the decision engine reads.

pub mod capability;
pub mod compiled;
mod country;
mod diag;
mod emit;
pub mod evidence;
pub mod geoip;
mod guards;
pub mod jurisdictions;
pub mod limits;
mod location;
mod model;
mod order;
pub mod pii;
pub mod places;
pub mod pool;
mod reader;
mod validate;

pub use diag::{did_you_mean, Diagnostic, PolicyErrors};
pub use emit::{emit_policy, Emit};
pub use evidence::{Receipts, RecordSettings, Safeguard, Storage};
pub use guards::*;
pub use location::{platform_of_header, PLATFORM_NAMES};
pub use model::*;
pub use order::cmp_names;
pub use pool::{Balance, Engine, Pool, Replica};
pub use validate::load;

/// The key lists the validator accepts per section, for the JSON Schema consistency test.
pub mod keys {
    pub use super::validate::{
        ENDPOINTS, GUARD_KEYS, GUARD_USE_KEYS, HEALTH_KEYS, LIMIT_SETTINGS_KEYS, MODEL_KEYS,
        PII_KEYS, PLAN_KEYS, POOL_KEYS, PREFER_KEYS, PRICE_KEYS, PROVIDER_KEYS, RECEIPTS_KEYS,
        RECORD_KEYS, REPLICA_KEYS, REQUEST_KEYS, REQUIRE_KEYS, ROUTE_KEYS, RULE_KEYS,
        SETTINGS_KEYS, TENANT_KEYS, TEST_KEYS, TOP_KEYS, WHEN_KEYS,
    };
    pub use crate::limits::limit_keys;
}

/// The default policy, embedded in the component so it runs with nothing mounted.
/// The header that carries the admin key of `POST /v1/route/explain`.
pub const ADMIN_KEY_HEADER: &str = "x-meridian-admin-key";

/// Request headers that carry a credential: a rule may not match on them (the log keeps what a
/// rule's condition read, for replay), and they never reach a provider. The edge secret's header,
/// which the policy names, is one too.
pub const CREDENTIAL_HEADERS: &[&str] = &[
    "api-key",
    "authorization",
    "cookie",
    "proxy-authorization",
    "x-api-key",
    ADMIN_KEY_HEADER,
];

pub const DEFAULT_POLICY: &str = include_str!("../../../policies/default.toml");

/// The JSON Schema of the policy format (for editors; `meridian schema` prints it).
pub const SCHEMA: &str = include_str!("../../../policies/schema.json");

/// The sha256 of an API key, as tenants store it.
pub fn hash_key(key: &str) -> [u8; 32] {
    hash_key_bytes(key.as_bytes())
}

pub fn hash_key_bytes(key: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(key).into()
}
