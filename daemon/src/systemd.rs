//! systemd integration: readiness notification and socket activation.
//!
//! - [`notify`] sends `READY=1`, `STATUS=...`, `STOPPING=1` and watchdog pings when
//!   `NOTIFY_SOCKET` is set (Type=notify units); without it, it does nothing.
//! - [`listen_fds`] takes the sockets systemd passes (`LISTEN_FDS`, `LISTEN_PID`,
//!   `LISTEN_FDNAMES`), starting at fd 3, so a `.socket` unit can start the daemon on
//!   first connect.

use sd_notify::NotifyState;
use std::os::fd::{FromRawFd, OwnedFd};

/// A notification to the service manager.
pub enum Notice<'a> {
    /// `READY=1`: listening, clients may connect (Type=notify units wait for this).
    Ready,
    /// `STATUS=...`: one line for `systemctl status`.
    Status(&'a str),
    /// `STOPPING=1`: shutting down, finishing accepted requests.
    Stopping,
    /// `WATCHDOG=1`: still alive, for units with `WatchdogSec=`.
    Watchdog,
}

/// Tell systemd about our state; a no-op when not started by systemd.
pub fn notify(notice: Notice<'_>) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let state = match notice {
        Notice::Ready => NotifyState::Ready,
        Notice::Status(s) => NotifyState::Status(s),
        Notice::Stopping => NotifyState::Stopping,
        Notice::Watchdog => NotifyState::Watchdog,
    };
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!("sd_notify failed: {e}");
    }
}

/// The watchdog interval systemd asks for (`WATCHDOG_USEC`), if any.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// Sockets passed by systemd socket activation (fd 3 on), with their names from
/// `LISTEN_FDNAMES` (empty when not given); empty when this process was not
/// socket-activated. The variables are removed so child processes do not inherit them.
/// Call it early, before other threads start.
pub fn listen_fds() -> std::io::Result<Vec<(String, OwnedFd)>> {
    // SAFETY: removing the variables races only with other threads reading the
    // environment; the daemon calls this before it starts any.
    let fds = unsafe { sd_notify::listen_fds_with_names_and_unset_env()? };
    Ok(fds
        .map(|(fd, name)| {
            // SAFETY: systemd handed these descriptors to this process (LISTEN_PID
            // matched) and nothing else in it owns them.
            (name, unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .collect())
}
