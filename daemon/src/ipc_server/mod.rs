//! The IPC server: IPC protocol v1 (DESIGN.md section 5) over a Unix socket.
//!
//! [`serve`] accepts connections; each gets one task that runs, in order:
//! 1. the peer's credentials from the kernel ([`LocalPeer`]: SO_PEERCRED and
//!    SO_PEERGROUPS, fixed at connect time);
//! 2. [`handshake`](mod@handshake): hello (magic, version) within a deadline, in a small frame; a peer
//!    granted no store at all is refused here;
//! 3. [`reader`]: frames in ([`framing`]: tokio-util's length-delimited codec, the
//!    length announced before the body so its room is reserved first), each request
//!    judged and turned into a typed command ([`commands`]) and submitted to its
//!    store's actor in the order sent;
//! 4. [`writer`]: a second task that awaits the answers and writes each reply as it
//!    completes (clients pipeline); listings stream in chunks with an end marker.
//!
//! Every request is decided by [`crate::access`] (door `socket`), the same decision the
//! REST doors use. On shutdown a connection stops reading, finishes and answers what it
//! already accepted, then closes.

pub mod commands;
pub mod framing;
pub mod handshake;
pub mod reader;
pub mod writer;

pub use handshake::HANDSHAKE_TIMEOUT;
pub use reader::MAX_IN_FLIGHT;

use crate::access::LocalPeer;
use crate::actor::Registry;
use framing::FrameCodec;
use handshake::handshake;
use interprocess::local_socket::traits::tokio::Listener as _;
use interprocess::os::unix::uds_local_socket::tokio::{Listener, Stream};
use reader::read_requests;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::codec::FramedRead;
use writer::{write_replies, Outgoing};

/// Replies queued per connection before request reading pauses (backpressure).
const REPLY_QUEUE: usize = 256;

/// Settings of the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest frame body in bytes, both ways, after the handshake; sent in the [`Welcome`].
    ///
    /// [`Welcome`]: borgstore_ipc::protocol::Welcome
    pub max_frame: u32,
    /// Sent to clients in the [`Welcome`], e.g. `borgstored 0.1.0`.
    ///
    /// [`Welcome`]: borgstore_ipc::protocol::Welcome
    pub server_name: String,
}

/// Accept connections until `shutdown` turns true; then wait until every connection
/// has answered what it accepted.
pub async fn serve(
    listener: Listener,
    registry: Arc<Registry>,
    options: ServerOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    // Register the socket with the reactor of the thread this runs on (borgstored runs it
    // on the store thread, see [`Registry::spawn_on_store_thread`]), so a readable
    // connection wakes the thread that reads it, not another one first.
    let listener = match std::os::fd::OwnedFd::try_from(listener).and_then(Listener::try_from) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot take over the IPC socket: {e}");
            return;
        }
    };
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    let registry = registry.clone();
                    let options = options.clone();
                    let shutdown = shutdown.clone();
                    connections.spawn(async move { connection(stream, registry, options, shutdown).await });
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// The credentials of the process at the other end of `stream`.
pub fn peer_of(stream: &Stream) -> std::io::Result<LocalPeer> {
    LocalPeer::of(stream.inner())
}

/// One connection: credentials, handshake, then a reader and a writer.
async fn connection(stream: Stream, registry: Arc<Registry>, options: ServerOptions, shutdown: watch::Receiver<bool>) {
    let peer = match peer_of(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("cannot read peer credentials, dropping connection: {e}");
            return;
        }
    };
    // Reads and writes go through shared references, from two tasks.
    let stream = Arc::new(stream);
    let mut frames = FramedRead::new(&*stream, FrameCodec::new(options.max_frame));
    let accepted =
        handshake(&mut frames, &mut &*stream, &peer, &registry, &options.server_name, options.max_frame).await;
    if !accepted {
        return;
    }
    let (tx, rx) = mpsc::channel::<Outgoing>(REPLY_QUEUE);
    let write_stream = stream.clone();
    let max_frame = options.max_frame;
    let writer = tokio::spawn(async move {
        if !write_replies(&*write_stream, max_frame, rx).await {
            // Gone, or a reply written in part: nothing more can be said on this
            // connection. Shutting it down both ways ends the reader too.
            use std::os::fd::{AsFd, AsRawFd};
            let fd = write_stream.inner().as_fd().as_raw_fd();
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
        }
    });
    read_requests(frames, &registry, &peer, tx, shutdown).await;
    let _ = writer.await;
}

/// Make `path` ready for a listening Unix socket: create its directory (0755) when
/// missing, replace a stale socket file (nobody listening), and refuse a live one, so two
/// daemons never fight over one socket. Used for the IPC and the REST sockets.
pub fn prepare_socket_path(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another daemon is listening on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    Ok(())
}

/// Bind the IPC socket at `path` with `mode` (see [`prepare_socket_path`]).
pub fn bind(path: &std::path::Path, mode: u32) -> std::io::Result<Listener> {
    use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
    use interprocess::os::unix::local_socket::ListenerOptionsExt;
    prepare_socket_path(path)?;
    let name = path.to_fs_name::<GenericFilePath>()?;
    let listener = ListenerOptions::new().name(name).mode(mode as libc_mode::ModeT).create_tokio_as::<Listener>()?;
    // The umask may have masked bits away; the configured mode is what we promise.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Adopt a listening socket passed by systemd.
pub fn adopt(fd: std::os::fd::OwnedFd) -> std::io::Result<Listener> {
    Listener::try_from(fd)
}

mod libc_mode {
    /// `mode_t` as interprocess takes it.
    pub type ModeT = u32;
}
