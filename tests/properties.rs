//! The residency and privacy promise, checked against an independent oracle over generated
//! policies and requests (PROPTEST_CASES sets the count; CI: 10,000).
//!
//! The oracle below is deliberately naive and shares nothing with the code under test but the
//! generated policy text: its own country sets (the generated jurisdictions, never the
//! validator's), its own rule matching, its own reading of the location headers and its own
//! privacy tests. For every request the decision must keep exactly the providers the oracle
//! allows (a subset when the request turns fallbacks off), refuse exactly when that set is
//! empty, and refuse with 451 exactly when some provider is excluded for residency alone.
//! Providers serve `m` or `n`, the route `both` lists them, and requests name `m`, `n` or
//! `both` with or without OpenRouter's `models` array: the oracle reads the route rules its own
//! way (a route narrowed, never widened; a plain model's fallbacks added), so a decision never
//! uses a model or provider outside what the policy allows the caller.

use std::collections::BTreeSet;

use meridian::decide::decide;
use meridian::facts::{self, Endpoint};
use meridian::location;
use meridian::policy::{self, geoip};
use proptest::prelude::*;

/// Real countries the generator uses.
const COUNTRIES: &[&str] = &["DE", "FR", "US", "GB", "JP", "CH", "IT", "BR"];
/// Values that are not one real country: each must leave the client's country unknown.
const MALFORMED: &[&str] = &[
    "XX", "T1", "A1", "de", " DE", "DE ", "", "DEU", "D E", "EU", "ZZ",
];
const FLAGS: &[&str] = &["zdr", "no-training", "local-only", "no-data-collection"];
const TENANT_KEY: &str = "sk-prop-tenant";
const EDGE_VALUE: &str = "edge-proof-123";
/// Documentation ranges for the IP table given to the `spin` profile (first three octets).
const TABLE: &[([u8; 3], &str)] = &[
    ([192, 0, 2], "DE"),
    ([198, 51, 100], "US"),
    ([203, 0, 113], "JP"),
];

#[derive(Debug, Clone)]
struct Prov {
    /// Index into COUNTRIES, or (>= len) a generated jurisdiction.
    location: usize,
    zdr: bool,
    /// `None`: the entry does not say (unknown).
    trains: Option<bool>,
    self_hosted: bool,
    /// `None`: the entry does not say (unknown).
    retention: Option<u32>,
    keyed: bool,
    /// Serves `n` instead of `m`.
    serves_n: bool,
}

#[derive(Debug, Clone)]
struct RuleGen {
    /// Client countries the rule applies to (indices into COUNTRIES; `None` entry = `XX`).
    when_countries: Option<Vec<Option<usize>>>,
    when_tenant: Option<bool>,
    require_juris: Option<usize>,
    flags: Vec<usize>,
    self_hosted: bool,
    allow: Option<Vec<usize>>,
    deny: Vec<usize>,
}

#[derive(Debug, Clone)]
struct PolicyGen {
    /// Custom jurisdictions: sets of COUNTRIES indices (non-empty).
    juris: Vec<Vec<usize>>,
    provs: Vec<Prov>,
    rules: Vec<RuleGen>,
    tenant_juris: Option<usize>,
    tenant_flags: Vec<usize>,
    /// 0 = false, 1 = true (keyless), 2 = "paid".
    anonymous: u8,
    /// 0 = cloudflare, 1 = spin, 2 = custom (`x-geo-country`).
    platform: u8,
    edge_secret: bool,
    /// The route `both` tries `n` before `m`.
    route_n_first: bool,
}

/// One header the request carries, as generated.
#[derive(Debug, Clone)]
enum Geo {
    /// A real country in the trusted header.
    Good(usize),
    Bad(usize),
    /// A real country in a header of another platform (must be ignored).
    Foreign(usize),
    /// The connection address: TABLE entry, or an address in no range.
    Addr(Option<usize>),
}

#[derive(Debug, Clone)]
struct RequestGen {
    geo: Vec<Geo>,
    /// 0 = none, 1 = right, 2 = wrong, 3 = twice.
    edge: u8,
    /// 0 = no key, 1 = the tenant's, 2 = an unknown key.
    key: u8,
    header_flags: Vec<usize>,
    only: Option<Vec<usize>>,
    ignore: Vec<usize>,
    zdr: Option<bool>,
    deny_collection: bool,
    allow_fallbacks: bool,
    /// 0 = `m`, 1 = `n`, 2 = the route `both`.
    model: u8,
    /// OpenRouter's `models`: 0 = `m`, 1 = `n`, 2 = `x` (no provider serves it).
    models: Option<Vec<u8>>,
}

fn juris_name(i: usize) -> String {
    format!("j{i}")
}

fn location_name(g: &PolicyGen, loc: usize) -> String {
    if loc < COUNTRIES.len() {
        COUNTRIES[loc].to_string()
    } else {
        juris_name((loc - COUNTRIES.len()) % g.juris.len())
    }
}

fn strategy() -> impl Strategy<Value = (PolicyGen, Vec<RequestGen>)> {
    let juris =
        proptest::collection::vec(proptest::collection::vec(0..COUNTRIES.len(), 1..4), 1..4);
    let prov = (
        0..COUNTRIES.len() + 3,
        any::<bool>(),
        proptest::option::of(any::<bool>()),
        any::<bool>(),
        proptest::option::of(prop_oneof![Just(0u32), 1u32..60]),
        any::<bool>(),
        proptest::bool::weighted(0.3),
    )
        .prop_map(
            |(location, zdr, trains, self_hosted, retention, keyed, serves_n)| Prov {
                location,
                zdr,
                trains,
                self_hosted,
                retention,
                keyed,
                serves_n,
            },
        );
    let rule = (
        proptest::option::of(proptest::collection::vec(
            proptest::option::of(0..COUNTRIES.len()),
            1..4,
        )),
        proptest::option::of(any::<bool>()),
        proptest::option::of(0usize..4),
        proptest::collection::vec(0..FLAGS.len(), 0..2),
        proptest::bool::weighted(0.15),
        proptest::option::weighted(0.2, proptest::collection::vec(0usize..6, 0..3)),
        proptest::collection::vec(0usize..6, 0..2),
    )
        .prop_map(
            |(when_countries, when_tenant, require_juris, flags, self_hosted, allow, deny)| {
                RuleGen {
                    when_countries,
                    when_tenant,
                    require_juris,
                    flags,
                    self_hosted,
                    allow,
                    deny,
                }
            },
        );
    let policy = (
        juris,
        proptest::collection::vec(prov, 1..6),
        proptest::collection::vec(rule, 0..4),
        proptest::option::of(0usize..4),
        proptest::collection::vec(0..FLAGS.len(), 0..2),
        0u8..3,
        0u8..3,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                juris,
                provs,
                rules,
                tenant_juris,
                tenant_flags,
                anonymous,
                platform,
                edge,
                n_first,
            )| {
                PolicyGen {
                    juris,
                    provs,
                    rules,
                    tenant_juris,
                    tenant_flags,
                    anonymous,
                    platform,
                    edge_secret: edge,
                    route_n_first: n_first,
                }
            },
        );
    let geo = prop_oneof![
        (0..COUNTRIES.len()).prop_map(Geo::Good),
        (0..MALFORMED.len()).prop_map(Geo::Bad),
        (0..COUNTRIES.len()).prop_map(Geo::Foreign),
        proptest::option::of(0..TABLE.len()).prop_map(Geo::Addr),
    ];
    let request = (
        proptest::collection::vec(geo, 0..3),
        0u8..4,
        0u8..3,
        proptest::collection::vec(0..FLAGS.len(), 0..2),
        proptest::option::weighted(0.3, proptest::collection::vec(0usize..6, 0..3)),
        proptest::collection::vec(0usize..6, 0..2),
        proptest::option::weighted(0.2, any::<bool>()),
        proptest::bool::weighted(0.2),
        proptest::bool::weighted(0.85),
        prop_oneof![3 => Just(0u8), 1 => Just(1u8), 2 => Just(2u8)],
        proptest::option::weighted(0.3, proptest::collection::vec(0u8..3, 0..3)),
    )
        .prop_map(
            |(
                geo,
                edge,
                key,
                header_flags,
                only,
                ignore,
                zdr,
                deny_collection,
                allow_fallbacks,
                model,
                models,
            )| {
                RequestGen {
                    geo,
                    edge,
                    key,
                    header_flags,
                    only,
                    ignore,
                    zdr,
                    deny_collection,
                    allow_fallbacks,
                    model,
                    models,
                }
            },
        );
    (policy, proptest::collection::vec(request, 1..5))
}

/// The models the route `both` lists: `m` and `n` in the generated order, each only if some
/// provider serves it (a route may name only served models).
fn route_models(g: &PolicyGen) -> Vec<&'static str> {
    let order: [&'static str; 2] = if g.route_n_first {
        ["n", "m"]
    } else {
        ["m", "n"]
    };
    order
        .into_iter()
        .filter(|m| {
            g.provs
                .iter()
                .any(|p| (if p.serves_n { "n" } else { "m" }) == *m)
        })
        .collect()
}

/// The models a request is served by, in order, as the oracle reads the route rules: a route
/// narrowed by the client's `models` (ignored when it names none of the route's), or the model
/// asked for followed by the client's others.
fn oracle_steps(g: &PolicyGen, r: &RequestGen) -> Vec<&'static str> {
    const NAMES: [&str; 3] = ["m", "n", "x"];
    let asked: Vec<&str> = r
        .models
        .iter()
        .flatten()
        .map(|m| NAMES[*m as usize])
        .collect();
    if r.model == 2 {
        let route = route_models(g);
        let narrowed: Vec<&str> = asked
            .iter()
            .copied()
            .filter(|a| route.contains(a))
            .collect();
        let mut out: Vec<&str> = Vec::new();
        for m in if narrowed.is_empty() { route } else { narrowed } {
            if !out.contains(&m) {
                out.push(m);
            }
        }
        return out;
    }
    let mut out = vec![NAMES[r.model as usize]];
    for a in asked {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

fn quoted(items: impl IntoIterator<Item = String>) -> String {
    items
        .into_iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn pid(i: usize) -> String {
    format!("p{i}")
}

fn policy_text(g: &PolicyGen) -> String {
    let anonymous = ["false", "true", "\"paid\""][g.anonymous as usize];
    let mut s = format!("version = 1\n[settings]\nallow_anonymous = {anonymous}\n");
    s += match g.platform {
        0 => "[settings.client]\nplatform = \"cloudflare\"\n",
        1 => "[settings.client]\nplatform = \"spin\"\n",
        _ => "[settings.client]\nplatform = \"custom\"\ncountry_header = \"x-geo-country\"\n",
    };
    if g.edge_secret {
        s += "edge_secret = { header = \"x-edge\", secret = \"edge_secret\" }\n";
    }
    s += "[jurisdictions]\n";
    for (i, cs) in g.juris.iter().enumerate() {
        s += &format!(
            "{} = [{}]\n",
            juris_name(i),
            quoted(cs.iter().map(|c| COUNTRIES[*c].to_string()))
        );
    }
    for (i, p) in g.provs.iter().enumerate() {
        s += &format!(
            "[[providers]]\nid = \"{}\"\nbase_url = \"https://p{i}.example/v1\"\nlocation = \"{}\"\nzdr = {}\n{}self_hosted = {}\n{}models = {{ \"{}\" = \"m{i}\" }}\n{}",
            pid(i),
            location_name(g, p.location),
            p.zdr,
            p.trains.map_or(String::new(), |t| format!("trains_on_inputs = {t}\n")),
            p.self_hosted,
            p.retention.map_or(String::new(), |r| format!("retention_days = {r}\n")),
            if p.serves_n { "n" } else { "m" },
            if p.keyed { "key_secret = \"k\"\n" } else { "" }
        );
    }
    // The route `both`: the served ones of `m` and `n`, in the generated order.
    let route: Vec<&str> = route_models(g);
    s += &format!(
        "[[routes]]\nid = \"both\"\nmodels = [{}]\n",
        quoted(route.iter().map(|m| m.to_string()))
    );
    s += &format!(
        "[[tenants]]\nid = \"t\"\nkeys = [\"sha256:{}\"]\nprivacy = [{}]\n",
        hex::encode(policy::hash_key(TENANT_KEY)),
        quoted(g.tenant_flags.iter().map(|f| FLAGS[*f].to_string()))
    );
    if let Some(j) = g.tenant_juris {
        s += &format!("jurisdictions = [\"{}\"]\n", juris_name(j % g.juris.len()));
    }
    let ids = |ix: &[usize]| quoted(ix.iter().filter(|i| **i < g.provs.len()).map(|i| pid(*i)));
    for (i, r) in g.rules.iter().enumerate() {
        s += &format!("[[rules]]\nid = \"r{i}\"\n");
        let mut when = Vec::new();
        if let Some(cs) = &r.when_countries {
            when.push(format!(
                "client_country = [{}]",
                quoted(
                    cs.iter()
                        .map(|c| c.map_or("XX".to_string(), |c| COUNTRIES[c].to_string()))
                )
            ));
        }
        if let Some(t) = r.when_tenant {
            when.push(if t {
                "tenant = [\"t\"]".to_string()
            } else {
                "anonymous = true".to_string()
            });
        }
        if !when.is_empty() {
            s += &format!("when = {{ {} }}\n", when.join(", "));
        }
        let mut req = Vec::new();
        if let Some(j) = r.require_juris {
            req.push(format!(
                "jurisdiction = [\"{}\"]",
                juris_name(j % g.juris.len())
            ));
        }
        if !r.flags.is_empty() {
            req.push(format!(
                "privacy = [{}]",
                quoted(r.flags.iter().map(|f| FLAGS[*f].to_string()))
            ));
        }
        if r.self_hosted {
            req.push("self_hosted = true".into());
        }
        if let Some(a) = &r.allow {
            req.push(format!("providers = [{}]", ids(a)));
        }
        let deny: Vec<usize> = r
            .deny
            .iter()
            .copied()
            .filter(|i| *i < g.provs.len())
            .collect();
        if !deny.is_empty() {
            req.push(format!("deny = [{}]", ids(&deny)));
        }
        if !req.is_empty() {
            s += &format!("require = {{ {} }}\n", req.join(", "));
        }
    }
    s
}

fn country_header(g: &PolicyGen) -> Option<&'static str> {
    match g.platform {
        0 => Some("cf-ipcountry"),
        1 => None,
        _ => Some("x-geo-country"),
    }
}

fn request_headers(g: &PolicyGen, r: &RequestGen) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = Vec::new();
    let trusted = country_header(g).unwrap_or("cf-ipcountry");
    for geo in &r.geo {
        match geo {
            Geo::Good(c) => h.push((trusted.into(), COUNTRIES[*c].into())),
            Geo::Bad(b) => h.push((trusted.into(), MALFORMED[*b].into())),
            Geo::Foreign(c) => {
                for other in [
                    "x-vercel-ip-country",
                    "cloudfront-viewer-country",
                    "cf-ipcountry",
                ] {
                    if other != trusted || country_header(g).is_none() {
                        h.push((other.into(), COUNTRIES[*c].into()));
                        break;
                    }
                }
            }
            Geo::Addr(a) => {
                let ip = match a {
                    Some(i) => {
                        let o = TABLE[*i].0;
                        format!("{}.{}.{}.77:5123", o[0], o[1], o[2])
                    }
                    None => "10.1.2.3:5123".into(),
                };
                h.push(("spin-client-addr".into(), ip));
            }
        }
    }
    match r.edge {
        1 => h.push(("x-edge".into(), EDGE_VALUE.into())),
        2 => h.push(("x-edge".into(), "not-the-secret".into())),
        3 => {
            h.push(("x-edge".into(), EDGE_VALUE.into()));
            h.push(("x-edge".into(), EDGE_VALUE.into()));
        }
        _ => {}
    }
    match r.key {
        1 => h.push(("authorization".into(), format!("Bearer {TENANT_KEY}"))),
        2 => h.push(("authorization".into(), "Bearer sk-someone-else".into())),
        _ => {}
    }
    if !r.header_flags.is_empty() {
        h.push((
            facts::PRIVACY_HEADER.into(),
            quoted_plain(r.header_flags.iter().map(|f| FLAGS[*f])),
        ));
    }
    h
}

fn quoted_plain<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

// ---------------------------------------------------------------------------------------------
// The oracle.

/// The client's country as the oracle reads it: `None` is unknown.
fn oracle_country(g: &PolicyGen, r: &RequestGen) -> Option<&'static str> {
    if g.edge_secret && r.edge != 1 {
        return None;
    }
    match country_header(g) {
        Some(_) => {
            // Exactly one value in the trusted header, and it must be a real country.
            let trusted: Vec<&Geo> = r
                .geo
                .iter()
                .filter(|x| matches!(x, Geo::Good(_) | Geo::Bad(_)))
                .collect();
            match trusted.as_slice() {
                [Geo::Good(c)] => Some(COUNTRIES[*c]),
                _ => None,
            }
        }
        None => {
            let addrs: Vec<&Option<usize>> = r
                .geo
                .iter()
                .filter_map(|x| match x {
                    Geo::Addr(a) => Some(a),
                    _ => None,
                })
                .collect();
            match addrs.as_slice() {
                [Some(i)] => Some(TABLE[*i].1),
                _ => None,
            }
        }
    }
}

fn juris_countries(g: &PolicyGen, j: usize) -> BTreeSet<&'static str> {
    g.juris[j % g.juris.len()]
        .iter()
        .map(|c| COUNTRIES[*c])
        .collect()
}

fn prov_countries(g: &PolicyGen, p: &Prov) -> BTreeSet<&'static str> {
    if p.location < COUNTRIES.len() {
        [COUNTRIES[p.location]].into_iter().collect()
    } else {
        juris_countries(g, (p.location - COUNTRIES.len()) % g.juris.len())
    }
}

fn meets(p: &Prov, flag: &str) -> bool {
    match flag {
        "zdr" => p.zdr,
        // Unstated is unknown, and an unknown never satisfies a flag.
        "no-training" => p.trains == Some(false),
        "local-only" => p.self_hosted,
        _ => p.trains == Some(false) && (p.retention == Some(0) || p.zdr),
    }
}

/// What the oracle expects: `Err(status)` before routing, or the allowed set and whether some
/// excluded provider was excluded for residency alone.
/// Also whether any provider serves a model the request may be served by (else 404).
fn oracle(g: &PolicyGen, r: &RequestGen) -> Result<(BTreeSet<String>, bool, bool), u16> {
    let tenant = r.key == 1;
    if !tenant && g.anonymous == 0 {
        return Err(401);
    }
    let country = oracle_country(g, r);
    let flag_names = |ix: &[usize]| ix.iter().map(|f| FLAGS[*f]).collect::<Vec<_>>();
    let mut req_flags: Vec<&str> = flag_names(&r.header_flags);
    if r.zdr == Some(true) {
        req_flags.push("zdr");
    }
    if r.deny_collection {
        req_flags.push("no-data-collection");
    }
    let mut allowed = BTreeSet::new();
    let mut residency_alone = false;
    let steps = oracle_steps(g, r);
    let mut served = false;
    for (i, p) in g.provs.iter().enumerate() {
        if !steps.contains(&if p.serves_n { "n" } else { "m" }) {
            continue;
        }
        served = true;
        let here = prov_countries(g, p);
        let within = |allowed: &BTreeSet<&str>| here.iter().all(|c| allowed.contains(c));
        let mut residency = false;
        let mut other = false;
        for rule in &g.rules {
            let when_country = rule.when_countries.as_ref().is_none_or(|cs| {
                cs.iter().any(|c| match (c, country) {
                    (None, None) => true,
                    (Some(c), Some(k)) => COUNTRIES[*c] == k,
                    _ => false,
                })
            });
            let when_tenant = rule.when_tenant.is_none_or(|t| t == tenant);
            if !(when_country && when_tenant) {
                continue;
            }
            if let Some(j) = rule.require_juris {
                if !within(&juris_countries(g, j)) {
                    residency = true;
                }
            }
            if rule.flags.iter().any(|f| !meets(p, FLAGS[*f])) {
                other = true;
            }
            if rule.self_hosted && !p.self_hosted {
                other = true;
            }
            if rule.allow.as_ref().is_some_and(|a| !a.contains(&i)) {
                other = true;
            }
            if rule.deny.contains(&i) {
                other = true;
            }
        }
        if tenant {
            if let Some(j) = g.tenant_juris {
                if !within(&juris_countries(g, j)) {
                    residency = true;
                }
            }
            if g.tenant_flags.iter().any(|f| !meets(p, FLAGS[*f])) {
                other = true;
            }
        } else if g.anonymous == 1 && p.keyed {
            other = true;
        }
        if req_flags.iter().any(|f| !meets(p, f)) {
            other = true;
        }
        if r.only.as_ref().is_some_and(|o| !o.contains(&i)) || r.ignore.contains(&i) {
            other = true;
        }
        match (residency, other) {
            (false, false) => {
                allowed.insert(pid(i));
            }
            (true, false) => residency_alone = true,
            _ => {}
        }
    }
    Ok((allowed, residency_alone, served))
}

// ---------------------------------------------------------------------------------------------

fn geo_table() -> Vec<u8> {
    let rows: Vec<geoip::Row> = TABLE
        .iter()
        .map(|(o, c)| {
            let base = u128::from(u32::from_be_bytes([o[0], o[1], o[2], 0]));
            (base, base + 255, policy::Country::parse(c).unwrap())
        })
        .collect();
    geoip::build("2026-01-01", "properties", &rows, &[]).unwrap()
}

proptest! {
    #[test]
    fn decisions_keep_exactly_what_an_independent_oracle_allows((g, requests) in strategy()) {
        let text = policy_text(&g);
        let p = policy::load(&text, "generated").unwrap_or_else(|e| panic!("{e}\n{text}"));
        let table_bytes = geo_table();
        let table = geoip::GeoTable::parse(&table_bytes).unwrap();
        for r in &requests {
            let headers = request_headers(&g, r);
            let expected = oracle(&g, r);
            let tenant = match meridian::auth::authenticate(&p, &headers) {
                Ok(t) => t,
                Err(e) => {
                    prop_assert_eq!(Err(e.status), expected.map(|_| ()), "{:?}\n{}", r, text);
                    continue;
                }
            };
            let Ok((allowed, residency_alone, served)) = expected else {
                panic!("the oracle refuses ({expected:?}) but authentication passed\n{r:?}\n{text}");
            };
            let loc = location::locate(&p.settings.client, &headers, Some(&table), Some(EDGE_VALUE));
            prop_assert_eq!(
                (loc.country != policy::Country::UNKNOWN).then(|| loc.country.as_str().to_string()),
                oracle_country(&g, r).map(str::to_string),
                "location {:?} from {:?}", loc, headers
            );
            let mut provider = serde_json::Map::new();
            if let Some(o) = &r.only {
                provider.insert("only".into(), o.iter().map(|i| pid(*i)).collect());
            }
            if !r.ignore.is_empty() {
                provider.insert("ignore".into(), r.ignore.iter().map(|i| pid(*i)).collect());
            }
            if let Some(z) = r.zdr {
                provider.insert("zdr".into(), z.into());
            }
            if r.deny_collection {
                provider.insert("data_collection".into(), "deny".into());
            }
            if !r.allow_fallbacks {
                provider.insert("allow_fallbacks".into(), false.into());
            }
            let mut body = serde_json::Map::new();
            body.insert("model".into(), ["m", "n", "both"][r.model as usize].into());
            if let Some(ms) = &r.models {
                body.insert(
                    "models".into(),
                    ms.iter().map(|m| ["m", "n", "x"][*m as usize]).collect(),
                );
            }
            body.insert("provider".into(), provider.into());
            let cx = facts::Context {
                location: loc,
                request_id: "prop".into(),
                endpoint: Endpoint::Chat,
                tenant: tenant.map(|t| t.id.clone()),
                edge_region: None,
                headers: &headers,
                pii: None,
                unknown_fields: Default::default(),
                injection: false,
                prefix_bounds: Vec::new(),
                rule_headers: p.rules_read_headers(),
            };
            let f = facts::from_request(cx, &mut body).unwrap();
            let d = decide(&p, &f);
            let got: BTreeSet<String> = d.candidates.iter().map(|c| c.provider.0.to_string()).collect();
            match &d.refusal {
                Some(refusal) => {
                    prop_assert!(allowed.is_empty(), "refused ({}) but the oracle allows {:?}\n{:?}\n{}", refusal.message, allowed, r, text);
                    let want = if !served { 404 } else if residency_alone { 451 } else { 403 };
                    prop_assert_eq!(refusal.status, want, "{}\n{:?}\n{}", refusal.message, r, text);
                }
                None => {
                    prop_assert!(got.is_subset(&allowed), "{:?} is not within {:?}\n{:?}\n{}", got, allowed, r, text);
                    if r.allow_fallbacks {
                        prop_assert_eq!(&got, &allowed, "{:?}\n{}", r, text);
                    } else {
                        prop_assert_eq!(got.len(), 1);
                    }
                }
            }
        }
    }
}
