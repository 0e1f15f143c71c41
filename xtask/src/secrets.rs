//! Development secrets, generated once and kept (mode 0600) so a second `up` reuses them:
//! a self-signed TLS certificate for localhost, the JWT signing key, the encryption key, salts,
//! database passwords, and the mTLS certificates of the four processes under `grpc/` (issued by
//! the checkout's internal CA, [`crate::certs`]). Production never uses these (APP_ENV=production refuses dev shortcuts).

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore as _;

pub struct DevSecrets {
    pub dir: PathBuf,
}

impl DevSecrets {
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        let secrets = Self { dir: dir.to_path_buf() };
        if !secrets.path("tls.crt").exists() || !secrets.path("tls.key").exists() {
            let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
            let certified = rcgen::generate_simple_self_signed(names).context("generating the TLS certificate")?;
            write_secret(&secrets.path("tls.key"), &certified.signing_key.serialize_pem())?;
            write_secret(&secrets.path("tls.crt"), &certified.cert.pem())?;
        }
        crate::certs::InternalCa::shared()?.issue_processes(&secrets.path("grpc"))?;
        if !secrets.path("jwt_signing_keys.pem").exists() {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).context("generating the JWT key")?;
            write_secret(&secrets.path("jwt_signing_keys.pem"), &key.serialize_pem())?;
        }
        // Checkouts before the AES key existed wrote a 33-byte token here, which auth-service
        // refuses; nothing can have been sealed under it, so it is replaced.
        let usable_key = secrets
            .read("encryption_key")
            .ok()
            .and_then(|k| STANDARD.decode(k.trim()).ok())
            .is_some_and(|k| k.len() == 32);
        if !usable_key {
            if secrets.path("encryption_key").exists() {
                eprintln!("xtask: replacing the development ENCRYPTION_KEY (not 32 bytes of base64)");
            }
            // AES-256 key: exactly 32 random bytes, standard base64.
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            write_secret(&secrets.path("encryption_key"), &STANDARD.encode(key))?;
        }
        for name in [
            "refresh_token_secret",
            "device_id_salt",
            "pg_superuser_password",
            "auth_db_password",
            "reports_db_password",
            "analytics_db_password",
        ] {
            if !secrets.path(name).exists() {
                write_secret(&secrets.path(name), &random_token())?;
            }
        }
        Ok(secrets)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The mTLS certificate (`.crt`) or key (`.key`) of `process`, or the CA (`grpc("ca", "crt")`).
    pub fn grpc(&self, process: &str, ext: &str) -> String {
        self.dir
            .join("grpc")
            .join(format!("{process}.{ext}"))
            .to_string_lossy()
            .into_owned()
    }

    pub fn read(&self, name: &str) -> anyhow::Result<String> {
        fs::read_to_string(self.path(name)).with_context(|| format!("reading secret {name}"))
    }
}

/// 32 random bytes, base64 (URL-safe enough for passwords: no quotes or spaces).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    STANDARD.encode(bytes).replace(['+', '/', '='], "x")
}

/// Writes `content` readable by its owner only.
pub fn write_secret(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unusable_encryption_key_is_replaced_and_a_good_one_kept() {
        let dir = crate::workspace_root()
            .join("target")
            .join(format!("secrets-test-{}", std::process::id()));
        let first = DevSecrets::load_or_create(&dir).expect("create");
        let good = first.read("encryption_key").expect("key");
        assert_eq!(STANDARD.decode(good.trim()).expect("base64").len(), 32);
        assert_eq!(
            DevSecrets::load_or_create(&dir)
                .expect("load")
                .read("encryption_key")
                .expect("key"),
            good
        );
        // What an old checkout wrote: 33 bytes, URL-safe.
        write_secret(
            &first.path("encryption_key"),
            "uAkvx3KMzxSDmXBiVLcpm69jXGoNmtrXWOlGHrFjF4Ix",
        )
        .expect("write");
        let replaced = DevSecrets::load_or_create(&dir)
            .expect("load")
            .read("encryption_key")
            .expect("key");
        assert_eq!(STANDARD.decode(replaced.trim()).expect("base64").len(), 32);
        let _ = fs::remove_dir_all(&dir);
    }
}
