//! Callers: API keys → tenants, browser origins. Keys are compared as sha256 digests in
//! constant time, so neither the key nor its position leaks through timing.

use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::policy::{hash_key, Policy, Tenant};

/// The key a client presented: `Authorization: Bearer <key>` or `x-api-key: <key>`.
pub fn presented_key(headers: &[(String, String)]) -> Option<&str> {
    let get = |n: &str| crate::headers::get(headers, n).map(str::trim);
    if let Some(v) = get("authorization") {
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() {
            return Some(rest.trim());
        }
    }
    get("x-api-key").filter(|k| !k.is_empty())
}

/// Finds the tenant for a key, looking at every stored hash whatever matches.
pub fn tenant_for_key<'p>(policy: &'p Policy, key: &str) -> Option<&'p Tenant> {
    let digest = hash_key(key);
    let mut found = None;
    for t in policy.tenants.iter() {
        for h in t.key_hashes.iter() {
            if bool::from(h.ct_eq(&digest)) && found.is_none() {
                found = Some(t);
            }
        }
    }
    found
}

/// A caller known by its tenant's name (a log line, a case of `meridian diff`), authenticated
/// again under `policy` as [`authenticate`] would its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// The policy has the tenant, or the caller was anonymous and the policy allows that.
    Same,
    /// The policy has no such tenant: the key names no one and the caller is anonymous.
    AsAnonymous,
    /// Refused with 401 and this code: no anonymous callers under this policy.
    Refused(&'static str),
}

pub fn named(policy: &Policy, tenant: Option<&str>) -> Named {
    let anonymous = policy.settings.anonymous.allowed();
    match tenant {
        Some(t) if policy.tenant(t).is_some() => Named::Same,
        Some(_) if anonymous => Named::AsAnonymous,
        Some(_) => Named::Refused("invalid_api_key"),
        None if anonymous => Named::Same,
        None => Named::Refused("missing_api_key"),
    }
}

/// Authenticates a request: `Ok(None)` is an anonymous caller (only when the policy allows it).
///
/// Where anonymous access is allowed, a key that matches no tenant is treated as no key: the
/// official SDKs always send one, and an unknown key grants nothing a caller without a key would
/// not get (anonymous callers are limited to keyless providers unless the policy says "paid").
pub fn authenticate<'p>(
    policy: &'p Policy,
    headers: &[(String, String)],
) -> Result<Option<&'p Tenant>, ApiError> {
    let anonymous = policy.settings.anonymous.allowed();
    let Some(key) = presented_key(headers) else {
        if anonymous {
            return Ok(None);
        }
        return Err(ApiError::new(
            401,
            "missing_api_key",
            "You didn't provide an API key. Send it as `Authorization: Bearer <key>`.",
        ));
    };
    let Some(tenant) = tenant_for_key(policy, key) else {
        if anonymous {
            return Ok(None);
        }
        return Err(ApiError::new(
            401,
            "invalid_api_key",
            "Incorrect API key provided.",
        ));
    };
    if !tenant.origins.is_empty() {
        let origin = crate::headers::get(headers, "origin");
        match origin {
            Some(o) if tenant.origins.iter().any(|a| a == o) => {}
            Some(o) => {
                return Err(ApiError::new(
                    403,
                    "origin_not_allowed",
                    format!("This key may not be used from the origin `{o}`."),
                ))
            }
            None => {
                return Err(ApiError::new(
                    403,
                    "origin_required",
                    "This is a browser key: it is accepted only from its allowed origins.",
                ))
            }
        }
    }
    Ok(Some(tenant))
}
