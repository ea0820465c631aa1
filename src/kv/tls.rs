//! TLS for `rediss://`, `rediss+cluster://` and `rediss+sentinel://` URLs
//! (rustls; no OpenSSL).
//!
//! The certificate checks are always on. Trust comes from a private CA
//! file when one is set (only that CA is trusted then), otherwise from the
//! system's store (`/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR`);
//! a client certificate and key, when set, are presented to servers that
//! ask for one (mutual TLS). The files are read once, when the settings are
//! loaded ([`TlsConfig::load`]): a replaced certificate is used by a
//! process started after the replacement, not by a running one.
//!
//! The configuration is process-wide ([`install`]), like rustls' own
//! `CryptoProvider`: every connection that reaches Redis over TLS (each
//! role's multiplexed connection, a cluster's, the worker's blocking
//! connection, the operator commands') is opened by [`super::conn::Source`],
//! which takes it from here, so no caller can forget to pass it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, anyhow, bail};
use redis::{ClientTlsConfig, TlsCertificates};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretBox};

/// Where the Redis TLS files are, as the settings name them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate(s) of the CA that signed the servers' certificates.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain), for servers that require one.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether no file is named (system roots, no client certificate).
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }
}

/// The loaded, checked contents of the [`TlsFiles`]. `Debug` shows the
/// paths only, never a key.
pub struct TlsConfig {
    files: TlsFiles,
    ca_pem: Option<Vec<u8>>,
    client: Option<(Vec<u8>, SecretBox<Vec<u8>>)>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// The crypto provider every rustls handshake of this process uses: ring
/// (lettre's as well).
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Installs ring as the process-level rustls `CryptoProvider` unless one is
/// installed already. rustls 0.23 panics at the first handshake when it
/// cannot pick one (which happens as soon as a second provider is compiled
/// in); redis-rs builds its TLS configuration with the process default, so
/// this runs before any Redis TLS connection is opened.
pub fn ensure_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: one is installed.
        let _ = provider().install_default();
    }
}

fn read(path: &Path, var: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{var}: cannot read {}", path.display()))
}

fn certificates(
    pem: &[u8],
    path: &Path,
    var: &str,
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{var}: {} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        bail!("{var}: {} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

impl TlsConfig {
    /// Reads and checks the files: each one readable, PEM, holding what it
    /// should (CA certificates that are usable trust anchors; a client
    /// certificate and its matching private key, both or neither). `var`
    /// names a setting in messages (`STAYAFRICA_REDIS_TLS_CA_FILE
    /// (environment variable)`); a message never holds a key's content.
    /// `Ok(None)` when no file is named.
    pub fn load(
        files: &TlsFiles,
        var: impl Fn(&str) -> String,
    ) -> anyhow::Result<Option<Arc<TlsConfig>>> {
        if files.is_empty() {
            return Ok(None);
        }
        let ca_pem = match &files.ca_file {
            None => None,
            Some(path) => {
                let var = var("redis_tls_ca_file");
                let pem = read(path, &var)?;
                let mut store = RootCertStore::empty();
                for cert in certificates(&pem, path, &var)? {
                    store.add(cert).map_err(|e| {
                        anyhow!(
                            "{var}: {} holds an unusable CA certificate: {e}",
                            path.display()
                        )
                    })?;
                }
                Some(pem)
            }
        };
        let client = match (&files.cert_file, &files.key_file) {
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => bail!(
                "{} and {}: a client certificate needs its key, and a key its certificate",
                var("redis_tls_cert_file"),
                var("redis_tls_key_file")
            ),
            (Some(cert_path), Some(key_path)) => {
                let cert_var = var("redis_tls_cert_file");
                let key_var = var("redis_tls_key_file");
                let key_pem = SecretBox::new(Box::new(read(key_path, &key_var)?));
                // The parser's message names the problem, never the content.
                let key = PrivateKeyDer::from_pem_slice(key_pem.expose_secret()).map_err(|e| {
                    anyhow!(
                        "{key_var}: {} holds no usable PEM private key: {e}",
                        key_path.display()
                    )
                })?;
                let cert_pem = read(cert_path, &cert_var)?;
                let chain = certificates(&cert_pem, cert_path, &cert_var)?;
                rustls::sign::CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
                    anyhow!("{cert_var} and {key_var}: the key does not fit the certificate: {e}")
                })?;
                Some((cert_pem, key_pem))
            }
        };
        Ok(Some(Arc::new(TlsConfig {
            files: files.clone(),
            ca_pem,
            client,
        })))
    }

    /// The files this was loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// What redis-rs takes: the CA (`None`: the system's store) and the
    /// client certificate and key.
    fn redis_certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self.client.as_ref().map(|(cert, key)| ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.expose_secret().clone(),
            }),
            root_cert: self.ca_pem.clone(),
        }
    }
}

static INSTALLED: RwLock<Option<Arc<TlsConfig>>> = RwLock::new(None);

/// Makes `config` the Redis TLS configuration of this process (see the
/// module documentation). Installing the configuration of the same files
/// again is a no-op; other files than those installed are refused, since a
/// process has one trust configuration for Redis.
pub fn install(config: &Arc<TlsConfig>) -> anyhow::Result<()> {
    ensure_provider();
    let mut installed = INSTALLED.write().unwrap_or_else(|e| e.into_inner());
    match &*installed {
        None => {
            *installed = Some(config.clone());
            Ok(())
        }
        Some(current) if current.files == config.files => Ok(()),
        Some(current) => bail!(
            "this process already uses other Redis TLS files ({:?}) than {:?}",
            current.files,
            config.files
        ),
    }
}

/// The installed configuration's certificates, `None` when none is
/// installed (the system's roots, no client certificate). Makes sure a
/// crypto provider is installed: the caller is about to open TLS.
pub(crate) fn certificates_for_tls() -> Option<TlsCertificates> {
    ensure_provider();
    INSTALLED
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|c| c.redis_certificates())
}

/// A client of the one server `url` names (`redis://` or `rediss://`),
/// over TLS with the installed configuration when the URL says so.
pub(crate) fn client(url: &str) -> redis::RedisResult<redis::Client> {
    if super::target::is_tls(url)
        && let Some(certs) = certificates_for_tls()
    {
        return redis::Client::build_with_tls(url, certs);
    }
    if super::target::is_tls(url) {
        ensure_provider();
    }
    redis::Client::open(url)
}

/// `e`, a failure to connect to `url`, with a hint naming the settings to
/// check when the TLS handshake was refused (an unknown CA, a wrong host
/// name, no client certificate where one is required).
pub(crate) fn with_hint(url: &str, e: redis::RedisError) -> anyhow::Error {
    let text = e.to_string();
    let refused = ["certificate", "Certificate", "alert", "handshake"]
        .iter()
        .any(|w| text.contains(w));
    let e = anyhow::Error::new(e);
    if super::target::is_tls(url) && refused {
        e.context(
            "the TLS handshake failed: check STAYAFRICA_REDIS_TLS_CA_FILE (the CA of the \
             server's certificate; unset: the system's roots) and, for a server that \
             requires client certificates, STAYAFRICA_REDIS_TLS_CERT_FILE and _KEY_FILE",
        )
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_source_installs_a_crypto_provider_first() {
        // Without one, rustls would panic at the first handshake as soon
        // as it cannot pick a provider from its crate features.
        assert!(super::super::conn::Source::new("rediss://127.0.0.1:1").is_ok());
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }

    #[test]
    fn no_files_is_no_configuration_and_debug_shows_paths_only() -> anyhow::Result<()> {
        assert!(TlsConfig::load(&TlsFiles::default(), str::to_owned)?.is_none());
        let dir = tempfile::tempdir()?;
        let key = dir.path().join("k.pem");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
        )?;
        let files = TlsFiles {
            ca_file: None,
            cert_file: Some(dir.path().join("missing.pem")),
            key_file: Some(key),
        };
        let err = format!(
            "{:#}",
            TlsConfig::load(&files, str::to_owned)
                .err()
                .context("loaded")?
        );
        assert!(
            err.contains("redis_tls_cert_file") && err.contains("missing.pem"),
            "{err}"
        );
        assert!(!err.contains("c2VjcmV0"), "{err}");
        Ok(())
    }
}
