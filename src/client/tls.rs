//! TLS to a front that serves `[thrift] tls_cert/tls_key`: the server's certificate is checked
//! against a CA file and a name (the endpoint's host unless given).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::{Error, Result};

/// How the client verifies the front's TLS certificate.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM file of the CA(s) that signed the fronts' certificates (`paxoskv certs` writes
    /// `ca.pem`).
    pub ca_file: PathBuf,
    /// The name the certificate must carry; `None`: each endpoint's host (a DNS name or an IP
    /// address).
    pub server_name: Option<String>,
}

/// The rustls client config for `t` (built once per client).
pub(crate) fn client_config(t: &TlsConfig) -> Result<Arc<rustls::ClientConfig>> {
    let bad = |m: String| Error::InvalidArgument(format!("TLS CA {}: {m}", t.ca_file.display()));
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_file_iter(&t.ca_file).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
        n += 1;
    }
    if n == 0 {
        return Err(bad("no certificate in the file".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name to verify for endpoint `addr` ("host:port").
pub(crate) fn server_name(
    t: &TlsConfig,
    addr: &str,
) -> std::result::Result<ServerName<'static>, super::conn::ConnectError> {
    let host = match &t.server_name {
        Some(n) => n.as_str(),
        None => addr
            .rsplit_once(':')
            .map_or(addr, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']'),
    };
    ServerName::try_from(host.to_string())
        .map_err(|e| super::conn::ConnectError(format!("TLS name {host:?}: {e}")))
}
