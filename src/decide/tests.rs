//! The decision's reasons, refusals and request lists.
use super::*;
use crate::facts::{self, Context, Endpoint};
use serde_json::{json, Map, Value};

const POLICY: &str = r#"
version = 1
name = "reasons"
revision = "1"
[settings]
trusted_country_headers = ["cf-ipcountry"]
allow_anonymous = true
[[providers]]
id = "us"
base_url = "https://us.example/v1"
location = "US"
retention_days = 30
trains_on_inputs = true
models = { "m" = { id = "m-us", input_price = 5.0, output_price = 1.0 } }
[[providers]]
id = "eu"
base_url = "https://eu.example/v1"
location = "DE"
retention_days = 0
zdr = true
trains_on_inputs = false
models = { "m" = { id = "m-eu", input_price = 1.0 } }
[[providers]]
id = "local"
base_url = "http://127.0.0.1:11434/v1"
location = "DE"
self_hosted = true
retention_days = 0
zdr = true
trains_on_inputs = false
models = { "m" = { id = "m-local", input_price = 0.0, output_price = 0.0 } }
[[rules]]
id = "r"
require = { jurisdiction = ["eu"], providers = ["eu", "local"], deny = ["local"], max_price = { input = 2.0, output = 0.5 } }
"#;

fn decision_for<'p>(p: &'p Policy, headers: &[(&str, &str)], body: Value) -> Decision<'p> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut body: Map<String, Value> = match body {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let cx = Context {
        location: crate::location::locate(&p.settings.client, &headers, None, None),
        request_id: "t".into(),
        endpoint: Endpoint::Chat,
        tenant: None,
        edge_region: None,
        headers: &headers,
        pii: p.pii.used.then_some(&p.pii),
        unknown_fields: p.settings.unknown_fields,
        injection: false,
        prefix_bounds: Vec::new(),
        rule_headers: true,
    };
    let f = facts::from_request(cx, &mut body).expect("facts");
    decide(p, &f)
}

/// Every reason, rendered: the texts and JSON that explain output and refusals carry.
#[test]
fn reasons_render_in_constraint_then_test_order() {
    let p = crate::policy::load(POLICY, "reasons.toml").expect("valid");
    let d = decision_for(
        &p,
        &[
            ("cf-ipcountry", "FR"),
            (
                facts::PRIVACY_HEADER,
                "local-only, zdr, no-training, no-data-collection",
            ),
        ],
        json!({"model": "m", "provider": {"ignore": ["eu"]}}),
    );
    let shown: Vec<(String, Vec<String>)> = d
        .excluded
        .iter()
        .map(|e| {
            let rs = e.reasons.iter().map(Reason::to_string).collect();
            (e.provider.to_string(), rs)
        })
        .collect();
    let expect = |p: &str, rs: &[&str]| (p.to_string(), rs.iter().map(|r| r.to_string()).collect());
    assert_eq!(
        shown,
        vec![
            expect(
                "us",
                &[
                    "rule `r` processes data in `US`, outside the allowed `eu`",
                    "rule `r` is not in the allowed providers",
                    "rule `r` input price 5 USD/M tokens is above the maximum 2",
                    "rule `r` output price 1 USD/M tokens is above the maximum 0.5",
                    "request is not self-hosted (local-only)",
                    "request does not offer zero data retention",
                    "request may train on inputs",
                    "request collects data (retention 30 days, trains on inputs: true)",
                ]
            ),
            expect(
                "eu",
                &[
                    "rule `r` has no output price, so the maximum price cannot be proven",
                    "request is not self-hosted (local-only)",
                    "request is denied",
                ]
            ),
            expect("local", &["rule `r` is denied"]),
        ]
    );
    let v = serde_json::to_value(&d.excluded[2]).expect("json");
    assert_eq!(
        v,
        json!({"provider": "local", "reasons": [
            {"by": "rule `r`", "kind": "scope", "message": "is denied"}
        ]})
    );
    let r = d.refusal.expect("nothing left");
    assert_eq!((r.status, r.code), (403, "no_allowed_provider"));
    assert!(
        r.message.contains("`local`: rule `r` is denied")
            && r.message.contains("`eu`: rule `r` has no output price"),
        "{}",
        r.message
    );
}

/// 451 when some provider was excluded for residency alone, else 403; the request's own
/// `only`/`ignore` lists (ids, not catalog positions) apply.
#[test]
fn residency_refusal_and_request_lists() {
    let text = POLICY.replace(
        r#"require = { jurisdiction = ["eu"], providers = ["eu", "local"], deny = ["local"], max_price = { input = 2.0, output = 0.5 } }"#,
        "when = { client_jurisdiction = [\"eu\"] }\nrequire = { jurisdiction = [\"eu\"] }",
    );
    let p = crate::policy::load(&text, "residency.toml").expect("valid");
    let fr = [("cf-ipcountry", "FR")];
    let refusal = |prefs: Value| {
        let d = decision_for(&p, &fr, json!({"model": "m", "provider": prefs}));
        d.refusal.map(|r| (r.status, r.code))
    };
    let d = decision_for(&p, &fr, json!({"model": "m"}));
    assert_eq!(d.client_country.as_str(), "FR");
    assert_eq!(d.client_jurisdictions, ["eea", "eu"]);
    assert_eq!(d.matched_rules.len(), 1);
    let ids: Vec<&str> = d.candidates.iter().map(|c| c.provider.as_str()).collect();
    assert_eq!(ids, ["eu", "local"]);
    assert_eq!(
        refusal(json!({"only": ["us"]})),
        Some((451, "residency_violation"))
    );
    assert_eq!(
        refusal(json!({"ignore": ["eu", "local"]})),
        Some((451, "residency_violation"))
    );
    assert_eq!(
        refusal(json!({"only": ["eu"], "ignore": ["eu"]})),
        Some((403, "no_allowed_provider"))
    );
    let d = decision_for(
        &p,
        &fr,
        json!({"model": "m", "provider": {"only": ["us", "local"]}}),
    );
    let ids: Vec<&str> = d.candidates.iter().map(|c| c.provider.as_str()).collect();
    assert_eq!(ids, ["local"]);
    // A US client matches no rule: everything serves, cheapest first is not asked for.
    let d = decision_for(&p, &[("cf-ipcountry", "US")], json!({"model": "m"}));
    assert!(d.matched_rules.is_empty() && d.candidates.len() == 3);
}

/// Data handling a provider's entry leaves unstated is unknown, and an unknown never satisfies
/// a privacy flag: "may train" unless it says it does not, "collects" unless it says it keeps
/// nothing (or offers zero retention).
#[test]
fn unstated_data_handling_never_satisfies_a_privacy_flag() {
    let text = "version = 1\n[settings]\nallow_anonymous = true\n\
        [[providers]]\nid = \"silent\"\nbase_url = \"https://s.example/v1\"\nlocation = \"DE\"\nmodels = { m = \"m\" }\n\
        [[providers]]\nid = \"stated\"\nbase_url = \"https://t.example/v1\"\nlocation = \"DE\"\ntrains_on_inputs = false\nretention_days = 0\nmodels = { m = \"m\" }\n";
    let p = crate::policy::load(text, "t").unwrap();
    for flag in ["no-training", "no-data-collection"] {
        let d = decision_for(&p, &[("x-meridian-privacy", flag)], json!({"model": "m"}));
        let served: Vec<&str> = d.candidates.iter().map(|c| c.provider.as_str()).collect();
        assert_eq!(served, ["stated"], "{flag}");
        let why: Vec<String> = d.excluded[0]
            .reasons
            .iter()
            .map(Reason::to_string)
            .collect();
        assert!(
            why.iter()
                .any(|r| r.contains("not stated") || r.contains("does not say")),
            "{why:?}"
        );
    }
    // Without a flag both serve.
    let d = decision_for(&p, &[], json!({"model": "m"}));
    assert_eq!(d.candidates.len(), 2);
}

/// Where a provider keeps data is a fact apart from where it processes it: a rule's
/// `require.storage` excludes a provider that processes inside but keeps data outside, and the
/// candidate and the explanation name both places.
#[test]
fn storage_is_constrained_apart_from_processing() {
    let text = POLICY
        .replace(
            "location = \"DE\"\nretention_days = 0\nzdr = true\ntrains_on_inputs = false\nmodels = { \"m\" = { id = \"m-eu\"",
            "location = \"DE\"\nstorage = \"US\"\ntransfer_safeguard = \"scc\"\nretention_days = 0\nzdr = true\ntrains_on_inputs = false\nmodels = { \"m\" = { id = \"m-eu\"",
        )
        .replace(
            r#"require = { jurisdiction = ["eu"], providers = ["eu", "local"], deny = ["local"], max_price = { input = 2.0, output = 0.5 } }"#,
            "when = { client_jurisdiction = [\"eu\"] }\nrequire = { jurisdiction = [\"eu\"] }",
        );
    assert!(text.contains("storage = \"US\""));
    let p = crate::policy::load(&text, "storage.toml").expect("valid");
    let fr = [("cf-ipcountry", "FR")];
    // Processing alone: `eu` (processes in DE, keeps in US) still serves.
    let d = decision_for(&p, &fr, json!({"model": "m"}));
    let eu = d
        .candidates
        .iter()
        .find(|c| c.provider.as_str() == "eu")
        .expect("eu serves");
    assert_eq!((eu.location, eu.storage), ("DE", "US"));
    let local = d
        .candidates
        .iter()
        .find(|c| c.provider.as_str() == "local")
        .unwrap();
    assert_eq!(local.storage, "DE", "no storage stated: where it processes");
    assert!(crate::api::explain_text(&d)
        .contains("eu as `m-eu` (processes data in DE, keeps it in US)"));
    // Storage constrained too: `eu` is excluded, with why.
    let p = crate::policy::load(
        &text.replace(
            "require = { jurisdiction = [\"eu\"] }",
            "require = { jurisdiction = [\"eu\"], storage = [\"eu\"] }",
        ),
        "storage.toml",
    )
    .expect("valid");
    let d = decision_for(&p, &fr, json!({"model": "m"}));
    let ids: Vec<&str> = d.candidates.iter().map(|c| c.provider.as_str()).collect();
    assert_eq!(ids, ["local"]);
    let why = crate::api::explain_text(&d);
    assert!(
        why.contains("excluded eu:")
            && why.contains("keeps data in `US`, outside the allowed storage `eu`"),
        "{why}"
    );
}
