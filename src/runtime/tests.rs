//! The runtime helpers against independent oracles.

use super::*;

/// The in-place split agrees with the `url` crate (the oracle: the split this replaced) on every
/// URL, including the ones it hands over to the parser.
mod target {
    use super::super::Target;
    use proptest::prelude::*;

    fn oracle(raw: &str) -> Option<(bool, String, String)> {
        let url = url::Url::parse(raw).ok()?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let host = url.host_str()?.to_string();
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        Some((https, authority, path))
    }

    fn check(raw: &str) {
        let got = Target::parse(raw).map(|t| (t.https, t.authority, t.path_and_query));
        assert_eq!(got, oracle(raw), "{raw}");
    }

    #[test]
    fn known_forms() {
        for raw in [
            "http://127.0.0.1:11434/v1/chat/completions",
            "https://api.openai.com/v1/chat/completions",
            "https://api.openai.com:443/v1/x",
            "http://example.com:80/",
            "http://Example.COM/v1",
            "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            "http://host",
            "http://host?x=1",
            "http://host/a/../b",
            "http://host/a/./b",
            "http://host/a b",
            "http://host/%7euser",
            "http://user:pw@host/x",
            "http://[::1]:8080/v1",
            "http://0x7f.1/",
            "http://127.1/",
            "http://host:0080/",
            "http://host/x#frag",
            "ftp://host/x",
            "not a url",
        ] {
            check(raw);
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_url_crate(
            scheme in prop::sample::select(vec!["http://", "https://", "HTTP://", "ftp://"]),
            host in "[a-zA-Z0-9.\\-]{1,12}|[0-9]{1,3}(\\.[0-9]{1,4}){0,3}|\\[::1\\]",
            port in prop::option::of("[0-9]{1,6}"),
            path in "(/[a-zA-Z0-9._~%:@!$&'()*+,;= -]{0,8}){0,4}",
            query in prop::option::of("[a-zA-Z0-9=&%/?:-]{0,10}"),
            frag in prop::option::of("[a-z]{0,4}"),
        ) {
            let mut raw = format!("{scheme}{host}");
            if let Some(p) = port {
                raw.push(':');
                raw.push_str(&p);
            }
            raw.push_str(&path);
            if let Some(q) = query {
                raw.push('?');
                raw.push_str(&q);
            }
            if let Some(f) = frag {
                raw.push('#');
                raw.push_str(&f);
            }
            check(&raw);
        }
    }
}

#[test]
fn header_pairs_lower_case_names_keep_repeats_and_replace_bad_utf8() {
    let got = header_pairs(vec![
        ("X-Request-Id".into(), b"abc".to_vec()),
        ("accept".into(), b"a".to_vec()),
        ("accept".into(), b"b".to_vec()),
        ("x-bad".into(), vec![b'o', 0xff, b'k']),
    ]);
    let want: Vec<(String, String)> = vec![
        ("x-request-id".into(), "abc".into()),
        ("accept".into(), "a".into()),
        ("accept".into(), "b".into()),
        ("x-bad".into(), "o\u{fffd}k".into()),
    ];
    assert_eq!(got, want);
    let back = field_list(want);
    assert_eq!(
        back[3],
        ("x-bad".to_string(), "o\u{fffd}k".as_bytes().to_vec())
    );
}
