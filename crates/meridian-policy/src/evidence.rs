//! What the policy says for evidence: where each recipient keeps what it retains (apart from
//! where it processes), the safeguard a transfer to a third country rests on, the purposes a
//! tenant's data is processed for, signed receipts (`[settings.receipts]`) and the record of
//! processing (`[settings.record]`).
//!
//! The fields live on the model's own structs (`Provider::storage`, `Tenant::purposes`, …).
//! Serde's form of the model leaves them out: the compiled form writes them after the rest as
//! one [`Evidence`] section ([`crate::compiled`]), so a form written before they existed still
//! reads, with none of them set.

use serde::{Deserialize, Serialize};

use crate::model::{List, Residency, Text};
use crate::{CountrySet, Policy};

/// Where a recipient keeps what it retains, when it differs from where it processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage {
    /// As written: a country code or a jurisdiction name.
    pub location: Text,
    pub countries: CountrySet,
}

/// What a transfer of personal data to a third country rests on (GDPR Chapter V).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Safeguard {
    /// An adequacy decision for the recipient's country (Art. 45).
    Adequacy,
    /// The EU-US Data Privacy Framework (an adequacy decision for certified US organisations).
    Dpf,
    /// Standard contractual clauses (Art. 46(2)(c)).
    Scc,
    /// Binding corporate rules (Art. 47).
    Bcr,
}

impl Safeguard {
    pub const NAMES: &'static [&'static str] = &["adequacy", "dpf", "scc", "bcr"];

    pub fn name(self) -> &'static str {
        match self {
            Safeguard::Adequacy => "adequacy",
            Safeguard::Dpf => "dpf",
            Safeguard::Scc => "scc",
            Safeguard::Bcr => "bcr",
        }
    }

    pub fn parse(s: &str) -> Option<Safeguard> {
        Some(match s {
            "adequacy" => Safeguard::Adequacy,
            "dpf" => Safeguard::Dpf,
            "scc" => Safeguard::Scc,
            "bcr" => Safeguard::Bcr,
            _ => return None,
        })
    }

    /// In words, for the record of processing.
    pub fn describe(self) -> &'static str {
        match self {
            Safeguard::Adequacy => "adequacy decision (GDPR Art. 45)",
            Safeguard::Dpf => "EU-US Data Privacy Framework (adequacy decision of 10 July 2023)",
            Safeguard::Scc => "standard contractual clauses (GDPR Art. 46(2)(c))",
            Safeguard::Bcr => "binding corporate rules (GDPR Art. 47)",
        }
    }
}

/// `[settings.receipts]`: every response and log line carries a receipt signed with Ed25519.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipts {
    /// The Spin variable that holds the signing key (32 bytes, base64url).
    pub key_secret: Text,
    /// Public keys (32 bytes, base64url) of keys signed with before: published beside the
    /// current one, so receipts they signed stay verifiable.
    pub retired_keys: List<Text>,
    /// Each log receipt takes the next number of a counter in the key-value store, so a removed
    /// line leaves a gap.
    pub sequence: bool,
    /// Whether responses carry a receipt header (the log line always does).
    pub header: bool,
}

/// `[settings.record]`: what the record of processing needs beyond the catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSettings {
    /// The controller, as the record names it.
    pub controller: Option<Text>,
    /// Where transfer rules apply from: a recipient outside it is a transfer to a third
    /// country. `None`: the EEA.
    pub home: Option<Residency>,
}

/// Whether a recipient that processes data in `processes` and keeps it in `storage` (when it
/// says so apart) processes or keeps any outside `home`: a transfer to a third country.
pub fn outside(processes: &CountrySet, storage: Option<&Storage>, home: &CountrySet) -> bool {
    !processes.is_nonempty_subset(home)
        || storage.is_some_and(|s| !s.countries.is_nonempty_subset(home))
}

/// The compiled form's section for everything above, in catalog order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Evidence {
    pub providers: Vec<(Option<Storage>, Option<Safeguard>)>,
    pub purposes: Vec<List<Text>>,
    pub require_storage: Vec<Option<Residency>>,
    pub receipts: Option<Receipts>,
    pub record: RecordSettings,
}

impl Evidence {
    /// The evidence fields of a policy.
    pub fn of(policy: &Policy) -> Evidence {
        Evidence {
            providers: policy
                .providers
                .iter()
                .map(|p| (p.storage.clone(), p.safeguard))
                .collect(),
            purposes: policy.tenants.iter().map(|t| t.purposes.clone()).collect(),
            require_storage: policy
                .rules
                .iter()
                .map(|r| r.require.storage.clone())
                .collect(),
            receipts: policy.settings.receipts.clone(),
            record: policy.settings.record.clone(),
        }
    }

    /// Whether a policy sets none of them (its compiled form then needs no section).
    pub fn is_empty(&self) -> bool {
        self.providers
            .iter()
            .all(|(s, g)| s.is_none() && g.is_none())
            && self.purposes.iter().all(|p| p.is_empty())
            && self.require_storage.iter().all(Option::is_none)
            && self.receipts.is_none()
            && self.record == RecordSettings::default()
    }

    /// Puts the fields back on a policy read without them. `Err` when the section does not
    /// match the policy's catalogs.
    pub fn restore(self, policy: &mut Policy) -> Result<(), &'static str> {
        if self.providers.len() != policy.providers.len()
            || self.purposes.len() != policy.tenants.len()
            || self.require_storage.len() != policy.rules.len()
        {
            return Err("its evidence section does not match its catalogs");
        }
        let mut providers = std::mem::take(&mut policy.providers).into_owned();
        for (p, (storage, safeguard)) in providers.iter_mut().zip(self.providers) {
            p.storage = storage;
            p.safeguard = safeguard;
        }
        policy.providers = providers.into();
        let mut tenants = std::mem::take(&mut policy.tenants).into_owned();
        for (t, purposes) in tenants.iter_mut().zip(self.purposes) {
            t.purposes = purposes;
        }
        policy.tenants = tenants.into();
        let mut rules = std::mem::take(&mut policy.rules).into_owned();
        for (r, storage) in rules.iter_mut().zip(self.require_storage) {
            r.require.storage = storage;
        }
        policy.rules = rules.into();
        policy.settings.receipts = self.receipts;
        policy.settings.record = self.record;
        Ok(())
    }
}
