//! Meridian: a serverless WebAssembly edge inference router.
//!
//! The routing core (`policy`, `facts`, `decide`, `forward`, `api`) is plain Rust with no I/O and
//! is tested natively. Only `spin_adapter` touches `spin-sdk`, and only in the wasm build.
#![cfg_attr(not(target_arch = "wasm32"), forbid(unsafe_code))]
#![cfg_attr(target_arch = "wasm32", deny(unsafe_code))]

pub mod api;
pub mod arena;
pub mod audit;
pub mod auth;
pub mod calendar;
pub mod cases;
pub mod decide;
pub mod error;
pub mod facts;
pub mod forward;
pub mod guard;
pub mod headers;
pub mod impact;
pub mod json;
pub mod limits;
pub mod location;
pub mod otel;
pub mod pii;
pub mod pool;
pub mod receipt;
pub mod replay;
pub mod request;
pub mod responses;
pub mod routes;
pub mod runtime;
/// The policy format, validator and model live in their own crate so `build.rs` and the CLI share them.
pub use meridian_policy as policy;
#[cfg(test)]
mod fuzz;
pub mod sse;
#[cfg(test)]
mod testing;
pub mod trace;
pub mod transport;
pub mod usage;
pub mod wire;

/// The policy `build.rs` validated and compiled into this build: `MERIDIAN_POLICY` at build time,
/// else `policies/default.toml`. It is static data in the binary: nothing is parsed, decoded or
/// allocated to use it.
pub mod embedded {
    /// The built-in policy.
    pub static POLICY: crate::policy::Policy = include!(concat!(env!("OUT_DIR"), "/policy.rs"));
    /// The path it was compiled from, relative to the crate root.
    pub const ORIGIN: &str = include_str!(concat!(env!("OUT_DIR"), "/policy.origin"));

    /// The built-in policy.
    pub fn load() -> &'static crate::policy::Policy {
        &POLICY
    }

    /// Every example policy, written by `build.rs` exactly as the built-in one is.
    #[cfg(test)]
    static EXAMPLES: &[(&str, crate::policy::Policy)] =
        include!(concat!(env!("OUT_DIR"), "/examples.rs"));

    /// The static data `build.rs` writes is the policy `load` parses, field for field, for
    /// every example policy (custom personal-data patterns, tenants, weights, plans, all
    /// platforms' client settings).
    #[cfg(test)]
    #[test]
    fn every_example_policy_written_as_static_data_is_the_parsed_policy() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/examples");
        let files = std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "toml"))
            })
            .count();
        assert_eq!(EXAMPLES.len(), files, "every example is valid and written");
        for (path, built) in EXAMPLES {
            let text =
                std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_owned() + path)
                    .unwrap();
            let parsed = crate::policy::load(&text, path).unwrap();
            let parsed = crate::policy::Policy {
                cases: Vec::new(),
                warnings: Vec::new(),
                ..parsed
            };
            assert_eq!(format!("{built:?}"), format!("{parsed:?}"), "{path}");
        }
    }

    /// The IP-to-country table `build.rs` compiled in (`MERIDIAN_GEOIP`); empty when it did not.
    pub const GEOIP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/geoip.bin"));

    /// The built-in table, if this build has one.
    pub fn geoip() -> Option<crate::policy::geoip::GeoTable<'static>> {
        crate::policy::geoip::GeoTable::parse(GEOIP)
    }
}

// spin-sdk's export macro expands to `unsafe` glue; our own unsafe code there is the WASI 0.2
// build's per-request allocator (the arithmetic is `arena`'s, tested natively).
#[cfg(all(target_arch = "wasm32", feature = "spin-p2"))]
#[allow(unsafe_code)]
mod spin_adapter;
