//! TLS 1.3 (rustls, ring) for replica links and the Thrift front.
//!
//! Replica links are mutually authenticated against a cluster CA: the dialer checks that the
//! listener's certificate names the replica it meant (`replica-<id>.paxoskv`), the listener
//! checks that the dialer's certificate names the replica id it claims in its hello. A node's
//! identity is therefore its certificate, not a number it sends. `paxoskv certs` makes a dev CA
//! and one certificate per replica (and one for the front).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The DNS name a replica's certificate carries, and the name a dialer expects of replica `id`.
pub fn replica_name(id: u32) -> String {
    format!("replica-{id}.paxoskv")
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS setup: {0}")]
    Setup(String),
    /// A replica's certificate does not name the replica it claims to be (or none came).
    #[error("{0}")]
    Certificate(String),
}

fn file_err(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Every certificate of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_err(path, e))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca)? {
        roots.add(c).map_err(|e| file_err(ca, e))?;
    }
    Ok(roots)
}

/// The files of one node's TLS identity.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Both ends of one node's replica links: a server side that requires a client certificate
/// from the cluster CA, and a client side that presents this node's certificate.
#[derive(Clone)]
pub struct ReplicaTls {
    pub acceptor: futures_rustls::TlsAcceptor,
    pub connector: futures_rustls::TlsConnector,
}

impl std::fmt::Debug for ReplicaTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplicaTls")
    }
}

impl ReplicaTls {
    pub fn load(files: &TlsFiles) -> Result<ReplicaTls, TlsError> {
        let roots = Arc::new(roots(&files.ca)?);
        let chain = load_certs(&files.cert)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), load_key(&files.key)?)
            .map_err(|e| file_err(&files.key, e))?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, load_key(&files.key)?)
            .map_err(|e| file_err(&files.key, e))?;
        Ok(ReplicaTls {
            acceptor: futures_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: futures_rustls::TlsConnector::from(Arc::new(client)),
        })
    }

    /// The server name a dialer verifies replica `id`'s certificate against.
    pub fn server_name(id: u32) -> Result<ServerName<'static>, TlsError> {
        ServerName::try_from(replica_name(id)).map_err(|e| TlsError::Setup(e.to_string()))
    }
}

/// Whether the (already chain-verified) certificate a peer presented names replica `id`.
pub fn cert_names_replica(
    peer_certs: Option<&[CertificateDer<'_>]>,
    id: u32,
) -> Result<(), TlsError> {
    let bad = |m: String| TlsError::Certificate(m);
    let leaf = (peer_certs.and_then(|c| c.first()))
        .ok_or_else(|| bad("the peer presented no certificate".into()))?;
    let cert =
        webpki::EndEntityCert::try_from(leaf).map_err(|e| bad(format!("bad certificate: {e}")))?;
    let name = ReplicaTls::server_name(id)?;
    cert.verify_is_valid_for_subject_name(&name).map_err(|_| {
        bad(format!(
            "the peer's certificate is not for {}",
            replica_name(id)
        ))
    })
}

/// The Thrift front's server side (no client certificate asked).
pub fn front_acceptor(cert: &Path, key: &Path) -> Result<futures_rustls::TlsAcceptor, TlsError> {
    let server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| file_err(key, e))?;
    Ok(futures_rustls::TlsAcceptor::from(Arc::new(server)))
}

/// Writes a dev CA and certificates into `dir`: `ca.pem`/`ca.key`, `replica-<i>.pem`/`.key`
/// for i in 0..replicas (names `replica-<i>.paxoskv` plus `hosts`), and `front.pem`/`front.key`
/// (names `localhost`, `127.0.0.1` plus `hosts`). Keys are written mode 0600. Returns the files.
pub fn make_dev_certs(
    dir: &Path,
    replicas: u32,
    hosts: &[String],
) -> Result<Vec<PathBuf>, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let setup = |e: rcgen::Error| TlsError::Setup(e.to_string());
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let mut written = Vec::new();
    let mut write = |name: &str, text: String, secret: bool| -> Result<(), TlsError> {
        let path = dir.join(name);
        write_file(&path, text.as_bytes(), secret).map_err(|e| file_err(&path, e))?;
        written.push(path);
        Ok(())
    };
    let ca_key = KeyPair::generate().map_err(setup)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(setup)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "paxoskv cluster CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(setup)?;
    write("ca.pem", ca_cert.pem(), false)?;
    write("ca.key", ca_key.serialize_pem(), true)?;
    let mut leaf = |file: &str, cn: &str, names: Vec<String>| -> Result<(), TlsError> {
        let key = KeyPair::generate().map_err(setup)?;
        let mut p = CertificateParams::new(names).map_err(setup)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &ca_cert, &ca_key).map_err(setup)?;
        write(&format!("{file}.pem"), cert.pem(), false)?;
        write(&format!("{file}.key"), key.serialize_pem(), true)
    };
    for i in 0..replicas {
        let mut names = vec![replica_name(i)];
        names.extend(hosts.iter().cloned());
        leaf(&format!("replica-{i}"), &replica_name(i), names)?;
    }
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    names.extend(hosts.iter().cloned());
    leaf("front", "paxoskv front", names)?;
    Ok(written)
}

fn write_file(path: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, id: u32) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("replica-{id}.pem")),
            key: dir.join(format!("replica-{id}.key")),
        }
    }

    #[test]
    fn dev_certs_load_and_name_their_replica() {
        let dir = tempfile::tempdir().unwrap();
        let written = make_dev_certs(dir.path(), 3, &["10.0.0.7".into()]).unwrap();
        assert_eq!(written.len(), 2 + 2 * 3 + 2);
        for id in 0..3 {
            ReplicaTls::load(&files(dir.path(), id)).unwrap();
            let certs = load_certs(&files(dir.path(), id).cert).unwrap();
            cert_names_replica(Some(&certs), id).unwrap();
            let other = (id + 1) % 3;
            assert!(cert_names_replica(Some(&certs), other).is_err());
        }
        assert!(cert_names_replica(None, 0).is_err());
        front_acceptor(&dir.path().join("front.pem"), &dir.path().join("front.key")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "a key file is readable by others");
    }

    #[test]
    fn missing_or_wrong_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = ReplicaTls::load(&files(dir.path(), 0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca.pem"), "{err}");
        std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
        let err = load_certs(&dir.path().join("ca.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no certificate"), "{err}");
    }
}
