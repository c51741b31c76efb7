//! The layers of `src/` (docs/architecture.md draws them): data at the bottom, the stages in the
//! order a request meets them, the API above them, adapters and tools outermost. Every import
//! of another top-level module (`crate::x`, or `super::x` leaving a folder) must point to the
//! same layer or one below, and none may close a circle; every module must have a layer.
//! Test code (`tests.rs`, `tests/` folders, `#[cfg(test)] mod … { … }` blocks) is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom first.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "data",
        &[
            "calendar",
            "error",
            "headers",
            "json",
            "location",
            "request",
            "responses",
            "sse",
            "trace",
            "transport",
            "usage",
        ],
    ),
    ("facts", &["auth", "facts", "guard", "pii", "wire"]),
    ("decide", &["decide"]),
    ("limits", &["limits", "pool"]),
    ("forward", &["forward"]),
    ("audit", &["audit", "receipt"]),
    ("api", &["api", "routes"]),
    (
        "adapters and tools",
        &[
            "arena",
            "cases",
            "fuzz",
            "impact",
            "otel",
            "replay",
            "runtime",
            "spin_adapter",
            "testing",
        ],
    ),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

/// The text with `#[cfg(test)] mod name { … }` blocks and line comments removed.
fn without_tests(text: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        let after = &rest[at + MARK.len()..];
        let item = after.trim_start();
        let brace = item.find('{');
        let block =
            item.starts_with("mod ") && brace.is_some_and(|b| item.find(';').is_none_or(|s| b < s));
        out.push_str(&rest[..at]);
        if !block {
            rest = after;
            continue;
        }
        let open = at + MARK.len() + (after.len() - item.len()) + brace.unwrap_or(0);
        let mut depth = 0usize;
        let mut end = rest.len();
        for (i, c) in rest[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Identifiers that follow `prefix` in `text` (`crate::` → the module named after it), and the
/// items of `crate::{a, b::c}` groups.
fn named_after(text: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let body = &group[..group.find('}').unwrap_or(0)];
            for item in body.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

fn walk(dir: &Path, src: &Path, edges: &mut BTreeMap<String, BTreeSet<String>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if name != "tests" && name != "fixtures" {
                walk(&path, src, edges);
            }
            continue;
        }
        if !name.ends_with(".rs") || name == "tests.rs" {
            continue;
        }
        let rel = path.strip_prefix(src).unwrap();
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect();
        if parts.len() == 1 && (name == "lib.rs" || name == "main.rs") {
            continue;
        }
        let me = parts[0].trim_end_matches(".rs").to_string();
        let text = without_tests(&std::fs::read_to_string(&path).unwrap());
        let mut targets: Vec<String> = named_after(&text, "crate::");
        // `super::` that leaves the top-level module: as many `super::` as the file is deep.
        let depth = parts.len() - 1 - usize::from(name == "mod.rs");
        targets.extend(named_after(&text, &"super::".repeat(depth + 1)));
        let set = edges.entry(me.clone()).or_default();
        for t in targets {
            if t != me {
                set.insert(t);
            }
        }
    }
}

#[test]
fn every_import_points_down_a_layer_or_across_and_none_closes_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    walk(&src, &src, &mut edges);
    let modules: BTreeSet<String> = edges.keys().cloned().collect();
    let mut problems = Vec::new();
    for m in &modules {
        if layer_of(m).is_none() {
            problems.push(format!(
                "`{m}` has no layer: add it to LAYERS (tests/layers.rs) and docs/architecture.md"
            ));
        }
    }
    for (from, tos) in &edges {
        let Some(lf) = layer_of(from) else { continue };
        for to in tos.iter().filter(|t| modules.contains(*t)) {
            let Some(lt) = layer_of(to) else { continue };
            if lt > lf {
                problems.push(format!(
                    "`{from}` ({}) imports `{to}` ({}), a layer above it",
                    LAYERS[lf].0, LAYERS[lt].0
                ));
            }
        }
    }
    // Circles within a layer: depth-first search over the same-layer edges.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        problems: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == m) {
            problems.push(format!("a circle: {} → {m}", path[i..].join(" → ")));
            return;
        }
        if !done.insert(m.to_string()) {
            return;
        }
        path.push(m.to_string());
        for to in edges.get(m).into_iter().flatten() {
            if edges.contains_key(to) {
                visit(to, edges, path, done, problems);
            }
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for m in &modules {
        visit(m, &edges, &mut Vec::new(), &mut done, &mut problems);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The test sees the imports it is about (a broken reader would pass vacuously).
    assert!(edges["forward"].contains("decide"), "{edges:?}");
    assert!(edges["api"].contains("audit"), "{edges:?}");
    assert!(modules.len() >= 25, "{modules:?}");
}

/// The layers the test keeps are the ones docs/architecture.md draws.
#[test]
fn the_architecture_doc_names_every_layer_and_module() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md"))
            .unwrap();
    for (layer, modules) in LAYERS {
        assert!(
            doc.contains(&format!("**{layer}**")),
            "docs/architecture.md lacks the layer `{layer}`"
        );
        for m in *modules {
            assert!(
                doc.contains(&format!("`{m}`")),
                "docs/architecture.md lacks `{m}` ({layer})"
            );
        }
    }
}

/// Every source file is a module of the crate: a file no `mod` declares is never compiled, and
/// a test in it never runs.
#[test]
fn every_source_file_is_declared_as_a_module() {
    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "fixtures") {
                    files(&p, out);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut missing = Vec::new();
    for f in &all {
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        let dir = f.parent().unwrap();
        if dir == src && (name == "lib" || name == "main") {
            continue;
        }
        // The module's name, and the file that must declare it.
        // A folder's module file: `x/mod.rs`, or `x.rs` beside the folder; the crate's, lib.rs.
        let module_file = |d: &Path| {
            if d == src {
                src.join("lib.rs")
            } else if d.with_extension("rs").exists() {
                d.with_extension("rs")
            } else {
                d.join("mod.rs")
            }
        };
        let (module, parent) = if name == "mod" {
            let module = dir.file_name().unwrap().to_string_lossy().to_string();
            (module, module_file(dir.parent().unwrap()))
        } else {
            (name, module_file(dir))
        };
        let text = std::fs::read_to_string(&parent).unwrap_or_default();
        let declared = [";", " {"]
            .iter()
            .any(|end| text.contains(&format!("mod {module}{end}")));
        if !declared {
            missing.push(format!(
                "{} (no `mod {module}` in {})",
                f.display(),
                parent.display()
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "files no module declares:\n{}",
        missing.join("\n")
    );
    assert!(all.len() > 50, "{all:?}");
}
