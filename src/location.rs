//! Where the client is, as evidence with a source. Pure: headers, the policy's one location
//! source, the built-in IP table and the edge secret's value in; a country and its provenance out.
//!
//! Only the deployment's platform headers are read. A header that appears more than once, or
//! holds anything but one real country (or one address), makes the country unknown: it never
//! falls through to another header. Without the right edge secret (when one is configured) no
//! header is trusted at all.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::policy::geoip::GeoTable;
use crate::policy::{AddressForm, ClientSource, Country, CountryForm};

/// Whether the request proved it came through the deployment's CDN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Edge {
    /// The policy configures no edge secret.
    NotConfigured,
    Verified,
    /// The edge secret header is missing or appears more than once.
    Missing,
    Wrong,
    /// The Spin variable holding the expected value is not set: nothing can be verified.
    SecretUnset,
}

impl Edge {
    /// For `when.edge_verified`: `None` when no edge secret is configured.
    pub fn verified(self) -> Option<bool> {
        match self {
            Edge::NotConfigured => None,
            Edge::Verified => Some(true),
            _ => Some(false),
        }
    }
}

/// Where the country came from, or why it is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The platform's country header.
    Header(String),
    /// The platform's address header (or the connection address), looked up in the built-in
    /// IP-to-country table of that date.
    Address {
        header: String,
        table: String,
    },
    /// Stated directly by a tool (`[[test]]` cases, `meridian explain --country`).
    Given,
    Unknown(Unknown),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unknown {
    /// The policy names no location source.
    NoSource,
    /// The edge secret did not verify, so no header is trusted.
    Edge(Edge),
    /// None of the source's headers is present.
    Absent,
    Repeated {
        header: String,
        times: usize,
    },
    NotACountry {
        header: String,
    },
    NotAnAddress {
        header: String,
    },
    /// The address is in no country's range (private, reserved, unallocated or ambiguous).
    NotInTable {
        header: String,
    },
    /// An address, but this build has no IP-to-country table.
    NoTable {
        header: String,
    },
}

impl Source {
    /// What the audit header and the log line say about the source (joined from its parts
    /// without `fmt`: a request writes it once into its header, once into its log line).
    pub fn text(&self) -> String {
        const SECRET_UNSET: &str =
            "unknown: the edge secret is not configured, so no header is trusted";
        const SECRET_WRONG: &str =
            "unknown: the edge secret did not verify, so no header is trusted";
        let mut n = itoa::Buffer::new();
        let parts: &[&str] = match self {
            Source::Header(h) => &["header ", h],
            Source::Address { header, table } => &["address in ", header, ", ip table ", table],
            Source::Given => &["given"],
            Source::Unknown(u) => match u {
                Unknown::NoSource => &["unknown: the policy names no location source"],
                Unknown::Edge(Edge::SecretUnset) => &[SECRET_UNSET],
                Unknown::Edge(_) => &[SECRET_WRONG],
                Unknown::Absent => &["unknown: no location header"],
                Unknown::Repeated { header, times } => {
                    &["unknown: ", header, " appears ", n.format(*times), " times"]
                }
                Unknown::NotACountry { header } => &["unknown: ", header, " holds no country"],
                Unknown::NotAnAddress { header } => &["unknown: ", header, " holds no address"],
                Unknown::NotInTable { header } => &[
                    "unknown: the address in ",
                    header,
                    " is in no country's range",
                ],
                Unknown::NoTable { header } => &[
                    "unknown: ",
                    header,
                    " gives an address, but this build has no ip table",
                ],
            },
        };
        parts.concat()
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text())
    }
}

/// The client's location facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// `XX` when unknown.
    pub country: Country,
    pub source: Source,
    pub edge: Edge,
}

impl Location {
    /// A country stated by a tool rather than read from a request.
    pub fn given(country: Option<Country>) -> Location {
        Location {
            country: country.unwrap_or(Country::UNKNOWN),
            source: match country {
                Some(_) => Source::Given,
                None => Source::Unknown(Unknown::Absent),
            },
            edge: Edge::NotConfigured,
        }
    }

    fn unknown(why: Unknown, edge: Edge) -> Location {
        Location {
            country: Country::UNKNOWN,
            source: Source::Unknown(why),
            edge,
        }
    }
}

/// A header's one value: `Ok(None)` when absent, `Err(n)` when it appears `n > 1` times
/// (names are lower case).
fn one<'h>(headers: &'h [(String, String)], name: &str) -> Result<Option<&'h str>, usize> {
    let mut found = headers.iter().filter(|(n, _)| n == name);
    match (found.next(), found.next()) {
        (None, _) => Ok(None),
        (Some((_, v)), None) => Ok(Some(v)),
        (Some(_), Some(_)) => Err(2 + found.count()),
    }
}

/// Checks the edge secret: the header once, equal to the secret's value (compared as sha256
/// digests in constant time, so neither content nor length leaks through timing).
fn check_edge(
    source: &ClientSource,
    headers: &[(String, String)],
    secret_value: Option<&str>,
) -> Edge {
    let Some(cfg) = &source.edge_secret else {
        return Edge::NotConfigured;
    };
    let Some(expected) = secret_value.filter(|v| !v.is_empty()) else {
        return Edge::SecretUnset;
    };
    match one(headers, &cfg.header) {
        Ok(Some(given)) => {
            let a = crate::policy::hash_key(given);
            let b = crate::policy::hash_key(expected);
            if bool::from(a.ct_eq(&b)) {
                Edge::Verified
            } else {
                Edge::Wrong
            }
        }
        _ => Edge::Missing,
    }
}

/// A country header's value as the platform writes it; `None` for anything else.
fn parse_country(value: &str, form: CountryForm) -> Option<Country> {
    match form {
        CountryForm::Iso => Country::parse_assigned(value),
        CountryForm::Edgescape => {
            let mut found = value
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .filter(|(k, _)| *k == "country_code");
            match (found.next(), found.next()) {
                (Some((_, v)), None) => Country::parse_assigned(v),
                _ => None,
            }
        }
    }
}

/// An address header's value as the platform writes it; `None` for anything else (lists
/// included).
pub fn parse_address(value: &str, form: AddressForm) -> Option<IpAddr> {
    match form {
        AddressForm::Ip => value.parse().ok(),
        AddressForm::IpPort => {
            if let Ok(sa) = value.parse::<std::net::SocketAddr>() {
                return Some(sa.ip());
            }
            // CloudFront writes IPv6 with its port and no brackets: `2001:db8::1:46532`.
            let (ip, port) = value.rsplit_once(':')?;
            (!port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()))
                .then(|| ip.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6))
                .flatten()
        }
    }
}

/// The client's location from the request's headers, by the policy's one source.
pub fn locate(
    source: &ClientSource,
    headers: &[(String, String)],
    table: Option<&GeoTable<'_>>,
    edge_secret: Option<&str>,
) -> Location {
    let edge = check_edge(source, headers, edge_secret);
    if !matches!(edge, Edge::NotConfigured | Edge::Verified) {
        return Location::unknown(Unknown::Edge(edge), edge);
    }
    if !source.can_locate() {
        return Location::unknown(Unknown::NoSource, edge);
    }
    if let Some(h) = &source.country {
        match one(headers, &h.name) {
            Ok(None) => {}
            Ok(Some(v)) => {
                return match parse_country(v, h.form) {
                    Some(c) => Location {
                        country: c,
                        source: Source::Header(h.name.to_string()),
                        edge,
                    },
                    None => Location::unknown(
                        Unknown::NotACountry {
                            header: h.name.to_string(),
                        },
                        edge,
                    ),
                };
            }
            Err(times) => {
                return Location::unknown(
                    Unknown::Repeated {
                        header: h.name.to_string(),
                        times,
                    },
                    edge,
                )
            }
        }
    }
    // No country header: the platform's address, looked up in the built-in table.
    let Some(a) = &source.address else {
        return Location::unknown(Unknown::Absent, edge);
    };
    let header = a.name.to_string();
    let ip = match one(headers, &a.name) {
        Ok(None) => return Location::unknown(Unknown::Absent, edge),
        Ok(Some(v)) => match parse_address(v, a.form) {
            Some(ip) => ip,
            None => return Location::unknown(Unknown::NotAnAddress { header }, edge),
        },
        Err(times) => return Location::unknown(Unknown::Repeated { header, times }, edge),
    };
    let Some(t) = table else {
        return Location::unknown(Unknown::NoTable { header }, edge);
    };
    match t.lookup(ip) {
        Some(country) => Location {
            country,
            source: Source::Address {
                header,
                table: t.date.to_string(),
            },
            edge,
        },
        None => Location::unknown(Unknown::NotInTable { header }, edge),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::geoip;

    fn source(client: &str) -> ClientSource {
        let text = format!(
            "version = 1\n[settings.client]\n{client}\n[[providers]]\nid = \"a\"\nbase_url = \"https://a.example/v1\"\nlocation = \"DE\"\nmodels = {{ \"m\" = \"m\" }}\n"
        );
        crate::policy::load(&text, "t")
            .unwrap_or_else(|e| panic!("{e}"))
            .settings
            .client
    }

    fn hs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A table over documentation ranges: 192.0.2.0/24 → DE, 198.51.100.0/24 → US,
    /// 2001:db8::/48 → FR.
    fn table_bytes() -> Vec<u8> {
        let de = Country::parse("DE").unwrap();
        let us = Country::parse("US").unwrap();
        let fr = Country::parse("FR").unwrap();
        let v4 = |a: [u8; 4]| u128::from(u32::from_be_bytes(a));
        let v6 = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().unwrap());
        geoip::build(
            "2026-01-01",
            "test",
            &[
                (v4([192, 0, 2, 0]), v4([192, 0, 2, 255]), de),
                (v4([198, 51, 100, 0]), v4([198, 51, 100, 255]), us),
            ],
            &[(
                v6("2001:db8::"),
                v6("2001:db8:0:ffff:ffff:ffff:ffff:ffff"),
                fr,
            )],
        )
        .unwrap()
    }

    fn show(l: &Location) -> String {
        format!("{}; {}", l.country, l.source)
    }

    #[test]
    fn country_headers_by_profile() {
        for (client, header, value, want) in [
            (
                "platform = \"cloudflare\"",
                "cf-ipcountry",
                "DE",
                "DE; header cf-ipcountry",
            ),
            (
                "platform = \"cloudfront\"",
                "cloudfront-viewer-country",
                "FR",
                "FR; header cloudfront-viewer-country",
            ),
            (
                "platform = \"vercel\"",
                "x-vercel-ip-country",
                "US",
                "US; header x-vercel-ip-country",
            ),
            (
                "platform = \"akamai\"",
                "x-akamai-edgescape",
                "georegion=79,country_code=DE,city=BERLIN",
                "DE; header x-akamai-edgescape",
            ),
            (
                "platform = \"akamai\"",
                "x-akamai-edgescape",
                "country_code=DE,country_code=US",
                "XX; unknown: x-akamai-edgescape holds no country",
            ),
            (
                "platform = \"akamai\"",
                "x-akamai-edgescape",
                "georegion=79",
                "XX; unknown: x-akamai-edgescape holds no country",
            ),
            (
                "platform = \"fastly\"\ncountry_header = \"Fastly-Geo\"",
                "fastly-geo",
                "CH",
                "CH; header fastly-geo",
            ),
            (
                "platform = \"cloudflare\"",
                "cf-ipcountry",
                "T1",
                "XX; unknown: cf-ipcountry holds no country",
            ),
            (
                "platform = \"cloudflare\"",
                "cf-ipcountry",
                "XX",
                "XX; unknown: cf-ipcountry holds no country",
            ),
            (
                "platform = \"cloudflare\"",
                "cf-ipcountry",
                " DE",
                "XX; unknown: cf-ipcountry holds no country",
            ),
            (
                "platform = \"cloudflare\"",
                "cf-ipcountry",
                "de",
                "XX; unknown: cf-ipcountry holds no country",
            ),
            (
                "platform = \"cloudflare\"",
                "x-vercel-ip-country",
                "US",
                "XX; unknown: no location header",
            ),
            (
                "platform = \"none\"",
                "cf-ipcountry",
                "US",
                "XX; unknown: the policy names no location source",
            ),
        ] {
            let l = locate(&source(client), &hs(&[(header, value)]), None, None);
            assert_eq!(show(&l), want, "{client} {header}: {value}");
        }
        let twice = hs(&[("cf-ipcountry", "DE"), ("cf-ipcountry", "US")]);
        let l = locate(&source("platform = \"cloudflare\""), &twice, None, None);
        assert_eq!(show(&l), "XX; unknown: cf-ipcountry appears 2 times");
    }

    #[test]
    fn addresses_by_profile_and_form() {
        let bytes = table_bytes();
        let t = GeoTable::parse(&bytes).unwrap();
        for (client, headers, want) in [
            (
                "platform = \"spin\"",
                vec![("spin-client-addr", "192.0.2.9:40000")],
                "DE; address in spin-client-addr, ip table 2026-01-01",
            ),
            (
                "platform = \"spin\"",
                vec![("spin-client-addr", "[2001:db8::5]:443")],
                "FR; address in spin-client-addr, ip table 2026-01-01",
            ),
            (
                "platform = \"spin\"",
                vec![("spin-client-addr", "192.0.2.9")],
                "XX; unknown: spin-client-addr holds no address",
            ),
            (
                "platform = \"spin\"",
                vec![("spin-client-addr", "127.0.0.1:1")],
                "XX; unknown: the address in spin-client-addr is in no country's range",
            ),
            (
                "platform = \"spin\"",
                vec![("cf-ipcountry", "DE")],
                "XX; unknown: no location header",
            ),
            (
                "platform = \"cloudfront\"",
                vec![("cloudfront-viewer-address", "198.51.100.7:46532")],
                "US; address in cloudfront-viewer-address, ip table 2026-01-01",
            ),
            (
                "platform = \"cloudfront\"",
                vec![("cloudfront-viewer-address", "2001:db8::1:46532")],
                "FR; address in cloudfront-viewer-address, ip table 2026-01-01",
            ),
            // The country header wins over the address when present, and a bad one does not fall
            // through to the address.
            (
                "platform = \"cloudflare\"",
                vec![("cf-ipcountry", "T1"), ("cf-connecting-ip", "192.0.2.9")],
                "XX; unknown: cf-ipcountry holds no country",
            ),
            (
                "platform = \"cloudflare\"",
                vec![("cf-connecting-ip", "192.0.2.9")],
                "DE; address in cf-connecting-ip, ip table 2026-01-01",
            ),
            (
                "platform = \"cloudflare\"",
                vec![("cf-connecting-ip", "192.0.2.9, 198.51.100.7")],
                "XX; unknown: cf-connecting-ip holds no address",
            ),
            (
                "platform = \"vercel\"",
                vec![("x-real-ip", "198.51.100.7"), ("x-real-ip", "198.51.100.7")],
                "XX; unknown: x-real-ip appears 2 times",
            ),
            (
                "platform = \"akamai\"",
                vec![("true-client-ip", "2001:db8::77")],
                "FR; address in true-client-ip, ip table 2026-01-01",
            ),
            (
                "platform = \"fastly\"\ncountry_header = \"x-geo\"",
                vec![("fastly-client-ip", "198.51.100.1")],
                "US; address in fastly-client-ip, ip table 2026-01-01",
            ),
            (
                "platform = \"custom\"\naddress_header = \"X-Client-IP\"",
                vec![("x-client-ip", "192.0.2.200")],
                "DE; address in x-client-ip, ip table 2026-01-01",
            ),
        ] {
            let l = locate(&source(client), &hs(&headers), Some(&t), None);
            assert_eq!(show(&l), want, "{client} {headers:?}");
        }
        // Without a table, an address is unknown, and says why.
        let l = locate(
            &source("platform = \"spin\""),
            &hs(&[("spin-client-addr", "192.0.2.9:1")]),
            None,
            None,
        );
        assert_eq!(
            show(&l),
            "XX; unknown: spin-client-addr gives an address, but this build has no ip table"
        );
    }

    #[test]
    fn the_edge_secret_gates_everything() {
        let s = source(
            "platform = \"cloudflare\"\nedge_secret = { header = \"X-Edge\", secret = \"edge_secret\" }",
        );
        let with = |edge: &[&str], secret: Option<&str>| {
            let mut h = hs(&[("cf-ipcountry", "US")]);
            h.extend(edge.iter().map(|v| ("x-edge".to_string(), v.to_string())));
            locate(&s, &h, None, secret)
        };
        let ok = with(&["s3cret"], Some("s3cret"));
        assert_eq!(
            (show(&ok).as_str(), ok.edge),
            ("US; header cf-ipcountry", Edge::Verified)
        );
        assert_eq!(ok.edge.verified(), Some(true));
        for (edge, secret, want) in [
            (&[][..], Some("s3cret"), Edge::Missing),
            (&["s3cre"][..], Some("s3cret"), Edge::Wrong),
            (&["s3cret", "s3cret"][..], Some("s3cret"), Edge::Missing),
            (&["s3cret"][..], None, Edge::SecretUnset),
            (&[""][..], Some(""), Edge::SecretUnset),
        ] {
            let l = with(edge, secret);
            assert_eq!(l.edge, want, "{edge:?} {secret:?}");
            assert_eq!(l.country, Country::UNKNOWN);
            assert_eq!(l.edge.verified(), Some(false));
        }
        let plain = locate(&source("platform = \"cloudflare\""), &[], None, None);
        assert_eq!(plain.edge.verified(), None);
    }

    /// Every source's words, as the `x-meridian-client-country` header and the log line carry
    /// them (docs/http-api.md), written out here rather than taken from the code that writes them.
    #[test]
    fn every_source_says_what_it_is() {
        let h = || "x-country".to_string();
        let cases = [
            (Source::Header(h()), "header x-country"),
            (
                Source::Address {
                    header: h(),
                    table: "2026-11".into(),
                },
                "address in x-country, ip table 2026-11",
            ),
            (Source::Given, "given"),
            (
                Source::Unknown(Unknown::NoSource),
                "unknown: the policy names no location source",
            ),
            (
                Source::Unknown(Unknown::Edge(Edge::SecretUnset)),
                "unknown: the edge secret is not configured, so no header is trusted",
            ),
            (
                Source::Unknown(Unknown::Edge(Edge::Wrong)),
                "unknown: the edge secret did not verify, so no header is trusted",
            ),
            (
                Source::Unknown(Unknown::Edge(Edge::Missing)),
                "unknown: the edge secret did not verify, so no header is trusted",
            ),
            (
                Source::Unknown(Unknown::Absent),
                "unknown: no location header",
            ),
            (
                Source::Unknown(Unknown::Repeated {
                    header: h(),
                    times: 12,
                }),
                "unknown: x-country appears 12 times",
            ),
            (
                Source::Unknown(Unknown::NotACountry { header: h() }),
                "unknown: x-country holds no country",
            ),
            (
                Source::Unknown(Unknown::NotAnAddress { header: h() }),
                "unknown: x-country holds no address",
            ),
            (
                Source::Unknown(Unknown::NotInTable { header: h() }),
                "unknown: the address in x-country is in no country's range",
            ),
            (
                Source::Unknown(Unknown::NoTable { header: h() }),
                "unknown: x-country gives an address, but this build has no ip table",
            ),
        ];
        for (source, words) in cases {
            assert_eq!(source.text(), words);
            assert_eq!(source.to_string(), words);
            assert_eq!(
                serde_json::to_value(&source).unwrap(),
                serde_json::json!(words)
            );
        }
    }
}
