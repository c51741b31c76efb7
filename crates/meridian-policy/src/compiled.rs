//! The compiled form of a policy: what `meridian compile` writes once, validated, for the
//! `policy` variable. A WASI 0.2 instance serves one request, so a TOML policy in the variable is
//! parsed and validated on every request; the compiled form is the validated model in a compact
//! binary encoding (postcard, country sets as bitmaps) written as base64 text, read without
//! validating again. A checksum of the binary form (XXH3-64, against accidental edits and
//! truncation: it is no signature, and the variable is the operator's anyway) and the format's
//! version lead it. Version 3 writes a rule's parts left at their defaults as one byte each
//! (`elided`), and a built-in detector of the guards' catalog as its id, kind and labels
//! (`catalog`). Versions 1 (the model as JSON) and 2 (every part of a rule written out) are
//! still read; a form of any other version is refused with what to do.

use crate::{Diagnostic, List, Policy, PolicyErrors};

/// How every compiled policy starts, whatever its version.
const FORMAT: &str = "meridian-policy/";

/// How a compiled policy of this version starts: the format and its version.
pub const PREFIX: &str = "meridian-policy/3 ";

/// Version 2: as version 3, but with every part of a rule written out in full. Still read.
const PREFIX_V2: &str = "meridian-policy/2 ";

/// Version 1: the validated model as JSON, after an FNV-1a checksum of that JSON. Still read.
const PREFIX_V1: &str = "meridian-policy/1 ";

/// Base64 without padding or line breaks: the variable is one line of text.
const B64: base64_simd::Base64 = base64_simd::STANDARD_NO_PAD;

/// The compiled form of a validated policy.
pub fn compile(policy: &Policy) -> String {
    // The built-in jurisdictions are in every policy (they cannot be redefined) and in every
    // Meridian: the form leaves them out and reading puts them back. A change to the built-in
    // table changes the format's version.
    let builtin: Vec<&str> = crate::jurisdictions::builtins()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut own = policy.clone();
    own.jurisdictions = own
        .jurisdictions
        .iter()
        .filter(|(name, _)| !builtin.contains(&name.as_ref()))
        .cloned()
        .collect();
    // So are the default `anthropic-beta` globs of a provider that names none (eight globs,
    // about 160 bytes a provider): a flag per provider says which had them.
    let mut providers = own.providers.into_owned();
    let defaults: Vec<bool> = providers
        .iter_mut()
        .map(|p| {
            let default = p
                .anthropic_betas
                .iter()
                .map(|g| g.text.as_ref())
                .eq(crate::capability::DEFAULT_ANTHROPIC_BETAS.iter().copied());
            if default {
                p.anthropic_betas = List::Borrowed(&[]);
            }
            default
        })
        .collect();
    own.providers = providers.into();
    // The model holds strings, numbers, lists and maps only: serialising cannot fail.
    // The guards follow the rest, then the evidence fields (a form without them, written
    // before they existed, ends earlier and reads as a policy without them).
    let mut bytes = postcard::to_allocvec(&(defaults, own)).unwrap_or_default();
    // Then the pools, then the settings added since version 3 (each section is written when
    // it or any later one is not empty).
    let evidence = crate::evidence::Evidence::of(policy);
    let pools = crate::pool::Pools::of(policy);
    let later = Later::of(policy);
    let sections = [
        !policy.guards.is_empty() || !policy.guards.catalog.is_empty(),
        !evidence.is_empty(),
        !pools.is_empty(),
        !later.is_empty(),
    ];
    let written = sections.iter().rposition(|s| *s).map_or(0, |last| last + 1);
    if written > 0 {
        bytes.extend(postcard::to_allocvec(&policy.guards).unwrap_or_default());
    }
    if written > 1 {
        bytes.extend(postcard::to_allocvec(&evidence).unwrap_or_default());
    }
    if written > 2 {
        bytes.extend(postcard::to_allocvec(&pools).unwrap_or_default());
    }
    if written > 3 {
        bytes.extend(postcard::to_allocvec(&later).unwrap_or_default());
    }
    format!(
        "{PREFIX}{:016x} {}",
        checksum(&bytes),
        B64.encode_to_string(&bytes)
    )
}

/// The compiled form's section for settings added since version 3 (a form written before them
/// ends earlier and reads as a policy that leaves them at their defaults).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Later {
    stream_events: crate::StreamEvents,
}

impl Later {
    fn of(policy: &Policy) -> Later {
        Later {
            stream_events: policy.settings.stream_events,
        }
    }

    fn is_empty(&self) -> bool {
        self.stream_events == crate::StreamEvents::default()
    }

    fn restore(self, policy: &mut Policy) {
        policy.settings.stream_events = self.stream_events;
    }
}

fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Whether `text` is a compiled policy (else it is TOML).
pub fn is_compiled(text: &str) -> bool {
    text.trim_start().starts_with(FORMAT)
}

const AGAIN: &str = "compile it again with `meridian compile`";

/// Whether `a` and `b` have the same binary form: what is written in their place can then be
/// read back as either.
fn same_encoding<T: serde::Serialize>(a: &T, b: &T) -> bool {
    postcard::to_allocvec(a).ok() == postcard::to_allocvec(b).ok()
}

/// The binary form of a rule's parts ([`crate::Rule`]'s `when`, `require`, `prefer`, `plan`,
/// `pii`): from version 3 a part left at its default is written as postcard's `None` (one
/// byte) and any other as `Some` of it; version 2 wrote every part out. Human-readable forms
/// (JSON, version 1) write the part as it is.
pub(crate) mod elided {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::cell::Cell;

    thread_local! {
        /// Set while a version 2 form is read.
        static FULL: Cell<bool> = const { Cell::new(false) };
    }

    /// Reads a version 2 form's rules (every part written out) while `f` runs.
    pub(super) fn full_parts<R>(f: impl FnOnce() -> R) -> R {
        struct Reset(bool);
        impl Drop for Reset {
            fn drop(&mut self) {
                FULL.with(|c| c.set(self.0));
            }
        }
        let _reset = Reset(FULL.with(|c| c.replace(true)));
        f()
    }

    /// Whether a version 2 form is being read.
    pub(super) fn reading_full_parts() -> bool {
        FULL.with(Cell::get)
    }

    pub fn serialize<T, S>(part: &T, s: S) -> Result<S::Ok, S::Error>
    where
        T: Serialize + Default,
        S: Serializer,
    {
        if s.is_human_readable() {
            return part.serialize(s);
        }
        // Left at its default when it encodes as the default does: what reading `None` gives
        // back is then the same part.
        if super::same_encoding(part, &T::default()) {
            s.serialize_none()
        } else {
            s.serialize_some(part)
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: Deserialize<'de> + Default,
        D: Deserializer<'de>,
    {
        if d.is_human_readable() || reading_full_parts() {
            return T::deserialize(d);
        }
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }
}

/// The binary form of the guards' catalog: from version 3 each guard is postcard's enum of
/// either a built-in detector (its id, kind and labels: [`crate::Guard::builtin`] gives the
/// rest) or any other guard in full; version 2 wrote every guard in full.
pub(crate) mod catalog {
    use crate::{Guard, GuardKind, List, Text};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    enum Written<'a> {
        Builtin(&'a Text, GuardKind, &'a List<Text>),
        Full(&'a Guard),
    }

    #[derive(Deserialize)]
    enum Read {
        Builtin(Text, GuardKind, List<Text>),
        Full(Box<Guard>),
    }

    pub fn serialize<S: Serializer>(catalog: &List<Guard>, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return catalog.serialize(s);
        }
        let written: Vec<Written> = catalog
            .iter()
            .map(|g| {
                let builtin = Guard::builtin(g.id.clone(), g.kind, g.labels.clone());
                if g.is_builtin() && super::same_encoding(g, &builtin) {
                    Written::Builtin(&g.id, g.kind, &g.labels)
                } else {
                    Written::Full(g)
                }
            })
            .collect();
        written.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<List<Guard>, D::Error> {
        if d.is_human_readable() || super::elided::reading_full_parts() {
            return List::<Guard>::deserialize(d);
        }
        Ok(Vec::<Read>::deserialize(d)?
            .into_iter()
            .map(|r| match r {
                Read::Builtin(id, kind, labels) => Guard::builtin(id, kind, labels),
                Read::Full(g) => *g,
            })
            .collect())
    }
}

/// Reads a compiled policy. `Err` says what is wrong and what to do.
pub fn load_compiled(text: &str) -> Result<Policy, String> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix(PREFIX_V1) {
        return load_v1(rest);
    }
    if let Some(rest) = text.strip_prefix(PREFIX_V2) {
        return elided::full_parts(|| load_binary(rest));
    }
    let Some(rest) = text.strip_prefix(PREFIX) else {
        return Err(format!(
            "a compiled policy of another format (`{}`): this Meridian reads `{}`; compile the policy again with this version's `meridian compile`",
            text.split(' ').next().unwrap_or(""),
            PREFIX.trim_end()
        ));
    };
    load_binary(rest)
}

/// Versions 2 and 3 after their prefix: `<XXH3-64 of the binary form> <base64 of it>`.
fn load_binary(rest: &str) -> Result<Policy, String> {
    let (sum, body) = rest
        .split_once(' ')
        .ok_or_else(|| format!("a compiled policy without its checksum: {AGAIN}"))?;
    let cut = || {
        format!("the compiled policy does not match its checksum (edited or cut short): {AGAIN}")
    };
    let bytes = B64.decode_to_vec(body).map_err(|_| cut())?;
    if u64::from_str_radix(sum, 16).ok() != Some(checksum(&bytes)) {
        return Err(cut());
    }
    let unreadable =
        |e: postcard::Error| format!("the compiled policy cannot be read ({e}): {AGAIN}");
    let ((defaults, mut policy), rest): ((Vec<bool>, Policy), &[u8]) =
        postcard::take_from_bytes(&bytes).map_err(unreadable)?;
    if !rest.is_empty() {
        let (guards, rest) = postcard::take_from_bytes(rest).map_err(unreadable)?;
        policy.guards = guards;
        if !rest.is_empty() {
            let (evidence, rest): (crate::evidence::Evidence, &[u8]) =
                postcard::take_from_bytes(rest).map_err(unreadable)?;
            evidence
                .restore(&mut policy)
                .map_err(|e| format!("the compiled policy cannot be read ({e}): {AGAIN}"))?;
            if !rest.is_empty() {
                let (pools, rest): (crate::pool::Pools, &[u8]) =
                    postcard::take_from_bytes(rest).map_err(unreadable)?;
                pools
                    .restore(&mut policy)
                    .map_err(|e| format!("the compiled policy cannot be read ({e}): {AGAIN}"))?;
                if !rest.is_empty() {
                    let later: Later = postcard::from_bytes(rest).map_err(unreadable)?;
                    later.restore(&mut policy);
                }
            }
        }
    }
    if defaults.len() != policy.providers.len() {
        return Err(format!(
            "the compiled policy cannot be read (its providers' flags do not match them): {AGAIN}"
        ));
    }
    if defaults.iter().any(|d| *d) {
        let betas: List<crate::Glob> = crate::capability::DEFAULT_ANTHROPIC_BETAS
            .iter()
            .map(|g| crate::Glob::from(g.to_string()))
            .collect();
        let mut providers = policy.providers.into_owned();
        for (p, _) in providers.iter_mut().zip(&defaults).filter(|(_, d)| **d) {
            p.anthropic_betas = betas.clone();
        }
        policy.providers = providers.into();
    }
    // The built-in jurisdictions back in, the list sorted by name as the validator leaves it.
    let mut all = policy.jurisdictions.into_owned();
    for (name, codes) in crate::jurisdictions::builtins() {
        all.push((
            name.into(),
            codes
                .into_iter()
                .filter_map(crate::Country::parse)
                .collect(),
        ));
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    policy.jurisdictions = all.into();
    Ok(policy)
}

/// Version 1: `<FNV-1a of the JSON, 16 hex digits> <the model as JSON>`.
fn load_v1(rest: &str) -> Result<Policy, String> {
    use std::hash::Hasher;
    let (sum, json) = rest
        .split_once(' ')
        .ok_or_else(|| format!("a compiled policy without its checksum: {AGAIN}"))?;
    let mut h = fnv::FnvHasher::default();
    h.write(json.as_bytes());
    if u64::from_str_radix(sum, 16).ok() != Some(h.finish()) {
        return Err(format!(
            "the compiled policy does not match its checksum (edited or cut short): {AGAIN}"
        ));
    }
    serde_json::from_str(json)
        .map_err(|e| format!("the compiled policy cannot be read ({e}): {AGAIN}"))
}

/// Reads a policy in either form: compiled (read as it is) or TOML (parsed and validated).
pub fn load_any(text: &str, origin: &str) -> Result<Policy, PolicyErrors> {
    if !is_compiled(text) {
        return crate::load(text, origin);
    }
    load_compiled(text).map_err(|message| PolicyErrors {
        origin: origin.to_string(),
        diagnostics: vec![Diagnostic {
            message,
            line: 0,
            column: 0,
            help: None,
            warning: false,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
version = 1
name = "t"
revision = "7"
[settings]
allow_anonymous = true
[[providers]]
id = "alpha"
base_url = "https://alpha.example/v1"
location = "DE"
capabilities = ["remote_media", "priced_options"]
models = { "m" = { id = "m-up", input_price = 1.5, output_price = 2.0, context_window = 1000, option_price_factor = 2.0 } }
[[providers]]
id = "beta"
kind = "anthropic"
base_url = "https://beta.example/v1"
key_secret = "beta_key"
location = "FR"
models = { "m" = "m-b" }
anthropic_beta = ["prompt-caching-*"]
[jurisdictions]
nordics = ["DK", "SE", "NO"]
[[tenants]]
id = "acme"
keys = ["sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]
limits = { usd_per_day = 5.0 }
[[rules]]
id = "eu"
when = { client_country = ["FR"] }
require = { jurisdiction = "EU" }
"#;

    /// The compiled form reads back as the very policy it was made from.
    #[test]
    fn a_compiled_policy_reads_back_the_same() {
        let p = crate::load(TOML, "t.toml").unwrap();
        let text = compile(&p);
        assert!(is_compiled(&text) && text.starts_with(PREFIX));
        let back = load_any(&text, "<variable>").unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&p).unwrap()
        );
        assert_eq!(back.version_label(), p.version_label());
        // A provider's own betas are kept; the default ones come back on reading.
        let betas = |i: usize| -> Vec<String> {
            back.providers[i]
                .anthropic_betas
                .iter()
                .map(|g| g.text.to_string())
                .collect()
        };
        assert_eq!(betas(0), crate::capability::DEFAULT_ANTHROPIC_BETAS);
        assert_eq!(betas(1), ["prompt-caching-*"]);
        // The policy's own jurisdiction is in the form; the built-in ones come back on reading.
        let names: Vec<&str> = back.jurisdictions.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(
            names,
            ["apac", "ca", "ch", "eea", "eu", "nordics", "uk", "us"]
        );
        // TOML is still read as TOML.
        assert!(!is_compiled(TOML));
        assert_eq!(load_any(TOML, "t").unwrap().digest, p.digest);
    }

    /// The form's base64 is RFC 4648's standard alphabet without padding, as every form
    /// written before stays readable: the RFC's test vectors (section 10), both ways.
    #[test]
    fn the_form_is_standard_base64_without_padding() {
        let vectors = [
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, text) in vectors {
            assert_eq!(B64.encode_to_string(plain.as_bytes()), text);
            assert_eq!(B64.decode_to_vec(text).unwrap(), plain.as_bytes());
        }
        // The two characters the alphabets differ in.
        assert_eq!(B64.encode_to_string([0xfb, 0xff]), "+/8");
        assert_eq!(B64.decode_to_vec("+/8").unwrap(), [0xfb, 0xff]);
        assert!(B64.decode_to_vec("Zg==").is_err(), "padding");
        assert!(B64.decode_to_vec("Zm9v_g").is_err(), "base64url's alphabet");
    }

    /// An edited, cut or foreign compiled form is refused with what to do.
    #[test]
    fn an_edited_or_foreign_compiled_policy_is_refused() {
        let text = compile(&crate::load(TOML, "t.toml").unwrap());
        // One character of the encoded model changed, as a hand edit would.
        let at = text.len() - 20;
        let c = if &text[at..at + 1] == "A" { "B" } else { "A" };
        let edited = format!("{}{c}{}", &text[..at], &text[at + 1..]);
        let cut = &text[..text.len() - 10];
        let foreign = text.replacen("meridian-policy/3", "meridian-policy/9", 1);
        for (bad, says) in [
            (edited.as_str(), "checksum"),
            (cut, "checksum"),
            (foreign.as_str(), "another format"),
        ] {
            let e = load_any(bad, "<variable policy>").unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("meridian compile"), "{e}");
        }
    }

    /// The form the previous version wrote (the model as JSON after its FNV-1a) is still read;
    /// the oracle is that form built here by hand, as version 1 wrote it.
    #[test]
    fn a_version_1_compiled_policy_is_still_read() {
        use std::hash::Hasher;
        let p = crate::load(TOML, "t.toml").unwrap();
        let json = serde_json::to_string(&p).unwrap();
        let mut h = fnv::FnvHasher::default();
        h.write(json.as_bytes());
        let v1 = format!("meridian-policy/1 {:016x} {json}", h.finish());
        let back = load_any(&v1, "<variable>").unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&p).unwrap()
        );
        let e = load_any(&v1.replace("\"DE\"", "\"US\""), "<v>").unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
    }
}
