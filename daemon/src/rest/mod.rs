//! The REST front end: the borgstore REST protocol v1 (REST-API.md) over actix-web.
//!
//! REST clients speak the backend level (nested names, their own soft deletes), so each
//! request becomes one [`crate::store::RawOp`] sent to the store's actor, the same
//! actor IPC clients use: one ordering, one set of stats, one quota per store.
//!
//! Every request is judged from its head before any body byte is asked for: method,
//! path, store, Accept, the caller ([`crate::access`]: the peer's uid on the Unix
//! socket, the Basic-auth user on TCP, the same decision IPC uses), name, length
//! against `max_body`, then permission letters and quota (the backend decides those
//! before it reads). Refused requests are answered at once and, when they carried a
//! body, their connection is closed instead of reading it. Accepted bodies stream:
//! large uploads to file: stores go to disk piece by piece; everything held whole in
//! memory reserves room in the daemon-wide [`crate::limits::Budget`] first, waiting up
//! to [`crate::limits::REST_WAIT`] before a 503.
//!
//! - [`handlers`]: the one dispatcher and every route.
//! - [`borg_serve`]: the `borg serve --rest` command line, for borg's `ssh://` repositories.
//! - [`range`]: the `Range` header of loads.
//! - [`status`]: error kind -> HTTP status.
//! - [`stdio`]: HTTP/1.1 on stdin/stdout (what `rest://` clients start over ssh).
//! - [`idle`]: requests in flight, for `borgstore-server-rest --idle-timeout`.
//! - [`metrics`]: `GET /-/metrics`, every store's stats for Prometheus (opt-in).
//!
//! Two mounts: `borgstored --rest` serves every store under `/<store-name>/`;
//! `borgstore-server-rest` serves its one store at `/`.

pub mod borg_serve;
pub mod handlers;
pub mod idle;
pub mod metrics;
pub mod range;
pub mod status;
pub mod stdio;

use crate::access::{Door, LocalPeer};
use crate::actor::Registry;
use actix_web::body::MessageBody;
use actix_web::dev::{Extensions, Service};
use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpServer};
use std::sync::Arc;

/// Where stores appear in the URL space.
#[derive(Debug, Clone)]
pub enum Mount {
    /// This one store at `/` (borgstore-server-rest).
    Root(String),
    /// Every store under `/<name>/` (borgstored).
    PerStore,
}

/// What every request handler shares.
pub struct RestApp {
    pub registry: Arc<Registry>,
    pub mount: Mount,
    /// Serve [`metrics::PATH`] (per-store mount only; no auth, no Accept header needed).
    pub metrics: bool,
    /// Largest request body accepted (larger: 413 before reading).
    pub max_body: u64,
    /// Read and drop the unread rest of a refused request's body instead of closing the
    /// connection (`--stdio`, where the one connection is the whole session).
    pub drain_unread: bool,
}

/// Which door a connection came through, and who is behind it on a Unix socket: read
/// once when the connection is accepted.
#[derive(Debug, Clone)]
pub struct Connection {
    pub door: Door,
    pub peer: Option<LocalPeer>,
}

/// actix-web's connect hook: learn the door and peer of a new connection.
fn on_connect(io: &dyn std::any::Any, ext: &mut Extensions) {
    let conn = match io.downcast_ref::<actix_web::rt::net::UnixStream>() {
        Some(unix) => Connection { door: Door::RestSocket, peer: LocalPeer::of(unix).ok() },
        None => Connection { door: Door::Rest, peer: None },
    };
    ext.insert(conn);
}

/// Listener and limits of a REST server.
#[derive(Debug, Clone)]
pub struct RestOptions {
    pub mount: Mount,
    /// Largest request body accepted (larger: 413).
    pub max_body: u64,
    /// HTTP worker threads.
    pub workers: usize,
    /// Serve `GET /-/metrics` (only with [`Mount::PerStore`]).
    pub metrics: bool,
    /// See [`RestApp::drain_unread`].
    pub drain_unread: bool,
}

/// Where a REST server listens.
pub enum Listen {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// Build the HTTP server on `listeners` (not yet running: await the returned
/// [`actix_web::dev::Server`], stop it through its handle).
pub fn server(
    registry: Arc<Registry>,
    options: &RestOptions,
    listeners: Vec<Listen>,
) -> std::io::Result<actix_web::dev::Server> {
    server_tracked(registry, options, listeners, None)
}

/// Like [`server`], counting every request in `activity` while it is in flight (until
/// its response body has been sent).
pub fn server_tracked(
    registry: Arc<Registry>,
    options: &RestOptions,
    listeners: Vec<Listen>,
    activity: Option<Arc<idle::Activity>>,
) -> std::io::Result<actix_web::dev::Server> {
    let app = web::Data::new(RestApp {
        registry,
        mount: options.mount.clone(),
        metrics: options.metrics && matches!(options.mount, Mount::PerStore),
        max_body: options.max_body,
        drain_unread: options.drain_unread,
    });
    let mut http = HttpServer::new(move || {
        let activity = activity.clone();
        App::new()
            .app_data(app.clone())
            .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store, no-cache, must-revalidate, max-age=0")))
            .wrap_fn(move |req, srv| {
                let request = activity.as_ref().map(|a| a.begin());
                let response = srv.call(req);
                async move {
                    let response = response.await?;
                    Ok(match request {
                        Some(r) => response.map_body(|_, body| idle::Tracked::new(body.boxed(), r).boxed()),
                        None => response.map_into_boxed_body(),
                    })
                }
            })
            .default_service(web::to(handlers::dispatch))
    })
    .on_connect(on_connect)
    .workers(options.workers.max(1))
    .disable_signals()
    .shutdown_timeout(30);
    for l in listeners {
        http = match l {
            Listen::Tcp(t) => http.listen(t)?,
            Listen::Unix(u) => http.listen_uds(u)?,
        };
    }
    Ok(http.run())
}

/// Bind a Unix socket for REST with `mode` (see [`crate::ipc_server::prepare_socket_path`]).
pub fn bind_unix(path: &std::path::Path, mode: u32) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    crate::ipc_server::prepare_socket_path(path)?;
    let l = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(l)
}
