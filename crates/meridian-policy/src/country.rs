//! Country codes and sets of them, sized for the per-request path: a code is two bytes and a set
//! is a 676-bit bitmap, so membership and "within" checks are a few word operations and loading a
//! compiled policy allocates nothing for them.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// An ISO 3166-1 alpha-2 code in upper case. `XX` means "unknown".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Country([u8; 2]);

impl Country {
    /// The two upper-case letters, as `emit` writes a built-in policy.
    pub const fn from_raw(code: [u8; 2]) -> Country {
        Country(code)
    }

    /// The two letters.
    pub const fn raw(self) -> [u8; 2] {
        self.0
    }

    /// The country facts carry when no trusted header names one.
    pub const UNKNOWN: Country = Country(*b"XX");

    /// Two upper-case ASCII letters, or `None`.
    pub fn parse(code: &str) -> Option<Country> {
        match code.as_bytes() {
            &[a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Some(Country([a, b])),
            _ => None,
        }
    }

    /// A country that exists: an officially assigned ISO 3166-1 alpha-2 code, or `XK` (Kosovo,
    /// which CDNs report). Refuses `XX`, `T1` (Tor), `A1`/`A2` (proxies), `EU`, `AP` and the other
    /// user-assigned or reserved codes that geo headers use for "not a country".
    pub fn parse_assigned(code: &str) -> Option<Country> {
        let c = Country::parse(code)?;
        ASSIGNED
            .split(' ')
            .any(|a| a.as_bytes() == c.0)
            .then_some(c)
    }

    pub fn as_str(&self) -> &str {
        // Built only by `parse`, so always two ASCII letters.
        std::str::from_utf8(&self.0).unwrap_or("XX")
    }

    fn bit(self) -> (usize, u64) {
        let i = usize::from(self.0[0] - b'A') * 26 + usize::from(self.0[1] - b'A');
        (i / 64, 1 << (i % 64))
    }

    fn from_index(i: usize) -> Country {
        // i < 676, so both letters are in A..=Z.
        Country([b'A' + (i / 26) as u8, b'A' + (i % 26) as u8])
    }
}

/// ISO 3166-1 alpha-2, officially assigned codes (249), plus `XK`.
const ASSIGNED: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW XK";

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Serialize for Country {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Country {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Country;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an ISO 3166-1 alpha-2 country code in upper case")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Country, E> {
                Country::parse(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_str(V)
    }
}

const WORDS: usize = (26 * 26_usize).div_ceil(64);

/// A set of countries.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CountrySet([u64; WORDS]);

impl CountrySet {
    /// The bitmap's words, as `emit` writes a built-in policy.
    pub const fn from_raw(words: [u64; WORDS]) -> CountrySet {
        CountrySet(words)
    }

    /// The bitmap's words.
    pub const fn raw(&self) -> [u64; WORDS] {
        self.0
    }

    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, c: Country) -> bool {
        let (w, b) = c.bit();
        let new = self.0[w] & b == 0;
        self.0[w] |= b;
        new
    }

    pub fn contains(&self, c: Country) -> bool {
        let (w, b) = c.bit();
        self.0[w] & b != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// The one country of a set of one.
    pub fn single(&self) -> Option<Country> {
        match (self.len(), self.iter().next()) {
            (1, Some(c)) => Some(c),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether `self` is non-empty and every country in it is in `other`.
    pub fn is_nonempty_subset(&self, other: &CountrySet) -> bool {
        let mut any = false;
        for (a, b) in self.0.iter().zip(&other.0) {
            if *a != 0 {
                if a & !b != 0 {
                    return false;
                }
                any = true;
            }
        }
        any
    }

    pub fn union_with(&mut self, other: &CountrySet) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }

    /// The countries in code order.
    pub fn iter(&self) -> impl Iterator<Item = Country> + '_ {
        (0..26 * 26)
            .filter(|i| self.0[i / 64] & (1 << (i % 64)) != 0)
            .map(Country::from_index)
    }
}

impl FromIterator<Country> for CountrySet {
    fn from_iter<I: IntoIterator<Item = Country>>(iter: I) -> Self {
        let mut s = CountrySet::new();
        s.extend(iter);
        s
    }
}

impl Extend<Country> for CountrySet {
    fn extend<I: IntoIterator<Item = Country>>(&mut self, iter: I) {
        for c in iter {
            self.insert(c);
        }
    }
}

impl fmt::Debug for CountrySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Readable formats (JSON) get the list of codes; binary ones (the compiled policy) the bitmap.
impl Serialize for CountrySet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let mut seq = s.serialize_seq(Some(self.len()))?;
            for c in self.iter() {
                seq.serialize_element(&c)?;
            }
            seq.end()
        } else if self.len() * 2 < WORDS * 8 {
            // Fewer than 44 countries: their codes, two bytes each (a provider's country is
            // 2 bytes, where the bitmap is 88; every byte is decoded again on each WASI 0.2
            // request that reads the compiled policy).
            let codes: Vec<u8> = self.iter().flat_map(|c| c.0).collect();
            s.serialize_bytes(&codes)
        } else {
            // The bitmap, 88 raw bytes: decoding copies them, where 11 u64s would be 11
            // varints to decode.
            let mut bytes = [0u8; WORDS * 8];
            for (chunk, w) in bytes.chunks_exact_mut(8).zip(self.0) {
                chunk.copy_from_slice(&w.to_le_bytes());
            }
            s.serialize_bytes(&bytes)
        }
    }
}

impl<'de> Deserialize<'de> for CountrySet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = CountrySet;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a list of country codes")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<CountrySet, A::Error> {
                    let mut s = CountrySet::new();
                    while let Some(c) = a.next_element::<Country>()? {
                        s.insert(c);
                    }
                    Ok(s)
                }
            }
            d.deserialize_seq(V)
        } else {
            struct B;
            impl<'de> Visitor<'de> for B {
                type Value = CountrySet;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    write!(
                        f,
                        "{} bytes of a country bitmap, or country codes of two bytes each",
                        WORDS * 8
                    )
                }
                fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<CountrySet, E> {
                    if b.len() < WORDS * 8 && b.len() % 2 == 0 {
                        // Country codes, two upper-case letters each.
                        let mut set = CountrySet::new();
                        for pair in b.chunks_exact(2) {
                            match pair {
                                &[x, y] if x.is_ascii_uppercase() && y.is_ascii_uppercase() => {
                                    set.insert(Country([x, y]));
                                }
                                _ => {
                                    return Err(E::custom(
                                        "a country code that is not two upper-case letters",
                                    ))
                                }
                            }
                        }
                        return Ok(set);
                    }
                    if b.len() != WORDS * 8 {
                        return Err(E::invalid_length(b.len(), &self));
                    }
                    let mut words = [0u64; WORDS];
                    for (w, chunk) in words.iter_mut().zip(b.chunks_exact(8)) {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(chunk);
                        *w = u64::from_le_bytes(a);
                    }
                    if words[WORDS - 1] >> (26 * 26 % 64) != 0 {
                        return Err(E::custom("country set has bits past `ZZ`"));
                    }
                    Ok(CountrySet(words))
                }
                fn visit_borrowed_bytes<E: de::Error>(self, b: &'de [u8]) -> Result<CountrySet, E> {
                    self.visit_bytes(b)
                }
            }
            d.deserialize_bytes(B)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Country {
        Country::parse(s).expect("valid code")
    }

    #[test]
    fn parse_accepts_only_two_upper_case_letters() {
        assert_eq!(c("DE").as_str(), "DE");
        for bad in ["de", "D", "DEU", "D1", "", "ÄB"] {
            assert!(Country::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn set_membership_subset_and_order() {
        let eu: CountrySet = ["DE", "FR", "AA", "ZZ"].into_iter().map(c).collect();
        let de: CountrySet = [c("DE")].into_iter().collect();
        assert!(eu.contains(c("ZZ")) && eu.contains(c("AA")) && !eu.contains(c("US")));
        assert!(de.is_nonempty_subset(&eu) && !eu.is_nonempty_subset(&de));
        assert!(!CountrySet::new().is_nonempty_subset(&de) && CountrySet::new().is_empty());
        assert_eq!(eu.len(), 4);
        let codes: Vec<String> = eu.iter().map(|x| x.to_string()).collect();
        assert_eq!(codes, ["AA", "DE", "FR", "ZZ"]);
        let mut u = de;
        u.union_with(&[c("US")].into_iter().collect());
        assert_eq!(format!("{u:?}"), r#"{"DE", "US"}"#);
    }

    #[test]
    fn serde_readable_and_binary() {
        let s: CountrySet = ["GB", "US"].into_iter().map(c).collect();
        let json = serde_json::to_string(&s).expect("json");
        assert_eq!(json, r#"["GB","US"]"#);
        assert_eq!(serde_json::from_str::<CountrySet>(&json).expect("back"), s);
        assert!(serde_json::from_str::<CountrySet>(r#"["gb"]"#).is_err());
        let bin = postcard::to_allocvec(&s).expect("postcard");
        // A small set is its codes: a length, then `GBUS`.
        assert_eq!(bin, b"\x04GBUS");
        assert_eq!(postcard::from_bytes::<CountrySet>(&bin).expect("back"), s);
        // A large one is the bitmap; both read back as the set they were.
        let many: CountrySet = ASSIGNED.split(' ').map(c).collect();
        let big: CountrySet = many.iter().take(44).collect();
        let small: CountrySet = many.iter().take(43).collect();
        for (set, len) in [
            (&many, 88),
            (&big, 88),
            (&small, 86),
            (&CountrySet::new(), 0),
        ] {
            let bin = postcard::to_allocvec(set).expect("postcard");
            assert_eq!(bin.len(), 1 + len, "{} countries", set.len());
            assert_eq!(
                &postcard::from_bytes::<CountrySet>(&bin).expect("back"),
                set
            );
        }
        // Codes that are not two upper-case letters, or an odd length, are refused.
        for bad in [&b"\x04GBus"[..], b"\x03GBU", b"\x02G1"] {
            assert!(postcard::from_bytes::<CountrySet>(bad).is_err(), "{bad:?}");
        }
        // A bitmap with bits past `ZZ` is refused.
        let mut bad = [0u8; WORDS * 8];
        bad[WORDS * 8 - 1] = 0xff;
        let bin = postcard::to_allocvec(&bad[..]).expect("postcard");
        assert_eq!(bin.len(), 1 + WORDS * 8);
        assert!(postcard::from_bytes::<CountrySet>(&bin).is_err());
    }
}
