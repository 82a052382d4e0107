//! https and wss in the server (`--tls-cert`, `--tls-key`), with rustls.
//!
//! The certificate is read at start and again on SIGHUP: a resolver holds
//! the current one and every new handshake asks it, so a renewed
//! certificate takes effect without a restart and without touching the
//! connections already open (they keep the session they negotiated). A
//! reload that fails (a missing file, a key that does not match) keeps the
//! certificate in force and says why.
//!
//! A TLS connection's socket is an [`Outlet`](crate::server::outlet::Outlet)
//! marked TLS from the start: the station fan-out, which writes prebuilt
//! plain frames, never writes to it, and its connection task writes every
//! frame through rustls.

use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::PrivateKeyDer;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::server::config::TlsFiles;

/// The server's TLS: its acceptor and the certificate it presents.
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
    files: TlsFiles,
}

/// The certificate every new handshake presents.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

impl Tls {
    /// Reads the certificate and key; `Err` names the file and the fix.
    pub(crate) fn load(files: TlsFiles) -> anyhow::Result<Self> {
        let key = read(&files)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(key))));
        let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("cannot set up TLS")?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            files,
        })
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the files again (SIGHUP); keeps the certificate in force on error.
    pub(crate) fn reload(&self) {
        match read(&self.files) {
            Ok(key) => {
                *self.current.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => tracing::error!("TLS certificate not reloaded, the old one stays: {e:#}"),
        }
    }
}

fn read(files: &TlsFiles) -> anyhow::Result<CertifiedKey> {
    let certs = crate::pem::read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        anyhow::anyhow!(
            "cannot read a private key from --tls-key {}: {e}; give the PEM key of --tls-cert",
            files.key.display()
        )
    })?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| {
        anyhow::anyhow!(
            "--tls-key {} does not fit --tls-cert {}: {e}",
            files.key.display(),
            files.cert.display()
        )
    })
}
