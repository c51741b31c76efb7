//! `limits` on tenants and rules, `[settings.limits]` and `[settings.health]`: what they read
//! as, and what `meridian check` says about them.

use meridian_policy::{load, LimitPer, Metric, Window};

const KEY: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

fn policy(tail: &str) -> String {
    format!(
        "version = 1\n{tail}\n[[providers]]\nid = \"p\"\nbase_url = \"https://p.example/v1\"\nlocation = \"DE\"\nmodels = {{ m = \"m\" }}\n"
    )
}

#[test]
fn limits_read_as_windows_in_their_units() {
    let p = load(
        &policy(&format!(
            "[[tenants]]\nid = \"acme\"\nkeys = [\"{KEY}\"]\nlimits = {{ per = \"key\", requests_per_minute = 60, tokens_per_day = 1000000, usd_per_month = 12.5, concurrent = 4 }}\n"
        )),
        "t",
    )
    .unwrap();
    let l = p.tenants[0].limits.as_ref().unwrap();
    assert_eq!(l.per, LimitPer::Key);
    assert_eq!(l.concurrent, Some(4));
    let w: Vec<(Metric, Window, u64)> = l
        .windows
        .iter()
        .map(|w| (w.metric, w.window, w.max))
        .collect();
    assert_eq!(
        w,
        [
            (Metric::Requests, Window::Minute, 60),
            (Metric::Tokens, Window::Day, 1_000_000),
            (Metric::Usd, Window::Month, 12_500_000),
        ]
    );
}

#[test]
fn a_browser_key_without_a_limit_is_warned_about() {
    let unlimited = load(
        &policy(&format!(
            "[[tenants]]\nid = \"web\"\nkeys = [\"{KEY}\"]\norigins = [\"https://app.example\"]\n"
        )),
        "t",
    )
    .unwrap();
    let w: Vec<&str> = unlimited
        .warnings
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    assert!(
        w.iter()
            .any(|m| m.contains("tenant `web` has a browser key") && m.contains("no limit")),
        "{w:?}"
    );
    for limited in [
        format!("[[tenants]]\nid = \"web\"\nkeys = [\"{KEY}\"]\norigins = [\"https://app.example\"]\nlimits = {{ requests_per_minute = 10 }}\n"),
        format!("[[tenants]]\nid = \"web\"\nkeys = [\"{KEY}\"]\norigins = [\"https://app.example\"]\n[[rules]]\nid = \"b\"\nwhen = {{ browser = true }}\nlimits = {{ usd_per_day = 1.0 }}\n"),
    ] {
        let p = load(&policy(&limited), "t").unwrap();
        assert!(
            p.warnings.iter().all(|d| !d.message.contains("browser key")),
            "{:?}",
            p.warnings
        );
    }
}

#[test]
fn paid_anonymous_access_without_a_limit_is_warned_about() {
    let p = load(&policy("[settings]\nallow_anonymous = \"paid\"\n"), "t").unwrap();
    assert!(p
        .warnings
        .iter()
        .any(|d| d.message.contains("no rule limits them")));
    let p = load(
        &policy("[settings]\nallow_anonymous = \"paid\"\n[[rules]]\nid = \"anon\"\nwhen = { anonymous = true }\nlimits = { requests_per_minute = 5 }\n"),
        "t",
    )
    .unwrap();
    assert!(p
        .warnings
        .iter()
        .all(|d| !d.message.contains("no rule limits them")));
}

#[test]
fn mistakes_are_explained() {
    let cases = [
        (
            format!("[[tenants]]\nid = \"a\"\nkeys = [\"{KEY}\"]\nlimits = {{ request_per_minute = 5 }}\n"),
            "unknown key `request_per_minute`",
        ),
        (
            format!("[[tenants]]\nid = \"a\"\nkeys = [\"{KEY}\"]\nlimits = {{ concurrent = 0 }}\n"),
            "`concurrent = 0` would refuse every request",
        ),
        (
            format!("[[tenants]]\nid = \"a\"\nkeys = [\"{KEY}\"]\nlimits = {{ per = \"ip\" }}\n"),
            "unknown `per` value `ip`",
        ),
        (
            "[settings.limits]\nfail_open = [\"nobody\"]\n".to_string(),
            "`fail_open` names `nobody`, which is not a tenant",
        ),
        (
            "[settings.health]\nfailures = 0\n".to_string(),
            "`failures` must be positive",
        ),
        (
            format!("[[tenants]]\nid = \"a\"\nkeys = [\"{KEY}\"]\nlimits = {{ usd_per_day = -1 }}\n"),
            "must be a non-negative number",
        ),
    ];
    for (text, want) in cases {
        let e = load(&policy(&text), "t").expect_err(&text);
        let all = e.to_string();
        assert!(all.contains(want), "{want:?} not in {all}");
    }
}

#[test]
fn health_settings_have_defaults() {
    let p = load(&policy("[settings.health]\nfailures = 3\n"), "t").unwrap();
    let h = p.settings.health.unwrap();
    assert_eq!((h.failures, h.window_s, h.cooldown_s), (3, 30, 30));
    assert!(load(&policy(""), "t").unwrap().settings.health.is_none());
}
