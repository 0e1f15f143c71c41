//! The operators' files under deploy/ and docker-compose.yml, checked with the real tools
//! (promtool, kubectl kustomize, kubernetes-validate, checkov, docker-compose config), installed by
//! xtask itself: Debian's `prometheus`, `kubernetes-client` and `docker-compose` with apt-get when
//! missing, kubernetes-validate and checkov (pinned) into a throwaway venv under `target/`; and
//! that every file a process is pointed at (`*_FILE`) is mounted where the process looks.
//! This machine cannot pull or run the images; everything else an operator deploys is checked.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::devstack;

/// kubernetes-validate ships the API schemas of Kubernetes up to this release line.
pub const KUBERNETES_VALIDATE_VERSION: &str = "1.31.0";
/// A new checkov release brings new checks: they should arrive by a change of this line.
pub const CHECKOV_VERSION: &str = "3.3.30";

/// Kinds from CRDs (cert-manager, Prometheus Operator) that kubernetes-validate has no schema
/// for; any other object without a schema fails the check.
const CRD_KINDS: [&str; 4] = ["Certificate", "Issuer", "PrometheusRule", "ServiceMonitor"];

const OVERLAYS: [&str; 2] = ["dev", "prod"];

/// Runs every check; the first failure stops with the tool's own output.
pub fn run() -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let work = root.join("target").join("deploy-checks");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    scripts(&root)?;
    prometheus(&root)?;
    prometheus_rule_in_sync(&root)?;
    let rendered = kubernetes(&work)?;
    let venv = python_tools(&work)?;
    validate(&venv, &root, &rendered)?;
    policies(&venv, &root, &rendered)?;
    compose(&root)?;
    mounted(&root, &rendered)?;
    eprintln!("xtask: deploy/ and docker-compose.yml pass promtool, kubernetes-validate, checkov and docker-compose");
    Ok(())
}

fn checked(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{what} failed ({}):\n{}", out.status, text.trim());
    }
    Ok(text)
}

fn scripts(root: &Path) -> anyhow::Result<()> {
    for script in [
        "deploy/dev-secrets.sh",
        "deploy/postgres/init.sh",
        "deploy/k8s/sync-rules.sh",
        "deploy/scripts/backup.sh",
        "deploy/scripts/restore.sh",
        "deploy/scripts/archive-wal.sh",
        "deploy/scripts/basebackup.sh",
        "deploy/scripts/pitr-restore.sh",
        "deploy/scripts/lib.sh",
    ] {
        checked(
            Command::new("sh").arg("-n").arg(root.join(script)),
            &format!("sh -n {script}"),
        )?;
    }
    Ok(())
}

fn prometheus(root: &Path) -> anyhow::Result<()> {
    let promtool = devstack::program_or_install("promtool", "prometheus")?;
    let dir = root.join("deploy").join("prometheus");
    for (what, file) in [("config", "prometheus.yml"), ("rules", "alerts.yml")] {
        checked(
            Command::new(&promtool).args(["check", what, file]).current_dir(&dir),
            &format!("promtool check {what} deploy/prometheus/{file}"),
        )?;
    }
    let mut tests: Vec<String> = fs::read_dir(dir.join("tests"))
        .context("reading deploy/prometheus/tests")?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .filter_map(|p| Some(format!("tests/{}", p.file_name()?.to_str()?)))
        .collect();
    tests.sort();
    anyhow::ensure!(!tests.is_empty(), "deploy/prometheus/tests has no rule tests");
    checked(
        Command::new(&promtool)
            .args(["test", "rules"])
            .args(&tests)
            .current_dir(&dir),
        "promtool test rules deploy/prometheus/tests/*.yml",
    )?;
    let alerts = fs::read_to_string(dir.join("alerts.yml"))?;
    let untested: Vec<String> = alert_names(&alerts)
        .into_iter()
        .filter(|name| {
            !tests.iter().any(|t| {
                fs::read_to_string(dir.join(t)).is_ok_and(|text| text.contains(&format!("alertname: {name}\n")))
            })
        })
        .collect();
    anyhow::ensure!(
        untested.is_empty(),
        "alerts without a promtool unit test in deploy/prometheus/tests: {}",
        untested.join(", ")
    );
    Ok(())
}

/// The `alert:` names of a rules file.
pub fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("- alert:")
                .or_else(|| l.trim().strip_prefix("alert:"))
        })
        .map(|n| n.trim().to_owned())
        .collect()
}

/// The PrometheusRule that `deploy/k8s/sync-rules.sh` writes from `alerts` (the rules file).
pub fn prometheus_rule(alerts: &str) -> String {
    let mut out = String::from(
        "# Generated by deploy/k8s/sync-rules.sh from deploy/prometheus/alerts.yml: edit that file.\n\
         apiVersion: monitoring.coreos.com/v1\n\
         kind: PrometheusRule\n\
         metadata:\n  name: platform-alerts\n  labels:\n    app.kubernetes.io/part-of: platform\n\
         spec:\n",
    );
    for line in alerts.lines().filter(|l| !l.starts_with('#')) {
        if !line.is_empty() {
            out.push_str("  ");
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

fn prometheus_rule_in_sync(root: &Path) -> anyhow::Result<()> {
    let alerts = fs::read_to_string(root.join("deploy/prometheus/alerts.yml"))?;
    let rule = fs::read_to_string(root.join("deploy/k8s/base/prometheusrule.yaml"))?;
    anyhow::ensure!(
        rule == prometheus_rule(&alerts),
        "deploy/k8s/base/prometheusrule.yaml differs from deploy/prometheus/alerts.yml: run deploy/k8s/sync-rules.sh"
    );
    Ok(())
}

/// `kubectl kustomize` of each overlay, written to `work/rendered/{overlay}.yaml`.
fn kubernetes(work: &Path) -> anyhow::Result<PathBuf> {
    let rendered = work.join("rendered");
    if rendered.exists() {
        fs::remove_dir_all(&rendered)?;
    }
    fs::create_dir_all(&rendered)?;
    for overlay in OVERLAYS {
        fs::write(rendered.join(format!("{overlay}.yaml")), render_overlay(overlay)?)?;
    }
    Ok(rendered)
}

/// The venv with the pinned kubernetes-validate and checkov, made once per pair of versions.
fn python_tools(work: &Path) -> anyhow::Result<PathBuf> {
    let lock = fs::File::create(work.join(".lock")).context("creating the deploy-checks lock file")?;
    lock.lock().context("locking the deploy-checks environment")?;
    let venv = work.join(format!("venv-{KUBERNETES_VALIDATE_VERSION}-{CHECKOV_VERSION}"));
    let marker = venv.join(".installed");
    if marker.is_file() {
        return Ok(venv);
    }
    if venv.exists() {
        fs::remove_dir_all(&venv).with_context(|| format!("removing the unfinished {}", venv.display()))?;
    }
    let python = devstack::find_program("python3").context(
        "python3 is not installed: the deploy checks need it (Debian: `apt-get install python3 python3-venv`)",
    )?;
    eprintln!(
        "xtask: installing kubernetes-validate {KUBERNETES_VALIDATE_VERSION} and checkov {CHECKOV_VERSION} into {}",
        venv.display()
    );
    let made = Command::new(&python).args(["-m", "venv"]).arg(&venv).output()?;
    if !made.status.success() {
        // Debian ships `venv` without `ensurepip` in a package of its own.
        let _ = fs::remove_dir_all(&venv);
        devstack::install_package("python3-venv", "python3 -m venv")?;
        devstack::run(Command::new(&python).args(["-m", "venv"]).arg(&venv), "python3 -m venv")?;
    }
    devstack::output(
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"),
            &format!("checkov=={CHECKOV_VERSION}"),
        ]),
        "pip install kubernetes-validate checkov (is PyPI reachable?)",
    )?;
    fs::write(&marker, format!("{KUBERNETES_VALIDATE_VERSION} {CHECKOV_VERSION}"))?;
    Ok(venv)
}

/// Every rendered object, and the example Secrets, against the Kubernetes API schemas (strict:
/// an unknown field fails). Only the CRD kinds may lack a schema.
fn validate(venv: &Path, root: &Path, rendered: &Path) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = OVERLAYS.iter().map(|o| rendered.join(format!("{o}.yaml"))).collect();
    files.push(root.join("deploy/k8s/examples/secrets.example.yaml"));
    let out = checked(
        Command::new(venv.join("bin/kubernetes-validate"))
            .args(["--strict", "--quiet"])
            .args(&files),
        "kubernetes-validate --strict",
    )?;
    let unexpected = unexpected_validation_lines(&out);
    anyhow::ensure!(unexpected.is_empty(), "kubernetes-validate:\n{}", unexpected.join("\n"));
    Ok(())
}

/// Lines of kubernetes-validate's output other than "no schema" for a CRD kind.
pub fn unexpected_validation_lines(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            !CRD_KINDS
                .iter()
                .any(|k| l.contains(&format!("Couldn't find schema for kind {k} with api version")))
        })
        .collect()
}

/// checkov on the rendered manifests and the Dockerfiles; a check may be skipped only by an
/// annotation that gives its reason (`checkov.io/skipN: CHECK_ID=reason`).
fn policies(venv: &Path, root: &Path, rendered: &Path) -> anyhow::Result<()> {
    let checkov = venv.join("bin/checkov");
    checked(
        Command::new(&checkov)
            .arg("-d")
            .arg(rendered)
            .args(["--framework", "kubernetes", "--compact", "--quiet"]),
        "checkov on the rendered overlays",
    )?;
    for dockerfile in ["deploy/docker/Dockerfile", "deploy/scripts/backup.Dockerfile"] {
        checked(
            Command::new(&checkov).arg("-f").arg(root.join(dockerfile)).args([
                "--framework",
                "dockerfile",
                "--compact",
                "--quiet",
            ]),
            &format!("checkov on {dockerfile}"),
        )?;
    }
    for overlay in OVERLAYS {
        let yaml = fs::read_to_string(rendered.join(format!("{overlay}.yaml")))?;
        let bare = skips_without_reason(&yaml);
        anyhow::ensure!(
            bare.is_empty(),
            "checkov checks skipped without a reason in overlay {overlay}: {}",
            bare.join("; ")
        );
    }
    Ok(())
}

/// `checkov.io/skip` annotations whose value is not `CHECK_ID=a reason`.
pub fn skips_without_reason(yaml: &str) -> Vec<&str> {
    yaml.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("checkov.io/skip"))
        .filter(|l| {
            let value = l.split_once(':').map_or("", |(_, v)| v).trim();
            match value.split_once('=') {
                Some((id, reason)) => !id.trim_matches(['\'', '"']).starts_with("CKV") || reason.trim().len() < 10,
                None => true,
            }
        })
        .collect()
}

fn compose(root: &Path) -> anyhow::Result<()> {
    let compose = devstack::program_or_install("docker-compose", "docker-compose")?;
    checked(
        Command::new(compose)
            .args(["-f", "docker-compose.yml", "config", "-q"])
            .current_dir(root),
        "docker-compose config -q",
    )?;
    Ok(())
}

/// Every file a process is pointed at (`*_FILE`) is on a mount of its own, in each overlay and in
/// docker-compose.yml.
fn mounted(root: &Path, rendered: &Path) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for overlay in OVERLAYS {
        let yaml = fs::read_to_string(rendered.join(format!("{overlay}.yaml")))?;
        problems.extend(
            unmounted_files_k8s(&yaml)?
                .into_iter()
                .map(|p| format!("overlay {overlay}: {p}")),
        );
    }
    let compose = fs::read_to_string(root.join("docker-compose.yml"))?;
    problems.extend(unmounted_files_compose(&compose)?);
    anyhow::ensure!(problems.is_empty(), "files not mounted:\n{}", problems.join("\n"));
    Ok(())
}

/// `path` lies in directory `dir` (or is it).
fn under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir.trim_end_matches('/'))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The `*_FILE` variables of the Deployments' containers whose path is on no volume mount, or
/// only on a `subPath` mount (the kubelet never updates those: an edited ConfigMap or a renewed
/// certificate would not reach the process).
pub fn unmounted_files_k8s(rendered: &str) -> anyhow::Result<Vec<String>> {
    use serde::Deserialize as _;
    let mut problems = Vec::new();
    for document in serde_yaml::Deserializer::from_str(rendered) {
        let doc = serde_yaml::Value::deserialize(document).context("parsing the rendered manifests")?;
        if doc.get("kind").and_then(|k| k.as_str()) != Some("Deployment") {
            continue;
        }
        let name = doc
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("?");
        let containers = doc
            .get("spec")
            .and_then(|s| s.get("template"))
            .and_then(|t| t.get("spec"))
            .and_then(|s| s.get("containers"))
            .and_then(|c| c.as_sequence());
        for container in containers.into_iter().flatten() {
            let mounts: Vec<(String, bool)> = container
                .get("volumeMounts")
                .and_then(|m| m.as_sequence())
                .into_iter()
                .flatten()
                .filter_map(|m| {
                    let path = m.get("mountPath")?.as_str()?.to_owned();
                    Some((path, m.get("subPath").is_some()))
                })
                .collect();
            for item in container.get("env").and_then(|e| e.as_sequence()).into_iter().flatten() {
                let (Some(var), Some(value)) = (
                    item.get("name").and_then(|n| n.as_str()),
                    item.get("value").and_then(|v| v.as_str()),
                ) else {
                    continue;
                };
                if !var.ends_with("_FILE") {
                    continue;
                }
                match mounts.iter().find(|(dir, _)| under(value, dir)) {
                    None => problems.push(format!("{name}: {var}={value} is on no volume mount")),
                    Some((dir, true)) => problems.push(format!(
                        "{name}: {var}={value} is on a subPath mount ({dir}), which the kubelet never updates"
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    Ok(problems)
}

/// The `*_FILE` variables of docker-compose.yml's services whose path is neither one of the
/// service's `secrets:` (`/run/secrets/NAME`) nor on one of its `volumes:`.
pub fn unmounted_files_compose(compose: &str) -> anyhow::Result<Vec<String>> {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(compose).context("parsing docker-compose.yml")?;
    doc.apply_merge().context("resolving << merges")?;
    let mut problems = Vec::new();
    let services = doc.get("services").and_then(|s| s.as_mapping()).into_iter().flatten();
    for (name, svc) in services {
        let name = name.as_str().unwrap_or("?");
        let secrets: Vec<&str> = svc
            .get("secrets")
            .and_then(|s| s.as_sequence())
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str())
            .collect();
        let volumes: Vec<&str> = svc
            .get("volumes")
            .and_then(|v| v.as_sequence())
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str()?.split(':').nth(1))
            .collect();
        let env = svc
            .get("environment")
            .and_then(|e| e.as_mapping())
            .into_iter()
            .flatten();
        for (var, value) in env {
            let (Some(var), Some(value)) = (var.as_str(), value.as_str()) else {
                continue;
            };
            if !var.ends_with("_FILE") {
                continue;
            }
            let on_secret = value
                .strip_prefix("/run/secrets/")
                .is_some_and(|secret| secrets.contains(&secret));
            if !on_secret && !volumes.iter().any(|dir| under(value, dir)) {
                problems.push(format!(
                    "{name}: {var}={value} is neither a secret of the service nor on its volumes"
                ));
            }
        }
    }
    Ok(problems)
}

/// What docker-compose.yml or a rendered overlay gives one of our processes: its arguments and
/// its environment, as written there (anchors and `<<` merges resolved).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeployedProcess {
    pub args: Vec<String>,
    pub env: std::collections::BTreeMap<String, String>,
}

fn scalar(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `service` of docker-compose.yml; without a `command`, the image's `CMD` (`serve`).
pub fn compose_process(compose: &str, service: &str) -> anyhow::Result<DeployedProcess> {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(compose).context("parsing docker-compose.yml")?;
    doc.apply_merge().context("resolving << merges")?;
    let svc = doc
        .get("services")
        .and_then(|s| s.get(service))
        .with_context(|| format!("docker-compose.yml has no service {service}"))?;
    let mut env = std::collections::BTreeMap::new();
    if let Some(map) = svc.get("environment").and_then(|e| e.as_mapping()) {
        for (k, v) in map {
            let key = scalar(k).context("an environment key")?;
            env.insert(key.clone(), scalar(v).with_context(|| format!("the value of {key}"))?);
        }
    }
    let args = match svc.get("command").and_then(|c| c.as_sequence()) {
        Some(seq) => seq.iter().filter_map(scalar).collect(),
        None => vec!["serve".to_owned()],
    };
    Ok(DeployedProcess { args, env })
}

/// The Deployment `name` of rendered manifests (its first container; `value`s only: the
/// manifests give secrets as files, never `valueFrom`).
pub fn deployment_process(rendered: &str, name: &str) -> anyhow::Result<DeployedProcess> {
    use serde::Deserialize as _;
    for document in serde_yaml::Deserializer::from_str(rendered) {
        let doc = serde_yaml::Value::deserialize(document).context("parsing the rendered manifests")?;
        if doc.get("kind").and_then(|k| k.as_str()) != Some("Deployment")
            || doc.get("metadata").and_then(|m| m.get("name")).and_then(|n| n.as_str()) != Some(name)
        {
            continue;
        }
        let container = doc
            .get("spec")
            .and_then(|s| s.get("template"))
            .and_then(|t| t.get("spec"))
            .and_then(|s| s.get("containers"))
            .and_then(|c| c.get(0))
            .with_context(|| format!("Deployment {name} has no container"))?;
        let mut env = std::collections::BTreeMap::new();
        for item in container.get("env").and_then(|e| e.as_sequence()).into_iter().flatten() {
            let key = item
                .get("name")
                .and_then(scalar)
                .context("an env entry without a name")?;
            let value = item
                .get("value")
                .and_then(scalar)
                .with_context(|| format!("{key} of Deployment {name} has no plain value"))?;
            env.insert(key, value);
        }
        let args = container
            .get("args")
            .and_then(|a| a.as_sequence())
            .map(|seq| seq.iter().filter_map(scalar).collect())
            .unwrap_or_default();
        return Ok(DeployedProcess { args, env });
    }
    bail!("no Deployment {name} in the rendered manifests")
}

/// Whether `kubectl` is a 1.20 (whose embedded kustomize is v2).
fn is_kubectl_1_20(kubectl: &Path) -> bool {
    Command::new(kubectl)
        .args(["version", "--client"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("v1.20."))
}

/// The kubectl the overlays are written for: 1.20, Debian's `kubernetes-client`, whose kustomize
/// (v2) refuses fields of later versions. A newer kubectl on PATH (a cloud SDK's) would accept
/// them; then Debian's package is unpacked under target/deploy-checks (not installed over it).
fn kubectl_1_20() -> anyhow::Result<PathBuf> {
    let on_path = devstack::find_program("kubectl");
    if let Some(kubectl) = &on_path
        && is_kubectl_1_20(kubectl)
    {
        return Ok(kubectl.clone());
    }
    if on_path.is_none() {
        let kubectl = devstack::program_or_install("kubectl", "kubernetes-client")?;
        if is_kubectl_1_20(&kubectl) {
            return Ok(kubectl);
        }
    }
    let dir = crate::workspace_root().join("target/deploy-checks/kubernetes-client");
    let kubectl = dir.join("usr/bin/kubectl");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock = fs::File::create(dir.join(".lock")).context("creating the kubectl lock file")?;
    lock.lock().context("locking the kubectl directory")?;
    if kubectl.is_file() && is_kubectl_1_20(&kubectl) {
        return Ok(kubectl);
    }
    let apt = devstack::find_program("apt-get").context(
        "the kubectl on PATH is not 1.20 and apt-get is missing: put kubectl 1.20 (kustomize v2) first on PATH",
    )?;
    let download = dir.join("download");
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download)?;
    eprintln!(
        "xtask: the kubectl on PATH is not 1.20; unpacking Debian's kubernetes-client into {}",
        dir.display()
    );
    devstack::output(
        Command::new(apt)
            .args(["download", "-q", "kubernetes-client"])
            .current_dir(&download),
        "apt-get download kubernetes-client",
    )?;
    let deb = fs::read_dir(&download)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    devstack::output(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir),
        "dpkg-deb -x kubernetes-client",
    )?;
    let _ = fs::remove_dir_all(&download);
    anyhow::ensure!(
        is_kubectl_1_20(&kubectl),
        "{} is not kubectl 1.20: Debian's kubernetes-client changed version",
        kubectl.display()
    );
    Ok(kubectl)
}

/// `kubectl kustomize` of `deploy/k8s/overlays/{overlay}`, with kubectl 1.20 (kustomize v2).
pub fn render_overlay(overlay: &str) -> anyhow::Result<String> {
    let kubectl = kubectl_1_20()?;
    let dir = crate::workspace_root().join("deploy/k8s/overlays").join(overlay);
    let yaml = devstack::output(
        Command::new(&kubectl).arg("kustomize").arg(&dir),
        &format!("kubectl kustomize deploy/k8s/overlays/{overlay}"),
    )?;
    Ok(String::from_utf8(yaml)?)
}

/// Variables that third-party images of docker-compose.yml read (not ours); Grafana's all start
/// with `GF_`.
const THIRD_PARTY_VARIABLES: [&str; 4] = [
    "POSTGRES_DB",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD_FILE",
    "COLLECTOR_OTLP_ENABLED",
];

/// The variables docker-compose.yml and the Kubernetes manifests give our processes (`KEY: value`
/// and `- name: KEY` of upper-case keys).
pub fn deploy_variables(compose: &str, manifests: &[String]) -> std::collections::BTreeSet<String> {
    let fold = |name: &str| name.to_owned();
    let upper = |k: &str| {
        k.len() > 2
            && k.starts_with(|c: char| c.is_ascii_uppercase())
            && k.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    };
    let mut names = std::collections::BTreeSet::new();
    for line in compose.lines() {
        if let Some((key, _)) = line.trim().split_once(':')
            && upper(key)
        {
            names.insert(fold(key));
        }
    }
    for manifest in manifests {
        for line in manifest.lines() {
            if let Some(key) = line.trim().strip_prefix("- name: ")
                && upper(key.trim())
            {
                names.insert(fold(key.trim()));
            }
        }
    }
    names.retain(|n| !THIRD_PARTY_VARIABLES.contains(&n.as_str()) && !n.starts_with("GF_"));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prometheus_rule_is_the_rules_file_under_spec() {
        let rule = prometheus_rule("# a comment\ngroups:\n  - name: g\n\n    rules: []\n");
        assert!(
            rule.ends_with("spec:\n  groups:\n    - name: g\n\n      rules: []\n"),
            "{rule}"
        );
        assert!(!rule.contains("a comment"));
    }

    #[test]
    fn the_committed_prometheus_rule_matches_the_alerts() {
        let root = crate::workspace_root();
        prometheus_rule_in_sync(&root).expect("run deploy/k8s/sync-rules.sh");
    }

    #[test]
    fn only_crd_kinds_may_lack_a_schema() {
        let out = "WARN x.yaml Couldn't find schema for kind Certificate with api version cert-manager.io/v1 for kubernetes version 1.31\n\
                   WARN x.yaml Couldn't find schema for kind Deploymnet with api version apps/v1 for kubernetes version 1.31\n";
        assert_eq!(unexpected_validation_lines(out).len(), 1);
        assert!(unexpected_validation_lines(out)[0].contains("Deploymnet"));
    }

    #[test]
    fn skips_need_a_check_id_and_a_reason() {
        let yaml = "    checkov.io/skip1: CKV_K8S_43=Images are pinned by tag in each overlay\n\
                    \x20   checkov.io/skip2: CKV_K8S_8\n\
                    \x20   checkov.io/skip3: CKV_K8S_9=ok\n";
        let bare = skips_without_reason(yaml);
        assert_eq!(bare.len(), 2, "{bare:?}");
    }

    /// A variable renamed in the code but not in docker-compose.yml or deploy/k8s fails here.
    #[test]
    fn every_variable_deploy_sets_is_read_by_the_code() {
        let root = crate::workspace_root();
        let compose = fs::read_to_string(root.join("docker-compose.yml")).expect("compose");
        let mut manifests = Vec::new();
        for dir in ["deploy/k8s/base", "deploy/k8s/overlays/dev", "deploy/k8s/overlays/prod"] {
            for entry in fs::read_dir(root.join(dir)).expect("k8s dir").flatten() {
                manifests.push(fs::read_to_string(entry.path()).expect("manifest"));
            }
        }
        let set = deploy_variables(&compose, &manifests);
        assert!(
            set.contains("DATABASE_URL_FILE") && set.contains("GRPC_TLS_CERT_FILE"),
            "{set:?}"
        );
        let mut source = String::new();
        fn read_rs(dir: &Path, out: &mut String) {
            for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    read_rs(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push_str(&fs::read_to_string(&path).unwrap_or_default());
                }
            }
        }
        for krate in [
            "service-kit",
            "gateway",
            "auth-service",
            "reports-service",
            "analytics-service",
        ] {
            read_rs(&root.join(krate).join("src"), &mut source);
        }
        // deploy/scripts/*.sh read their own variables; pg_dump (libpq) reads the PG* ones.
        let mut scripts = String::new();
        for entry in fs::read_dir(root.join("deploy/scripts"))
            .expect("deploy/scripts")
            .flatten()
        {
            if entry.path().extension().is_some_and(|e| e == "sh") {
                scripts.push_str(&fs::read_to_string(entry.path()).expect("script"));
            }
        }
        let unread: Vec<&String> = set
            .iter()
            .filter(|n| !scripts.contains(&format!("${{{n}")) && !["PGSSLMODE", "PGSSLROOTCERT"].contains(&n.as_str()))
            .filter(|n| {
                // `NAME_FILE` is how every secret `NAME` may be given (service_kit::config).
                let base = n.strip_suffix("_FILE").unwrap_or(n);
                let read = |name: &str| source.contains(&format!("\"{name}\""));
                let known = read(n) || (base != n.as_str() && read(base));
                !known
            })
            .collect();
        assert!(
            unread.is_empty(),
            "docker-compose.yml or deploy/k8s set variables no process reads: {unread:?}"
        );
    }

    #[test]
    fn compose_services_are_read_with_their_merges() {
        let compose = fs::read_to_string(crate::workspace_root().join("docker-compose.yml")).expect("compose");
        let auth = compose_process(&compose, "auth-service").expect("auth-service");
        assert_eq!(auth.args, ["serve"]);
        assert_eq!(auth.env.get("GRPC_PORT").map(String::as_str), Some("50051"));
        let reports = compose_process(&compose, "reports-service").expect("reports-service");
        assert_eq!(
            reports.env.get("GRPC_ALLOWED_CLIENTS").map(String::as_str),
            Some("gateway"),
            "from the shared block"
        );
        assert_eq!(
            auth.env.get("GRPC_ALLOWED_CLIENTS").map(String::as_str),
            Some("gateway,reports-service"),
            "its own value wins over the shared block"
        );
        assert_eq!(
            compose_process(&compose, "auth-migrate").expect("migrate").args,
            ["migrate"]
        );
    }

    #[test]
    fn every_file_a_compose_service_reads_is_mounted() {
        let compose = fs::read_to_string(crate::workspace_root().join("docker-compose.yml")).expect("compose");
        assert_eq!(
            unmounted_files_compose(&compose).expect("compose"),
            Vec::<String>::new()
        );
        let broken = "services:\n  gateway:\n    environment:\n      MAINTENANCE_FILE: /etc/platform/maintenance/m.toml\n      TLS_CERT_FILE: /run/secrets/tls_crt\n    volumes:\n      - ./deploy/other:/etc/platform/other:ro\n";
        let problems = unmounted_files_compose(broken).expect("parse");
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn files_must_be_on_a_mount_that_the_kubelet_updates() {
        let rendered = "kind: Service\nmetadata: {name: x}\n---\nkind: Deployment\nmetadata: {name: gateway}\nspec:\n  template:\n    spec:\n      containers:\n      - name: gateway\n        env:\n        - {name: MAINTENANCE_FILE, value: /etc/platform/maintenance/m.toml}\n        - {name: TLS_CERT_FILE, value: /etc/platform/https/tls.crt}\n        - {name: REDIS_URL_FILE, value: /etc/platform/secrets/redis-url}\n        - {name: LOG_LEVEL, value: info}\n        volumeMounts:\n        - {name: m, mountPath: /etc/platform/maintenance/m.toml, subPath: m.toml}\n        - {name: s, mountPath: /etc/platform/secrets}\n";
        let problems = unmounted_files_k8s(rendered).expect("parse");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("subPath"), "{problems:?}");
        assert!(problems[1].contains("TLS_CERT_FILE"), "{problems:?}");
        assert!(under("/a/b", "/a") && under("/a", "/a/") && !under("/ab", "/a"));
    }

    /// A dashboard added for docker-compose but not for Kubernetes fails here.
    #[test]
    fn every_dashboard_is_generated_for_kubernetes() {
        let root = crate::workspace_root();
        let generator = fs::read_to_string(root.join("deploy/grafana/kustomization.yaml")).expect("kustomization");
        let mut dashboards = 0;
        for entry in fs::read_dir(root.join("deploy/grafana/dashboards"))
            .expect("dashboards")
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".json") {
                continue;
            }
            dashboards += 1;
            assert!(
                generator.contains(&format!("- dashboards/{name}\n")),
                "deploy/grafana/kustomization.yaml does not generate a ConfigMap for {name}"
            );
        }
        assert!(dashboards >= 4, "{dashboards} dashboards");
        assert!(generator.contains("grafana_dashboard: \"1\""), "the sidecar's label");
    }

    #[test]
    fn every_alert_is_named() {
        let root = crate::workspace_root();
        let alerts = fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).expect("alerts");
        let names = alert_names(&alerts);
        for expected in [
            "HighErrorRate",
            "HighResponseTime",
            "SecurityThreatDetected",
            "RateLimitViolations",
            "ServiceDown",
            "RedisFallback",
            "OutboxBacklog",
            "CertificateExpiresSoon",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
        }
    }
}
