//! The client scripts in tests/clients (official SDKs, a browser page), run as a user runs them.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// tests/clients, where the scripts and their installed SDKs live.
pub fn dir() -> PathBuf {
    super::meridian::root().join("tests/clients")
}

/// The Python with the SDKs (`./scripts/setup` makes the venv); `MERIDIAN_PYTHON` overrides it.
pub fn python() -> String {
    std::env::var("MERIDIAN_PYTHON").unwrap_or_else(|_| {
        dir()
            .join(".venv/bin/python")
            .to_string_lossy()
            .into_owned()
    })
}

/// Runs a client script (bounded in time) and fails the test with its output if it fails.
pub async fn run<V: AsRef<std::ffi::OsStr>>(program: &str, script: &str, env: &[(&str, V)]) {
    run_capture(program, script, env).await;
}

/// As [`run`], and gives what the script printed.
#[allow(dead_code)]
pub async fn run_capture<V: AsRef<std::ffi::OsStr>>(
    program: &str,
    script: &str,
    env: &[(&str, V)],
) -> String {
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(script)
        .current_dir(dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run {program} {script} ({e}): run ./scripts/setup, which installs the test clients")
    });
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 180 s"))
        .expect("wait for the client script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}
