//! deploy/spinkube.yaml is a valid SpinKube deployment of this app: the SpinApp conforms to the
//! SpinApp CRD's OpenAPI schema (vendored in tests/fixtures/spinkube, as the Kubernetes API server would check it,
//! with unknown fields refused rather than silently pruned), and it binds every variable
//! spin.toml declares, each secret one from the Kubernetes Secret rather than a literal.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The CRD files: the copy vendored in `tests/fixtures/spinkube` (its README names the release
/// and licence), or `MERIDIAN_SPINKUBE_CRDS` to check against another operator release.
fn crd_dir() -> PathBuf {
    std::env::var_os("MERIDIAN_SPINKUBE_CRDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("tests/fixtures/spinkube"))
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .collect()
}

/// Kubernetes prunes fields a structural schema does not name; for a manifest in this repository
/// an unknown field is a typo, so the check refuses it instead.
fn strict(v: &mut Value) {
    if let Value::Object(o) = v {
        let open = o.contains_key("additionalProperties")
            || o.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if o.contains_key("properties") && !open {
            o.insert("additionalProperties".into(), Value::Bool(false));
        }
        for (_, child) in o.iter_mut() {
            strict(child);
        }
    } else if let Value::Array(a) = v {
        a.iter_mut().for_each(strict);
    }
}

fn spinapp_schema() -> Value {
    let crd = yaml_docs(&crd_dir().join("core.spinkube.dev_spinapps.yaml"))
        .into_iter()
        .next()
        .unwrap();
    assert_eq!(crd["spec"]["group"], "core.spinkube.dev");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    let mut schema = version["schema"]["openAPIV3Schema"].clone();
    strict(&mut schema);
    schema
}

fn errors(schema: &Value, doc: &Value) -> Vec<String> {
    let v = jsonschema::validator_for(schema).expect("the CRD schema compiles");
    v.iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect()
}

#[test]
fn the_spinapp_conforms_to_the_crd_and_binds_every_variable() {
    let docs = yaml_docs(&root().join("deploy/spinkube.yaml"));
    let app = docs
        .iter()
        .find(|d| d["kind"] == "SpinApp")
        .expect("a SpinApp");
    let secret = docs
        .iter()
        .find(|d| d["kind"] == "Secret")
        .expect("a Secret for the secret variables");
    assert_eq!(app["apiVersion"], "core.spinkube.dev/v1alpha1");
    let schema = spinapp_schema();
    let errs = errors(&schema, app);
    assert!(errs.is_empty(), "{errs:#?}");

    // Not a check that cannot fail: a typo and a wrong type are refused.
    let mut typo = app.clone();
    typo["spec"]["replicaz"] = Value::from(2);
    assert!(!errors(&schema, &typo).is_empty());
    let mut wrong = app.clone();
    wrong["spec"]["replicas"] = Value::from("two");
    assert!(!errors(&schema, &wrong).is_empty());
    let mut missing = app.clone();
    missing["spec"].as_object_mut().unwrap().remove("image");
    assert!(!errors(&schema, &missing).is_empty());

    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root().join("spin.toml")).unwrap()).unwrap();
    let declared = manifest["variables"].as_table().unwrap();
    let bound: Vec<&Value> = app["spec"]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let secret_name = secret["metadata"]["name"].as_str().unwrap();
    for (name, decl) in declared {
        let is_secret = decl.get("secret").and_then(toml::Value::as_bool) == Some(true);
        let binding = bound.iter().find(|b| b["name"] == name.as_str());
        if name == "policy" {
            // The policy is built in; a run-time policy is optional.
            continue;
        }
        let b = binding.unwrap_or_else(|| panic!("spin.toml variable `{name}` is not bound"));
        if is_secret {
            let r = &b["valueFrom"]["secretKeyRef"];
            assert_eq!(r["name"], secret_name, "`{name}` comes from the Secret");
            assert!(b.get("value").is_none(), "`{name}` is a secret: no literal");
            let key = r["key"].as_str().unwrap();
            assert!(
                secret["stringData"].get(key).is_some(),
                "the Secret has no key `{key}` for `{name}`"
            );
        }
    }
    for b in &bound {
        let name = b["name"].as_str().unwrap();
        assert!(
            declared.contains_key(name),
            "`{name}` is not a spin.toml variable"
        );
    }
}

/// A user's clone has nothing beside it: no file of the project reads outside its own tree
/// (the CRD above is vendored in `tests/fixtures/spinkube`).
#[test]
fn nothing_in_the_project_reads_outside_its_own_tree() {
    let out = std::process::Command::new("git")
        .args(["ls-files"])
        .current_dir(root())
        .output()
        .expect("git lists the project's files");
    let files = String::from_utf8_lossy(&out.stdout);
    let mut offenders = Vec::new();
    let needle = ["..", "/shared"].concat();
    for f in files.lines() {
        let Ok(text) = std::fs::read_to_string(root().join(f)) else {
            continue;
        };
        if text.contains(&needle) {
            offenders.push(f.to_string());
        }
    }
    assert!(files.lines().count() > 100, "git listed the project");
    assert!(
        offenders.is_empty(),
        "these read outside the tree: {offenders:?}"
    );
}

/// deploy/pool-scraper.yaml runs `meridian pool-scrape` on the policy it mounts, writing to the
/// same Redis the SpinApp's key-value store uses (the same Secret key), with arguments the tool
/// takes.
#[test]
fn the_pool_scraper_writes_where_the_spinapp_reads() {
    let docs = yaml_docs(&root().join("deploy/pool-scraper.yaml"));
    let d = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    assert_eq!(d["apiVersion"], "apps/v1");
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "pool-scrape");
    let policy = args[args.iter().position(|a| *a == "--policy").unwrap() + 1];
    // The policy file lies in a mounted ConfigMap.
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| policy.starts_with(m["mountPath"].as_str().unwrap()))
        .expect("the policy's directory is mounted");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert!(volume["configMap"]["name"].is_string());
    // The Redis URL: the Secret key the SpinApp's store reads.
    let spin = yaml_docs(&root().join("deploy/spinkube.yaml"));
    let app = spin.iter().find(|d| d["kind"] == "SpinApp").unwrap();
    let store = &app["spec"]["runtimeConfig"]["keyValueStores"][0]["options"][0]["valueFrom"]
        ["secretKeyRef"];
    let env = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "MERIDIAN_REDIS_URL")
        .expect("MERIDIAN_REDIS_URL, which `meridian pool-scrape --redis` reads");
    assert_eq!(env["valueFrom"]["secretKeyRef"], *store);
    // The arguments are the tool's own: every `--flag` is one `meridian pool-scrape` takes.
    let cli = root().join("cli/src/pools.rs");
    let source = std::fs::read_to_string(cli).unwrap();
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        let field = flag.trim_start_matches("--").replace('-', "_");
        assert!(
            source.contains(&format!("pub {field}:")),
            "`{flag}` is not an argument of `meridian pool-scrape`"
        );
    }
}
