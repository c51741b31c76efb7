//! Each wire's requests and answers, against fixtures shaped as the real APIs (`fixtures/`,
//! their sources in its README).

use super::*;
use crate::policy::{self, Policy};

const POLICY: &str = r#"
version = 1
[[providers]]
id = "p"
base_url = "https://p.example/v1"
location = "DE"
models = { "m" = "m" }
[[guards]]
id = "omod"
kind = "moderation"
wire = "openai_moderation"
url = "https://api.openai.com/v1/"
model = "omni-moderation-latest"
key_secret = "openai_key"
location = "US"
[[guards]]
id = "lg"
kind = "moderation"
wire = "llama_guard"
url = "http://guard.internal:8000/v1"
model = "meta-llama/Llama-Guard-3-8B"
location = "DE"
self_hosted = true
[[guards]]
id = "pg"
kind = "injection"
wire = "http_classifier"
url = "http://guard.internal:8001/predict"
location = "DE"
labels = ["INJECTION", "JAILBREAK"]
[[rules]]
id = "all"
[[rules.guards]]
guard = "omod"
[[rules.guards]]
guard = "lg"
[[rules.guards]]
guard = "pg"
[[rules.guards]]
guard = "omod"
labels = ["hate"]
threshold = 0.0005
"#;

fn policy() -> Policy {
    policy::load(POLICY, "t").unwrap_or_else(|e| panic!("{e}"))
}

fn fixture(name: &str) -> &'static [u8] {
    match name {
        "omod" => include_bytes!("fixtures/openai_moderation.json"),
        "lg" => include_bytes!("fixtures/llama_guard.json"),
        _ => include_bytes!("fixtures/http_classifier.json"),
    }
}

#[test]
fn each_wire_asks_in_its_api_shape() {
    let p = policy();
    let g = |i: u32| p.guards.get(i).unwrap();
    let r = request(g(0), Some("sk-x"), "hello", GuardOn::Input);
    assert_eq!(r.url, "https://api.openai.com/v1/moderations");
    assert_eq!(r.header("authorization"), Some("Bearer sk-x"));
    let b: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        b,
        json!({"input": "hello", "model": "omni-moderation-latest"})
    );

    let r = request(g(1), None, "answer", GuardOn::Output);
    assert_eq!(r.url, "http://guard.internal:8000/v1/chat/completions");
    assert_eq!(r.header("authorization"), None);
    let b: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(b["model"], "meta-llama/Llama-Guard-3-8B");
    assert_eq!(
        b["messages"][1],
        json!({"role": "assistant", "content": "answer"})
    );

    let r = request(g(2), None, "hello", GuardOn::Input);
    assert_eq!(r.url, "http://guard.internal:8001/predict");
    let b: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        b,
        json!({"input": "hello", "kind": "injection", "on": "input"})
    );
}

#[test]
fn each_wires_answer_reads_and_hits_as_the_use_says() {
    let p = policy();
    let uses = &p.guards.uses;
    let g = |u: &GuardUse| p.guards.get(u.guard).unwrap();

    // OpenAI: every category with its score; the API's own flag decides without a threshold.
    let omod = labels(g(&uses[0]), fixture("omod")).unwrap();
    assert_eq!(omod.len(), 13);
    let h = hit(g(&uses[0]), &uses[0], &omod).unwrap();
    assert_eq!((h.name.as_str(), h.score), ("violence", 0.8612));
    // A use that counts only `hate`, at its own threshold.
    let h = hit(g(&uses[3]), &uses[3], &omod).unwrap();
    assert_eq!((h.name.as_str(), h.score), ("hate", 0.0009));

    // Llama Guard: `unsafe` and its categories.
    let lg = labels(g(&uses[1]), fixture("lg")).unwrap();
    let names: Vec<&str> = lg.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["S1", "S10"]);
    assert!(hit(g(&uses[1]), &uses[1], &lg).is_some());
    let safe = br#"{"choices":[{"message":{"role":"assistant","content":"safe"}}]}"#;
    assert!(labels(g(&uses[1]), safe).unwrap().is_empty());
    let odd = br#"{"choices":[{"message":{"role":"assistant","content":"maybe"}}]}"#;
    assert!(labels(g(&uses[1]), odd).is_err());

    // A classifier: its labels, in any of the three shapes.
    let pg = labels(g(&uses[2]), fixture("pg")).unwrap();
    let h = hit(g(&uses[2]), &uses[2], &pg).unwrap();
    assert_eq!(h.name, "INJECTION");
    let nested = br#"[[{"label":"BENIGN","score":0.97},{"label":"INJECTION","score":0.03}]]"#;
    assert!(hit(g(&uses[2]), &uses[2], &labels(g(&uses[2]), nested).unwrap()).is_none());
    let wrapped = br#"{"labels":[{"label":"JAILBREAK","score":0.7}]}"#;
    assert_eq!(
        hit(
            g(&uses[2]),
            &uses[2],
            &labels(g(&uses[2]), wrapped).unwrap()
        )
        .map(|l| l.name.as_str()),
        Some("JAILBREAK")
    );
    assert!(labels(g(&uses[2]), b"not json").is_err());
    assert!(labels(g(&uses[2]), br#"{"x":1}"#).is_err());
}

#[test]
fn mistakes_in_guards_are_explained_with_their_place() {
    let bad = r#"
version = 1
[[providers]]
id = "p"
base_url = "https://p.example/v1"
location = "DE"
models = { "m" = "m" }
[[guards]]
id = "b"
kind = "moderation"
wire = "builtin"
location = "US"
[[guards]]
id = "c"
kind = "classifier"
wire = "http_classifier"
url = "http://c.example/x"
location = "EU"
[[rules]]
id = "r"
[[rules.guards]]
guard = "nope"
[[rules.guards]]
guard = "c"
action = "route"
[[rules.guards]]
guard = "c"
on = "output"
before_send = true
threshold = 2
"#;
    let e = policy::load(bad, "bad.toml").unwrap_err().to_string();
    for says in [
        "the built-in guard detects prompt injection only",
        "`location` applies to external guards only",
        "needs `labels`",
        "`guard` names `nope`, which is not a `[[guards]]` id",
        "`action = \"route\"` needs `route`",
        "`before_send` applies to input guards only",
        "`threshold` is a score from 0 to 1",
        "bad.toml:",
    ] {
        assert!(e.contains(says), "missing {says:?} in:\n{e}");
    }
}

#[test]
fn a_compiled_policy_keeps_its_guards_and_an_older_form_reads_without_them() {
    let p = policy();
    let text = crate::policy::compiled::compile(&p);
    let back = crate::policy::compiled::load_compiled(&text).unwrap();
    assert_eq!(
        serde_json::to_value(&back.guards).unwrap(),
        serde_json::to_value(&p.guards).unwrap()
    );
    assert_eq!(back.guards.uses.len(), 4);
}

/// The corpus's cases: (text, is an attack, stood in a tool's output).
fn corpus() -> Vec<(String, bool, bool)> {
    include_str!("../../tests/fixtures/injection/corpus.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["text"].as_str().unwrap().to_string(),
                v["injection"].as_bool().unwrap(),
                v["where"] == "tool",
            )
        })
        .collect()
}

#[test]
fn the_corpus_finds_every_signature_class_it_documents() {
    // The oracle is the corpus's own labels: every attack of a documented signature is found,
    // and no benign case is.
    for line in include_str!("../../tests/fixtures/injection/corpus.jsonl").lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let text = v["text"].as_str().unwrap();
        let found = builtin::scan(text);
        match (v["injection"].as_bool().unwrap(), v["signature"].as_str()) {
            (true, Some("other")) => {}
            (true, Some(sig)) => assert_eq!(found.map(|f| f.signature), Some(sig), "{text}"),
            _ => assert_eq!(found, None, "a benign case was flagged: {text}"),
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Benign prompts from the corpus, alone or several in one conversation, in any order and
    /// case, as the user's turn or a tool's output, are never refused by the built-in guard.
    #[test]
    fn benign_prompts_are_never_refused(
        picks in proptest::collection::vec(0usize..1000, 1..6),
        upper in proptest::bool::ANY,
        tool in proptest::bool::ANY,
    ) {
        let benign: Vec<String> = corpus().into_iter().filter(|c| !c.1).map(|c| c.0).collect();
        let mut d = builtin::Detector::new();
        for p in &picks {
            let mut text = benign[p % benign.len()].clone();
            if upper {
                text = text.to_uppercase();
            }
            d.scan(&text, tool);
        }
        // Joined into one text at sentence breaks, as a long message would hold them.
        let joined: Vec<String> = picks.iter().map(|p| benign[p % benign.len()].clone()).collect();
        d.scan(&joined.join("\n"), tool);
        let p = policy_with_builtin();
        let usage = &p.guards.uses[0];
        let g = p.guards.get(usage.guard).unwrap();
        let labels: Vec<Label> = d
            .finding()
            .map(|f| Label { name: f.signature.into(), score: f.score, flagged: true })
            .into_iter()
            .collect();
        proptest::prop_assert!(hit(g, usage, &labels).is_none(), "refused: {:?}", d.finding());
    }
}

fn policy_with_builtin() -> Policy {
    policy::load(
        "version = 1\n[[providers]]\nid = \"p\"\nbase_url = \"https://p.example/v1\"\nlocation = \"DE\"\nmodels = { \"m\" = \"m\" }\n\
         [[guards]]\nid = \"inj\"\nkind = \"injection\"\nwire = \"builtin\"\n[[rules]]\nid = \"r\"\n[[rules.guards]]\nguard = \"inj\"\n",
        "t",
    )
    .unwrap()
}
