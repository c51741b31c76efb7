//! Meridian: a serverless WebAssembly edge inference router.
//!
//! The routing core (`policy`, `facts`, `decide`, `forward`, `api`) is plain Rust with no I/O and
//! is tested natively. Only `host` touches `spin-sdk`, and only in the wasm build.
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
pub mod policy;
pub mod sse;

// spin-sdk's export macro expands to `unsafe` glue; our own code there has none.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod host;
