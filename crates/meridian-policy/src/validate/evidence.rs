//! What the policy says for evidence: recipients' `storage` and `transfer_safeguard`, tenants'
//! `purposes`, `[settings.receipts]` and `[settings.record]`.

use super::*;
use crate::evidence::{Receipts, RecordSettings, Safeguard, Storage};

pub const RECEIPTS_KEYS: &[&str] = &["key_secret", "retired_keys", "sequence", "header"];
pub const RECORD_KEYS: &[&str] = &["controller", "home"];

/// `[settings.receipts]` and `[settings.record]`; the record's `home` goes into `cx` for the
/// recipients read after it.
pub(super) fn read_evidence_settings(
    sink: &mut Sink,
    top: &Obj,
    cx: &mut Ctx,
) -> (Option<Receipts>, RecordSettings) {
    let mut record = RecordSettings::default();
    let Some(s) = top.table(sink, "settings") else {
        cx.home = home_countries(cx, None);
        return (None, record);
    };
    let receipts = s
        .table(sink, "receipts")
        .and_then(|r| read_receipts(sink, &r));
    if let Some(r) = s.table(sink, "record") {
        r.deny_unknown(sink, RECORD_KEYS);
        record.controller = r.str(sink, "controller").map(|c| Text::from(c.value));
        record.home = r
            .str_list(sink, "home")
            .map(|names| resolve_residency(sink, cx, &names));
    }
    cx.home = home_countries(cx, record.home.as_ref());
    (receipts, record)
}

/// The countries transfer rules apply from, and their name.
fn home_countries(cx: &Ctx, home: Option<&Residency>) -> (String, CountrySet) {
    match home {
        Some(h) => (h.names.join(", "), h.countries),
        None => (
            "eea".into(),
            cx.jurisdictions.get("eea").cloned().unwrap_or_default(),
        ),
    }
}

fn read_receipts(sink: &mut Sink, r: &Obj) -> Option<Receipts> {
    r.deny_unknown(sink, RECEIPTS_KEYS);
    let key = read_key_secret(sink, r);
    if r.raw("key_secret").is_none() {
        sink.error_help(
            r.span.as_ref(),
            "`[settings.receipts]` needs `key_secret`",
            "the Spin variable that holds the Ed25519 signing key, e.g. `key_secret = \"receipt_signing_key\"` (`meridian keygen` makes one)",
        );
    }
    let mut retired = Vec::new();
    for k in r.str_list(sink, "retired_keys").unwrap_or_default() {
        let raw = base64_simd::URL_SAFE_NO_PAD.decode_to_vec(k.value.trim_end_matches('='));
        if raw.map_or(true, |b| b.len() != 32) {
            sink.error_help(
                k.span.as_ref(),
                format!(
                    "`retired_keys` entry `{}` is not an Ed25519 public key",
                    k.value
                ),
                "32 bytes in base64url, as `meridian keygen` prints it (the JWK's `x`)",
            );
        } else {
            retired.push(Text::from(k.value.trim_end_matches('=').to_string()));
        }
    }
    let sequence = r
        .choice(
            sink,
            "sequence",
            &[("none", false), ("store", true)],
            "`\"none\"` (the default) or `\"store\"` (each log receipt numbered by a counter in the key-value store)",
        )
        .unwrap_or(false);
    let header = r.bool(sink, "header").unwrap_or(true);
    Some(Receipts {
        key_secret: key?.into(),
        retired_keys: retired.into(),
        sequence,
        header,
    })
}

/// A recipient's (a provider's, an external guard's) `storage` and `transfer_safeguard`, and
/// the warning for a transfer to a third country that states no safeguard.
pub(super) fn read_recipient(
    sink: &mut Sink,
    t: &Obj,
    cx: &Ctx,
    what: &str,
    name: &str,
    countries: Option<&CountrySet>,
) -> (Option<Storage>, Option<Safeguard>) {
    let storage = t.str(sink, "storage").map(|l| {
        let r = resolve_residency(sink, cx, std::slice::from_ref(&l));
        Storage {
            location: l.value.into(),
            countries: r.countries,
        }
    });
    let safeguard =
        t.str(sink, "transfer_safeguard")
            .and_then(|s| match Safeguard::parse(&s.value) {
                Some(g) => Some(g),
                None => {
                    sink.error_help(
                        s.span.as_ref(),
                        format!("unknown `transfer_safeguard` `{}`", s.value),
                        format!(
                            "one of {}",
                            Safeguard::NAMES
                                .iter()
                                .map(|n| format!("`{n}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                    None
                }
            });
    let (home_name, home) = &cx.home;
    // A location that did not resolve is an error already.
    let outside = countries.is_some_and(|c| crate::evidence::outside(c, storage.as_ref(), home));
    if outside && safeguard.is_none() {
        sink.warn(
            t.span.as_ref(),
            format!(
                "{what} `{name}` processes or keeps data outside `{home_name}` and states no `transfer_safeguard`: the record of processing lists a transfer to a third country without one"
            ),
            "state what the transfer rests on: `transfer_safeguard = \"adequacy\"`, `\"dpf\"`, `\"scc\"` or `\"bcr\"`",
        );
    }
    (storage, safeguard)
}

/// A tenant's `purposes`.
pub(super) fn read_purposes(sink: &mut Sink, t: &Obj) -> List<Text> {
    t.str_list(sink, "purposes")
        .unwrap_or_default()
        .into_iter()
        .map(|p| Text::from(p.value))
        .collect()
}
