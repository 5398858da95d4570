//! The REST front end: the borgstore REST protocol v1 (REST-API.md) over actix-web.
//!
//! REST clients speak the backend level (nested names, their own soft deletes), so each
//! request becomes one [`crate::store::RawOp`] sent to the store's actor, the same
//! actor IPC clients use: one ordering, one set of stats, one quota per store.
//!
//! - [`handlers`]: the one dispatcher and every route.
//! - [`auth`]: Basic auth with constant-time comparison.
//! - [`range`]: the `Range` header of loads.
//! - [`status`]: error kind -> HTTP status.
//! - [`stdio`]: HTTP/1.1 on stdin/stdout (what `rest://` clients start over ssh).
//! - [`idle`]: requests in flight, for `borgstore-server-rest --idle-timeout`.
//! - [`metrics`]: `GET /-/metrics`, every store's stats for Prometheus (opt-in).
//!
//! Two mounts: `borgstored --rest` serves every store under `/<store-name>/`;
//! `borgstore-server-rest` serves its one store at `/`.

pub mod auth;
pub mod handlers;
pub mod idle;
pub mod metrics;
pub mod range;
pub mod status;
pub mod stdio;

use crate::actor::Registry;
use actix_web::body::MessageBody;
use actix_web::dev::Service;
use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpServer};
use auth::Credentials;
use std::collections::HashMap;
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
    /// Stores that require Basic auth, by store name.
    pub credentials: HashMap<String, Credentials>,
    /// Serve [`metrics::PATH`] (per-store mount only; no auth, no Accept header needed).
    pub metrics: bool,
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
}

impl RestApp {
    /// Credentials from each store's `rest_username`/`rest_password`.
    pub fn new(registry: Arc<Registry>, mount: Mount) -> Self {
        let credentials = registry
            .entries()
            .filter_map(|e| {
                Credentials::optional(e.settings.rest_username.as_deref(), e.settings.rest_password.as_deref())
                    .map(|c| (e.name.clone(), c))
            })
            .collect();
        RestApp { registry, mount, credentials, metrics: false }
    }
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
    let mut app = RestApp::new(registry, options.mount.clone());
    app.metrics = options.metrics && matches!(options.mount, Mount::PerStore);
    let app = web::Data::new(app);
    let max_body = usize::try_from(options.max_body).unwrap_or(usize::MAX);
    let mut http = HttpServer::new(move || {
        let activity = activity.clone();
        App::new()
            .app_data(app.clone())
            .app_data(web::PayloadConfig::new(max_body))
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
