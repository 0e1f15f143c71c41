//! The README's walk-through ("A phone's session, with curl"), run as it is written there: a
//! reporter files a report with a photo, a moderator resolves it, a neighbour sees the alert.

use std::process::Command;

use xtask::testkit::{Service, TestPlatform};

/// The shell block between the README's walk-through markers.
fn readme_script() -> String {
    let readme = std::fs::read_to_string(xtask::workspace_root().join("README.md")).expect("README.md");
    let block = readme
        .split("<!-- walkthrough:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- walkthrough:end -->").next())
        .expect("the walk-through markers in README.md");
    block
        .trim()
        .strip_prefix("```sh")
        .and_then(|b| b.strip_suffix("```"))
        .expect("one ```sh block between the markers")
        .to_owned()
}

/// Single quotes for the shell (the values are URLs and paths we made).
fn quoted(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[tokio::test]
async fn the_readme_walkthrough_runs() {
    if xtask::devstack::find_program("jq").is_none() {
        xtask::devstack::install_package("jq", "jq").expect("jq for the walk-through");
    }
    let tp = TestPlatform::builder("walkthrough")
        .services(&[Service::Auth, Service::Reports])
        .start()
        .await
        .expect("platform");
    let dir = std::env::temp_dir().join(format!("walkthrough-{}", uuid::Uuid::new_v4()));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("temp dir");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, tp.ca_pem()).expect("CA file");
    // `auth-service grant-role …` as an operator runs it: the binary with auth-service's settings.
    let db = tp.databases.iter().find(|d| d.service == "auth").expect("auth db");
    let wrapper = format!(
        "#!/bin/sh\nexec env -i DATABASE_URL={} REDIS_URL={} REDIS_KEY_PREFIX={} APP_ENV=test LOG_FORMAT=json {} \"$@\"\n",
        quoted(&db.url),
        quoted(&tp.redis_url),
        quoted(&tp.redis_prefix),
        quoted(&xtask::platform::bin_dir().join("auth-service").to_string_lossy()),
    );
    std::fs::write(bin.join("auth-service"), wrapper).expect("wrapper");
    let mut permissions = std::fs::metadata(bin.join("auth-service"))
        .expect("wrapper")
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(bin.join("auth-service"), permissions).expect("chmod");

    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let script = readme_script();
    let (gw, run_dir) = (tp.base_url(), dir.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(&run_dir)
            .env("PATH", path)
            .env("GW", gw)
            .env("CA", &ca)
            .output()
            .expect("bash runs")
    })
    .await
    .expect("the walk-through finishes");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the README's walk-through failed:\n{said}");
    // Each `jq -e` printed `true`: the report, its photo, the move and the alert were all seen.
    assert_eq!(said.matches("true").count(), 4, "{said}");
    std::fs::remove_dir_all(&dir).ok();
}
