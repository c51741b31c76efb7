//! `[[tenants]]`: keys, scopes, privacy floors, browser origins.

use super::*;

/// Keys whose plaintext Meridian's own examples and docs once published: refused wherever they
/// appear, so no deployment copied from an example is a working credential.
const PUBLISHED_KEYS: &[&str] = &[
    "sk-demo-app",
    "sk-demo-team",
    "sk-demo-free",
    "sk-demo-clinic",
];

pub(super) fn read_tenants(sink: &mut Sink, top: &Obj, cx: &mut Ctx) -> Vec<Tenant> {
    let mut out = Vec::new();
    let mut seen_keys: Vec<[u8; 32]> = Vec::new();
    for t in top.tables(sink, "tenants") {
        t.deny_unknown(sink, TENANT_KEYS);
        let id = t.req_str(sink, "id");
        if let Some(id) = &id {
            if !is_id(&id.value) {
                sink.error(id.span.as_ref(), bad_id_message("tenant", &id.value));
            } else if matches!(id.value.as_str(), "-" | "anonymous") {
                // Both stand for callers without a key: `-` in the response ids Meridian seals,
                // `anonymous` in the log and its replay. A tenant by either name would share
                // those callers' stored responses and audit.
                sink.error_help(
                    id.span.as_ref(),
                    format!(
                        "tenant id `{}` is reserved: it stands for callers without a key",
                        id.value
                    ),
                    "choose another id, e.g. `public` or `guest`",
                );
            } else if cx.tenant_ids.contains(&id.value) {
                sink.error(
                    id.span.as_ref(),
                    format!("duplicate tenant id `{}`", id.value),
                );
            }
        }
        let mut key_hashes = Vec::new();
        for k in t.str_list(sink, "keys").unwrap_or_default() {
            let decoded = k
                .value
                .strip_prefix("sha256:")
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| <[u8; 32]>::try_from(b).ok());
            match decoded {
                Some(h) if PUBLISHED_KEYS.iter().any(|p| crate::hash_key(p) == h) => {
                    sink.error_help(
                        k.span.as_ref(),
                        "this is the hash of a key published in Meridian's own examples and docs: anyone can send it and spend your providers' credit",
                        "make a key of your own and paste its line: `meridian hash-key <key>` (e.g. with a key from `openssl rand -hex 24`)",
                    )
                }
                Some(h) if seen_keys.contains(&h) => sink.error_help(
                    k.span.as_ref(),
                    "this key hash is listed twice",
                    "a key must map to exactly one tenant",
                ),
                Some(h) => {
                    seen_keys.push(h);
                    key_hashes.push(h);
                }
                None => sink.error_help(
                    k.span.as_ref(),
                    "tenant keys must be written as `sha256:` and 64 hex digits",
                    "store keys hashed, never in clear: `meridian hash-key <key>` prints the line to paste",
                ),
            }
        }
        let models = t
            .str_list(sink, "models")
            .map(|g| check_model_globs(sink, cx, &g))
            .unwrap_or_default();
        let jurisdictions = t
            .str_list(sink, "jurisdictions")
            .map(|names| resolve_residency(sink, cx, &names));
        let privacy_list = t.str_list(sink, "privacy");
        let privacy = read_privacy(sink, privacy_list);
        let mut origins = Vec::new();
        for o in t.str_list(sink, "origins").unwrap_or_default() {
            match url::Url::parse(&o.value) {
                Ok(u)
                    if matches!(u.scheme(), "http" | "https")
                        && u.path() == "/"
                        && !o.value.ends_with('/') =>
                {
                    origins.push(u.origin().ascii_serialization())
                }
                _ => sink.error_help(
                    o.span.as_ref(),
                    format!("`{}` is not an origin", o.value),
                    "an origin is scheme, host and optional port with no path, e.g. `https://app.example.com`",
                ),
            }
        }
        let max_tokens = t.uint(sink, "max_tokens");
        let limits = t
            .table(sink, "limits")
            .map(|l| super::limits::read_limits(sink, &l))
            .filter(|l| !l.is_empty());
        let purposes = super::evidence::read_purposes(sink, &t);
        let Some(id) = id else { continue };
        if !cx.tenant_ids.contains(&id.value) {
            cx.tenant_ids.push(id.value.clone());
        }
        out.push(Tenant {
            id: TenantId(id.value.into()),
            key_hashes: key_hashes.into(),
            models: models.into(),
            jurisdictions,
            privacy,
            origins: origins.into_iter().map(Text::from).collect(),
            max_tokens,
            limits,
            purposes,
        });
    }
    out
}
