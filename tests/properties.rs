//! Properties over generated policies and requests (PROPTEST_CASES sets the count; CI: 10,000):
//! 1. no candidate lies outside a required jurisdiction or below a privacy requirement in force;
//! 2. request flags only ever remove candidates, never add them.

use std::collections::BTreeSet;

use meridian::decide::decide;
use meridian::facts::{self, Endpoint};
use meridian::policy::{self, Policy};
use proptest::prelude::*;

const COUNTRIES: &[&str] = &["DE", "FR", "US", "GB", "JP", "CH"];
/// Where providers process data: single countries, and jurisdictions spanning many.
const LOCATIONS: &[&str] = &["DE", "FR", "US", "GB", "JP", "CH", "eu", "eea", "apac"];
const JURIS: &[&str] = &["eu", "us", "uk", "apac", "ch", "eea"];
const FLAGS: &[&str] = &["zdr", "no-training", "local-only", "no-data-collection"];

#[derive(Debug, Clone)]
struct Prov {
    country: usize,
    zdr: bool,
    trains: bool,
    self_hosted: bool,
    retention: u32,
}

#[derive(Debug, Clone)]
struct RuleGen {
    when_juris: Option<usize>,
    require_juris: Vec<usize>,
    flags: Vec<usize>,
}

fn prov() -> impl Strategy<Value = Prov> {
    (
        0..LOCATIONS.len(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0u32..60,
    )
        .prop_map(|(country, zdr, trains, self_hosted, retention)| Prov {
            country,
            zdr,
            trains,
            self_hosted,
            retention,
        })
}

fn rule() -> impl Strategy<Value = RuleGen> {
    (
        proptest::option::of(0..JURIS.len()),
        proptest::collection::vec(0..JURIS.len(), 0..3),
        proptest::collection::vec(0..FLAGS.len(), 0..2),
    )
        .prop_map(|(when_juris, require_juris, flags)| RuleGen {
            when_juris,
            require_juris,
            flags,
        })
}

/// The oracle for residency, independent of `Provider::within`: every country the provider may
/// process data in is allowed, and there is at least one.
fn inside(p: &policy::Provider, allowed: &policy::CountrySet) -> bool {
    let all: Vec<policy::Country> = p.countries.iter().collect();
    !all.is_empty() && all.iter().all(|c| allowed.contains(*c))
}

fn policy_text(
    provs: &[Prov],
    rules: &[RuleGen],
    tenant_juris: &[usize],
    tenant_flags: &[usize],
) -> String {
    let mut s = String::from("version = 1\n[settings]\ntrusted_country_headers = [\"cf-ipcountry\"]\nallow_anonymous = true\n");
    for (i, p) in provs.iter().enumerate() {
        s += &format!(
            "[[providers]]\nid = \"p{i}\"\nbase_url = \"https://p{i}.example/v1\"\nlocation = \"{}\"\nzdr = {}\ntrains_on_inputs = {}\nself_hosted = {}\nretention_days = {}\nmodels = {{ \"m\" = \"m{i}\" }}\n",
            LOCATIONS[p.country], p.zdr, p.trains, p.self_hosted, p.retention
        );
    }
    let list = |ix: &[usize], names: &[&str]| {
        ix.iter()
            .map(|i| format!("\"{}\"", names[*i]))
            .collect::<Vec<_>>()
            .join(", ")
    };
    s += &format!(
        "[[tenants]]\nid = \"t\"\nkeys = []\n{}privacy = [{}]\n",
        if tenant_juris.is_empty() {
            String::new()
        } else {
            format!("jurisdictions = [{}]\n", list(tenant_juris, JURIS))
        },
        list(tenant_flags, FLAGS)
    );
    for (i, r) in rules.iter().enumerate() {
        s += &format!("[[rules]]\nid = \"r{i}\"\n");
        if let Some(j) = r.when_juris {
            s += &format!("when = {{ client_jurisdiction = [\"{}\"] }}\n", JURIS[j]);
        }
        let mut req = Vec::new();
        if !r.require_juris.is_empty() {
            req.push(format!(
                "jurisdiction = [{}]",
                list(&r.require_juris, JURIS)
            ));
        }
        if !r.flags.is_empty() {
            req.push(format!("privacy = [{}]", list(&r.flags, FLAGS)));
        }
        s += &format!("require = {{ {} }}\n", req.join(", "));
    }
    s
}

fn candidates(
    p: &Policy,
    country: &str,
    tenant: bool,
    header_flags: &[usize],
    only: Option<&[usize]>,
) -> BTreeSet<String> {
    let mut headers = vec![("cf-ipcountry".to_string(), country.to_string())];
    if !header_flags.is_empty() {
        headers.push((
            facts::PRIVACY_HEADER.to_string(),
            header_flags
                .iter()
                .map(|i| FLAGS[*i])
                .collect::<Vec<_>>()
                .join(","),
        ));
    }
    let mut body = serde_json::Map::new();
    body.insert("model".into(), "m".into());
    if let Some(o) = only {
        body.insert(
            "provider".into(),
            serde_json::json!({ "only": o.iter().map(|i| format!("p{i}")).collect::<Vec<_>>() }),
        );
    }
    let cx = facts::Context {
        request_id: "prop".into(),
        endpoint: Endpoint::Chat,
        tenant: tenant.then(|| policy::TenantId("t".into())),
        edge_region: None,
        headers: &headers,
    };
    let f = facts::from_request(p, cx, &mut body).unwrap();
    let d = decide(p, &f);
    // Property 1, checked on every decision made here.
    let tenant_def = p.tenant("t").unwrap();
    for c in &d.candidates {
        let prov = p.provider(c.provider.as_str()).unwrap();
        for r in p.rules.iter().filter(|r| d.matched_rules.contains(&&r.id)) {
            if let Some(j) = &r.require.jurisdiction {
                assert!(
                    inside(prov, &j.countries),
                    "{} outside rule {} jurisdiction",
                    prov.id,
                    r.id
                );
            }
            let need = r.require.privacy;
            assert!(!need.zdr || prov.zdr);
            assert!(!need.no_training || !prov.trains_on_inputs);
            assert!(!need.local_only || prov.self_hosted);
            assert!(!need.no_data_collection || !prov.collects_data());
        }
        if tenant {
            if let Some(j) = &tenant_def.jurisdictions {
                assert!(
                    inside(prov, &j.countries),
                    "{} outside tenant jurisdiction",
                    prov.id
                );
            }
            assert!(!tenant_def.privacy.zdr || prov.zdr);
            assert!(!tenant_def.privacy.local_only || prov.self_hosted);
            assert!(!tenant_def.privacy.no_training || !prov.trains_on_inputs);
        }
        for i in header_flags {
            match FLAGS[*i] {
                "zdr" => assert!(prov.zdr),
                "no-training" => assert!(!prov.trains_on_inputs),
                "local-only" => assert!(prov.self_hosted),
                _ => assert!(!prov.collects_data()),
            }
        }
    }
    d.candidates.iter().map(|c| c.provider.0.clone()).collect()
}

proptest! {
    #[test]
    fn decisions_respect_constraints_and_flags_only_tighten(
        provs in proptest::collection::vec(prov(), 1..7),
        rules in proptest::collection::vec(rule(), 0..4),
        tenant_juris in proptest::collection::vec(0..JURIS.len(), 0..2),
        tenant_flags in proptest::collection::vec(0..FLAGS.len(), 0..2),
        country in 0..COUNTRIES.len(),
        use_tenant in any::<bool>(),
        flags in proptest::collection::vec(0..FLAGS.len(), 1..3),
        only in proptest::collection::vec(0usize..7, 1..3),
    ) {
        let text = policy_text(&provs, &rules, &tenant_juris, &tenant_flags);
        let p = policy::load(&text, "generated").unwrap_or_else(|e| panic!("{e}\n{text}"));
        let c = COUNTRIES[country];
        let base = candidates(&p, c, use_tenant, &[], None);
        let with_flags = candidates(&p, c, use_tenant, &flags, None);
        prop_assert!(with_flags.is_subset(&base), "flags widened {base:?} to {with_flags:?}");
        let only: Vec<usize> = only.into_iter().filter(|i| *i < provs.len()).collect();
        let with_only = candidates(&p, c, use_tenant, &[], Some(&only));
        prop_assert!(with_only.is_subset(&base), "`only` widened {base:?} to {with_only:?}");
        let both = candidates(&p, c, use_tenant, &flags, Some(&only));
        prop_assert!(both.is_subset(&with_flags) && both.is_subset(&with_only));
    }
}
