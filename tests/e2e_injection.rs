//! The built-in injection detector inside the component: every text of its corpus, at three
//! alignments against the sixteen-byte chunks it reads, gets the same verdict from the deployed
//! component (where the bytes are classed with WebAssembly's SIMD compares) as from the native
//! detector (where they are classed eight at a time in a `u64`, itself checked against the pass
//! it replaced): the signature in `x-meridian-guards`, or none.

mod support;

use support::{policy_for, Meridian, Mock, Script};

const CORPUS: &str = include_str!("fixtures/injection/corpus.jsonl");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_component_finds_what_the_native_detector_finds() {
    let engine = Mock::start(Script::ok("fine")).await;
    let policy = policy_for(
        &[("local", &engine, "DE", "")],
        "[[guards]]\nid = \"injection\"\nkind = \"injection\"\nwire = \"builtin\"\n\n\
         [[rules]]\nid = \"watch\"\n[[rules.guards]]\nguard = \"injection\"\naction = \"flag\"\nthreshold = 0.01\n",
    );
    let m = Meridian::start_with(Some(&policy), &[]).await;
    let http = reqwest::Client::new();
    let texts: Vec<String> = CORPUS
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .collect();
    assert!(texts.len() > 100, "the corpus");
    let (mut found, mut checked) = (0, 0);
    for text in &texts {
        for shift in [0usize, 5, 11] {
            let shifted = format!("{}{text}", " ".repeat(shift));
            let want = meridian::guard::builtin::scan(&shifted).map(|f| f.signature);
            let body = serde_json::json!({
                "model": "chat-model",
                "messages": [{"role": "user", "content": shifted}],
            });
            let r = http
                .post(m.at("/v1/chat/completions"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let guards = r
                .headers()
                .get("x-meridian-guards")
                .map(|v| v.to_str().unwrap_or_default().to_string())
                .unwrap_or_default();
            assert_eq!(status, 200, "{shifted:?}: {guards}");
            // `injection:flagged:<signature>:<score>`, or `injection:passed`.
            let got = guards
                .strip_prefix("injection:flagged:")
                .and_then(|rest| rest.split(':').next())
                .map(str::to_string);
            assert!(
                got.is_some() || guards == "injection:passed",
                "{shifted:?}: {guards}"
            );
            assert_eq!(got.as_deref(), want, "{shifted:?}: {guards}");
            found += usize::from(want.is_some());
            checked += 1;
        }
    }
    // The corpus has attacks of every signature: most are found, at every alignment.
    assert!(found > checked / 4, "{found} of {checked}");
}
