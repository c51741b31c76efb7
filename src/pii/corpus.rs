//! The detectors against a corpus of positive and negative examples, each in a sentence.
//! Check digits of the positive IBANs, cards and VAT ids come from published examples or were
//! computed with an implementation of the published rules written apart from this crate; the
//! negatives are look-alikes (bad check digits, UUIDs, order numbers, versions, code, times).
//! `cargo test --lib pii::corpus -- --nocapture` prints precision and recall per detector; the
//! test asserts each against the floor written next to it. Misses that are known limits are
//! in the corpus on purpose (marked), so the figures say what the detectors cannot do.

use super::{Scanner, CARD, EMAIL, EU_VAT, IBAN, IPV4, IPV6, PHONE, UK_NINO, US_SSN};
use crate::policy::PiiConfig;

/// (kind, floor for precision, floor for recall, positives, negatives). A positive is the
/// value; it is put in a sentence. A negative is a whole sentence in which nothing of the kind
/// may be found.
type Detector = (
    usize,
    f64,
    f64,
    &'static [&'static str],
    &'static [&'static str],
);

const CORPUS: &[Detector] = &[
    (
        EMAIL,
        1.0,
        0.8,
        &[
            "jane.doe@example.com",
            "j.smith+news@mail.example.co.uk",
            "ADMIN@EXAMPLE.ORG",
            "first_last@sub.domain.io",
            "o'hara@example.ie", // the apostrophe is not taken: found as hara@… (a miss)
            "x@example.de",
        ],
        &[
            "use the @decorator on the class",
            "ssh to user@localhost now",
            "write to name@domain please",
            "the version is foo@1.2.3",
            "reach a@b.c if you can",
            "email me at john dot doe at example dot com",
            "an npm scope like @types/node",
            "twitter handle @jane_doe",
        ],
    ),
    (
        PHONE,
        1.0,
        0.85,
        &[
            "+49 30 12345678",
            "+44 20 7946 0958",
            "+33 6 12 34 56 78",
            "+1 (415) 555-2671",
            "+4915123456789",
            "030 12345678",
            "0151 23456789",
            "(030) 1234567",
            "030/1234567",
            "06 12 34 56 78",
            "01.23.45.67.89",
            "020 7946 0958",
            "07700 900123",
            "(212) 555-0147",
            "415-555-2671",
            "202.555.0183",
            "1-800-555-0199",
            "0612345678", // national digits without separators: not detected (a known limit)
            "0049 30 12345678", // 00 international prefix: not detected (a known limit)
        ],
        &[
            "released on 2024-01-15 at 10:30",
            "the meeting is on 15.01.2024",
            "order ORD-2024-000123 shipped",
            "invoice 12345678 is due",
            "ZIP code 94103",
            "Python 3.11.7 and Node 20.11.1",
            "the total was 1,234,567.89 EUR",
            "ISBN 978-3-16-148410-0",
            "card 4111 1111 1111 1111 on file",
            "uuid 123e4567-e89b-12d3-a456-426614174000",
            "ticket #2024-555-1234-99",
            "build 20240115.1030.42",
            "call +0 1234 to win",
            "the product code 0815-4711",
        ],
    ),
    (
        IBAN,
        1.0,
        1.0,
        &[
            "DE89370400440532013000",
            "DE89 3704 0044 0532 0130 00",
            "GB82WEST12345698765432",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
            "ES9121000418450200051332",
            "IT60X0542811101000000123456",
            "BE68539007547034",
            "CH9300762011623852957",
            "AT611904300234573201",
            "PL61109010140000071219812874",
        ],
        &[
            "the account DE89370400440532013001 is wrong",
            "GB82WEST12345698765431 has a bad check",
            "reference DE12345678901234567890",
            "serial AB12CDEF3456789012",
            "the SKU XY99 9999 9999 9999 9",
            "hash DEADBEEF0123456789ABCDEF",
        ],
    ),
    (
        CARD,
        1.0,
        1.0,
        &[
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5555555555554444",
            "5105105105105100",
            "378282246310005",
            "3782 822463 10005",
            "6011111111111117",
            "3530111333300000",
            "2223003122003222",
            "4012888888881881",
        ],
        &[
            "card 4111111111111112 fails its check",
            "order 1234567812345678 shipped",
            "timestamp 1700000000000 in ms",
            "account 9999999999999995",
            "tracking 1Z999AA10123456784",
            "the value 0000000000000000",
            "id 123e4567-e89b-12d3-a456-426614174000",
            "phone +4915123456789",
        ],
    ),
    (
        IPV4,
        1.0,
        1.0,
        &[
            "192.168.1.10",
            "8.8.8.8",
            "10.0.0.1",
            "203.0.113.45",
            "255.255.255.255",
        ],
        &[
            "version 1.2.3 is out",
            "256.1.1.1 is no address",
            "Windows 10.0.19041.1",
            "tag v1.2.3.4 released",
            "the OID 1.2.3.4.5 names it",
            "192.168.001.1 has a leading zero",
            "pi is 3.14159",
            "release 2024.01.15",
        ],
    ),
    (
        IPV6,
        1.0,
        1.0,
        &[
            "2001:db8::1",
            "fe80::1ff:fe23:4567:890a",
            "::1",
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            "2001:db8:0:0:0:0:2:1",
        ],
        &[
            "the time is 12:30:45",
            "use std::vector in C++",
            "MAC 00:1A:2B:3C:4D:5E",
            "ratio 1:2:3 by weight",
            "call Foo::bar() here",
            "a list like a :: b",
            "note: the key:value pair",
        ],
    ),
    (
        US_SSN,
        1.0,
        1.0,
        &["123-45-6789", "078-05-1120", "219-09-9999", "536-90-4399"],
        &[
            "000-12-3456 is not issued",
            "666-12-3456 is not issued",
            "900-12-3456 is not issued",
            "123-00-4567 is not issued",
            "123-45-0000 is not issued",
            "call 555-123-4567",
            "part 123-45-67890",
            "date 2024-01-15",
        ],
    ),
    (
        UK_NINO,
        1.0,
        1.0,
        &["AB123456C", "AB 12 34 56 C", "JG103759A", "ZR987654D"],
        &[
            "BG123456A is never issued",
            "AB123456E has a bad suffix",
            "DA123456A has a bad first letter",
            "AB12345C is too short",
            "ab123456c in lower case",
            "the part AB1234567C",
        ],
    ),
    (
        EU_VAT,
        1.0,
        1.0,
        &[
            "DE136695976",
            "DE 811528375",
            "IT12345678903",
            "BE0403600568",
            "FR83404833048",
            "DK13131422",
            "PL5260250995",
            "ATU12345678",
            "NL123456789B01",
            "ESB12345678",
            "SE556677889901",
        ],
        &[
            "DE123456789 fails its check",
            "DE12345678 is too short",
            "XX123456789 has no such prefix",
            "IT12345678901 fails its check",
            "NL123456789 lacks the B01",
            "SE123456789012 does not end in 01",
            "BE0403600567 fails its check",
            "FR12404833048 fails its check",
        ],
    ),
];

fn kind_name(kind: usize) -> &'static str {
    crate::policy::pii::BUILTIN_KINDS[kind]
}

#[test]
fn precision_and_recall_per_detector() {
    let config = PiiConfig::default();
    let scanner = Scanner::new(&config);
    let mut failures = Vec::new();
    println!("detector   precision  recall  (tp fp fn)");
    for &(kind, p_floor, r_floor, positives, negatives) in CORPUS {
        let (mut tp, mut fp, mut fneg) = (0u32, 0u32, 0u32);
        for value in positives {
            let text = format!("Please use {value} for this.");
            let start = "Please use ".len();
            let found = scanner.scan(&text);
            let exact = found
                .iter()
                .any(|f| f.kind == kind && f.start == start && f.end == start + value.len());
            if exact {
                tp += 1;
            } else {
                fneg += 1;
                println!("  {}: missed {value:?} (found {found:?})", kind_name(kind));
            }
            // Anything else of this kind in the sentence is a false positive.
            fp += found
                .iter()
                .filter(|f| f.kind == kind && !(f.start == start && f.end == start + value.len()))
                .filter(|_| exact)
                .count() as u32;
        }
        for sentence in negatives {
            let n = scanner
                .scan(sentence)
                .iter()
                .filter(|f| f.kind == kind)
                .count() as u32;
            if n > 0 {
                println!("  {}: false positive in {sentence:?}", kind_name(kind));
            }
            fp += n;
        }
        let precision = if tp + fp == 0 {
            1.0
        } else {
            f64::from(tp) / f64::from(tp + fp)
        };
        let recall = f64::from(tp) / f64::from(tp + fneg);
        println!(
            "{:<10} {precision:>9.3} {recall:>7.3}  ({tp} {fp} {fneg})",
            kind_name(kind)
        );
        if precision < p_floor || recall < r_floor {
            failures.push(format!(
                "{}: precision {precision:.3} (floor {p_floor}), recall {recall:.3} (floor {r_floor})",
                kind_name(kind)
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
