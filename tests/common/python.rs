//! Real clients written in Python (`tests/xmpp_clients/`, `tests/nchan_clients/`): the
//! interpreter, whether it has a client library, and a bounded run of a check script that
//! prints one `ok …` line per check and `OK` at the end.
//!
//! The Python is `TIDINGS_PYTHON` (`.ci/run` makes a virtualenv with the libraries and sets
//! it), else `python3`.

#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::Duration;

/// The interpreter that runs the check scripts.
pub fn python() -> String {
    std::env::var("TIDINGS_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Whether `python()` can `import module`. When it cannot, `test` is skipped (this says so)
/// unless the variable `required_var` is `1` (as `.ci/run` sets it): then this panics.
pub fn has_module(module: &str, required_var: &str, test: &str) -> bool {
    let ok = Command::new(python())
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let required = std::env::var(required_var).is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{required_var}=1 but {module} cannot be imported by {}",
            python()
        );
        eprintln!(
            "SKIPPED {test}: {module} is not installed for {} (.ci/run installs it)",
            python()
        );
    }
    ok
}

/// Runs `script` (relative to the crate) with `args`, killed past `limit`; asserts that it
/// succeeded, printed `OK` and every line of `lines`. Returns its standard output.
pub fn run_check(script: &str, args: &[&str], limit: Duration, lines: &[&str]) -> String {
    let path = format!("{}/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(python())
        .arg(&path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let done = super::wait_for(limit, || child.try_wait().ok().flatten().is_some());
    if !done {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("the script's output");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "OK"),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    for line in lines {
        assert!(
            stdout.lines().any(|l| l == *line),
            "missing {line:?} in:\n{stdout}"
        );
    }
    stdout
}
