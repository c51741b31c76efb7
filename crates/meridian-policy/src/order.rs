//! Names compared as `str::cmp` compares them (byte order), eight bytes at a time. The
//! WebAssembly build's `memcmp` (wasi-libc's) compares a byte at a time, about 170
//! instructions per comparison of the names a request looks up (models, fields); the lookups
//! are binary searches over sorted tables, so a request makes a few dozen of them.

use std::cmp::Ordering;

/// `a.cmp(b)`, a word at a time.
#[inline]
pub fn cmp_names(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    while let (Some((p, xs)), Some((q, ys))) =
        (x.split_first_chunk::<8>(), y.split_first_chunk::<8>())
    {
        let (p, q) = (u64::from_be_bytes(*p), u64::from_be_bytes(*q));
        if p != q {
            return p.cmp(&q);
        }
        (x, y) = (xs, ys);
    }
    for (p, q) in x.iter().zip(y) {
        if p != q {
            return p.cmp(q);
        }
    }
    x.len().cmp(&y.len())
}

#[cfg(test)]
mod tests {
    use super::cmp_names;
    use proptest::prelude::*;

    #[test]
    fn prefixes_lengths_and_high_bytes() {
        let names = [
            "",
            "a",
            "ab",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "abcdefgh\u{e9}",
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4o-mini-2024-07-18",
            "llama-3.1-8b",
            "\u{ff}",
            "\u{7f}",
            "zz",
        ];
        for a in names {
            for b in names {
                assert_eq!(cmp_names(a, b), a.cmp(b), "{a:?} {b:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn as_str_cmp(a in "[a-c\u{e9}-]{0,20}", b in "[a-c\u{e9}-]{0,20}") {
            prop_assert_eq!(cmp_names(&a, &b), a.cmp(&b));
            prop_assert_eq!(cmp_names(&a, &a), std::cmp::Ordering::Equal);
        }
    }
}
