//! deploy/: alert rules checked and unit-tested with promtool, manifests validated against the
//! Kubernetes schema (kubernetes-validate), the PrometheusRule in sync with the rules file, a
//! runbook section per alert, and every metric the alerts and the dashboard use present in a
//! running observer's real `/metrics`. Host only: the VM guests have no promtool or Python.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use integration_tests::{CHILD_TIMEOUT, Observer, output_within};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

fn run(cmd: &mut Command) -> Output {
    output_within(cmd, CHILD_TIMEOUT)
}

fn ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn python() -> Command {
    let mut c = Command::new("python3");
    c.env("PYTHONPATH", root().join(".tools/py"));
    c
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: deploy files and tools (promtool, python), not the kernel"
)]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let rules = deploy().join("alerts/fsobserver-rules.yml");
    let out = ok(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules));
    assert!(out.contains("SUCCESS: 13 rules found"), "{out}");
    let out = ok(Command::new("promtool")
        .args(["test", "rules", "fsobserver-rules.test.yml"])
        .current_dir(deploy().join("alerts")));
    assert!(out.contains("SUCCESS"), "{out}");
    // The unit tests cover every alert, firing and not firing.
    let tests = std::fs::read_to_string(deploy().join("alerts/fsobserver-rules.test.yml")).unwrap();
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    for alert in rules_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        let cases: Vec<&str> = tests
            .split(&format!("alertname: {alert}\n"))
            .skip(1)
            .collect();
        assert!(!cases.is_empty(), "no unit test for {alert}");
        assert!(
            cases
                .iter()
                .any(|c| c.trim_start().starts_with("exp_alerts: []")),
            "{alert} never tested not firing"
        );
        assert!(
            cases
                .iter()
                .any(|c| c.trim_start().starts_with("exp_alerts:\n")),
            "{alert} never tested firing"
        );
    }
    // The Operator's copy says the same, and every alert has its runbook section.
    ok(python().arg(deploy().join("check.py")).arg("sync"));
    ok(python().arg(deploy().join("check.py")).arg("runbook"));
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: deploy files and tools (promtool, python), not the kernel"
)]
fn manifests_validate_against_the_kubernetes_schema() {
    let dir = deploy().join("kubernetes");
    let core: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let t = std::fs::read_to_string(p).unwrap();
            !t.contains("apiVersion: monitoring.coreos.com/")
        })
        .collect();
    assert!(core.len() >= 6, "{core:?}");
    let out = ok(python()
        .args(["-m", "kubernetes_validate", "--strict", "-k", "1.30.0"])
        .args(&core));
    assert_eq!(
        out.matches(" passed for resource ").count(),
        core.len(),
        "{out}"
    );
    // The validator is not a no-op: a misspelt field fails it.
    let bad_dir = tempfile::tempdir().unwrap();
    let bad = bad_dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(dir.join("daemonset-least-privilege.yaml")).unwrap();
    std::fs::write(
        &bad,
        text.replace("readOnlyRootFilesystem", "readOnlyRootFilesytem"),
    )
    .unwrap();
    let o = run(python()
        .args(["-m", "kubernetes_validate", "--strict", "-k", "1.30.0"])
        .arg(&bad));
    assert!(!o.status.success(), "a misspelt field passed validation");
    // Both DaemonSet variants carry the documented security settings.
    let least = std::fs::read_to_string(dir.join("daemonset-least-privilege.yaml")).unwrap();
    for needle in [
        "drop: [\"ALL\"]",
        "- BPF",
        "- PERFMON",
        "- SYS_PTRACE",
        "- DAC_READ_SEARCH",
        "readOnlyRootFilesystem: true",
        "hostPID: true",
    ] {
        assert!(
            least.contains(needle),
            "least-privilege DaemonSet lacks {needle}"
        );
    }
    assert!(!least.contains("privileged: true"));
    let privileged = std::fs::read_to_string(dir.join("daemonset-privileged.yaml")).unwrap();
    assert!(privileged.contains("privileged: true"));
    for needle in [
        "/sys/kernel/btf",
        "/sys/kernel/tracing",
        "/sys/fs/bpf",
        "/var/log/pods",
    ] {
        assert!(
            least.contains(needle) && privileged.contains(needle),
            "{needle} not mounted"
        );
    }
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: deploy files and tools (promtool, python), not the kernel"
)]
fn every_metric_in_the_alerts_and_dashboard_is_in_real_metrics() {
    let names = ok(python().arg(deploy().join("check.py")).arg("metrics"));
    let names: Vec<&str> = names.lines().filter(|n| *n != "up").collect();
    assert!(names.len() >= 10, "{names:?}");
    // The shipped ConfigMap's settings, against the real observer's exposition.
    // Purge enabled with one policy, so its series are exposed too.
    let root = tempfile::tempdir().unwrap();
    let policy = format!(
        "purge.policies=[{{name = \"p\", root = \"{}\", match = [\"w/*\"], min_age_secs = 3600}}]",
        root.path().display()
    );
    let obs = Observer::start(&[
        "--watch-mount",
        "/",
        "--create-sample",
        "16",
        "--set",
        "purge.enabled=true",
        "--set",
        &policy,
    ]);
    let text = obs.metrics();
    let exposed: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let mut it = rest.split_whitespace();
                let (name, kind) = (it.next()?, it.next()?);
                return Some(if kind == "counter" {
                    format!("{name}_total")
                } else {
                    name.to_string()
                });
            }
            None
        })
        .collect();
    let missing: Vec<&&str> = names.iter().filter(|n| !exposed.contains(**n)).collect();
    assert!(
        missing.is_empty(),
        "used by alerts/dashboard but not exposed: {missing:?}\n{text}"
    );
    // docs/metrics.md documents exactly the series the observer exposes (its first column,
    // several names to a row where they share labels).
    let doc = std::fs::read_to_string(deploy().join("../docs/metrics.md")).unwrap();
    let documented: std::collections::BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .flat_map(|l| {
            l.split(" |")
                .next()
                .unwrap_or("")
                .split(", ")
                .map(|n| n.trim_matches('`').to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let undocumented: Vec<_> = exposed.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&exposed).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "docs/metrics.md: not documented {undocumented:?}, documented but not exposed {stale:?}"
    );
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: deploy files and tools (promtool, python), not the kernel"
)]
fn the_image_builds_the_binary_cargo_xtask_builds() {
    let docker = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    // The builder stage runs the project's own build command and copies its output.
    assert!(docker.contains("RUN cargo xtask build"), "{docker}");
    assert!(docker.contains("cp target/release/observer /observer"));
    assert!(docker.contains("COPY --from=build /observer /usr/local/bin/observer"));
    let xtask = std::fs::read_to_string(root().join("xtask/src/cargo.rs")).unwrap();
    assert!(
        xtask.contains("root.join(\"target/release/observer\")"),
        "cargo xtask build output moved"
    );
    // The toolchain pieces the README's first command installs are installed in the image too.
    assert!(docker.contains("rustup component add rust-src --toolchain nightly"));
    let rust = docker
        .lines()
        .find(|l| l.starts_with("FROM rust:"))
        .unwrap();
    let msrv = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let version = rust
        .trim_start_matches("FROM rust:")
        .split('-')
        .next()
        .unwrap();
    assert!(
        msrv.contains(&format!("rust-version = \"{version}\"")),
        "{rust} vs workspace rust-version"
    );
}
