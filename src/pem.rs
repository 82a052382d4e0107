//! Certificates from PEM files, for the server's `--tls-cert` and the
//! clients' `--ca-cert` alike.

use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// The certificates of a PEM file, in order; at least one.
pub fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "{} holds no certificate; give a PEM file with -----BEGIN CERTIFICATE-----",
            path.display()
        );
    }
    Ok(certs)
}
