//! Built-in jurisdictions: named sets of ISO 3166-1 alpha-2 country codes.

pub const EU: &[&str] = &[
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV",
    "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
];
const EEA_EXTRA: &[&str] = &["IS", "LI", "NO"];

pub const APAC: &[&str] = &[
    "AU", "BD", "BN", "KH", "CN", "FJ", "HK", "IN", "ID", "JP", "KR", "LA", "MO", "MY", "MN", "MM",
    "NP", "NZ", "PK", "PG", "PH", "SG", "LK", "TW", "TH", "VN",
];

/// Every built-in jurisdiction, name → countries.
pub fn builtins() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut eea: Vec<&str> = EU.to_vec();
    eea.extend_from_slice(EEA_EXTRA);
    vec![
        ("eu", EU.to_vec()),
        ("eea", eea),
        ("uk", vec!["GB"]),
        ("us", vec!["US"]),
        ("ch", vec!["CH"]),
        ("ca", vec!["CA"]),
        ("apac", APAC.to_vec()),
    ]
}

/// Whether `code` looks like an ISO 3166-1 alpha-2 code (two upper-case ASCII letters).
pub fn is_country_code(code: &str) -> bool {
    crate::Country::parse(code).is_some()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_builtin_code_is_valid() {
        for (name, codes) in super::builtins() {
            for c in codes {
                assert!(super::is_country_code(c), "{name}: {c}");
            }
        }
    }
}
