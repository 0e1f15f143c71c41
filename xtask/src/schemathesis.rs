//! Installs schemathesis (pinned, from PyPI) into a throwaway virtual environment for the contract tests.
//!
//! The environment lives under `target/schemathesis/venv-<version>`, so it is made once per
//! version and thrown away with `target/`. A file lock keeps two test processes from building it
//! at once; a marker written last tells a finished environment from one cut off half-way.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::devstack;

/// The schemathesis every machine fuzzes with: a new release brings new checks, which should
/// arrive by a change of this line (and the fixes it asks for), not by surprise.
pub const VERSION: &str = "4.32.5";

/// The `st` executable of the pinned schemathesis, installed first when missing.
pub fn ensure() -> anyhow::Result<PathBuf> {
    let root = crate::workspace_root().join("target").join("schemathesis");
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let lock = fs::File::create(root.join(".lock")).context("creating the schemathesis lock file")?;
    lock.lock().context("locking the schemathesis environment")?;
    let venv = root.join(format!("venv-{VERSION}"));
    let st = venv.join("bin").join("st");
    let marker = venv.join(".installed");
    if marker.is_file() && st.is_file() {
        return Ok(st);
    }
    if venv.exists() {
        fs::remove_dir_all(&venv).with_context(|| format!("removing the unfinished {}", venv.display()))?;
    }
    install(&venv)?;
    anyhow::ensure!(st.is_file(), "pip left no {}", st.display());
    fs::write(&marker, VERSION).context("marking the schemathesis environment done")?;
    Ok(st)
}

fn install(venv: &Path) -> anyhow::Result<()> {
    let python = devstack::find_program("python3").context(
        "python3 is not installed: the contract tests need it for schemathesis (Debian: `apt-get install python3 python3-venv`)",
    )?;
    eprintln!("xtask: installing schemathesis {VERSION} into {}", venv.display());
    if let Err(e) = make_venv(&python, venv) {
        // Debian ships `venv` without `ensurepip` in a package of its own.
        if !e.to_string().contains("ensurepip") {
            return Err(e);
        }
        let _ = fs::remove_dir_all(venv);
        devstack::install_package("python3-venv", "python3 -m venv")?;
        make_venv(&python, venv)?;
    }
    let pip = venv.join("bin").join("pip");
    devstack::output(
        Command::new(&pip).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("schemathesis=={VERSION}"),
        ]),
        &format!("pip install schemathesis=={VERSION} (is PyPI reachable?)"),
    )?;
    Ok(())
}

fn make_venv(python: &Path, venv: &Path) -> anyhow::Result<()> {
    let out = Command::new(python)
        .args(["-m", "venv"])
        .arg(venv)
        .output()
        .with_context(|| format!("running {} -m venv", python.display()))?;
    if !out.status.success() {
        // Debian's message about ensurepip comes on standard output.
        bail!(
            "`python3 -m venv` failed: {} {}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
