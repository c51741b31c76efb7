//! Meridian: a serverless WebAssembly edge inference router.
//!
//! The routing core (`policy`, `facts`, `decide`, `forward`, `api`) is plain Rust with no I/O and
//! is tested natively. Only `spin_adapter` touches `spin-sdk`, and only in the wasm build.
#![cfg_attr(not(target_arch = "wasm32"), forbid(unsafe_code))]
#![cfg_attr(target_arch = "wasm32", deny(unsafe_code))]

pub mod api;
pub mod audit;
pub mod auth;
pub mod cases;
pub mod decide;
pub mod error;
pub mod facts;
pub mod forward;
pub mod location;
pub mod pii;
/// The policy format, validator and model live in their own crate so `build.rs` and the CLI share them.
pub use meridian_policy as policy;
#[cfg(test)]
mod fuzz;
pub mod sse;
#[cfg(test)]
mod testing;
pub mod wire;

/// The policy `build.rs` validated and compiled into this build: `MERIDIAN_POLICY` at build time,
/// else `policies/default.toml`. Loading it is a postcard decode, not a TOML parse.
pub mod embedded {
    /// The compiled bytes.
    pub const COMPILED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/policy.bin"));
    /// The path it was compiled from, relative to the crate root.
    pub const ORIGIN: &str = include_str!(concat!(env!("OUT_DIR"), "/policy.origin"));

    pub fn load() -> Result<crate::policy::Policy, String> {
        crate::policy::load_compiled(COMPILED)
    }

    /// The IP-to-country table `build.rs` compiled in (`MERIDIAN_GEOIP`); empty when it did not.
    pub const GEOIP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/geoip.bin"));

    /// The built-in table, if this build has one.
    pub fn geoip() -> Option<crate::policy::geoip::GeoTable<'static>> {
        crate::policy::geoip::GeoTable::parse(GEOIP)
    }
}

// spin-sdk's export macro expands to `unsafe` glue; our own code there has none.
#[cfg(all(target_arch = "wasm32", feature = "spin-p2"))]
#[allow(unsafe_code)]
mod spin_adapter;
