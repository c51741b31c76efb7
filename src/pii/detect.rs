//! The built-in detectors. Each is a hand-written pass over the text's bytes that looks only at
//! the few places where its kind can start (an `@`, a digit or `+` after a word boundary, an
//! upper-case letter after a word boundary, a `:`), then checks the candidate as strictly as
//! the kind allows: checksums (IBAN mod-97 through `iban_validate`, Luhn for cards, the
//! national check digits of several VAT ids), number ranges (IPv4 octets, SSN areas), issuer
//! ranges (cards) and the standard library's IPv6 parser. Scanning costs a few instructions per
//! byte, which regular expressions (even a DFA) could not match for nine kinds at once.

use super::{Finding, CARD, EMAIL, EU_VAT, IBAN, IPV4, IPV6, PHONE, UK_NINO, US_SSN};

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Where detectors can start, found in one pass over the text: digits, `+` and `(` that start
/// a token; upper-case letters that start a token; every `@`, `:` and `-`.
#[derive(Default)]
pub(super) struct Triggers {
    pub digit: Vec<usize>,
    pub upper: Vec<usize>,
    pub at: Vec<usize>,
    pub colon: Vec<usize>,
    pub dash: Vec<usize>,
}

const WORD: u8 = 1;
const DIGIT: u8 = 2;
const UPPER: u8 = 4;
/// `+` or `(`: may start a phone number.
const OPEN: u8 = 8;
const AT: u8 = 16;
const COLON: u8 = 32;
const DASH: u8 = 64;

/// Each byte's classes, so the one pass over the text is a table lookup per byte.
const CLASS: [u8; 256] = {
    let mut c = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let x = b as u8;
        c[b] = if x.is_ascii_digit() {
            WORD | DIGIT
        } else if x.is_ascii_uppercase() {
            WORD | UPPER
        } else if x.is_ascii_lowercase() || x == b'_' {
            WORD
        } else {
            match x {
                b'+' | b'(' => OPEN,
                b'@' => AT,
                b':' => COLON,
                b'-' => DASH,
                _ => 0,
            }
        };
        b += 1;
    }
    c
};

impl Triggers {
    pub fn of(t: &[u8]) -> Triggers {
        let mut tr = Triggers::default();
        let mut prev_word = false;
        for (i, &b) in t.iter().enumerate() {
            let c = CLASS[b as usize];
            if c & !WORD != 0 {
                if c & (DIGIT | OPEN) != 0 {
                    if !prev_word {
                        tr.digit.push(i);
                    }
                } else if c & UPPER != 0 {
                    if !prev_word {
                        tr.upper.push(i);
                    }
                } else if c == AT {
                    tr.at.push(i);
                } else if c == COLON {
                    tr.colon.push(i);
                } else if c == DASH {
                    tr.dash.push(i);
                }
            }
            prev_word = c & WORD != 0;
        }
        tr
    }
}

/// True when position `i` starts a token: the text starts there or the byte before is not part
/// of a word.
fn starts_token(t: &[u8], i: usize) -> bool {
    i == 0 || !is_word(t[i - 1])
}

/// True when position `end` ends a token.
fn ends_token(t: &[u8], end: usize) -> bool {
    end >= t.len() || !is_word(t[end])
}

pub(super) fn email(t: &[u8], cands: &[usize], out: &mut Vec<Finding>) {
    let local_char = |b: u8| b.is_ascii_alphanumeric() || b"._%+-".contains(&b);
    let domain_char = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-';
    let mut from = 0;
    for &at in cands {
        if at < from {
            continue;
        }
        from = at + 1;
        let mut start = at;
        while start > 0 && local_char(t[start - 1]) && at - start < 64 {
            start -= 1;
        }
        if start > 0 && local_char(t[start - 1]) {
            continue; // a local part longer than 64
        }
        // No leading dot; `+`/`-`/`.` right after a boundary are punctuation, not the address.
        while start < at && matches!(t[start], b'.' | b'+' | b'-' | b'%') {
            start += 1;
        }
        if start == at || t[at - 1] == b'.' {
            continue;
        }
        let mut end = at + 1;
        while end < t.len() && domain_char(t[end]) && end - at <= 253 {
            end += 1;
        }
        while end > at + 1 && matches!(t[end - 1], b'.' | b'-') {
            end -= 1;
        }
        let domain = &t[at + 1..end];
        let Some(dot) = domain.iter().rposition(|&b| b == b'.') else {
            continue;
        };
        let tld = &domain[dot + 1..];
        let labels_ok = domain
            .split(|&b| b == b'.')
            .all(|l| !l.is_empty() && l[0] != b'-' && l[l.len() - 1] != b'-');
        if tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic) && labels_ok {
            out.push(Finding {
                kind: EMAIL,
                start,
                end,
            });
            from = end;
        }
    }
}

/// A fixed-capacity list on the stack: scanning allocates nothing per candidate.
#[derive(Clone, Copy)]
struct Small<T: Copy + Default, const N: usize> {
    items: [T; N],
    len: usize,
}

impl<T: Copy + Default, const N: usize> Small<T, N> {
    fn new() -> Self {
        Small {
            items: [T::default(); N],
            len: 0,
        }
    }

    /// False (and nothing stored) when full.
    fn push(&mut self, v: T) -> bool {
        if self.len == N {
            return false;
        }
        self.items[self.len] = v;
        self.len += 1;
        true
    }

    fn is_full(&self) -> bool {
        self.len == N
    }
}

impl<T: Copy + Default, const N: usize> std::ops::Deref for Small<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items[..self.len]
    }
}

/// A run of digit groups and separators from `start`: the groups' lengths, the separators seen,
/// where it ends (after its last digit), and whether the first group was in parentheses.
struct Groups {
    lens: Small<usize, 20>,
    /// Where each group ends.
    ends: Small<usize, 20>,
    seps: Small<u8, 20>,
    end: usize,
    paren_first: bool,
}

fn digit_groups(t: &[u8], mut i: usize, seps_allowed: &[u8], max_digits: usize) -> Groups {
    let mut g = Groups {
        lens: Small::new(),
        ends: Small::new(),
        seps: Small::new(),
        end: i,
        paren_first: false,
    };
    if i < t.len() && t[i] == b'(' {
        g.paren_first = true;
        i += 1;
    }
    let mut digits = 0;
    loop {
        let s = i;
        while i < t.len() && t[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            break;
        }
        digits += i - s;
        if g.lens.is_full() {
            break;
        }
        g.lens.push(i - s);
        g.ends.push(i);
        g.end = i;
        if digits > max_digits {
            break;
        }
        if g.paren_first && g.lens.len() == 1 {
            if i < t.len() && t[i] == b')' {
                i += 1;
                // `(030) 1234567` or `(555)123-4567`
                if i < t.len() && t[i] == b' ' {
                    i += 1;
                }
                g.seps.push(b')');
                continue;
            }
            break;
        }
        if i + 1 < t.len() && seps_allowed.contains(&t[i]) && t[i + 1].is_ascii_digit() {
            g.seps.push(t[i]);
            i += 1;
            continue;
        }
        break;
    }
    g
}

/// How many digits follow `i` before a byte that is neither a digit nor in `seps` (looking at
/// most `limit` bytes): a cheap test that rules most numbers in prose out before any parsing.
fn digits_ahead(t: &[u8], i: usize, seps: &[u8], limit: usize) -> usize {
    let mut n = 0;
    for &b in t[i..].iter().take(limit) {
        if b.is_ascii_digit() {
            n += 1;
        } else if !seps.contains(&b) {
            break;
        }
    }
    n
}

/// The digits between `start` and `end`, as values (the first 32).
fn digits_of(t: &[u8], start: usize, end: usize) -> Small<u8, 32> {
    let mut d = Small::new();
    for b in &t[start..end] {
        if b.is_ascii_digit() && !d.push(b - b'0') {
            break;
        }
    }
    d
}

/// Separators, ignoring the `)` after a parenthesised first group, are all the same byte.
fn consistent(seps: &[u8]) -> bool {
    let mut real = seps.iter().filter(|&&s| s != b')');
    match real.next() {
        None => true,
        Some(first) => real.all(|s| s == first),
    }
}

pub(super) fn phone(t: &[u8], cands: &[usize], out: &mut Vec<Finding>) {
    let mut next = 0;
    for &i in cands {
        if i < next {
            continue;
        }
        let b = t[i];
        let candidate = (b == b'+' || b == b'(' || b.is_ascii_digit())
            && starts_token(t, i)
            && (i == 0 || !matches!(t[i - 1], b'+' | b'.' | b'-' | b'/' | b')'));
        if !candidate {
            continue;
        }
        if b == b'+' {
            // International: `+`, then 8 to 15 digits (E.164) with single separators (space,
            // `-`, `.`, `/`) and at most one pair of parentheses, e.g. `+1 (415) 555-2671`.
            let mut j = i + 1;
            let mut n = 0;
            // (end, digits so far) after each run of digits: the number may end at any of them.
            let mut run_ends: Small<(usize, usize, bool), 20> = Small::new();
            let mut open = false;
            let mut parens = 0;
            let mut prev_sep = true; // no separator right after `+`
            while j < t.len() {
                let c = t[j];
                if c.is_ascii_digit() {
                    n += 1;
                    prev_sep = false;
                    if !t.get(j + 1).is_some_and(u8::is_ascii_digit)
                        && !run_ends.push((j + 1, n, open))
                    {
                        break;
                    }
                } else if c == b'(' && !open && parens == 0 {
                    open = true;
                    parens += 1;
                } else if c == b')' && open && !prev_sep {
                    open = false;
                } else if matches!(c, b' ' | b'-' | b'.' | b'/') && !prev_sep {
                    prev_sep = true;
                } else {
                    break;
                }
                j += 1;
                if n > 15 {
                    break;
                }
            }
            let first = t.get(i + 1).copied().unwrap_or(b'0');
            let best = run_ends
                .iter()
                .rev()
                .find(|&&(end, n, open)| (8..=15).contains(&n) && !open && ends_token(t, end));
            if let (Some(&(end, _, _)), true) = (best, first != b'0') {
                out.push(Finding {
                    kind: PHONE,
                    start: i,
                    end,
                });
                next = end;
                continue;
            }
            continue;
        }
        // Every national form has at least 10 digits.
        if digits_ahead(t, i, b" -./()", 24) < 10 {
            continue;
        }
        let g = digit_groups(t, i, b" -./", 13);
        let all_digits = digits_of(t, i, g.end);
        // The longest run of whole groups that reads as a number of one of the national forms.
        let mut hit = None;
        for k in (2..=g.lens.len()).rev() {
            let (lens, seps, end) = (&g.lens[..k], &g.seps[..k - 1], g.ends[k - 1]);
            let n: usize = lens.iter().sum();
            if n > 13 || n > all_digits.len() {
                continue;
            }
            let digits = &all_digits[..n];
            let ok_end = ends_token(t, end)
                && !(end + 1 < t.len()
                    && matches!(t[end], b'.' | b'-' | b'/')
                    && t[end + 1].is_ascii_digit());
            // (NXX) NXX-XXXX, NXX-NXX-XXXX, NXX.NXX.XXXX, NXX NXX XXXX, optionally after `1 `/`1-`.
            let (ul, ud, us_seps) =
                if lens.len() == 4 && lens[0] == 1 && digits[0] == 1 && !g.paren_first {
                    (&lens[1..], &digits[1..], &seps[1..])
                } else {
                    (lens, digits, seps)
                };
            let us = ul == [3, 3, 4] && ud[0] >= 2 && ud[3] >= 2 && consistent(us_seps);
            // DE, FR, UK national forms: a leading 0 (not the 00 of an international prefix),
            // 10 to 12 digits in at least two groups with one kind of separator.
            let national = digits[0] == 0
                && digits[1] != 0
                && (10..=12).contains(&n)
                && lens.iter().all(|&l| (2..=8).contains(&l))
                && consistent(seps);
            if ok_end && (us || national) {
                hit = Some(end);
                break;
            }
        }
        if let Some(end) = hit {
            out.push(Finding {
                kind: PHONE,
                start: i,
                end,
            });
            next = end;
            continue;
        }
        // Skip the rest of this number so its inner digits are not candidates.
        next = g.ends.first().copied().unwrap_or(i + 1).max(i + 1);
    }
}

fn luhn(d: &[u8]) -> bool {
    let mut sum = 0u32;
    for (k, &x) in d.iter().rev().enumerate() {
        let mut v = u32::from(x);
        if k % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

/// Whether a card number of this length starts in a known issuer range.
fn issuer_range(d: &[u8]) -> bool {
    let n = d.len();
    let p = |k: usize| d[..k].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
    match d[0] {
        4 => matches!(n, 13 | 16 | 19), // Visa
        5 => {
            (51..=55).contains(&p(2)) && n == 16
                || (p(2) == 50 || (56..=59).contains(&p(2))) && (12..=19).contains(&n)
        } // Mastercard, Maestro
        2 => (2221..=2720).contains(&p(4)) && n == 16, // Mastercard 2-series
        3 => {
            (p(2) == 34 || p(2) == 37) && n == 15 // American Express
                || (3528..=3589).contains(&p(4)) && (16..=19).contains(&n) // JCB
                || ((300..=305).contains(&p(3)) || p(2) == 36 || p(2) == 38 || p(2) == 39) && (14..=19).contains(&n)
            // Diners
        }
        6 => {
            (p(4) == 6011 || (644..=649).contains(&p(3)) || p(2) == 65) && (16..=19).contains(&n) // Discover
                || p(2) == 62 && (16..=19).contains(&n) // UnionPay
                || (p(2) == 67 || p(2) == 63) && (12..=19).contains(&n) // Maestro
        }
        _ => false,
    }
}

pub(super) fn card(t: &[u8], cands: &[usize], out: &mut Vec<Finding>) {
    let mut next = 0;
    for &i in cands {
        if i < next {
            continue;
        }
        if !(t[i].is_ascii_digit()
            && starts_token(t, i)
            && (i == 0 || !matches!(t[i - 1], b'+' | b'.' | b'-')))
        {
            continue;
        }
        // Every card number has at least 12 digits.
        if digits_ahead(t, i, b" -", 30) < 12 {
            continue;
        }
        let g = digit_groups(t, i, b" -", 19);
        let all_digits = digits_of(t, i, g.end);
        for k in (1..=g.lens.len()).rev() {
            let (lens, seps, end) = (&g.lens[..k], &g.seps[..k - 1], g.ends[k - 1]);
            let n: usize = lens.iter().sum();
            if n > 19 || n > all_digits.len() {
                continue;
            }
            let d = &all_digits[..n];
            let grouped_ok =
                k == 1 || (consistent(seps) && lens.iter().all(|&l| (3..=6).contains(&l)));
            if (12..=19).contains(&d.len())
                && !g.paren_first
                && grouped_ok
                && ends_token(t, end)
                && !(end + 1 < t.len()
                    && matches!(t[end], b'.' | b'-')
                    && t[end + 1].is_ascii_digit())
                && issuer_range(d)
                && luhn(d)
            {
                out.push(Finding {
                    kind: CARD,
                    start: i,
                    end,
                });
                break;
            }
        }
        next = g.ends.first().copied().unwrap_or(i + 1).max(i + 1);
    }
}

pub(super) fn ipv4(t: &[u8], cands: &[usize], out: &mut Vec<Finding>) {
    let mut next = 0;
    for &i in cands {
        if i < next {
            continue;
        }
        if !(t[i].is_ascii_digit() && starts_token(t, i) && (i == 0 || t[i - 1] != b'.')) {
            continue;
        }
        let mut j = i;
        let mut octets = 0;
        let mut ok = true;
        while octets < 4 {
            let s = j;
            while j < t.len() && t[j].is_ascii_digit() && j - s < 4 {
                j += 1;
            }
            let len = j - s;
            let v = t[s..j]
                .iter()
                .fold(0u32, |a, &x| a * 10 + u32::from(x - b'0'));
            if len == 0 || len > 3 || v > 255 || (len > 1 && t[s] == b'0') {
                ok = false;
                break;
            }
            octets += 1;
            if octets < 4 {
                if j + 1 < t.len() && t[j] == b'.' && t[j + 1].is_ascii_digit() {
                    j += 1;
                } else {
                    ok = false;
                    break;
                }
            }
        }
        let after_ok =
            ends_token(t, j) && !(j + 1 < t.len() && t[j] == b'.' && t[j + 1].is_ascii_digit());
        if ok && after_ok {
            out.push(Finding {
                kind: IPV4,
                start: i,
                end: j,
            });
            next = j;
        } else {
            // Past this run of digits and dots.
            let mut k = i;
            while k < t.len() && (t[k].is_ascii_digit() || t[k] == b'.') {
                k += 1;
            }
            next = k.max(i + 1);
        }
    }
}

pub(super) fn ipv6(t: &[u8], cands: &[usize], out: &mut Vec<Finding>) {
    let run_char = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
    let mut from = 0;
    for &colon in cands {
        if colon < from {
            continue;
        }
        let mut start = colon;
        while start > 0 && run_char(t[start - 1]) {
            start -= 1;
        }
        let mut end = colon;
        while end < t.len() && run_char(t[end]) {
            end += 1;
        }
        from = end.max(colon + 1);
        // Trailing sentence punctuation is not part of the address.
        while end > start && matches!(t[end - 1], b'.') {
            end -= 1;
        }
        if start > 0 && (is_word(t[start - 1]) || t[start - 1] == b':') {
            continue;
        }
        if !ends_token(t, end) {
            continue;
        }
        let s = &t[start..end];
        let colons = s.iter().filter(|&&b| b == b':').count();
        let hex = s.iter().filter(|b| b.is_ascii_hexdigit()).count();
        if colons < 2 || hex < 1 {
            continue;
        }
        let Ok(text) = std::str::from_utf8(s) else {
            continue;
        };
        if text.parse::<std::net::Ipv6Addr>().is_ok() {
            out.push(Finding {
                kind: IPV6,
                start,
                end,
            });
        }
    }
}

pub(super) fn us_ssn(t: &[u8], cands: &[usize], out: &mut Vec<Finding>) {
    let mut from = 0;
    for &dash in cands {
        if dash < from {
            continue;
        }
        from = dash + 1;
        // ddd-dd-dddd: the first dash is at start + 3.
        if dash < 3 || dash + 8 > t.len() {
            continue;
        }
        let start = dash - 3;
        let s = &t[start..start + 11];
        let shape = s.iter().enumerate().all(|(k, &b)| match k {
            3 | 6 => b == b'-',
            _ => b.is_ascii_digit(),
        });
        if !shape
            || !starts_token(t, start)
            || (start > 0 && matches!(t[start - 1], b'-' | b'.' | b'+'))
            || !ends_token(t, start + 11)
            || (start + 12 < t.len() && t[start + 11] == b'-' && t[start + 12].is_ascii_digit())
        {
            continue;
        }
        let num = |r: std::ops::Range<usize>| {
            s[r].iter().fold(0u32, |a, &x| a * 10 + u32::from(x - b'0'))
        };
        let (area, group, serial) = (num(0..3), num(4..6), num(7..11));
        if area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 {
            out.push(Finding {
                kind: US_SSN,
                start,
                end: start + 11,
            });
            from = start + 11;
        }
    }
}

pub(super) fn uk_nino(t: &[u8], cands: &[usize], out: &mut Vec<Finding>) {
    const FIRST_NOT: &[u8] = b"DFIQUV";
    const SECOND_NOT: &[u8] = b"DFIOQUV";
    const PREFIX_NOT: &[&[u8]] = &[b"BG", b"GB", b"NK", b"KN", b"TN", b"NT", b"ZZ"];
    let mut next = 0;
    for &i in cands {
        if i < next {
            continue;
        }
        if i + 9 > t.len() {
            break;
        }
        let (a, b) = (t[i], t[i + 1]);
        if !(a.is_ascii_uppercase() && b.is_ascii_uppercase() && starts_token(t, i))
            || FIRST_NOT.contains(&a)
            || SECOND_NOT.contains(&b)
            || PREFIX_NOT.contains(&&t[i..i + 2])
        {
            continue;
        }
        // Six digits, either together or as three pairs with single spaces, then A-D.
        let mut j = i + 2;
        let spaced = t.get(j) == Some(&b' ');
        let mut digits = 0;
        while digits < 6 {
            if spaced && digits % 2 == 0 {
                if t.get(j) != Some(&b' ') {
                    break;
                }
                j += 1;
            }
            match t.get(j) {
                Some(d) if d.is_ascii_digit() => {
                    digits += 1;
                    j += 1;
                }
                _ => break,
            }
        }
        if digits == 6 {
            if spaced && t.get(j) == Some(&b' ') {
                j += 1;
            }
            if matches!(t.get(j), Some(b'A'..=b'D')) && ends_token(t, j + 1) {
                out.push(Finding {
                    kind: UK_NINO,
                    start: i,
                    end: j + 1,
                });
                next = j + 1;
                continue;
            }
        }
    }
}

fn mod97(digits: &[u8]) -> u32 {
    digits
        .iter()
        .fold(0u32, |a, &d| (a * 10 + u32::from(d)) % 97)
}

/// The national check digit, for the countries whose rule is public and simple.
fn vat_checksum(cc: &[u8], body: &[u8]) -> bool {
    let d: Vec<u8> = body
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| b - b'0')
        .collect();
    match cc {
        // ISO 7064 MOD 11,10.
        b"DE" => {
            let mut product = 10u32;
            for &x in &d[..8] {
                let mut sum = (u32::from(x) + product) % 10;
                if sum == 0 {
                    sum = 10;
                }
                product = (2 * sum) % 11;
            }
            let check = (11 - product) % 10;
            check == u32::from(d[8])
        }
        b"IT" => luhn(&d),
        b"BE" => 97 - mod97(&d[..8]) == u32::from(d[8]) * 10 + u32::from(d[9]),
        b"FR" => {
            if !body[..2].iter().all(u8::is_ascii_digit) {
                return true; // the newer alphanumeric keys have no public check
            }
            let key = u32::from(d[0]) * 10 + u32::from(d[1]);
            let siren = mod97(&d[2..]);
            key == (12 + 3 * siren) % 97
        }
        b"DK" => {
            let w = [2u32, 7, 6, 5, 4, 3, 2, 1];
            d.iter().zip(w).map(|(&x, w)| u32::from(x) * w).sum::<u32>() % 11 == 0
        }
        b"PL" => {
            let w = [6u32, 5, 7, 2, 3, 4, 5, 6, 7];
            let s: u32 = d[..9].iter().zip(w).map(|(&x, w)| u32::from(x) * w).sum();
            s % 11 == u32::from(d[9]) && s % 11 != 10
        }
        _ => true,
    }
}

/// The VAT number formats of the EU member states (and XI, Northern Ireland), after the
/// two-letter prefix: `9` a digit, `A` a letter, `X` either.
const VAT_FORMATS: &[(&[u8], &[&str])] = &[
    (b"AT", &["U99999999"]),
    (b"BE", &["0999999999", "1999999999"]),
    (b"BG", &["999999999", "9999999999"]),
    (b"CY", &["99999999A"]),
    (b"CZ", &["99999999", "999999999", "9999999999"]),
    (b"DE", &["999999999"]),
    (b"DK", &["99999999"]),
    (b"EE", &["999999999"]),
    (b"EL", &["999999999"]),
    (b"ES", &["A9999999A", "A99999999", "99999999A"]),
    (b"FI", &["99999999"]),
    (b"FR", &["XX999999999"]),
    (b"HR", &["99999999999"]),
    (b"HU", &["99999999"]),
    (b"IE", &["9999999A", "9999999AA", "9A99999A"]),
    (b"IT", &["99999999999"]),
    (b"LT", &["999999999", "999999999999"]),
    (b"LU", &["99999999"]),
    (b"LV", &["99999999999"]),
    (b"MT", &["99999999"]),
    (b"NL", &["999999999B99"]),
    (b"PL", &["9999999999"]),
    (b"PT", &["999999999"]),
    (
        b"RO",
        &[
            "99",
            "999",
            "9999",
            "99999",
            "999999",
            "9999999",
            "99999999",
            "999999999",
            "9999999999",
        ],
    ),
    (b"SE", &["999999999901"]),
    (b"SI", &["99999999"]),
    (b"SK", &["9999999999"]),
    (b"XI", &["999999999", "999999999999"]),
];

fn fits(format: &str, s: &[u8]) -> bool {
    format.len() == s.len()
        && format.bytes().zip(s).all(|(f, &b)| match f {
            b'9' => b.is_ascii_digit(),
            b'A' => b.is_ascii_uppercase(),
            b'X' => b.is_ascii_uppercase() || b.is_ascii_digit(),
            lit => lit == b,
        })
}

pub(super) fn eu_vat(t: &[u8], cands: &[usize], out: &mut Vec<Finding>) {
    let mut next = 0;
    for &i in cands {
        if i < next {
            continue;
        }
        if i + 4 > t.len() {
            break;
        }
        if !(t[i].is_ascii_uppercase() && t[i + 1].is_ascii_uppercase() && starts_token(t, i)) {
            continue;
        }
        let Some((cc, formats)) = VAT_FORMATS.iter().find(|(cc, _)| *cc == &t[i..i + 2]) else {
            continue;
        };
        // The prefix, optionally one space, then the number up to the end of the token.
        let mut s = i + 2;
        if t.get(s) == Some(&b' ') {
            s += 1;
        }
        let mut e = s;
        while e < t.len() && t[e].is_ascii_alphanumeric() {
            e += 1;
        }
        let body = &t[s..e];
        // RO's shortest forms are plain numbers: take RO only with at least 6 digits.
        let min_len = if *cc == b"RO" { 6 } else { 0 };
        if body.len() >= min_len
            && formats.iter().any(|f| fits(f, body))
            && ends_token(t, e)
            && vat_checksum(cc, body)
        {
            out.push(Finding {
                kind: EU_VAT,
                start: i,
                end: e,
            });
            next = e;
            continue;
        }
    }
}

pub(super) fn iban(t: &[u8], cands: &[usize], out: &mut Vec<Finding>) {
    let mut next = 0;
    for &i in cands {
        if i < next {
            continue;
        }
        if i + 15 > t.len() {
            break;
        }
        if !(t[i].is_ascii_uppercase()
            && t[i + 1].is_ascii_uppercase()
            && t[i + 2].is_ascii_digit()
            && t[i + 3].is_ascii_digit()
            && starts_token(t, i))
        {
            continue;
        }
        // Upper-case letters and digits, optionally in groups of four separated by one space,
        // up to 34 of them; then the longest prefix that is a valid IBAN.
        let mut compact: Small<u8, 34> = Small::new();
        let mut ends: Small<usize, 34> = Small::new(); // text position after each compact character
        let mut j = i;
        let grouped = t.get(i + 4) == Some(&b' ');
        while j < t.len() && compact.len() < 34 {
            let b = t[j];
            if b.is_ascii_digit() || b.is_ascii_uppercase() {
                compact.push(b);
                j += 1;
                ends.push(j);
            } else if grouped
                && b == b' '
                && compact.len() % 4 == 0
                && j + 1 < t.len()
                && t[j + 1].is_ascii_alphanumeric()
            {
                j += 1;
            } else {
                break;
            }
        }
        let mut found = None;
        for len in (15..=compact.len()).rev() {
            let end = ends[len - 1];
            if !ends_token(t, end) {
                continue;
            }
            let Ok(s) = std::str::from_utf8(&compact[..len]) else {
                continue;
            };
            if s.parse::<iban::Iban>().is_ok() {
                found = Some(end);
                break;
            }
        }
        if let Some(end) = found {
            out.push(Finding {
                kind: IBAN,
                start: i,
                end,
            });
            next = end;
        }
    }
}
