//! The parts of `spin.toml` (manifest version 2) that serving the component needs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

#[derive(Deserialize)]
struct Manifest {
    spin_manifest_version: u32,
    #[serde(default)]
    variables: HashMap<String, AppVariable>,
    #[serde(default)]
    trigger: Triggers,
    #[serde(default)]
    component: HashMap<String, ComponentDef>,
}

#[derive(Deserialize, Default)]
struct Triggers {
    #[serde(default)]
    http: Vec<HttpTrigger>,
}

#[derive(Deserialize)]
struct HttpTrigger {
    component: String,
}

#[derive(Deserialize)]
struct AppVariable {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    required: bool,
}

#[derive(Deserialize)]
struct ComponentDef {
    source: String,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    variables: HashMap<String, String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
}

pub struct Loaded {
    dir: PathBuf,
    manifest: Manifest,
}

pub struct Resolved {
    pub source: PathBuf,
    pub allowed_outbound_hosts: Vec<AllowedHost>,
    pub variables: HashMap<String, String>,
    /// The key-value stores the component may open (`key_value_stores`).
    pub key_value_stores: Vec<String>,
    /// The manifest's directory: Spin's default store file is `.spin/sqlite_key_value.db` in it.
    pub dir: PathBuf,
}

pub fn load(path: &Path) -> Result<Loaded> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: Manifest =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if manifest.spin_manifest_version != 2 {
        bail!("only spin_manifest_version = 2 is supported");
    }
    Ok(Loaded {
        dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        manifest,
    })
}

/// Replaces `{{ name }}` with application variable values.
fn expand(template: &str, app: &HashMap<String, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .ok_or_else(|| anyhow!("unclosed `{{{{` in `{template}`"))?;
        let name = rest[start + 2..start + end].trim();
        let value = app
            .get(name)
            .ok_or_else(|| anyhow!("`{template}` names the undefined variable `{name}`"))?;
        out.push_str(value);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Loaded {
    pub fn resolve(&self, env: &HashMap<String, String>) -> Result<Resolved> {
        let m = &self.manifest;
        let trigger = m
            .trigger
            .http
            .first()
            .ok_or_else(|| anyhow!("spin.toml has no [[trigger.http]]"))?;
        let comp = m
            .component
            .get(&trigger.component)
            .ok_or_else(|| anyhow!("component `{}` is not defined", trigger.component))?;
        let mut app = HashMap::new();
        for (name, var) in &m.variables {
            let from_env = env.get(&format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()));
            match (from_env, &var.default) {
                (Some(v), _) => {
                    app.insert(name.clone(), v.clone());
                }
                (None, Some(d)) => {
                    app.insert(name.clone(), d.clone());
                }
                (None, None) if var.required => bail!(
                    "the required variable `{name}` is not set: export SPIN_VARIABLE_{}",
                    name.to_ascii_uppercase()
                ),
                (None, None) => {}
            }
        }
        let mut variables = HashMap::new();
        for (name, template) in &comp.variables {
            if let Ok(v) = expand(template, &app) {
                variables.insert(name.clone(), v);
            }
        }
        let allowed = comp
            .allowed_outbound_hosts
            .iter()
            .map(|h| expand(h, &app).and_then(|h| AllowedHost::parse(&h)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Resolved {
            source: self.dir.join(&comp.source),
            allowed_outbound_hosts: allowed,
            variables,
            key_value_stores: comp.key_value_stores.clone(),
            dir: self.dir.clone(),
        })
    }
}

/// One `allowed_outbound_hosts` entry: `scheme://host[:port]`, with `*` for any scheme, host
/// or port and `*.` as a subdomain wildcard, as Spin reads them.
#[derive(Debug, Clone)]
pub struct AllowedHost {
    scheme: String,
    host: String,
    port: Option<String>,
}

impl AllowedHost {
    pub fn parse(s: &str) -> Result<Self> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| anyhow!("`{s}` has no scheme"))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => (h, Some(p.to_string())),
            _ => (rest, None),
        };
        if host.is_empty() {
            bail!("`{s}` has no host");
        }
        Ok(AllowedHost {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    pub fn allows(&self, uri: &http::Uri) -> bool {
        let scheme = uri.scheme_str().unwrap_or("https");
        let Some(host) = uri.host() else { return false };
        let host = host.to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
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
