//! `[settings]` and `[settings.client]`: limits, anonymous access, where the client's location comes from.

use super::*;

pub(super) fn read_settings(sink: &mut Sink, top: &Obj) -> Option<Settings> {
    let mut s = Settings {
        client: ClientSource::default(),
        max_body_bytes: 1024 * 1024,
        anonymous: Anonymous::Deny,
        expose_ratelimit_headers: false,
        audit_headers: AuditHeaders::Each,
        plan: Plan::default(),
        unknown_fields: UnknownFields::Refuse,
        affinity_header: None,
        limits: LimitSettings::default(),
        health: None,
        receipts: None,
        record: Default::default(),
        stream_events: StreamEvents::Checked,
    };
    let Some(t) = top.table(sink, "settings") else {
        return Some(s);
    };
    t.deny_unknown(sink, SETTINGS_KEYS);
    let client = t.table(sink, "client");
    if let Some(hs) = t.str_list(sink, "trusted_country_headers") {
        let span = t.key_span("trusted_country_headers");
        if client.is_some() {
            sink.error_help(
                span.as_ref(),
                "`trusted_country_headers` and `[settings.client]` both say where the client's country comes from",
                "remove `trusted_country_headers`: `[settings.client]` replaces it",
            );
        } else if hs.len() > 1 {
            sink.error_help(
                span.as_ref(),
                format!(
                    "`trusted_country_headers` lists {} headers: behind one platform a client can send the others itself, and the first one present wins",
                    hs.len()
                ),
                "name the one platform Meridian runs behind instead, e.g. `[settings.client]` with `platform = \"cloudflare\"` (or cloudfront, vercel, fastly, akamai, spin, custom)",
            );
        } else if let Some(h) = hs.first() {
            check_header_name(sink, h);
            sink.warn(
                span.as_ref(),
                "`trusted_country_headers` is deprecated",
                format!(
                    "write `[settings.client]` with `platform = \"custom\"` and `country_header = \"{}\"`, or the platform's own profile",
                    h.value
                ),
            );
            s.client = ClientSource {
                platform: Platform::Legacy,
                country: Some(CountryHeader {
                    name: h.value.to_ascii_lowercase().into(),
                    form: CountryForm::Iso,
                }),
                address: None,
                edge_secret: None,
            };
        }
    }
    if let Some(c) = client {
        s.client = read_client(sink, &c);
    }
    if let Some(n) = t.uint(sink, "max_body_bytes") {
        if n == 0 {
            sink.error(
                t.key_span("max_body_bytes").as_ref(),
                "`max_body_bytes` must be positive",
            );
        }
        s.max_body_bytes = n;
    }
    if let Some(item) = t.raw("allow_anonymous") {
        let span = t.key_span("allow_anonymous");
        match (item.as_bool(), item.as_str()) {
            (Some(false), _) => s.anonymous = Anonymous::Deny,
            (Some(true), _) => s.anonymous = Anonymous::Keyless,
            (_, Some("paid")) => {
                s.anonymous = Anonymous::Paid;
                sink.warn(
                    span.as_ref(),
                    "`allow_anonymous = \"paid\"` lets anyone who can reach Meridian spend the providers' keys",
                    "use tenant keys for paid providers; `allow_anonymous = true` serves anonymous callers only from keyless providers",
                );
            }
            _ => sink.error_help(
                span.as_ref(),
                "`allow_anonymous` must be `false`, `true` or `\"paid\"`",
                "`true` serves callers without a key from keyless providers only; `\"paid\"` also lets them spend provider keys",
            ),
        }
    }
    if let Some(b) = t.bool(sink, "expose_ratelimit_headers") {
        s.expose_ratelimit_headers = b;
    }
    if let Some(v) = t.choice(
        sink,
        "audit_headers",
        &[("each", AuditHeaders::Each), ("one", AuditHeaders::One)],
        "`\"each\"` (the default: one header per fact, `x-meridian-provider`, ...) or `\"one\"` (`x-request-id` and one `x-meridian-audit` header with the same facts)",
    ) {
        s.audit_headers = v;
    }
    if let Some(v) = t.choice(
        sink,
        "stream_events",
        &[("checked", StreamEvents::Checked), ("framed", StreamEvents::Framed)],
        "`\"checked\"` (the default: every event of a stream is checked to be JSON) or `\"framed\"` (events passed on as they came are checked for their framing only)",
    ) {
        s.stream_events = v;
    }
    if let Some(p) = t.table(sink, "plan") {
        let patch = read_plan(sink, &p);
        patch.apply(&mut s.plan, &mut BTreeSet::new());
    }
    if let Some(r) = t.table(sink, "request") {
        r.deny_unknown(sink, REQUEST_KEYS);
        if let Some(h) = r.str(sink, "affinity_header") {
            check_header_name(sink, &h);
            s.affinity_header = Some(h.value.to_ascii_lowercase().into());
        }
        if let Some(v) = r.choice(
            sink,
            "unknown_fields",
            &[("refuse", UnknownFields::Refuse), ("drop", UnknownFields::Drop)],
            "`\"refuse\"` (the default: a 400 naming the field) or `\"drop\"` (removed before forwarding, named in the audit)",
        ) {
            s.unknown_fields = v;
        }
    }
    if let Some(l) = t.table(sink, "limits") {
        s.limits = super::limits::read_limit_settings(sink, &l);
    }
    if let Some(h) = t.table(sink, "health") {
        s.health = super::limits::read_health(sink, &h);
    }
    Some(s)
}

pub(super) fn check_header_name(sink: &mut Sink, h: &Sp<String>) {
    if http::HeaderName::from_bytes(h.value.as_bytes()).is_err() {
        sink.error(
            h.span.as_ref(),
            format!("`{}` is not a valid header name", h.value),
        );
    }
}

/// A Spin variable name: lower-case letters, digits and `_`, starting with a letter.
pub(super) fn is_variable_name(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

pub(super) fn read_client(sink: &mut Sink, c: &Obj) -> ClientSource {
    c.deny_unknown(sink, CLIENT_KEYS);
    let mut out = ClientSource::default();
    let Some(name) = c.req_str(sink, "platform") else {
        return out;
    };
    let Some(platform) = Platform::from_name(&name.value) else {
        sink.error_help(
            name.span.as_ref(),
            format!("unknown platform `{}`", name.value),
            suggest(&name.value, crate::PLATFORM_NAMES),
        );
        return out;
    };
    out.platform = platform;
    let country = c.str(sink, "country_header");
    let address = c.str(sink, "address_header");
    for h in country.iter().chain(address.iter()) {
        check_header_name(sink, h);
    }
    let lower = |h: &Sp<String>| h.value.to_ascii_lowercase();
    match platform.fixed() {
        Some((fixed_country, fixed_address)) => {
            for (h, key) in [(&country, "country_header"), (&address, "address_header")] {
                if h.is_some() {
                    sink.error_help(
                        c.key_span(key).as_ref(),
                        format!(
                            "the `{}` profile fixes its headers, so `{key}` cannot be set",
                            platform.name()
                        ),
                        "use `platform = \"custom\"` to name other headers",
                    );
                }
            }
            out.country = fixed_country;
            out.address = fixed_address;
        }
        None => {
            out.country = country.as_ref().map(|h| CountryHeader {
                name: lower(h).into(),
                form: CountryForm::Iso,
            });
            out.address = address
                .as_ref()
                .map(lower)
                .or_else(|| (platform == Platform::Fastly).then(|| "fastly-client-ip".into()))
                .map(|name| AddressHeader {
                    name: name.into(),
                    form: AddressForm::Ip,
                });
            if platform == Platform::Fastly && country.is_none() {
                sink.error_help(
                    c.span.as_ref(),
                    "the `fastly` profile needs `country_header`: Fastly sets no country header of its own",
                    "set one in VCL from `client.geo.country_code`, e.g. `country_header = \"fastly-geo-country\"`",
                );
            }
            if platform == Platform::Custom && !out.can_locate() {
                sink.error_help(
                    c.span.as_ref(),
                    "the `custom` profile needs `country_header`, `address_header` or both",
                    "name the headers your platform sets and strips from client requests",
                );
            }
            if platform == Platform::Custom {
                let owners: BTreeSet<&str> = [
                    &out.country.as_ref().map(|h| &h.name),
                    &out.address.as_ref().map(|h| &h.name),
                ]
                .into_iter()
                .flatten()
                .filter_map(|n| crate::platform_of_header(n))
                .map(Platform::name)
                .collect();
                if owners.len() > 1 {
                    sink.warn(
                        c.span.as_ref(),
                        format!(
                            "this source trusts headers of more than one platform ({})",
                            owners.into_iter().collect::<Vec<_>>().join(", ")
                        ),
                        "behind one platform, a client can send the other platform's headers itself: name the headers of the platform Meridian runs behind",
                    );
                }
            }
        }
    }
    if let Some(e) = c.table(sink, "edge_secret") {
        e.deny_unknown(sink, EDGE_SECRET_KEYS);
        let header = e.req_str(sink, "header");
        let secret = e.req_str(sink, "secret");
        if let Some(h) = &header {
            check_header_name(sink, h);
        }
        if let Some(v) = &secret {
            if !is_variable_name(&v.value) {
                sink.error_help(
                    v.span.as_ref(),
                    format!("`{}` is not a Spin variable name", v.value),
                    "use lower-case letters, digits and `_`, starting with a letter, e.g. `edge_secret`",
                );
            }
        }
        if let (Some(h), Some(v)) = (header, secret) {
            out.edge_secret = Some(EdgeSecret {
                header: lower(&h).into(),
                secret: v.value.into(),
            });
        }
    }
    if out.edge_secret.is_none() && out.reads_client_headers() {
        sink.warn(
            c.span.as_ref(),
            format!(
                "the `{}` profile trusts location headers without an edge secret: anyone who reaches Meridian directly, not through the platform, can send them and choose their own country",
                out.platform.name()
            ),
            "add `edge_secret = { header = \"x-…\", secret = \"edge_secret\" }` and have the platform send the secret's value, or block direct access to the origin",
        );
    }
    out
}
