//! The README's client examples run verbatim (only the address changed to the test's own) against
//! the policy they name, the embedded default policy, with the default policy's self-hosted
//! engine at 127.0.0.1:11434 played by a mock. If the README and the product drift apart, this
//! fails.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::{mock::chat_json, Meridian, Mock, Script};

/// The fenced code blocks of `lang` in the README section that starts with `heading`.
fn blocks(heading: &str, lang: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(support::meridian::root().join("README.md")).unwrap();
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("README has no section `{heading}`"));
    let fence = format!("```{lang}\n");
    section
        .split(&fence)
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or_default().to_string())
        .collect()
}

/// The address the README's examples use.
const README_URL: &str = "http://127.0.0.1:3000";

async fn run(program: &str, args: &[&str], dir: &std::path::Path) -> String {
    let child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): run ./scripts/setup"));
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} did not finish within 120 s"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn readme_client_examples_run_verbatim_against_the_default_policy() {
    let engine = Mock::with_at("127.0.0.1:11434", |r, _| {
        if r.body["stream"] == true {
            Script::stream(&["Hello", " from", " the engine"])
        } else {
            Script::Json {
                status: 200,
                body: chat_json("Hello from the engine"),
                headers: vec![],
            }
        }
    })
    .await
    .expect("127.0.0.1:11434 is taken (a local Ollama?): stop it to run this test");
    let m = Meridian::default_policy(&[]).await;
    let clients = support::clients::dir();

    let python = blocks("Calling Meridian", "python");
    assert_eq!(
        python.len(),
        2,
        "the OpenAI and the Anthropic Python examples"
    );
    let script = python[0].replace(README_URL, &m.url);
    let py = support::clients::python();
    let out = run(&py, &["-c", &script], &clients).await;
    assert_eq!(out, "local Hello from the engine\nHello from the engine");
    // Anthropic's SDK, against the same engine through the translated wire.
    let script = python[1].replace(README_URL, &m.url);
    let out = run(&py, &["-c", &script], &clients).await;
    assert_eq!(out, "Hello from the engine\nHello from the engine");

    let js = blocks("Calling Meridian", "js");
    let server = js
        .iter()
        .find(|b| b.starts_with("import OpenAI"))
        .expect("a server-side JavaScript example");
    let path = clients.join(format!(".readme-{}.mjs", std::process::id()));
    std::fs::write(&path, server.replace(README_URL, &m.url)).unwrap();
    let out = run("node", &[path.to_str().unwrap()], &clients).await;
    std::fs::remove_file(&path).ok();
    assert_eq!(out, "Hello from the engine");

    let sh = blocks("Calling Meridian", "sh");
    assert_eq!(sh.len(), 1, "one curl example");
    let out = run(
        "bash",
        &["-c", &sh[0].replace(README_URL, &m.url)],
        &clients,
    )
    .await;
    assert!(out.contains("x-meridian-provider: local"), "{out}");
    assert!(out.contains("x-meridian-tenant: anonymous"), "{out}");
    assert!(out.contains("data: [DONE]"), "{out}");
    // Every request reached the engine under its own model name; none went to a paid provider.
    let seen = engine.requests();
    assert!(seen.len() >= 6, "{}", seen.len());
    assert!(seen.iter().all(|r| r.body["model"] == "llama3.1:8b"));
}
