//! What `--ca-cert` trusts: certificates that chain to the file's CAs (as
//! webpki checks them), and also a server whose certificate is exactly one
//! of the file's certificates. The second is for the self-signed
//! certificate made the common way (`openssl req -x509 ...`), which
//! OpenSSL 3 marks `CA:TRUE`: webpki refuses a CA certificate as a server's
//! own (`CaUsedAsEndEntity`), while curl and Python accept it. An exact
//! match is still checked for the server's name and for the certificate's
//! validity period; its signature over the handshake is checked as always.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_name};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};

/// One certificate of the `--ca-cert` file, trusted as a server's own.
#[derive(Debug)]
struct Pinned {
    der: CertificateDer<'static>,
    /// Its validity period, in seconds since the epoch.
    not_before: u64,
    not_after: u64,
}

/// Webpki against the file's CAs, or an exact match of one of its
/// certificates.
#[derive(Debug)]
pub(crate) struct CaOrPinned {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<Pinned>,
    provider: Arc<CryptoProvider>,
}

impl CaOrPinned {
    /// Trusts `certs` (the `--ca-cert` file's) both ways. A certificate
    /// whose validity period cannot be read is trusted as a CA only.
    pub(crate) fn new(
        certs: &[CertificateDer<'static>],
        provider: Arc<CryptoProvider>,
    ) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs {
            roots.add(cert.clone())?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()?;
        let pinned = certs
            .iter()
            .filter_map(|der| {
                let (not_before, not_after) = validity(der)?;
                Some(Pinned {
                    der: der.clone(),
                    not_before,
                    not_after,
                })
            })
            .collect();
        Ok(Self {
            webpki,
            pinned,
            provider,
        })
    }
}

impl ServerCertVerifier for CaOrPinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let chained = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let Err(err) = chained else { return chained };
        let Some(pin) = self
            .pinned
            .iter()
            .find(|p| p.der.as_ref() == end_entity.as_ref())
        else {
            return Err(err);
        };
        let now = now.as_secs();
        if now < pin.not_before {
            return Err(Error::InvalidCertificate(CertificateError::NotValidYet));
        }
        if now > pin.not_after {
            return Err(Error::InvalidCertificate(CertificateError::Expired));
        }
        verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A certificate's validity period (`notBefore`, `notAfter`) in seconds
/// since the epoch, read from its DER: Certificate ::= SEQUENCE {
/// tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
/// signature, issuer, validity SEQUENCE { Time, Time }, ... }, ... }.
/// Only the `--ca-cert` file's own certificates are read this way.
fn validity(der: &[u8]) -> Option<(u64, u64)> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    // serialNumber, signature, issuer.
    for _ in 0..3 {
        rest = tlv(rest)?.2;
    }
    let (tag, validity, _) = tlv(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (t1, not_before, rest) = tlv(validity)?;
    let (t2, not_after, _) = tlv(rest)?;
    Some((time(t1, not_before)?, time(t2, not_after)?))
}

/// One DER element: its tag, its contents, and what follows it.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n]
            .iter()
            .fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        b = &b[n..];
        len
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`, tag 0x18), in seconds since the epoch.
fn time(tag: u8, b: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(b).ok()?.strip_suffix('Z')?;
    if !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (year, s) = match (tag, s.len()) {
        (0x17, 12) => {
            let yy: u64 = s[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        (0x18, 14) => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    let field = |i: usize| s[i..i + 2].parse::<u64>().ok();
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || year < 1970 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a date of the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm), for years from 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_time_forms() {
        assert_eq!(time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(time(0x17, b"261204215455Z"), Some(1_796_421_295));
        assert_eq!(time(0x18, b"20261204215455Z"), Some(1_796_421_295));
        assert_eq!(time(0x18, b"99991231235959Z"), Some(253_402_300_799));
        assert_eq!(time(0x17, b"2612042154Z"), None);
        assert_eq!(time(0x17, b"261304215455Z"), None);
    }

    #[test]
    fn a_truncated_element_is_none() {
        assert_eq!(tlv(&[0x30, 0x05, 1, 2]), None);
        assert_eq!(tlv(&[0x30, 0x82, 0x00]), None);
        assert_eq!(
            tlv(&[0x30, 0x02, 1, 2, 3]),
            Some((0x30, &[1u8, 2][..], &[3u8][..]))
        );
    }
}
