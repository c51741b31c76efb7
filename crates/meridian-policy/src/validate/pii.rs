//! `[pii]` (the policy's own patterns) and the personal-data parts of rules: `when.pii`,
//! `redact`, `restore`, `refuse`.

use super::*;
use crate::pii::{BUILTIN_KINDS, MAX_CUSTOM};

pub const PII_KEYS: &[&str] = &["custom"];

fn is_kind_name(s: &str) -> bool {
    s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

pub(super) fn read_pii(sink: &mut Sink, top: &Obj) -> PiiConfig {
    let mut config = PiiConfig::default();
    let Some(section) = top.table(sink, "pii") else {
        return config;
    };
    section.deny_unknown(sink, PII_KEYS);
    let Some(custom) = section.table(sink, "custom") else {
        return config;
    };
    for (name, item) in custom.entries() {
        if !is_kind_name(&name.value) {
            sink.error_help(
                name.span.as_ref(),
                format!("`{}` is not a valid pattern name", name.value),
                "use lower-case letters, digits and `_`, starting with a letter (at most 32)",
            );
            continue;
        }
        if BUILTIN_KINDS.contains(&name.value.as_str()) {
            sink.error_help(
                name.span.as_ref(),
                format!("`{}` is a built-in detector", name.value),
                "give your pattern another name",
            );
            continue;
        }
        let Some(pattern) = item.as_str() else {
            sink.error_help(
                name.span.as_ref(),
                format!(
                    "`pii.custom.{}` must be a regular expression string",
                    name.value
                ),
                "e.g. `employee_id = \"EMP-[0-9]{6}\"`",
            );
            continue;
        };
        match regex_lite::Regex::new(pattern) {
            Err(e) => sink.error_help(
                name.span.as_ref(),
                format!(
                    "`pii.custom.{}` is not a valid regular expression: {}",
                    name.value,
                    e.to_string().lines().last().unwrap_or("").trim()
                ),
                "the syntax is the `regex` crate's (regex-lite); in TOML write it in single quotes, e.g. `'\\bEMP-[0-9]{6}\\b'`",
            ),
            Ok(re) if re.is_match("") => sink.error_help(
                name.span.as_ref(),
                format!("`pii.custom.{}` matches the empty string", name.value),
                "a pattern must match at least one character, e.g. use `+` rather than `*`",
            ),
            Ok(_) => config
                .custom
                .to_mut()
                .push((name.value.clone().into(), pattern.to_string().into())),
        }
    }
    if config.custom.len() > MAX_CUSTOM {
        sink.error(
            section.key_span("custom").as_ref(),
            format!("at most {MAX_CUSTOM} custom patterns"),
        );
        config.custom.to_mut().truncate(MAX_CUSTOM);
    }
    config
}

/// A list of kind names (or `true`: every kind) → a set.
fn read_kinds(sink: &mut Sink, o: &Obj, key: &str, pii: &PiiConfig) -> Option<KindSet> {
    if let Some(b) = o.raw(key).and_then(|i| i.as_bool()) {
        return Some(if b {
            KindSet::all(pii.kind_count())
        } else {
            KindSet::EMPTY
        });
    }
    let names = o.str_list(sink, key)?;
    let mut set = KindSet::EMPTY;
    let mut known: Vec<&str> = (0..pii.kind_count()).map(|k| pii.kind_name(k)).collect();
    known.push(crate::pii::UNSCANNABLE_NAME);
    for n in names {
        match pii.kind_of(&n.value) {
            Some(k) => set.insert(k),
            None => sink.error_help(
                n.span.as_ref(),
                format!("unknown personal-data kind `{}`", n.value),
                suggest(&n.value, &known),
            ),
        }
    }
    Some(set)
}

pub(super) fn read_when_pii(sink: &mut Sink, w: &Obj, pii: &PiiConfig) -> Option<PiiWhen> {
    w.raw("pii")?;
    if w.raw("pii").and_then(|i| i.as_bool()) == Some(false) {
        return Some(PiiWhen::None);
    }
    let set = read_kinds(sink, w, "pii", pii)?;
    if set.is_empty() {
        sink.error_help(
            w.key_span("pii").as_ref(),
            "`when.pii` names no kind",
            "list kinds (`pii = [\"iban\"]`), or `true` for any, or `false` for none",
        );
    }
    Some(PiiWhen::Found(set))
}

pub(super) fn read_action(sink: &mut Sink, t: &Obj, when: &When, pii: &PiiConfig) -> PiiAction {
    let redact = read_kinds(sink, t, "redact", pii).unwrap_or_default();
    if redact.contains(crate::pii::UNSCANNABLE) {
        sink.error_help(
            t.key_span("redact").as_ref(),
            "`unscannable` content cannot be redacted: no detector can read it",
            "refuse it (`when = { pii = [\"unscannable\"] }` with `refuse = true`) or route it (`require = { self_hosted = true }`)",
        );
    }
    let restore = t.bool(sink, "restore").unwrap_or(false);
    let refuse = t.bool(sink, "refuse").unwrap_or(false);
    if restore && redact.is_empty() {
        sink.error_help(
            t.key_span("restore").as_ref(),
            "`restore` puts redacted values back, but this rule redacts nothing",
            "add `redact = [\"email\", …]` to the rule, or remove `restore`",
        );
    }
    if refuse {
        if !matches!(when.pii, Some(PiiWhen::Found(_))) {
            sink.error_help(
                t.key_span("refuse").as_ref(),
                "`refuse` needs the kinds it refuses",
                "add `when = { pii = [\"iban\", \"card\"] }` (or `pii = true` for any kind)",
            );
        }
        if !redact.is_empty() {
            sink.error_help(
                t.key_span("refuse").as_ref(),
                "a rule cannot both refuse and redact",
                "keep one: `refuse = true` answers 422, `redact` forwards with placeholders",
            );
        }
    }
    PiiAction {
        redact,
        restore,
        refuse,
    }
}
