//! `meridian check --manifest spin.toml`: every host the policy sends requests to (providers,
//! each replica of a pool, external guards) is in the component's `allowed_outbound_hosts`,
//! matched as Spin matches them: otherwise Spin refuses the request at run time
//! (`HttpRequestDenied`), and the provider fails on every request.

use std::path::Path;

use meridian::policy::Policy;

/// One `allowed_outbound_hosts` entry: `scheme://host[:port]`, `*` for any scheme, host or port,
/// `*.` a subdomain wildcard.
struct Allowed {
    scheme: String,
    host: String,
    port: Option<String>,
}

impl Allowed {
    fn parse(s: &str) -> Option<Allowed> {
        let (scheme, rest) = s.split_once("://")?;
        let rest = rest.trim_end_matches('/');
        // `[::1]` alone has no port; `[::1]:8000` and `host:8000` have one.
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !rest.ends_with(']') => (h, Some(p.to_string())),
            _ => (rest, None),
        };
        (!host.is_empty()).then(|| Allowed {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    fn allows(&self, u: &url::Url) -> bool {
        let scheme = u.scheme();
        let Some(host) = u.host_str() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        let port = u.port_or_known_default().unwrap_or(0);
        let scheme_ok = self.scheme == "*" || self.scheme == scheme;
        let host_ok = self.host == "*"
            || self.host == host
            || self
                .host
                .strip_prefix("*.")
                .is_some_and(|suffix| host.ends_with(&format!(".{suffix}")));
        let port_ok = match &self.port {
            None => port == if scheme == "https" { 443 } else { 80 },
            Some(p) if p == "*" => true,
            Some(p) => p.parse::<u16>().ok() == Some(port),
        };
        scheme_ok && host_ok && port_ok
    }
}

/// Every URL the component sends requests to under `policy`, with who it is for.
pub fn destinations(policy: &Policy) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in policy.providers.iter() {
        match &p.pool {
            Some(pool) => {
                for r in pool.replicas.iter() {
                    out.push((
                        format!("provider `{}` replica `{}`", p.id, r.name),
                        r.base_url.as_str().to_string(),
                    ));
                }
            }
            None => out.push((
                format!("provider `{}`", p.id),
                p.base_url.as_str().to_string(),
            )),
        }
    }
    for g in policy.guards.catalog.iter() {
        if let Some(u) = &g.url {
            out.push((format!("guard `{}`", g.id), u.as_str().to_string()));
        }
    }
    out
}

/// `scheme://host[:port]` as an `allowed_outbound_hosts` entry names a URL's destination.
fn entry_for(u: &url::Url) -> String {
    let host = u.host_str().unwrap_or_default();
    match u.port() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    }
}

/// The destinations `manifest`'s component does not allow, each as "who: URL (add `entry`)".
/// `Err` when the manifest cannot be read or has no such component.
pub fn missing(
    policy: &Policy,
    manifest: &Path,
    component: Option<&str>,
) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| format!("{}: cannot read: {e}", manifest.display()))?;
    let doc: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: not TOML: {e}", manifest.display()))?;
    let components = doc
        .get("component")
        .and_then(toml::Value::as_table)
        .ok_or_else(|| format!("{}: no [component.*] table", manifest.display()))?;
    let (name, c) = match component {
        Some(n) => (
            n,
            components
                .get(n)
                .ok_or_else(|| format!("{}: no component `{n}`", manifest.display()))?,
        ),
        None if components.len() == 1 => components
            .iter()
            .next()
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| format!("{}: no component", manifest.display()))?,
        None => {
            let names: Vec<&str> = components.keys().map(String::as_str).collect();
            return Err(format!(
                "{}: {} components ({}): name one with --component",
                manifest.display(),
                names.len(),
                names.join(", ")
            ));
        }
    };
    let entries: Vec<Allowed> = c
        .get("allowed_outbound_hosts")
        .and_then(toml::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(toml::Value::as_str)
                .filter_map(Allowed::parse)
                .collect()
        })
        .unwrap_or_default();
    let templated = c
        .get("allowed_outbound_hosts")
        .and_then(toml::Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .filter_map(toml::Value::as_str)
                .any(|s| s.contains("{{"))
        });
    let mut out = Vec::new();
    for (who, raw) in destinations(policy) {
        let Ok(u) = url::Url::parse(&raw) else {
            continue;
        };
        if !entries.iter().any(|e| e.allows(&u)) {
            out.push(format!(
                "{who}: {raw} is not in component `{name}`'s allowed_outbound_hosts{}: add \"{}\"",
                if templated {
                    " (entries with `{{ … }}` are not expanded here)"
                } else {
                    ""
                },
                entry_for(&u)
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entry: &str, url: &str) -> bool {
        Allowed::parse(entry)
            .unwrap()
            .allows(&url::Url::parse(url).unwrap())
    }

    #[test]
    fn entries_match_as_spin_matches_them() {
        assert!(allowed(
            "https://api.openai.com",
            "https://api.openai.com/v1"
        ));
        assert!(!allowed(
            "https://api.openai.com",
            "http://api.openai.com/v1"
        ));
        assert!(!allowed(
            "https://api.openai.com",
            "https://api.openai.com:8443/v1"
        ));
        assert!(allowed("http://10.0.0.11:8000", "http://10.0.0.11:8000/v1"));
        assert!(!allowed(
            "http://10.0.0.11:8000",
            "http://10.0.0.12:8000/v1"
        ));
        assert!(!allowed("http://10.0.0.11", "http://10.0.0.11:8000/v1"));
        assert!(allowed("http://10.0.0.11:*", "http://10.0.0.11:8000/v1"));
        assert!(allowed("http://*:8000", "http://vllm-2.internal:8000/v1"));
        assert!(allowed(
            "*://*.internal:*",
            "http://vllm-2.internal:8000/v1"
        ));
        assert!(!allowed("https://*.internal", "https://internal/v1"));
    }
}
