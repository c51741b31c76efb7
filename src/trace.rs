//! W3C Trace Context (`traceparent`, `tracestate`): a trace started by the app goes on through
//! Meridian to every upstream attempt. Meridian's request is one span (a child of the caller's,
//! or the root of a new trace); each attempt, retried or hedged, is a child of that span, so
//! attempts are siblings. Ids Meridian makes are derived from randomness it already has (its
//! fresh request id), so no request pays an extra host call. Pure.

/// The request header that carries the trace (and the one sent upstream).
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
/// Longest `tracestate` passed on (the specification's limit for what must be propagated).
const MAX_TRACESTATE: usize = 512;

/// One request's place in a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub trace_id: [u8; 16],
    /// The caller's span, when the request came with a valid `traceparent`.
    pub parent_id: Option<[u8; 8]>,
    /// Meridian's span for this request.
    pub span_id: [u8; 8],
    /// The caller's trace flags (sampled: `01`), or sampled for a new trace.
    pub flags: u8,
    /// The caller's `tracestate`, passed on unchanged (when it fits the limit).
    pub state: Option<String>,
}

fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// 64 bits mixed from `parts` (SipHash, keyed by nothing but `domain`), never zero (W3C
/// trace context treats an all-zero id as invalid).
fn mix(parts: &[&[u8]], domain: u64) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write_u64(domain);
    for p in parts {
        h.write_usize(p.len());
        h.write(p);
    }
    h.finish().max(1)
}

pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    hex_into(&mut out, bytes);
    out
}

/// Appends `bytes` in lower-case hex: eight bytes at a time as one 128-bit word (each nibble
/// spread to a byte and turned into its digit by arithmetic, no table), up to 32 bytes through a
/// buffer, one append each (a `char` at a time costs about three times as much in Wasm).
pub fn hex_into(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(32) {
        let mut groups = chunk.chunks_exact(8);
        let mut at = 0;
        for g in &mut groups {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(g);
            buf[at..at + 16].copy_from_slice(&hex16(u64::from_be_bytes(eight)));
            at += 16;
        }
        for b in groups.remainder() {
            buf[at] = DIGITS[usize::from(b >> 4)];
            buf[at + 1] = DIGITS[usize::from(b & 15)];
            at += 2;
        }
        // Hex digits are ASCII, so this never falls back to the empty string.
        out.push_str(std::str::from_utf8(&buf[..at]).unwrap_or_default());
    }
}

/// The sixteen lower-case hex digits of `x`, most significant first.
fn hex16(x: u64) -> [u8; 16] {
    const LOW: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
    // Spread: each nibble of `x` to the byte of the same rank.
    let mut y = u128::from(x);
    y = (y | y << 32) & 0x0000_0000_ffff_ffff_0000_0000_ffff_ffff;
    y = (y | y << 16) & 0x0000_ffff_0000_ffff_0000_ffff_0000_ffff;
    y = (y | y << 8) & 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff;
    y = (y | y << 4) & 0x0f0f_0f0f_0f0f_0f0f_0f0f_0f0f_0f0f_0f0f;
    // A nibble of ten or more carries into bit 4 when six is added: it takes a letter.
    let letters = ((y + 6 * LOW) >> 4) & LOW;
    (y + u128::from(b'0') * LOW + letters * u128::from(b'a' - b'0' - 10)).to_be_bytes()
}

/// A `traceparent` value, if it is one: `00-<32 hex>-<16 hex>-<2 hex>` (lower case; ids not all
/// zero; a future version's longer value is read by its first four fields; version `ff` is not
/// valid).
pub fn parse_traceparent(v: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    let v = v.trim();
    let mut parts = v.split('-');
    let version: [u8; 1] = hex(parts.next()?)?;
    if version[0] == 0xff || (version[0] == 0 && v.len() != 55) {
        return None;
    }
    let trace: [u8; 16] = hex(parts.next()?)?;
    let parent: [u8; 8] = hex(parts.next()?)?;
    let flags: [u8; 1] = hex(parts.next().map(|f| f.get(..2).unwrap_or(f))?)?;
    if trace == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace, parent, flags[0]))
}

/// A span the runtime started for this request (Spin's inbound request span, read through
/// `wasi:otel`'s `outer-span-context`): when there is one, Meridian's span is its child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSpan {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

impl HostSpan {
    /// From the hexadecimal ids `wasi:otel` gives; `None` when they are not valid ids (a host
    /// that is not tracing gives all zeros).
    pub fn from_hex(trace_id: &str, span_id: &str, sampled: bool) -> Option<HostSpan> {
        let trace_id: [u8; 16] = hex(&trace_id.to_ascii_lowercase())?;
        let span_id: [u8; 8] = hex(&span_id.to_ascii_lowercase())?;
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(HostSpan {
            trace_id,
            span_id,
            flags: u8::from(sampled),
        })
    }
}

impl Trace {
    /// The request's trace under the runtime's own span, when the runtime traces it (its span is
    /// already the caller's child, as Spin makes it); else as [`Trace::of_request`].
    pub fn under(
        host: Option<HostSpan>,
        headers: &[(String, String)],
        request_id: &str,
        seed: &str,
    ) -> Trace {
        let mut t = Trace::of_request(headers, request_id, seed);
        if let Some(h) = host {
            if t.parent_id.is_none() {
                t.state = None;
            }
            t.trace_id = h.trace_id;
            t.parent_id = Some(h.span_id);
            t.flags = h.flags;
        }
        t
    }

    /// The request's trace: the caller's, when it sent exactly one valid `traceparent`; else a
    /// new one. `seed` is random (Meridian's fresh request id), and with the request id it
    /// gives the ids Meridian makes.
    pub fn of_request(headers: &[(String, String)], request_id: &str, seed: &str) -> Trace {
        let mut given = headers.iter().filter(|(k, _)| k == TRACEPARENT);
        let parsed = match (given.next(), given.next()) {
            (Some((_, v)), None) => parse_traceparent(v),
            _ => None, // absent, or ambiguous
        };
        // Ids need to be unpredictable and unique, not secret: a mix of the seed's randomness
        // does (no cryptographic hash: it cost as much as the rest of the trace context).
        let span_id = mix(&[seed.as_bytes(), request_id.as_bytes()], 2).to_be_bytes();
        match parsed {
            Some((trace_id, parent, flags)) => Trace {
                trace_id,
                parent_id: Some(parent),
                span_id,
                flags,
                state: crate::headers::get(headers, TRACESTATE)
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE && s.is_ascii())
                    .map(str::to_string),
            },
            None => {
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(
                    &mix(&[seed.as_bytes(), request_id.as_bytes()], 0).to_be_bytes(),
                );
                trace_id[8..].copy_from_slice(
                    &mix(&[seed.as_bytes(), request_id.as_bytes()], 1).to_be_bytes(),
                );
                Trace {
                    trace_id,
                    parent_id: None,
                    span_id,
                    flags: 1,
                    state: None,
                }
            }
        }
    }

    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        to_hex(&self.span_id)
    }

    pub fn parent_id_hex(&self) -> Option<String> {
        self.parent_id.map(|p| to_hex(&p))
    }

    /// The span of the request's `n`th attempt (from 0): a child of the request's span, so
    /// attempts (retries and hedges included) are siblings.
    pub fn attempt_span(&self, n: u32) -> [u8; 8] {
        mix(&[&self.trace_id, &self.span_id], 3 + u64::from(n)).to_be_bytes()
    }

    /// The `traceparent` an upstream attempt is sent with.
    pub fn traceparent_for(&self, span: [u8; 8]) -> String {
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        hex_into(&mut out, &self.trace_id);
        out.push('-');
        hex_into(&mut out, &span);
        out.push('-');
        hex_into(&mut out, &[self.flags]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIVEN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn hex_is_lower_case_two_digits_a_byte_at_any_length() {
        for n in [0usize, 1, 8, 16, 31, 32, 33, 64, 100] {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let want: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(to_hex(&bytes), want);
            let mut out = String::from("x-");
            hex_into(&mut out, &bytes);
            assert_eq!(out, format!("x-{want}"));
        }
        assert_eq!(to_hex(&[0x00, 0xff, 0x0a, 0xa0]), "00ff0aa0");
        assert_eq!(
            to_hex(&[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98]),
            "0123456789abcdeffedcba98"
        );
    }

    proptest::proptest! {
        #[test]
        fn hex_is_the_hex_crates(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            let mut out = String::from("x");
            hex_into(&mut out, &bytes);
            proptest::prop_assert_eq!(out, format!("x{}", hex::encode(&bytes)));
        }
    }

    #[test]
    fn the_specifications_example_is_read_and_bad_values_are_not() {
        let (t, p, f) = parse_traceparent(GIVEN).unwrap();
        assert_eq!(to_hex(&t), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(to_hex(&p), "00f067aa0ba902b7");
        assert_eq!(f, 1);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper case
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", // 00 with more
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  // short
            "garbage",
            "",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        // A later version may carry more fields: its first four are read.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-abc")
                .is_some()
        );
    }

    #[test]
    fn a_callers_trace_goes_on_and_attempts_are_siblings_under_meridians_span() {
        let t = Trace::of_request(
            &h(&[(TRACEPARENT, GIVEN), (TRACESTATE, "congo=t61rcWkgMzE")]),
            "req-1",
            "mrd-0123456789abcdef",
        );
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id_hex().as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(t.span_id_hex(), "00f067aa0ba902b7", "Meridian's own span");
        assert_eq!(t.state.as_deref(), Some("congo=t61rcWkgMzE"));
        let spans: Vec<[u8; 8]> = (0..4).map(|n| t.attempt_span(n)).collect();
        for (i, a) in spans.iter().enumerate() {
            assert_ne!(*a, t.span_id);
            assert!(
                spans[i + 1..].iter().all(|b| b != a),
                "distinct attempt spans"
            );
            let tp = t.traceparent_for(*a);
            let (trace, parent, flags) = parse_traceparent(&tp).unwrap();
            assert_eq!((trace, parent, flags), (t.trace_id, *a, 1));
        }
    }

    /// Ids from different seeds differ (trace, span and each attempt's), and none is zero.
    #[test]
    fn ids_from_different_seeds_differ_and_are_never_zero() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..2_000 {
            let t = Trace::of_request(&[], "req", &format!("seed-{i}"));
            assert!(t.trace_id != [0; 16] && t.span_id != [0; 8]);
            assert!(seen.insert(t.trace_id.to_vec()));
            assert!(seen.insert(t.span_id.to_vec()));
            for n in 0..3 {
                let a = t.attempt_span(n);
                assert!(a != [0; 8] && a != t.span_id);
                assert!(seen.insert(a.to_vec()), "attempt {n} of {i}");
            }
        }
    }

    #[test]
    fn without_a_valid_traceparent_a_new_trace_starts() {
        for headers in [
            h(&[]),
            h(&[(TRACEPARENT, "nonsense"), (TRACESTATE, "a=b")]),
            // Two traceparents: ambiguous, so unknown.
            h(&[(TRACEPARENT, GIVEN), (TRACEPARENT, GIVEN)]),
        ] {
            let t = Trace::of_request(&headers, "req-1", "mrd-0123456789abcdef");
            assert_eq!(t.parent_id, None);
            assert_eq!(
                t.state, None,
                "a tracestate without its traceparent is dropped"
            );
            assert_ne!(t.trace_id, [0; 16]);
            assert_eq!(t.flags, 1);
            let other = Trace::of_request(&headers, "req-1", "mrd-fedcba9876543210");
            assert_ne!(
                t.trace_id, other.trace_id,
                "the seed's randomness makes the trace"
            );
        }
        // An oversized tracestate is not passed on.
        let big = "a=".to_string() + &"b".repeat(600);
        let t = Trace::of_request(&h(&[(TRACEPARENT, GIVEN), (TRACESTATE, &big)]), "r", "s");
        assert_eq!(t.state, None);
    }
}
