//! SIGHUP: what both binaries reload at run time, and how.
//!
//! The configuration (for borgstored its file and the htpasswd files it names; for
//! borgstore-server-rest its htpasswd file) goes into the running stores through
//! [`Registry::reload`]; the TLS certificate of the REST listener through its
//! [`TlsReloader`]. Each part that fails keeps what it had and logs a warning; the
//! process goes on serving, and open connections stay.

use crate::actor::Registry;
use crate::config::DaemonConfig;
use crate::rest::tls::TlsReloader;

/// Apply `config` (or log why there is none) and reload the TLS files. `what` names
/// the configuration in the log ("configuration", "users").
pub fn reload_all(registry: &Registry, config: Result<DaemonConfig, String>, what: &str, tls: Option<&TlsReloader>) {
    tracing::info!("SIGHUP: reloading");
    match config.and_then(|c| registry.reload(&c).map_err(|e| e.message)) {
        Ok(notes) => {
            for note in notes {
                tracing::warn!("SIGHUP: {note}");
            }
            tracing::info!("SIGHUP: {what} reloaded");
        }
        Err(e) => tracing::warn!("SIGHUP: {what} not reloaded, the previous one stays in use: {e}"),
    }
    if let Some(tls) = tls {
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded from {}", tls.files().cert.display()),
            Err(e) => tracing::warn!("SIGHUP: TLS not reloaded, the previous certificate stays in use: {e}"),
        }
    }
}
