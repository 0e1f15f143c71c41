//! The internal CA and one certificate per process (rcgen, ECDSA P-256), for mTLS between the
//! gateway and the services and for the TLS of PostgreSQL and Redis in development and tests.
//!
//! One CA per checkout (`target/devstack/internal-ca`), made once and kept, so that every test
//! platform, the test PostgreSQL and `cargo xtask up` share it and none pays for it twice.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The processes that get a certificate, by the name their certificate carries (the name
/// `GRPC_ALLOWED_CLIENTS` lists).
pub const PROCESSES: [&str; 4] = ["gateway", "auth-service", "reports-service", "analytics-service"];

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct InternalCa {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// The CA's parameters; the same every time, so a kept key signs as the kept certificate says.
fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "platform internal CA (development)");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

impl InternalCa {
    /// The checkout's CA (`target/devstack/internal-ca`), made on first use.
    pub fn shared() -> anyhow::Result<Self> {
        Self::load_or_create(
            &crate::workspace_root()
                .join("target")
                .join("devstack")
                .join("internal-ca"),
        )
    }

    /// The CA kept in `dir` (`ca.crt`, `ca.key`), made there if missing. Parallel callers agree:
    /// it is written to a directory of its own, then renamed into place, and a loser uses the
    /// winner's.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        if !dir.join("ca.key").exists() {
            let parent = dir.parent().context("the CA directory has a parent")?;
            fs::create_dir_all(parent)?;
            let staging = parent.join(format!(".ca-{}-{}", std::process::id(), crate::secrets::random_token()));
            fs::create_dir_all(&staging)?;
            let key = KeyPair::generate().context("generating the CA key")?;
            let cert = ca_params()?.self_signed(&key).context("signing the CA certificate")?;
            crate::secrets::write_secret(&staging.join("ca.key"), &key.serialize_pem())?;
            fs::write(staging.join("ca.crt"), cert.pem())?;
            if fs::rename(&staging, dir).is_err() {
                // Another process made it first.
                let _ = fs::remove_dir_all(&staging);
            }
        }
        let key_pem = fs::read_to_string(dir.join("ca.key")).context("reading the internal CA key")?;
        let key = KeyPair::from_pem(&key_pem).context("parsing the internal CA key")?;
        Ok(Self {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(ca_params()?, key),
        })
    }

    /// The CA certificate (PEM): what every process trusts (`GRPC_TLS_CA_FILE`).
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A certificate for `name` (also valid for localhost and the loopback addresses, where
    /// everything listens in development), for both ends of a connection, as
    /// `out_dir/{name}.crt` and `out_dir/{name}.key` (mode 0600).
    pub fn issue(&self, name: &str, out_dir: &Path) -> anyhow::Result<Issued> {
        fs::create_dir_all(out_dir)?;
        let mut names = vec![name.to_owned()];
        for extra in ["localhost", "127.0.0.1", "::1"] {
            if extra != name {
                names.push(extra.to_owned());
            }
        }
        let mut params = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().context("generating a certificate key")?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing the certificate of {name}"))?;
        let issued = Issued {
            cert: out_dir.join(format!("{name}.crt")),
            key: out_dir.join(format!("{name}.key")),
        };
        crate::secrets::write_secret(&issued.key, &key.serialize_pem())?;
        fs::write(&issued.cert, cert.pem())?;
        Ok(issued)
    }

    /// One certificate per process in `dir` with a copy of the CA certificate (`ca.crt`), issued
    /// again when the CA changed since.
    pub fn issue_processes(&self, dir: &Path) -> anyhow::Result<()> {
        let ca = fs::read(self.cert_path())?;
        let current = fs::read(dir.join("ca.crt")).is_ok_and(|kept| kept == ca);
        if current && PROCESSES.iter().all(|p| dir.join(format!("{p}.crt")).exists()) {
            return Ok(());
        }
        for process in PROCESSES {
            self.issue(process, dir)?;
        }
        fs::write(dir.join("ca.crt"), ca)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_ca_signs_certificates_that_chain_to_it() {
        let root = crate::workspace_root()
            .join("target")
            .join(format!("certs-test-{}", std::process::id()));
        let ca = InternalCa::load_or_create(&root.join("ca")).expect("ca");
        let again = InternalCa::load_or_create(&root.join("ca")).expect("the same ca");
        let issued = again.issue("gateway", &root.join("out")).expect("issue");
        let ca_pem = fs::read_to_string(ca.cert_path()).expect("ca pem");
        let leaf_pem = fs::read_to_string(&issued.cert).expect("leaf pem");
        assert!(ca_pem.contains("BEGIN CERTIFICATE") && leaf_pem.contains("BEGIN CERTIFICATE"));
        again.issue_processes(&root.join("procs")).expect("processes");
        for p in PROCESSES {
            assert!(root.join("procs").join(format!("{p}.key")).exists());
        }
        let _ = fs::remove_dir_all(root);
    }
}
