//! Evidence in the policy: recipients' `storage` and `transfer_safeguard`, tenants' `purposes`,
//! rules' `require.storage`, `[settings.receipts]` and `[settings.record]`; what they read as,
//! that the compiled form keeps them, and what `meridian check` says about them.

use meridian_policy::compiled::{compile, load_any};
use meridian_policy::{load, Recipient, Safeguard};

const KEY: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
/// A public key (32 bytes of zeros is no point on the curve, but only the length is checked).
const PUBLIC: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

fn policy(head: &str, tail: &str) -> String {
    format!(
        "version = 1\n{head}\n\
         [[providers]]\nid = \"eu\"\nbase_url = \"https://eu.example/v1\"\nlocation = \"DE\"\nmodels = {{ m = \"m\" }}\n\
         [[providers]]\nid = \"us\"\nbase_url = \"https://us.example/v1\"\nlocation = \"US\"\nstorage = \"US\"\ntransfer_safeguard = \"dpf\"\nmodels = {{ m = \"m\" }}\n\
         [[providers]]\nid = \"split\"\nbase_url = \"https://split.example/v1\"\nlocation = \"FR\"\nstorage = \"US\"\ntransfer_safeguard = \"scc\"\nmodels = {{ m = \"m\" }}\n\
         {tail}"
    )
}

const FULL: &str = "[settings.receipts]\nkey_secret = \"receipt_key\"\nretired_keys = [\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"]\nsequence = \"store\"\nheader = false\n\
    [settings.record]\ncontroller = \"Example GmbH\"\nhome = [\"eea\", \"CH\"]\n";

fn tail() -> String {
    format!(
        "[[tenants]]\nid = \"acme\"\nkeys = [\"{KEY}\"]\npurposes = [\"customer support\", \"drafting\"]\n\
         [[rules]]\nid = \"kept-in-eu\"\nrequire = {{ storage = [\"eu\"] }}\n"
    )
}

#[test]
fn evidence_fields_read_as_written_and_the_compiled_form_keeps_them() {
    let p = load(&policy(FULL, &tail()), "t").unwrap_or_else(|e| panic!("{e}"));
    let split = &p.providers[2];
    assert_eq!(split.location, "FR");
    assert_eq!(split.stored_in(), "US");
    assert_eq!(split.safeguard, Some(Safeguard::Scc));
    assert_eq!(
        p.providers[0].stored_in(),
        "DE",
        "no storage: where it processes"
    );
    let eu = p.jurisdictions.iter().find(|(n, _)| n == "eu").unwrap().1;
    assert!(!split.stores_within(&eu) && split.within(&eu));
    assert_eq!(
        p.tenants[0].purposes.as_ref(),
        ["customer support", "drafting"]
    );
    let storage = p.rules[0].require.storage.as_ref().unwrap();
    assert_eq!(storage.names.as_ref(), ["eu"]);
    let r = p.settings.receipts.as_ref().unwrap();
    assert_eq!(r.key_secret, "receipt_key");
    assert_eq!(r.retired_keys.as_ref(), [PUBLIC]);
    assert!(r.sequence && !r.header);
    assert_eq!(
        p.settings.record.controller.as_deref(),
        Some("Example GmbH")
    );
    assert!(p
        .settings
        .record
        .home
        .as_ref()
        .unwrap()
        .countries
        .contains(meridian_policy::Country::parse("CH").unwrap()));

    let back = load_any(&compile(&p), "<variable>").unwrap();
    assert_eq!(back.providers[2].storage, split.storage);
    assert_eq!(back.providers[2].safeguard, split.safeguard);
    assert_eq!(back.providers[1].safeguard, Some(Safeguard::Dpf));
    assert_eq!(back.tenants[0].purposes, p.tenants[0].purposes);
    assert_eq!(back.rules[0].require.storage, p.rules[0].require.storage);
    assert_eq!(back.settings.receipts, p.settings.receipts);
    assert_eq!(back.settings.record, p.settings.record);
    // A policy without them compiles to the form it had before they existed.
    let plain = load(&policy("", ""), "t").unwrap();
    let text = compile(&plain);
    let back = load_any(&text, "<variable>").unwrap();
    assert!(back.settings.receipts.is_none() && back.providers[0].storage.is_none());
}

#[test]
fn a_third_country_recipient_without_a_safeguard_is_warned_about() {
    let warned = |head: &str, tail: &str| -> Vec<String> {
        load(&policy(head, tail), "t")
            .unwrap_or_else(|e| panic!("{e}"))
            .warnings
            .iter()
            .map(|w| w.to_string())
            .filter(|w| w.contains("transfer_safeguard"))
            .collect()
    };
    // Both third-country providers state one; the EU one needs none.
    assert!(warned("", "").is_empty(), "{:?}", warned("", ""));
    let us = "[[providers]]\nid = \"bare\"\nbase_url = \"https://bare.example/v1\"\nlocation = \"US\"\nmodels = { m = \"m\" }\n";
    let w = warned("", us);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("provider `bare`") && w[0].contains("outside `eea`"),
        "{w:?}"
    );
    // Kept abroad though processed at home is a transfer too.
    let kept = "[[providers]]\nid = \"kept\"\nbase_url = \"https://kept.example/v1\"\nlocation = \"DE\"\nstorage = \"US\"\nmodels = { m = \"m\" }\n";
    assert_eq!(warned("", kept).len(), 1);
    // An external guard is a recipient like a provider.
    let guard = "[[guards]]\nid = \"mod\"\nkind = \"moderation\"\nwire = \"openai_moderation\"\nurl = \"https://api.openai.com/v1\"\nlocation = \"US\"\nretention_days = 0\ntrains_on_inputs = false\n";
    let w = warned("", guard);
    assert!(w.len() == 1 && w[0].contains("guard `mod`"), "{w:?}");
    // Another home: the German provider is now the third-country one.
    let w = warned("[settings.record]\nhome = [\"US\"]\n", "");
    assert!(w.len() == 1 && w[0].contains("provider `eu`"), "{w:?}");
}

#[test]
fn evidence_mistakes_are_explained() {
    let cases = [
        ("[settings.receipts]\nheader = true\n", "", "`[settings.receipts]` needs `key_secret`"),
        ("[settings.receipts]\nkey_secret = \"Receipt-Key\"\n", "", "not a valid Spin variable name"),
        ("[settings.receipts]\nkey_secret = \"k\"\nretired_keys = [\"c2hvcnQ\"]\n", "", "is not an Ed25519 public key"),
        ("[settings.receipts]\nkey_secret = \"k\"\nsequence = \"redis\"\n", "", "unknown `sequence` value `redis`"),
        ("[settings.receipts]\nkey_secret = \"k\"\nsigner = \"x\"\n", "", "unknown key `signer`"),
        ("[settings.record]\nhome = [\"Atlantis\"]\n", "", "unknown jurisdiction `Atlantis`"),
        ("", "[[providers]]\nid = \"x\"\nbase_url = \"https://x.example/v1\"\nlocation = \"US\"\ntransfer_safeguard = \"contract\"\nmodels = { m = \"m\" }\n", "unknown `transfer_safeguard` `contract`"),
        ("", "[[providers]]\nid = \"x\"\nbase_url = \"https://x.example/v1\"\nlocation = \"US\"\nstorage = \"Mars\"\nmodels = { m = \"m\" }\n", "unknown jurisdiction `Mars`"),
        ("", "[[rules]]\nid = \"r\"\nrequire = { storage = [\"Moon\"] }\n", "unknown jurisdiction `Moon`"),
    ];
    for (head, tail, want) in cases {
        let text = policy(head, tail);
        let e = load(&text, "t").expect_err(&text);
        let all = e.to_string();
        assert!(all.contains(want), "{want:?} not in {all}");
    }
}

#[test]
fn a_fail_closed_guard_its_own_rule_may_not_send_the_text_to_is_warned_about() {
    let guard = |location: &str, storage: &str| {
        format!("[[guards]]\nid = \"g\"\nkind = \"moderation\"\nwire = \"openai_moderation\"\nurl = \"https://g.example/v1\"\nlocation = \"{location}\"\n{storage}transfer_safeguard = \"scc\"\nretention_days = 0\ntrains_on_inputs = false\n")
    };
    let rule = |require: &str, fail: &str| {
        format!("[[rules]]\nid = \"r\"\nrequire = {{ {require} }}\n[[rules.guards]]\nguard = \"g\"\n{fail}")
    };
    let warned = |tail: String| -> Vec<String> {
        load(&policy("", &tail), "t")
            .unwrap_or_else(|e| panic!("{e}"))
            .warnings
            .iter()
            .map(|w| w.to_string())
            .filter(|w| w.contains("fails closed"))
            .collect()
    };
    let w = warned(guard("US", "") + &rule("jurisdiction = [\"eu\"]", ""));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains(
            "guard `g` fails closed, but it processes data in `US`, outside the rule's own `eu`"
        ),
        "{w:?}"
    );
    assert!(w[0].contains("403 guardrail_not_allowed"), "{w:?}");
    // Failing open, or inside, or constrained by nothing: no warning.
    assert!(
        warned(guard("US", "") + &rule("jurisdiction = [\"eu\"]", "fail = \"open\"\n")).is_empty()
    );
    assert!(warned(guard("DE", "") + &rule("jurisdiction = [\"eu\"]", "")).is_empty());
    assert!(warned(guard("US", "") + &rule("self_hosted = false", "")).is_empty());
    // Kept outside a storage constraint.
    let w = warned(guard("DE", "storage = \"US\"\n") + &rule("storage = [\"eu\"]", ""));
    assert!(w.len() == 1 && w[0].contains("keeps data in `US`"), "{w:?}");
}
