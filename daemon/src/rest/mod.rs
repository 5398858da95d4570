//! The REST front end: the borgstore REST protocol v1 (REST-API.md) over actix-web.
//!
//! REST clients speak the backend level (nested names, their own soft deletes), so each
//! request becomes one [`crate::commands::nested`] command run by the store's actor,
//! the same actor IPC clients use: one ordering, one set of stats, one quota per store.
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
//! - [`handlers`]: the one dispatcher: judges the head, maps errors to Python's answers.
//! - [`route`]: the route table: request -> typed command -> response.
//! - [`body`]: request bodies: length checks, the memory budget, read on demand.
//! - [`sources`]: the JSON sources of gather and defrag, with Python's refusals.
//! - [`borg_serve`]: the `borg serve --rest` command line, for borg's `ssh://` repositories.
//! - [`range`]: the `Range` header of loads.
//! - [`status`]: error kind -> HTTP status.
//! - [`stdio`]: HTTP/1.1 on stdin/stdout (what `rest://` clients start over ssh).
//! - [`idle`]: requests in flight, for `borgstore-server-rest --idle-timeout`.
//! - [`metrics`]: `GET /-/metrics`, every store's stats for Prometheus (opt-in).
//! - [`wire`]: response header names in the canonical case Python's server sends.
//! - [`tls`]: HTTPS on the TCP listener (certificate reloaded on SIGHUP) and the subject
//!   of a verified client certificate, for [`Connection::client_cert`].
//!
//! With [`RestOptions::tls`] the TCP listener speaks HTTPS only (TLS first, then the
//! same HTTP/1.1 stack); the Unix socket always speaks plain HTTP.
//!
//! Two mounts: `borgstored --rest` serves every store under `/<store-name>/`;
//! `borgstore-server-rest` serves its one store at `/`.

pub mod body;
pub mod borg_serve;
pub mod handlers;
pub mod idle;
pub mod metrics;
pub mod range;
pub mod route;
pub mod sources;
pub mod status;
pub mod stdio;
pub mod tls;
pub mod wire;

use crate::access::{Door, LocalPeer};
use crate::actor::Registry;
use actix_http::{HttpService, KeepAlive, Protocol};
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Extensions, Service};
use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App};
use std::sync::Arc;
use std::time::Duration;
use wire::CanonicalHeaders;

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
    /// The served stores, with their grants and actors.
    pub registry: Arc<Registry>,
    /// How a request path names its store.
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
    /// The listener it came through: [`Door::Rest`] (TCP) or [`Door::RestSocket`].
    pub door: Door,
    /// The process behind a Unix socket, from the kernel; None on TCP.
    pub peer: Option<LocalPeer>,
    /// The subject common name of the client's verified TLS certificate, if any.
    pub client_cert: Option<Arc<str>>,
}

/// What a connection says about itself when it is accepted.
fn connection(door: Door, peer: Option<LocalPeer>, client_cert: Option<Arc<str>>, ext: &mut Extensions) {
    if let Some(cn) = &client_cert {
        tracing::debug!(door = %door, "TLS client certificate verified: CN={cn:?}");
    }
    ext.insert(Connection { door, peer, client_cert });
}

/// Listener and limits of a REST server.
#[derive(Debug, Clone)]
pub struct RestOptions {
    /// Where stores appear in the URL space.
    pub mount: Mount,
    /// Largest request body accepted (larger: 413).
    pub max_body: u64,
    /// HTTP worker threads.
    pub workers: usize,
    /// Serve `GET /-/metrics` (only with [`Mount::PerStore`]).
    pub metrics: bool,
    /// See [`RestApp::drain_unread`].
    pub drain_unread: bool,
    /// Speak HTTPS on the TCP listeners, with these (reloadable) certificates; Unix
    /// sockets stay plain HTTP.
    pub tls: Option<tls::TlsReloader>,
}

/// Where a REST server listens.
pub enum Listen {
    /// A bound TCP socket: door `rest`, callers known by Basic auth only.
    Tcp(std::net::TcpListener),
    /// A bound Unix socket: door `rest_socket`, callers known by uid.
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
    let make_app = move || {
        let activity = activity.clone();
        App::new()
            .app_data(app.clone())
            .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store, no-cache, must-revalidate, max-age=0")))
            .wrap_fn(move |req, srv| {
                let request = activity.as_ref().map(|a| a.begin());
                let head = req.method() == actix_web::http::Method::HEAD;
                let response = srv.call(req);
                async move {
                    let mut response = response.await?;
                    if head {
                        // Tells the wire layer that this answer has no body (see wire).
                        response.headers_mut().insert(
                            header::HeaderName::from_static(wire::NO_BODY),
                            header::HeaderValue::from_static("1"),
                        );
                    }
                    Ok(match request {
                        Some(r) => response.map_body(|_, body| idle::Tracked::new(body.boxed(), r).boxed()),
                        None => response.map_into_boxed_body(),
                    })
                }
            })
            .default_service(web::to(handlers::dispatch))
    };
    // actix-web's HttpServer, with each connection wrapped in CanonicalHeaders (and the
    // timeouts HttpServer uses by default).
    macro_rules! http_service {
        ($make_app:expr, $io:ty, $door:expr, $peer:expr, $cert:expr) => {{
            let app = $make_app.clone();
            HttpService::<$io, _, _, _, _>::build()
                .keep_alive(KeepAlive::Timeout(Duration::from_secs(5)))
                .client_request_timeout(Duration::from_secs(5))
                .client_disconnect_timeout(Duration::from_secs(1))
                .on_connect_ext(|io: &$io, ext: &mut Extensions| connection($door, $peer(io), $cert(io), ext))
                .finish(map_config(app().into_factory().map_err(|err: actix_web::Error| err.error_response()), |_| {
                    AppConfig::default()
                }))
        }};
    }
    let mut builder =
        actix_server::Server::build().workers(options.workers.max(1)).disable_signals().shutdown_timeout(30);
    for l in listeners {
        builder = match (l, options.tls.clone()) {
            (Listen::Tcp(t), Some(tls)) => {
                let name = format!("rest-tls-{}", t.local_addr()?);
                let make_app = make_app.clone();
                builder.listen(name, t, move || {
                    let tls = tls.clone();
                    fn_service(move |io: actix_web::rt::net::TcpStream| {
                        // Taken now: the settings of the moment the connection came.
                        let acceptor = tls.acceptor();
                        async move {
                            let _ = io.set_nodelay(true);
                            let peer = io.peer_addr().ok();
                            let io = match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                                Ok(Ok(io)) => io,
                                Ok(Err(e)) => {
                                    tracing::debug!(?peer, "TLS handshake failed: {e}");
                                    return Err(actix_http::error::DispatchError::Io(e));
                                }
                                Err(_) => {
                                    tracing::debug!(?peer, "TLS handshake timed out");
                                    return Err(actix_http::error::DispatchError::SlowRequestTimeout);
                                }
                            };
                            Ok((CanonicalHeaders::new(io), Protocol::Http1, peer))
                        }
                    })
                    .and_then(http_service!(
                        make_app,
                        CanonicalHeaders<tokio_rustls::server::TlsStream<actix_web::rt::net::TcpStream>>,
                        Door::Rest,
                        |_| None,
                        |io: &CanonicalHeaders<tokio_rustls::server::TlsStream<actix_web::rt::net::TcpStream>>| {
                            tls::client_cert_of(io.get_ref())
                        }
                    ))
                })?
            }
            (Listen::Tcp(t), None) => {
                let name = format!("rest-{}", t.local_addr()?);
                let make_app = make_app.clone();
                builder.listen(name, t, move || {
                    fn_service(|io: actix_web::rt::net::TcpStream| async move {
                        let _ = io.set_nodelay(true);
                        let peer = io.peer_addr().ok();
                        Ok::<_, actix_http::error::DispatchError>((CanonicalHeaders::new(io), Protocol::Http1, peer))
                    })
                    .and_then(http_service!(
                        make_app,
                        CanonicalHeaders<actix_web::rt::net::TcpStream>,
                        Door::Rest,
                        |_| None,
                        |_| None
                    ))
                })?
            }
            (Listen::Unix(u), _) => {
                let name = format!("rest-unix-{:?}", u.local_addr()?);
                let make_app = make_app.clone();
                builder.listen_uds(name, u, move || {
                    fn_service(|io: actix_web::rt::net::UnixStream| async move {
                        Ok::<_, actix_http::error::DispatchError>((CanonicalHeaders::new(io), Protocol::Http1, None))
                    })
                    .and_then(http_service!(
                        make_app,
                        CanonicalHeaders<actix_web::rt::net::UnixStream>,
                        Door::RestSocket,
                        |io: &CanonicalHeaders<actix_web::rt::net::UnixStream>| LocalPeer::of(io.get_ref()).ok(),
                        |_| None
                    ))
                })?
            }
        };
    }
    Ok(builder.run())
}

/// Bind a Unix socket for REST with `mode` (see [`crate::ipc_server::prepare_socket_path`]).
pub fn bind_unix(path: &std::path::Path, mode: u32) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    crate::ipc_server::prepare_socket_path(path)?;
    let l = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(l)
}
