//! HTTPS on the REST TCP listener (`rest`), without a proxy in front: rustls with the
//! crypto provider the rest of the daemon already links (aws-lc-rs).
//!
//! What lives here, and why in one place:
//! - [`TlsFiles`]: the three settings (`--tls-cert`, `--tls-key`, `--tls-client-ca`, in
//!   borgstored's config file `tls_cert`, `tls_key`, `tls_client_ca`) and their checks:
//!   a key without a certificate or the other way round, or a client CA without both,
//!   is refused at startup with the setting's name.
//! - Loading: the certificate file is a PEM chain (leaf first), the key any PEM private
//!   key rustls reads (PKCS#8, PKCS#1, SEC1); the key must match the leaf. The client CA
//!   file is a PEM bundle of trust anchors for client certificates (mTLS): with it every
//!   client must present a certificate that chains to one of them
//!   ([`WebPkiClientVerifier`]), else the handshake fails.
//! - [`TlsReloader`]: what the listener takes its settings from, connection by
//!   connection. The certificate sits in [`CurrentCert`], a [`ResolvesServerCert`]
//!   whose certificate is swapped in place, so a reload reaches every new handshake
//!   while connections already open keep theirs (a TLS connection never needs its
//!   certificate again after the handshake). The client verifier cannot be swapped the
//!   same way (rustls borrows its CA names for the whole handshake), so with a client
//!   CA a reload builds a new [`ServerConfig`] around the same resolver and new
//!   connections take that. [`TlsReloader::reload`] reads everything first and changes
//!   nothing unless all of it loaded: a broken file on SIGHUP keeps the old certificate.
//! - [`common_name`]: the subject CN of a verified client certificate (parsed with
//!   x509-parser), which the listener puts into [`super::Connection::client_cert`] for
//!   the access decision.
//!
//! The REST Unix socket never speaks TLS: whoever reaches it is known by uid.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The TLS flags both binaries take (`#[command(flatten)]`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Speak HTTPS only on the REST TCP listener, with this PEM certificate chain (leaf
    /// first; with --tls-key). SIGHUP reloads the certificate, key and client CA files
    /// without dropping open connections; a reload that fails keeps the old ones and
    /// logs a warning. A REST Unix socket stays plain HTTP. borgstored: config key
    /// tls_cert; borgstore-server-rest: not with --stdio.
    #[arg(long = "tls-cert", value_name = "FILE")]
    pub cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert (borgstored: config key tls_key).
    #[arg(long = "tls-key", value_name = "FILE")]
    pub key: Option<std::path::PathBuf>,
    /// Ask every HTTPS client for a certificate signed by a CA in this PEM bundle (mTLS);
    /// clients without one are refused in the handshake. The subject CN of the client's
    /// certificate names its principal (`cert_cn` rules). Needs --tls-cert (borgstored:
    /// config key tls_client_ca).
    #[arg(long = "tls-client-ca", value_name = "FILE")]
    pub client_ca: Option<std::path::PathBuf>,
}

/// How long a client may take for its TLS handshake before the connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the TLS settings are called where they were given (for error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Names {
    /// The certificate chain setting.
    pub cert: &'static str,
    /// The private key setting.
    pub key: &'static str,
    /// The client CA setting.
    pub client_ca: &'static str,
}

/// The command line flags of both binaries.
pub const FLAG_NAMES: Names = Names { cert: "--tls-cert", key: "--tls-key", client_ca: "--tls-client-ca" };

/// The flags and their config-file keys (borgstored).
pub const FLAG_AND_KEY_NAMES: Names =
    Names { cert: "--tls-cert/tls_cert", key: "--tls-key/tls_key", client_ca: "--tls-client-ca/tls_client_ca" };

/// The files TLS is loaded from (again on every reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf.
    pub key: PathBuf,
    /// PEM bundle of the CAs client certificates must chain to (mTLS); None: no client
    /// certificates asked for.
    pub client_ca: Option<PathBuf>,
    /// The settings' names, for errors.
    pub names: Names,
}

impl TlsFiles {
    /// The TLS files from the settings: None when TLS is off (nothing given); an error
    /// naming the setting when only part of what TLS needs is given.
    pub fn from_settings(
        cert: Option<&Path>,
        key: Option<&Path>,
        client_ca: Option<&Path>,
        names: Names,
    ) -> Result<Option<TlsFiles>, String> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                client_ca: client_ca.map(Path::to_path_buf),
                names,
            })),
            (Some(_), None) => Err(format!("{} needs {} (the certificate's private key)", names.cert, names.key)),
            (None, Some(_)) => Err(format!("{} needs {} (the certificate chain)", names.key, names.cert)),
            (None, None) if client_ca.is_some() => Err(format!(
                "{} needs {} and {}: client certificates are asked for only over TLS",
                names.client_ca, names.cert, names.key
            )),
            (None, None) => Ok(None),
        }
    }
}

/// The server certificate every new handshake gets; swapped in place on reload.
#[derive(Debug)]
pub struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl CurrentCert {
    fn get(&self) -> Arc<CertifiedKey> {
        // A poisoned lock still holds a whole Arc: nothing can be half-written.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// Everything read from the files, not yet in use.
struct Loaded {
    cert: Arc<CertifiedKey>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

/// The TLS settings of the REST TCP listener, reloadable at run time (cheap to clone:
/// every clone is the same listener state).
#[derive(Clone)]
pub struct TlsReloader {
    inner: Arc<Inner>,
}

struct Inner {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    cert: Arc<CurrentCert>,
    config: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader").field("files", &self.inner.files).finish_non_exhaustive()
    }
}

impl TlsReloader {
    /// Load the files (the startup check: every error names its setting and file).
    pub fn load(files: TlsFiles) -> Result<TlsReloader, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let loaded = load(&files, &provider)?;
        let cert = Arc::new(CurrentCert(RwLock::new(loaded.cert)));
        let config = server_config(&provider, &cert, loaded.verifier)?;
        Ok(TlsReloader { inner: Arc::new(Inner { files, provider, cert, config: RwLock::new(config) }) })
    }

    /// Read the files again and serve what they hold to every new connection; open
    /// connections are not touched. On any error nothing changes (the old certificate,
    /// key and client CA stay in use) and the error says what was wrong.
    pub fn reload(&self) -> Result<(), String> {
        let inner = &self.inner;
        let loaded = load(&inner.files, &inner.provider)?;
        // Built before anything is swapped, so that a failure leaves everything as it was.
        let config = match loaded.verifier {
            Some(v) => Some(server_config(&inner.provider, &inner.cert, Some(v))?),
            None => None,
        };
        inner.cert.set(loaded.cert);
        if let Some(config) = config {
            *inner.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        }
        Ok(())
    }

    /// The files it loads from.
    pub fn files(&self) -> &TlsFiles {
        &self.inner.files
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.inner.config.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    cert: &Arc<CurrentCert>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<Arc<ServerConfig>, String> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(cert.clone());
    // The REST front end speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn load(files: &TlsFiles, provider: &Arc<CryptoProvider>) -> Result<Loaded, String> {
    let names = files.names;
    let chain = read_certs(&files.cert, names.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{} {}: no usable PEM private key: {e}", names.key, files.key.display()))?;
    let cert = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        format!("{} {} does not fit {} {}: {e}", names.key, files.key.display(), names.cert, files.cert.display())
    })?;
    let verifier = match &files.client_ca {
        None => None,
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certs(path, names.client_ca)? {
                roots.add(ca).map_err(|e| format!("{} {}: not a usable CA: {e}", names.client_ca, path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("{} {}: {e}", names.client_ca, path.display()))?;
            Some(verifier)
        }
    };
    Ok(Loaded { cert: Arc::new(cert), verifier })
}

/// Every certificate in a PEM file (other PEM sections are skipped); at least one.
fn read_certs(path: &Path, name: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{name} {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{name} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{name} {}: no PEM certificate in the file", path.display()));
    }
    Ok(certs)
}

/// The subject common name of a certificate (the first CN, if it has one and it is a
/// string). None for anything that does not parse.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// The CN of the verified client certificate of an accepted TLS connection (None: no
/// certificate, or one without a CN).
pub fn client_cert_of<IO>(stream: &tokio_rustls::server::TlsStream<IO>) -> Option<Arc<str>> {
    let leaf = stream.get_ref().1.peer_certificates()?.first()?;
    let cn = common_name(leaf.as_ref());
    if cn.is_none() {
        tracing::debug!("client certificate without a usable subject CN");
    }
    cn.map(Arc::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    /// A self-signed certificate with subject CN `cn` (None: no CN), PEM cert and key.
    fn cert(cn: Option<&str>) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, "borg");
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn files(dir: &Path, cert_pem: &str, key_pem: &str, ca: Option<&str>) -> TlsFiles {
        std::fs::write(dir.join("cert.pem"), cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), key_pem).unwrap();
        if let Some(ca) = ca {
            std::fs::write(dir.join("ca.pem"), ca).unwrap();
        }
        TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_ca: ca.map(|_| dir.join("ca.pem")),
            names: FLAG_NAMES,
        }
    }

    fn serving(t: &TlsReloader) -> Vec<u8> {
        t.inner.cert.get().end_entity_cert().unwrap().to_vec()
    }

    #[test]
    fn settings_must_come_in_pairs() {
        let p = Path::new("/x.pem");
        assert_eq!(TlsFiles::from_settings(None, None, None, FLAG_NAMES), Ok(None));
        let e = TlsFiles::from_settings(Some(p), None, None, FLAG_NAMES).unwrap_err();
        assert!(e.contains("--tls-cert needs --tls-key"), "{e}");
        let e = TlsFiles::from_settings(None, Some(p), None, FLAG_NAMES).unwrap_err();
        assert!(e.contains("--tls-key needs --tls-cert"), "{e}");
        let e = TlsFiles::from_settings(None, None, Some(p), FLAG_AND_KEY_NAMES).unwrap_err();
        assert!(e.contains("--tls-client-ca/tls_client_ca needs"), "{e}");
        let f = TlsFiles::from_settings(Some(p), Some(p), Some(p), FLAG_NAMES).unwrap().unwrap();
        assert_eq!(f.client_ca.as_deref(), Some(p));
    }

    #[test]
    fn the_common_name_of_a_certificate() {
        for (cn, want) in
            [(Some("backup-host-7"), Some("backup-host-7")), (Some("ümlaut ok"), Some("ümlaut ok")), (None, None)]
        {
            let (pem, _) = cert(cn);
            let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            assert_eq!(common_name(der.as_ref()).as_deref(), want);
        }
        assert_eq!(common_name(b""), None);
        assert_eq!(common_name(b"\x30\x03\x02\x01\x00"), None);
    }

    #[test]
    fn load_errors_name_the_setting_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let (c1, k1) = cert(Some("one"));
        let (_, k2) = cert(Some("two"));
        assert!(TlsReloader::load(files(dir.path(), &c1, &k1, None)).is_ok());
        assert!(TlsReloader::load(files(dir.path(), &c1, &k1, Some(&c1))).is_ok());
        let e = TlsReloader::load(files(dir.path(), &c1, &k2, None)).unwrap_err();
        assert!(e.starts_with("--tls-key ") && e.contains("does not fit --tls-cert"), "{e}");
        let e = TlsReloader::load(files(dir.path(), "not a pem", &k1, None)).unwrap_err();
        assert!(e.starts_with("--tls-cert ") && e.contains("no PEM certificate"), "{e}");
        let e = TlsReloader::load(files(dir.path(), &c1, "", None)).unwrap_err();
        assert!(e.starts_with("--tls-key ") && e.contains("key.pem"), "{e}");
        let e = TlsReloader::load(files(dir.path(), &c1, &k1, Some("junk"))).unwrap_err();
        assert!(e.starts_with("--tls-client-ca ") && e.contains("ca.pem"), "{e}");
        let mut missing = files(dir.path(), &c1, &k1, None);
        missing.cert = dir.path().join("nope.pem");
        let e = TlsReloader::load(missing).unwrap_err();
        assert!(e.starts_with("--tls-cert ") && e.contains("nope.pem"), "{e}");
    }

    #[test]
    fn a_reload_swaps_the_certificate_or_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let (c1, k1) = cert(Some("one"));
        let (c2, k2) = cert(Some("two"));
        let (c3, k3) = cert(Some("three"));
        let t = TlsReloader::load(files(dir.path(), &c1, &k1, Some(&c1))).unwrap();
        let first = serving(&t);
        assert_eq!(common_name(&first).as_deref(), Some("one"));
        // A key that does not fit, then an unreadable CA: nothing changes.
        files(dir.path(), &c2, &k1, Some(&c1));
        assert!(t.reload().unwrap_err().contains("does not fit"));
        assert_eq!(serving(&t), first);
        files(dir.path(), &c2, &k2, Some("junk"));
        assert!(t.reload().unwrap_err().contains("--tls-client-ca"));
        assert_eq!(serving(&t), first);
        files(dir.path(), &c3, &k3, Some(&c1));
        t.reload().unwrap();
        assert_eq!(common_name(&serving(&t)).as_deref(), Some("three"));
    }
}
