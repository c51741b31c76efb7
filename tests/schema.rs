//! The JSON Schema (policies/schema.json, `meridian schema`) agrees with the validator: the same
//! keys in every section, every shipped policy conforms, and misspelt keys are rejected.

use meridian::policy::{self, keys};
use serde_json::Value;

fn schema() -> Value {
    serde_json::from_str(policy::SCHEMA).expect("schema.json is JSON")
}

fn props(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no properties in {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

fn sorted(k: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = k.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn every_section_has_exactly_the_validators_keys() {
    let s = schema();
    let d = &s["$defs"];
    let model_table = &d["provider"]["properties"]["models"]["additionalProperties"]["oneOf"][1];
    let limit_keys = keys::limit_keys();
    let limit_keys: Vec<&str> = limit_keys.iter().map(String::as_str).collect();
    let pool = &d["provider"]["properties"]["pool"];
    let sections: [(&str, &Value, &[&str]); 24] = [
        ("top level", &s, keys::TOP_KEYS),
        ("pii", &s["properties"]["pii"], keys::PII_KEYS),
        ("settings", &d["settings"], keys::SETTINGS_KEYS),
        ("provider", &d["provider"], keys::PROVIDER_KEYS),
        ("model", model_table, keys::MODEL_KEYS),
        ("pool", pool, keys::POOL_KEYS),
        (
            "replica",
            &pool["properties"]["replicas"]["items"],
            keys::REPLICA_KEYS,
        ),
        ("tenant", &d["tenant"], keys::TENANT_KEYS),
        ("rule", &d["rule"], keys::RULE_KEYS),
        ("when", &d["when"], keys::WHEN_KEYS),
        ("require", &d["require"], keys::REQUIRE_KEYS),
        (
            "max_price",
            &d["require"]["properties"]["max_price"],
            keys::PRICE_KEYS,
        ),
        ("prefer", &d["prefer"], keys::PREFER_KEYS),
        ("plan", &d["plan"], keys::PLAN_KEYS),
        ("test", &d["test"], keys::TEST_KEYS),
        ("limits", &d["limits"], &limit_keys),
        ("route", &d["route"], keys::ROUTE_KEYS),
        ("guard", &d["guard"], keys::GUARD_KEYS),
        ("rules.guards", &d["guardUse"], keys::GUARD_USE_KEYS),
        (
            "settings.limits",
            &d["settings"]["properties"]["limits"],
            keys::LIMIT_SETTINGS_KEYS,
        ),
        (
            "settings.health",
            &d["settings"]["properties"]["health"],
            keys::HEALTH_KEYS,
        ),
        (
            "settings.receipts",
            &d["settings"]["properties"]["receipts"],
            keys::RECEIPTS_KEYS,
        ),
        (
            "settings.record",
            &d["settings"]["properties"]["record"],
            keys::RECORD_KEYS,
        ),
        ("endpoint", &Value::Null, keys::ENDPOINTS),
    ];
    for (name, v, k) in sections {
        if name == "endpoint" {
            let e = &d["when"]["properties"]["endpoint"]["oneOf"][0]["enum"];
            let mut got: Vec<String> = e
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            got.sort();
            assert_eq!(got, sorted(k), "{name}");
            continue;
        }
        assert_eq!(
            props(v),
            sorted(k),
            "{name}: schema keys differ from the validator's"
        );
        assert_eq!(
            v["additionalProperties"],
            Value::Bool(false),
            "{name} must reject unknown keys"
        );
    }
    let flags = &d["privacyFlag"]["enum"];
    let got: Vec<&str> = flags
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(got, policy::PRIVACY_FLAG_NAMES);
}

fn as_json(toml_text: &str) -> Value {
    let t: toml::Value = toml::from_str(toml_text).expect("TOML");
    serde_json::to_value(t).expect("as JSON")
}

#[test]
fn shipped_policies_conform_and_typos_do_not() {
    let validator = jsonschema::validator_for(&schema()).expect("a valid JSON Schema");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("policies/default.toml")];
    for e in std::fs::read_dir(root.join("policies/examples")).unwrap() {
        files.push(e.unwrap().path());
    }
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|x| x == "toml"))
    {
        let doc = as_json(&std::fs::read_to_string(f).unwrap());
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{e} at {}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", f.display());
    }
    for bad in [
        "version = 1\nsetings = {}\n",
        "version = 1\n[[providers]]\nid = \"a\"\nbase_url = \"http://x\"\nlocation = \"DE\"\nmodels = {}\nzrd = true\n",
        "version = 1\n[[rules]]\nid = \"r\"\nwhen = { client_contry = \"DE\" }\n",
        "version = 1\n[[rules]]\nid = \"r\"\nprefer = { sort = \"cheapest\" }\n",
        "version = 2\n",
    ] {
        assert!(!validator.is_valid(&as_json(bad)), "the schema accepted:\n{bad}");
        assert!(policy::load(bad, "x").is_err(), "the validator accepted:\n{bad}");
    }
}
