//! Self-hosted pools in the policy (`[providers.pool]`): what they read as, what is refused and
//! why, and that the compiled form keeps them (and still reads a form written before them).

use meridian_policy::compiled::{compile, load_any};
use meridian_policy::{load, Balance, Country, Engine, Recipient};

const POOL: &str = r#"version = 1
[[providers]]
id = "home"
self_hosted = true
location = "DE"
trains_on_inputs = false
retention_days = 0
models = { "llama" = "meta-llama/Llama-3.1-8B-Instruct" }
[providers.pool]
balance = "least_load"
engine = "sglang"
max_queue = 8
load_bound = 1.5
prefix_bytes = 512
stale_after_s = 5
[[providers.pool.replicas]]
name = "de-1"
base_url = "http://10.0.0.11:30000/v1"
[[providers.pool.replicas]]
name = "fr-1"
base_url = "http://10.0.1.12:30000/v1"
location = "FR"
metrics_url = "http://10.0.1.12:9100/metrics"
[[providers.pool.replicas]]
name = "us-1"
base_url = "https://gpu.us.example/v1"
location = "US"
"#;

#[test]
fn a_pool_reads_as_written_with_each_replicas_place() {
    let p = load(POOL, "t").unwrap_or_else(|e| panic!("{e}"));
    let home = &p.providers[0];
    let pool = home.pool.as_ref().unwrap();
    assert_eq!(pool.balance, Balance::LeastLoad);
    assert_eq!(pool.engine, Engine::Sglang);
    assert_eq!(pool.max_queue, Some(8));
    assert_eq!(
        (pool.load_bound, pool.prefix_bytes, pool.stale_after_s),
        (1.5, 512, 5)
    );
    let names: Vec<&str> = pool.replicas.iter().map(|r| r.name.as_ref()).collect();
    assert_eq!(names, ["de-1", "fr-1", "us-1"]);
    // A replica without a location has its provider's.
    assert_eq!(pool.replicas[0].location, "DE");
    assert_eq!(pool.replicas[1].location, "FR");
    assert_eq!(pool.replicas[2].location, "US");
    // Metrics: the base URL's origin and /metrics, unless stated.
    assert_eq!(
        pool.replicas[0].metrics_url.as_str(),
        "http://10.0.0.11:30000/metrics"
    );
    assert_eq!(
        pool.replicas[1].metrics_url.as_str(),
        "http://10.0.1.12:9100/metrics"
    );
    // The provider stands for all of them: it processes data wherever any replica does.
    assert_eq!(home.location, "DE, FR, US");
    for c in ["DE", "FR", "US"] {
        assert!(home.countries.contains(Country::parse(c).unwrap()), "{c}");
    }
    assert!(home.pooled());
    // A `least_load` pool ignores the prompt: nothing to hash.
    assert!(p.prefix_bounds().is_empty());
    assert_eq!(home.base_url.as_str(), "http://10.0.0.11:30000/v1");
}

#[test]
fn defaults_prefix_balance_and_vllm() {
    let text = POOL
        .replace("balance = \"least_load\"\n", "")
        .replace("engine = \"sglang\"\n", "")
        .replace("max_queue = 8\n", "")
        .replace("load_bound = 1.5\n", "")
        .replace("prefix_bytes = 512\n", "")
        .replace("stale_after_s = 5\n", "");
    let p = load(&text, "t").unwrap_or_else(|e| panic!("{e}"));
    let pool = p.providers[0].pool.as_ref().unwrap();
    assert_eq!(pool.balance, Balance::Prefix);
    assert_eq!(pool.engine, Engine::Vllm);
    assert_eq!(pool.max_queue, None);
    assert_eq!(
        (pool.load_bound, pool.prefix_bytes, pool.stale_after_s),
        (1.25, 256, 10)
    );
    assert_eq!(p.prefix_bounds(), [256]);
}

fn refused(text: &str) -> String {
    match load(text, "t") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn mistakes_are_refused_with_what_to_change() {
    let e = refused(&POOL.replace("self_hosted = true\n", ""));
    assert!(e.contains("has a pool but is not `self_hosted`"), "{e}");
    let e = refused(&POOL.replace(
        "location = \"DE\"\ntrains",
        "location = \"DE\"\nbase_url = \"http://x/v1\"\ntrains",
    ));
    assert!(e.contains("no `base_url` of its own"), "{e}");
    let e = refused(&POOL.replace("location = \"DE\"\ntrains", "trains"));
    assert!(
        e.contains("replica `de-1` of provider `home` has no `location`"),
        "{e}"
    );
    let e = refused(&POOL.replace("name = \"fr-1\"", "name = \"de-1\""));
    assert!(e.contains("duplicate replica `de-1`"), "{e}");
    let e = refused(&POOL.replace("\"least_load\"", "\"leastload\""));
    assert!(e.contains("unknown balance `leastload`"), "{e}");
    assert!(e.contains("least_load"), "a suggestion: {e}");
    let e = refused(&POOL.replace("\"sglang\"", "\"tgi\""));
    assert!(e.contains("unknown engine `tgi`"), "{e}");
    let e = refused(&POOL.replace("load_bound = 1.5", "load_bound = 1.0"));
    assert!(e.contains("`load_bound` is 1"), "{e}");
    let e = refused(&POOL.replace("max_queue = 8", "max_queue = 0"));
    assert!(e.contains("`max_queue = 0` sheds every request"), "{e}");
    let e = refused(&POOL.replace("location = \"FR\"", "location = \"Atlantis\""));
    assert!(e.contains("unknown jurisdiction `Atlantis`"), "{e}");
    let e = refused(&POOL.replace("name = \"us-1\"\n", "name = \"us-1\"\nport = 1\n"));
    assert!(e.contains("port"), "{e}");
    let e = refused(&POOL.replace("prefix_bytes = 512", "prefix_bytes = 8"));
    assert!(e.contains("`prefix_bytes = 8` is out of range"), "{e}");
    let e = refused(&POOL.replace("stale_after_s = 5", "stale_after_s = 0"));
    assert!(e.contains("`stale_after_s = 0` is out of range"), "{e}");
    // At most 64 replicas: a pool's allowed replicas are a 64-bit mask.
    let head = POOL.split("[[providers.pool.replicas]]").next().unwrap();
    let many: String = (0..65)
        .map(|i| format!("[[providers.pool.replicas]]\nname = \"r{i}\"\nbase_url = \"http://r{i}:8000/v1\"\n"))
        .collect();
    let e = refused(&format!("{head}{many}"));
    assert!(
        e.contains("has 65 replicas; at most 64 are supported"),
        "{e}"
    );
    let sixty_four: String = (0..64)
        .map(|i| format!("[[providers.pool.replicas]]\nname = \"r{i}\"\nbase_url = \"http://r{i}:8000/v1\"\n"))
        .collect();
    let p = load(&format!("{head}{sixty_four}"), "t").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.providers[0].pool.as_ref().unwrap().replicas.len(), 64);
    let cut = POOL.split("[[providers.pool.replicas]]").next().unwrap();
    let e = refused(&format!("{cut}replicas = []\n"));
    assert!(e.contains("has no replicas"), "{e}");
}

#[test]
fn the_compiled_form_keeps_pools_and_reads_forms_without_them() {
    let p = load(POOL, "t").unwrap();
    let back = load_any(&compile(&p), "t").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.providers[0].pool, p.providers[0].pool);
    assert_eq!(back.providers[0].location, p.providers[0].location);
    // A policy without pools compiles as before: no section, and reads back without one.
    let plain = "version = 1\n[[providers]]\nid = \"a\"\nbase_url = \"https://a.example/v1\"\nlocation = \"DE\"\nmodels = { m = \"m\" }\n";
    let p = load(plain, "t").unwrap();
    let c = compile(&p);
    let back = load_any(&c, "t").unwrap();
    assert!(back.providers[0].pool.is_none());
    assert!(!c.is_empty());
}
