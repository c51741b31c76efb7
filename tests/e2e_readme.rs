//! The documented client examples (`docs/clients.md`) run verbatim (only the address changed to
//! the test's own) against the policy they name, the embedded default policy, with the default
//! policy's self-hosted engine at 127.0.0.1:11434 played by a mock. If the docs and the product
//! drift apart, this fails. And every relative link in the README and `docs/` leads somewhere.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::{mock::chat_json, Meridian, Mock, Script};

/// The fenced code blocks of `lang` in a document of the repository.
fn blocks(doc: &str, lang: &str) -> Vec<String> {
    let text = std::fs::read_to_string(support::meridian::root().join(doc))
        .unwrap_or_else(|e| panic!("cannot read {doc}: {e}"));
    let fence = format!("```{lang}\n");
    text.split(&fence)
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or_default().to_string())
        .collect()
}

/// The address the documented examples use.
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

    let python = blocks("docs/clients.md", "python");
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

    let js = blocks("docs/clients.md", "js");
    let server = js
        .iter()
        .find(|b| b.starts_with("import OpenAI"))
        .expect("a server-side JavaScript example");
    let path = clients.join(format!(".readme-{}.mjs", std::process::id()));
    std::fs::write(&path, server.replace(README_URL, &m.url)).unwrap();
    let out = run("node", &[path.to_str().unwrap()], &clients).await;
    std::fs::remove_file(&path).ok();
    assert_eq!(out, "Hello from the engine");

    let sh = blocks("docs/clients.md", "sh");
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

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code fences).
fn anchors(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.push(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

/// `(target, line)` of every Markdown link `[text](target)` outside code fences and code spans.
fn links(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Code spans hold examples, not links.
        let plain: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((after[..end].to_string(), n + 1));
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_in_the_readme_and_docs_points_somewhere() {
    let root = support::meridian::root();
    let mut docs = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            docs.push(p);
        }
    }
    assert!(docs.len() >= 8, "the README and the docs by topic");
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for (target, line) in links(&text) {
            if target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            checked += 1;
            let (path, frag) = match target.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                doc.clone()
            } else {
                doc.parent().unwrap().join(path)
            };
            let where_ = format!(
                "{}:{line}: `{target}`",
                doc.strip_prefix(&root).unwrap().display()
            );
            if !file.exists() {
                broken.push(format!("{where_}: no such file"));
                continue;
            }
            if let Some(f) = frag {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                if !anchors(&text).iter().any(|a| a == f) {
                    broken.push(format!("{where_}: no heading with that anchor"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked > 20, "only {checked} links checked");
    // Not a check that cannot fail: a made-up link is found broken.
    assert_eq!(
        links("see [x](nowhere.md#y) and `[a](b)`"),
        vec![("nowhere.md#y".to_string(), 1)]
    );
    assert_eq!(
        anchor("Timing under Spin: Nagle's algorithm and delayed ACKs"),
        "timing-under-spin-nagles-algorithm-and-delayed-acks"
    );
}
