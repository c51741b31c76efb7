//! Personal-data kinds a policy can name: the built-in detectors and the policy's own patterns.

use serde::{Deserialize, Serialize};

/// The built-in detectors, in kind-index order.
pub const BUILTIN_KINDS: &[&str] = &[
    "email", "phone", "iban", "card", "ipv4", "ipv6", "us_ssn", "uk_nino", "eu_vat",
];

/// At most this many custom patterns (kinds are bits of a `u64`).
pub const MAX_CUSTOM: usize = 32;

/// Content the model reads that no detector can read (images, audio, PDFs and other files,
/// inline or by reference): not a detector's finding but a fact of the request, so a rule can
/// refuse or route it (`when = { pii = ["unscannable"] }`). Its bit lies above every detector
/// kind, so `pii = true` ("any personal data found") and `pii = false` keep meaning detector
/// findings.
pub const UNSCANNABLE: usize = 63;
pub const UNSCANNABLE_NAME: &str = "unscannable";

/// A set of kinds, as bits: bit `i` is the kind with index `i` (built-ins first, then the
/// policy's custom patterns in order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KindSet(pub u64);

impl KindSet {
    pub const EMPTY: KindSet = KindSet(0);

    /// Every kind of a policy with `kinds` kinds in all.
    pub fn all(kinds: usize) -> KindSet {
        if kinds >= 64 {
            KindSet(u64::MAX)
        } else {
            KindSet((1u64 << kinds) - 1)
        }
    }

    pub fn contains(self, kind: usize) -> bool {
        kind < 64 && self.0 & (1 << kind) != 0
    }

    pub fn insert(&mut self, kind: usize) {
        if kind < 64 {
            self.0 |= 1 << kind;
        }
    }

    pub fn union(self, other: KindSet) -> KindSet {
        KindSet(self.0 | other.0)
    }

    pub fn intersects(self, other: KindSet) -> bool {
        self.0 & other.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The detectors' findings only (without [`UNSCANNABLE`]).
    pub fn detected(self) -> KindSet {
        KindSet(self.0 & !(1u64 << UNSCANNABLE))
    }

    /// The kind indexes in the set, ascending.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..64).filter(move |&i| self.contains(i))
    }
}

/// The policy's `[pii]` section, and whether any rule uses personal data at all.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PiiConfig {
    /// The policy's own patterns, in order: (name, regular expression in `regex-lite` syntax).
    pub custom: crate::model::List<(crate::model::Text, crate::model::Text)>,
    /// Some rule has a `when.pii` condition or a `redact`/`refuse` action. When false, no
    /// request is scanned: a policy without personal-data rules pays nothing.
    pub used: bool,
}

impl PiiConfig {
    /// How many kinds this policy knows: the built-ins and its custom patterns.
    pub fn kind_count(&self) -> usize {
        BUILTIN_KINDS.len() + self.custom.len()
    }

    pub fn kind_name(&self, kind: usize) -> &str {
        if kind == UNSCANNABLE {
            return UNSCANNABLE_NAME;
        }
        match BUILTIN_KINDS.get(kind) {
            Some(n) => n,
            None => self
                .custom
                .get(kind - BUILTIN_KINDS.len())
                .map_or("?", |(n, _)| n.as_ref()),
        }
    }

    pub fn kind_of(&self, name: &str) -> Option<usize> {
        if name == UNSCANNABLE_NAME {
            return Some(UNSCANNABLE);
        }
        BUILTIN_KINDS.iter().position(|k| *k == name).or_else(|| {
            self.custom
                .iter()
                .position(|(n, _)| n == name)
                .map(|i| i + BUILTIN_KINDS.len())
        })
    }

    /// The names of the kinds in `set`, in index order.
    pub fn names(&self, set: KindSet) -> Vec<&str> {
        set.iter().map(|k| self.kind_name(k)).collect()
    }
}

/// `when.pii`: what the prompt must (not) contain for the rule to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PiiWhen {
    /// At least one finding of one of these kinds (`pii = true`: any kind).
    Found(KindSet),
    /// No finding at all (`pii = false`).
    None,
}

/// What a matching rule does with personal data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PiiAction {
    /// Replace findings of these kinds with typed placeholders before forwarding.
    pub redact: KindSet,
    /// Put the originals back into the answer.
    pub restore: bool,
    /// Refuse the request (422) when its `when.pii` kinds are found.
    pub refuse: bool,
}

impl PiiAction {
    pub fn is_empty(&self) -> bool {
        self.redact.is_empty() && !self.refuse
    }
}
