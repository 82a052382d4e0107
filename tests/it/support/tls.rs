//! Certificates for the TLS tests, made by `openssl` (installed on every
//! machine of this project) in a temporary directory: a CA, and server
//! certificates it signs for `localhost` and 127.0.0.1. And the clients'
//! side: rustls settings that trust that CA, an https request, a wss
//! connection.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use super::fixtures::TempDir;
use super::http::Resp;
use super::ws::{Client, Ws};

/// A CA and the server certificates it signed, as files.
pub(crate) struct Certs {
    pub dir: TempDir,
}

fn openssl(args: &[&str], dir: &TempDir) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir.path())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` with a new P-256 key and no passphrase, then `args`.
fn req_with_new_key(args: &[&str], dir: &TempDir) {
    let new_key = [
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(&[&new_key[..], args].concat(), dir);
}

impl Certs {
    /// A new CA and a server certificate `server.pem` / `server.key` with
    /// common name `cn`.
    pub(crate) fn new(cn: &str) -> Certs {
        let dir = TempDir::new("tls");
        req_with_new_key(
            &[
                "-x509",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=radio test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            &dir,
        );
        let certs = Certs { dir };
        certs.issue(cn);
        certs
    }

    /// Signs a new server certificate (and key) with common name `cn`,
    /// replacing `server.pem` and `server.key`.
    pub(crate) fn issue(&self, cn: &str) {
        self.dir.write(
            "ext.cnf",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        );
        let subj = format!("/CN={cn}");
        req_with_new_key(
            &["-keyout", "new.key", "-out", "new.csr", "-subj", &subj],
            &self.dir,
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "new.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "new.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
            &self.dir,
        );
        // Renamed into place, as a certificate renewal would.
        std::fs::rename(self.path("new.key"), self.path("server.key")).expect("key in place");
        std::fs::rename(self.path("new.pem"), self.path("server.pem")).expect("cert in place");
    }

    /// A self-signed server certificate made the common way (OpenSSL 3
    /// marks it `CA:TRUE`), as `server.pem` / `server.key`, and no CA.
    pub(crate) fn self_signed() -> Certs {
        let dir = TempDir::new("tls");
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.pem",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ],
            &dir,
        );
        Certs { dir }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `name`'s path as a command-line argument.
    pub(crate) fn arg(&self, name: &str) -> String {
        self.path(name)
            .to_str()
            .expect("utf-8 temp path")
            .to_owned()
    }

    /// rustls client settings that trust this CA only.
    pub(crate) fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in radio::read_certs(&self.path("ca.pem")).expect("the CA") {
            roots.add(cert).expect("a root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// The server certificate's DER bytes, as the server should present them.
    pub(crate) fn server_der(&self) -> Vec<u8> {
        radio::read_certs(&self.path("server.pem")).expect("the server certificate")[0].to_vec()
    }

    /// A TLS connection to `addr` trusting this CA, and the certificate
    /// the server presented.
    pub(crate) async fn connect(
        &self,
        addr: std::net::SocketAddr,
    ) -> (
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        Vec<u8>,
    ) {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("a name");
        let tls = TlsConnector::from(self.client_config())
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        let presented = tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec();
        (tls, presented)
    }

    /// `GET path` over https, trusting this CA; the whole response.
    pub(crate) async fn get(&self, addr: std::net::SocketAddr, path: &str) -> Resp {
        let (mut tls, _) = self.connect(addr).await;
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes()).await.expect("send");
        let mut buf = Vec::new();
        // A close without close_notify is fine here: the body is whole.
        let _ = tls.read_to_end(&mut buf).await;
        Resp::parse(&buf)
    }

    /// A protocol client over wss, trusting this CA.
    pub(crate) async fn ws(&self, addr: std::net::SocketAddr) -> Client {
        let url = format!("wss://localhost:{}/ws", addr.port());
        let connector = tokio_tungstenite::Connector::Rustls(self.client_config());
        let (ws, _): (Ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector))
                .await
                .expect("wss connect");
        Client::welcomed(ws).await
    }
}
