//! The IP-to-country table compiled into the component: built from a range list at build time
//! (`build.rs`), read in place at run time (no decoding, no allocation: a lookup is two binary
//! searches' worth of loads).
//!
//! Ranges that overlap with different countries are ambiguous, so the addresses they share map
//! to no country; so do addresses no range covers. IPv6 is kept at /64 granularity: a /64 that
//! two countries share maps to no country.
//!
//! Layout (little-endian): `MGEO1`, date (u8 length + bytes), source (u8 length + bytes),
//! countries (u8 count + 2 bytes each; index 0 means "no country"), IPv4 (u32 count, then the
//! range starts as u32, then one country index per range), IPv6 (u32 count, starts as the top
//! 64 bits as u64, then indices). Each range runs from its start to the next one's.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::Country;

const MAGIC: &[u8] = b"MGEO1";

/// A table in place over its bytes.
#[derive(Debug, Clone, Copy)]
pub struct GeoTable<'a> {
    /// The data set's date, e.g. `2026-06-17`.
    pub date: &'a str,
    /// Where the data came from, e.g. `@ip-location-db/geo-whois-asn-country 2.3.2026061719`.
    pub source: &'a str,
    countries: &'a [u8],
    v4_starts: &'a [u8],
    v4_index: &'a [u8],
    v6_starts: &'a [u8],
    v6_index: &'a [u8],
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u32(&mut self) -> Option<usize> {
        let b = self.take(4)?;
        usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok()
    }
    fn str(&mut self) -> Option<&'a str> {
        let n = self.u8()?;
        std::str::from_utf8(self.take(n)?).ok()
    }
}

impl<'a> GeoTable<'a> {
    /// Reads a table's header; `None` for bytes that are not a table (an empty build has none).
    pub fn parse(bytes: &'a [u8]) -> Option<GeoTable<'a>> {
        let mut c = Cursor(bytes);
        if c.take(MAGIC.len())? != MAGIC {
            return None;
        }
        let date = c.str()?;
        let source = c.str()?;
        let nc = c.u8()?;
        let countries = c.take(nc * 2)?;
        let n4 = c.u32()?;
        let v4_starts = c.take(n4.checked_mul(4)?)?;
        let v4_index = c.take(n4)?;
        let n6 = c.u32()?;
        let v6_starts = c.take(n6.checked_mul(8)?)?;
        let v6_index = c.take(n6)?;
        // Every index must name a country in the list.
        if v4_index
            .iter()
            .chain(v6_index)
            .any(|&i| usize::from(i) > nc)
        {
            return None;
        }
        Some(GeoTable {
            date,
            source,
            countries,
            v4_starts,
            v4_index,
            v6_starts,
            v6_index,
        })
    }

    /// The number of IPv4 and IPv6 ranges.
    pub fn len(&self) -> (usize, usize) {
        (self.v4_index.len(), self.v6_index.len())
    }

    pub fn is_empty(&self) -> bool {
        self.v4_index.is_empty() && self.v6_index.is_empty()
    }

    /// The country of an address, if exactly one country's range covers it.
    pub fn lookup(&self, ip: IpAddr) -> Option<Country> {
        let index = match ip {
            IpAddr::V4(a) => find(self.v4_starts, self.v4_index, u64::from(u32::from(a)), 4),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => find(self.v4_starts, self.v4_index, u64::from(u32::from(v4)), 4),
                None => find(
                    self.v6_starts,
                    self.v6_index,
                    (u128::from(a) >> 64) as u64,
                    8,
                ),
            },
        }?;
        let at = (usize::from(index) - 1) * 2;
        let code = self.countries.get(at..at + 2)?;
        Country::parse(std::str::from_utf8(code).ok()?)
    }
}

/// The index of the last range starting at or before `key`; `None` when that is "no country".
fn find(starts: &[u8], index: &[u8], key: u64, width: usize) -> Option<u8> {
    let start_at = |i: usize| -> u64 {
        let b = &starts[i * width..i * width + width];
        let mut w = [0u8; 8];
        w[..width].copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    // The number of starts <= key.
    let (mut lo, mut hi) = (0usize, index.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if start_at(mid) <= key {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let i = lo.checked_sub(1)?;
    Some(index[i]).filter(|&c| c != 0)
}

/// One row of a range list: first and last address (inclusive) and the country.
pub type Row = (u128, u128, Country);

/// Builds a table from IPv4 rows (values below 2^32) and IPv6 rows.
pub fn build(date: &str, source: &str, v4: &[Row], v6: &[Row]) -> Result<Vec<u8>, String> {
    let mut codes: Vec<Country> = v4.iter().chain(v6).map(|r| r.2).collect();
    codes.sort();
    codes.dedup();
    if codes.len() > 255 {
        return Err(format!("{} countries; the table holds 255", codes.len()));
    }
    let index_of = |c: Option<Country>| -> u8 {
        c.and_then(|c| codes.binary_search(&c).ok())
            .map_or(0, |i| (i + 1) as u8)
    };
    let four = sweep(v4, 1u128 << 32);
    let six = to_prefix64(&sweep(v6, u128::MAX));

    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    for s in [date, source] {
        let n = u8::try_from(s.len()).map_err(|_| format!("`{s}` is too long"))?;
        out.push(n);
        out.extend_from_slice(s.as_bytes());
    }
    out.push(codes.len() as u8);
    for c in &codes {
        out.extend_from_slice(c.as_str().as_bytes());
    }
    let four: Vec<(u32, u8)> = merge(
        four.into_iter()
            .filter_map(|(k, c)| u32::try_from(k).ok().map(|k| (k, index_of(c)))),
    );
    out.extend_from_slice(&(four.len() as u32).to_le_bytes());
    for (k, _) in &four {
        out.extend_from_slice(&k.to_le_bytes());
    }
    out.extend(four.iter().map(|(_, i)| *i));
    let six: Vec<(u64, u8)> = merge(six.into_iter().map(|(k, c)| (k, index_of(c))));
    out.extend_from_slice(&(six.len() as u32).to_le_bytes());
    for (k, _) in &six {
        out.extend_from_slice(&k.to_le_bytes());
    }
    out.extend(six.iter().map(|(_, i)| *i));
    Ok(out)
}

/// Boundaries where the covering country changes: `(first address, country)`, where the country
/// is `None` when no range or more than one country covers the addresses from there on.
fn sweep(rows: &[Row], limit: u128) -> Vec<(u128, Option<Country>)> {
    // +1 at a range's start, -1 just past its end (`None`: past the address space).
    let mut events: Vec<(u128, bool, Country)> = Vec::with_capacity(rows.len() * 2);
    for &(a, b, c) in rows {
        if a > b || b >= limit && limit != u128::MAX {
            continue;
        }
        events.push((a, true, c));
        if let Some(end) = b.checked_add(1) {
            events.push((end, false, c));
        }
    }
    events.sort_unstable_by_key(|e| e.0);
    let mut live: BTreeMap<Country, u32> = BTreeMap::new();
    let mut out: Vec<(u128, Option<Country>)> = vec![(0, None)];
    let mut i = 0;
    while i < events.len() {
        let at = events[i].0;
        while i < events.len() && events[i].0 == at {
            let (_, open, c) = events[i];
            let n = live.entry(c).or_insert(0);
            if open {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    live.remove(&c);
                }
            }
            i += 1;
        }
        let now = match live.len() {
            1 => live.keys().next().copied(),
            _ => None,
        };
        if out.last().is_some_and(|l| l.0 == at) {
            out.pop();
        }
        if out.last().is_none_or(|l| l.1 != now) {
            out.push((at, now));
        }
    }
    out
}

/// IPv6 boundaries at /64 granularity: a /64 that a boundary cuts is mixed, so no country.
fn to_prefix64(b: &[(u128, Option<Country>)]) -> Vec<(u64, Option<Country>)> {
    let mut out: Vec<(u64, Option<Country>)> = Vec::with_capacity(b.len());
    let put = |out: &mut Vec<(u64, Option<Country>)>, k: u64, c| match out.last_mut() {
        Some(l) if l.0 == k => l.1 = c,
        _ => out.push((k, c)),
    };
    for &(at, c) in b {
        let k = (at >> 64) as u64;
        if at as u64 == 0 {
            put(&mut out, k, c);
        } else {
            // Cut inside /64 `k`: that block is mixed; the country holds from the next block on.
            if out.last().is_some_and(|l| l.0 == k.wrapping_add(1)) && k != u64::MAX {
                // An earlier cut in the same block already marked it.
                if let Some(l) = out.last_mut() {
                    l.1 = c;
                }
                continue;
            }
            put(&mut out, k, None);
            if let Some(next) = k.checked_add(1) {
                out.push((next, c));
            }
        }
    }
    out
}

/// Drops boundaries that do not change the country.
fn merge<K: Copy>(items: impl Iterator<Item = (K, u8)>) -> Vec<(K, u8)> {
    let mut out: Vec<(K, u8)> = Vec::new();
    for (k, c) in items {
        if out.last().is_none_or(|l| l.1 != c) {
            out.push((k, c));
        }
    }
    out
}

/// Reads an `ip-location-db` numeric CSV (`first,last,CC` per line). Rows whose country is not
/// an assigned code are left out (their addresses get no country).
pub fn read_num_csv(text: &str) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut f = line.split(',');
        let (Some(a), Some(b), Some(c), None) = (f.next(), f.next(), f.next(), f.next()) else {
            return Err(format!("line {}: expected `first,last,country`", n + 1));
        };
        let num = |s: &str| {
            s.trim()
                .parse::<u128>()
                .map_err(|e| format!("line {}: `{s}`: {e}", n + 1))
        };
        if let Some(c) = Country::parse_assigned(c.trim()) {
            rows.push((num(a)?, num(b)?, c));
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Country {
        Country::parse(s).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn v4(a: &str, b: &str, cc: &str) -> Row {
        let n = |s: &str| u128::from(u32::from(s.parse::<std::net::Ipv4Addr>().unwrap()));
        (n(a), n(b), c(cc))
    }

    fn v6(a: &str, b: &str, cc: &str) -> Row {
        let n = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().unwrap());
        (n(a), n(b), c(cc))
    }

    #[test]
    fn ranges_overlaps_gaps_and_ipv6_blocks() {
        let four = [
            v4("192.0.2.0", "192.0.2.255", "DE"),
            v4("198.51.100.0", "198.51.100.127", "US"),
            // Overlaps the end of the US range with another country: the shared part is ambiguous.
            v4("198.51.100.100", "198.51.100.200", "FR"),
            v4("203.0.113.0", "203.0.113.255", "JP"),
            // Adjacent to the JP range with the same country: merged.
            v4("203.0.114.0", "203.0.114.255", "JP"),
            // A duplicate of the same country is not ambiguous.
            v4("203.0.113.10", "203.0.113.20", "JP"),
            v4("255.255.255.0", "255.255.255.255", "AU"),
        ];
        let six = [
            v6("2001:db8::", "2001:db8:0:ffff:ffff:ffff:ffff:ffff", "NL"),
            // Starts inside a /64: that /64 is mixed.
            v6(
                "2001:db8:1::8000:0:0:0",
                "2001:db8:1:ffff:ffff:ffff:ffff:ffff",
                "SE",
            ),
        ];
        let bytes = build("2026-01-02", "test", &four, &six).unwrap();
        let t = GeoTable::parse(&bytes).unwrap();
        assert_eq!(t.date, "2026-01-02");
        assert_eq!(t.source, "test");
        let at = |s: &str| t.lookup(ip(s)).map(|c| c.as_str().to_string());
        assert_eq!(at("192.0.2.0").as_deref(), Some("DE"));
        assert_eq!(at("192.0.2.255").as_deref(), Some("DE"));
        assert_eq!(at("192.0.3.0"), None);
        assert_eq!(at("192.0.1.255"), None);
        assert_eq!(at("0.0.0.0"), None);
        assert_eq!(at("198.51.100.99").as_deref(), Some("US"));
        assert_eq!(at("198.51.100.100"), None, "US and FR overlap");
        assert_eq!(at("198.51.100.127"), None);
        assert_eq!(at("198.51.100.128").as_deref(), Some("FR"));
        assert_eq!(at("198.51.100.201"), None);
        assert_eq!(at("203.0.113.15").as_deref(), Some("JP"));
        assert_eq!(at("203.0.114.255").as_deref(), Some("JP"));
        assert_eq!(at("255.255.255.255").as_deref(), Some("AU"));
        assert_eq!(at("::ffff:192.0.2.7").as_deref(), Some("DE"), "v4-mapped");
        assert_eq!(at("2001:db8::1").as_deref(), Some("NL"));
        assert_eq!(at("2001:db8:0:ffff::1").as_deref(), Some("NL"));
        assert_eq!(at("2001:db8:1::1"), None, "the /64 the SE range cuts");
        assert_eq!(at("2001:db8:1:1::1").as_deref(), Some("SE"));
        assert_eq!(at("2001:db8:2::1"), None);
        assert_eq!(at("::1"), None);
        // Merged: JP's two ranges and its duplicate are one boundary.
        assert!(t.len().0 <= 11, "{:?}", t.len());
    }

    #[test]
    fn not_a_table() {
        assert!(GeoTable::parse(b"").is_none());
        assert!(GeoTable::parse(b"MGEO1\x01").is_none());
        let mut bytes = build("d", "s", &[v4("1.0.0.0", "1.0.0.255", "AU")], &[]).unwrap();
        bytes.truncate(bytes.len() - 1);
        assert!(GeoTable::parse(&bytes).is_none());
    }

    #[test]
    fn csv_rows() {
        let rows = read_num_csv("16777216,16777471,AU\n16777472,16778239,XX\n\n").unwrap();
        assert_eq!(rows, vec![(16777216, 16777471, c("AU"))]);
        assert!(read_num_csv("1,2\n").is_err());
        assert!(read_num_csv("a,2,DE\n").is_err());
    }
}
