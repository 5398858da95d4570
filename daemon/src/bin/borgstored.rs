//! `borgstored`: serves key/value stores to local processes over a Unix socket.
//!
//! See `borgstored --help`, README.md and DESIGN.md section 4.

use borgstore_daemon::access::Door;
use borgstore_daemon::actor::Registry;
use borgstore_daemon::config::{self, DaemonConfig, Overrides};
use borgstore_daemon::ipc_server::{self, ServerOptions};
use borgstore_daemon::rest;
use borgstore_daemon::systemd::{self, Notice};
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

/// Serve borgstore key/value stores to local processes.
///
/// With no options, one store named `default` is served from a file:// directory under
/// your data directory (created on first start), on a socket under $XDG_RUNTIME_DIR.
/// Clients (the `borgstore` CLI, the Rust client library) find the same socket by default.
#[derive(Parser, Debug, Clone)]
#[command(name = "borgstored", version, about, long_about)]
struct Args {
    /// TOML config file (shape: DESIGN.md section 4); flags override or add to it.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// IPC socket path [default: $XDG_RUNTIME_DIR/borgstore/borgstored.sock, /run/borgstore/borgstored.sock for root].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Permissions of the socket file, octal [default: 0660].
    #[arg(long, value_name = "MODE")]
    socket_mode: Option<String>,
    /// Largest IPC frame accepted, in bytes [default: 268435456].
    #[arg(long, value_name = "BYTES")]
    max_frame: Option<u32>,
    /// Serve a store: NAME=URL, e.g. main=file:///srv/borgstore/main (repeatable).
    #[arg(long = "store", value_name = "NAME=URL")]
    stores: Vec<String>,
    /// Nesting levels of a namespace: NAME:NAMESPACE=LEVELS, e.g. main:data/=2 or main:data/=0,2 (repeatable).
    #[arg(long = "levels", value_name = "NAME:NS=L[,L]")]
    levels: Vec<String>,
    /// Quota of a file: store in bytes: NAME=BYTES (repeatable).
    #[arg(long = "quota", value_name = "NAME=BYTES")]
    quotas: Vec<String>,
    /// Permissions of a file: store: NAME=LETTERS for the root, or NAME={"path": "letters", ...}.
    #[arg(long = "permissions", value_name = "NAME=PERMS")]
    permissions: Vec<String>,
    /// Let another uid use a store: NAME=UID (repeatable; the daemon's own uid always may).
    #[arg(long = "allow-uid", value_name = "NAME=UID")]
    allow_uids: Vec<String>,
    /// Let a group use a store: NAME=GID (repeatable).
    #[arg(long = "allow-gid", value_name = "NAME=GID")]
    allow_gids: Vec<String>,
    /// Emulate a slow store: NAME=MICROSECONDS of latency per backend call (testing, benchmarks).
    #[arg(long = "latency", value_name = "NAME=US")]
    latencies: Vec<String>,
    /// Durability of acknowledged writes: NAME=off|always|batch [default: batch]. always:
    /// each write is flushed (file before its rename, directory after) before the reply;
    /// batch: the same promise, with concurrent writes sharing flushes (group commit);
    /// off: a power loss may lose acknowledged writes (a crash of the daemon does not).
    #[arg(long = "fsync", value_name = "NAME=MODE")]
    fsync: Vec<String>,
    /// Serve a store only on these listeners: NAME=LIST of socket, rest_socket, rest
    /// [default: all].
    #[arg(long = "serve-on", value_name = "NAME=LIST")]
    serve_on: Vec<String>,
    /// Let anybody who reaches a listener use a store there: NAME=LIST of socket,
    /// rest_socket, rest. On rest (TCP) the store then needs no credentials; on a socket
    /// any uid that can connect (see --socket-mode) is granted. Without it, a store is
    /// served on TCP only with its own credentials (--rest-auth), and the daemon refuses
    /// to start otherwise.
    #[arg(long = "public-on", value_name = "NAME=LIST")]
    public_on: Vec<String>,
    /// Request bytes held in memory at once, daemon-wide (IPC frames, REST bodies not
    /// streamed to disk); more waits (REST: up to 30 s, then 503) [default: 268435456].
    #[arg(long, value_name = "BYTES")]
    max_in_flight: Option<u64>,
    /// Also serve the REST protocol v1 on this TCP address, every store under /<name>/ (e.g. 127.0.0.1:5618).
    #[arg(long, value_name = "HOST:PORT")]
    rest: Option<String>,
    /// Also serve the REST protocol v1 on this Unix socket (mode as --socket-mode), e.g. behind nginx.
    #[arg(long, value_name = "PATH")]
    rest_socket: Option<PathBuf>,
    /// REST Basic auth for a store: NAME=USER:PASSWORD (repeatable; prefer the config file, flags show in ps).
    #[arg(long = "rest-auth", value_name = "NAME=USER:PASS")]
    rest_auth: Vec<String>,
    /// Serve GET /-/metrics (Prometheus text of every store's stats) on the REST listeners.
    /// It needs no credentials: bind --rest to loopback or guard the path with nginx.
    #[arg(long)]
    rest_metrics: bool,
    #[command(flatten)]
    tls: borgstore_daemon::rest::tls::TlsArgs,
    /// Log filter (tracing EnvFilter syntax), e.g. info or borgstore_daemon=debug [env: RUST_LOG].
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
}

fn main() {
    borgstore_daemon::memory::few_arenas();
    borgstore_daemon::limits::raise_open_files();
    let args = Args::parse();
    // Taken before any thread starts (the call edits the environment).
    let inherited = match systemd::listen_fds() {
        Ok(fds) => fds,
        Err(e) => {
            eprintln!("borgstored: bad socket activation environment: {e}");
            std::process::exit(2);
        }
    };
    let filter = args.log.clone().or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "info".to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let (config, quick) = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("borgstored: {e}");
            std::process::exit(2);
        }
    };
    let tls = match load_tls(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("borgstored: {e}");
            std::process::exit(2);
        }
    };
    let system = match borgstore_daemon::actor::system() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("borgstored: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = system.block_on(run(args, config, tls, inherited, quick));
    std::process::exit(code);
}

/// What borgstored tells a user who just started the quick-start REST listener.
struct QuickStart {
    url: String,
    credentials_file: PathBuf,
    made: bool,
}

fn load_config(args: &Args) -> Result<(DaemonConfig, Option<QuickStart>), String> {
    let text = match &args.config {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?),
        None => None,
    };
    // The quick start: `borgstored --rest ADDR` with nothing else configured serves the
    // implicit store on TCP with credentials made on first start (kept beside the store).
    let mut rest_auth = args.rest_auth.clone();
    let mut quick = None;
    let implicit = args.config.is_none() && args.stores.is_empty();
    let named = |list: &[String]| list.iter().any(|s| s.starts_with(&format!("{}=", config::DEFAULT_STORE)));
    if let (true, Some(addr)) = (implicit, &args.rest) {
        if !named(&rest_auth) && !named(&args.public_on) && !named(&args.serve_on) {
            let (user, password, file, made) = config::default_rest_credentials()
                .map_err(|e| format!("cannot keep the REST credentials of the default store: {e}"))?;
            rest_auth.push(format!("{}={user}:{password}", config::DEFAULT_STORE));
            let scheme = if args.tls.cert.is_some() { "https" } else { "http" };
            quick = Some(QuickStart {
                url: format!("{scheme}://{user}:{password}@{addr}/{}/", config::DEFAULT_STORE),
                credentials_file: file,
                made,
            });
        }
    }
    let flags = Overrides {
        socket: args.socket.clone(),
        socket_mode: args.socket_mode.clone(),
        max_frame: args.max_frame,
        stores: args.stores.clone(),
        levels: args.levels.clone(),
        quotas: args.quotas.clone(),
        permissions: args.permissions.clone(),
        allow_uids: args.allow_uids.clone(),
        allow_gids: args.allow_gids.clone(),
        latencies: args.latencies.clone(),
        rest: args.rest.clone(),
        rest_socket: args.rest_socket.clone(),
        rest_auth,
        rest_metrics: args.rest_metrics,
        tls_cert: args.tls.cert.clone(),
        tls_key: args.tls.key.clone(),
        tls_client_ca: args.tls.client_ca.clone(),
        fsync: args.fsync.clone(),
        serve_on: args.serve_on.clone(),
        public_on: args.public_on.clone(),
        max_in_flight: args.max_in_flight,
    };
    let config = DaemonConfig::build(text.as_deref(), &flags).map_err(|e| e.message)?;
    Ok((config, quick))
}

/// The TLS files of the `rest` listener, loaded and checked (None: plain HTTP).
fn load_tls(config: &DaemonConfig) -> Result<Option<rest::tls::TlsReloader>, String> {
    let files = rest::tls::TlsFiles::from_settings(
        config.tls_cert.as_deref(),
        config.tls_key.as_deref(),
        config.tls_client_ca.as_deref(),
        rest::tls::FLAG_AND_KEY_NAMES,
    )?;
    let Some(files) = files else { return Ok(None) };
    if config.rest.is_none() {
        return Err("--tls-cert/tls_cert is for the rest listener (TCP), and there is none: set --rest/rest".into());
    }
    rest::tls::TlsReloader::load(files).map(Some)
}

// ---- SIGHUP: reload -------------------------------------------------------------------
// One function does everything a SIGHUP reloads; add further reloads (config, ...) here.

/// Reload what can be reloaded at run time (see [`borgstore_daemon::reload`]).
fn reload_all(args: &Args, registry: &Registry, tls: Option<&rest::tls::TlsReloader>) {
    // The config file (and the htpasswd files it names): rules, users, doors,
    // quarantine and audit logs of the running stores.
    let config = load_config(args).map(|(c, _)| c);
    borgstore_daemon::reload::reload_all(registry, config, "configuration", tls);
}
// ---- end of SIGHUP --------------------------------------------------------------------

type RestRunning = (actix_web::dev::ServerHandle, tokio::task::JoinHandle<std::io::Result<()>>);

/// The stores a listener serves and who may use each, for the startup log.
fn served(registry: &Registry, door: Door) -> String {
    let stores = registry.describe(door);
    if stores.is_empty() {
        "no stores".to_string()
    } else {
        stores.join("; ")
    }
}

/// Start the REST listeners the config asks for (none: Ok(None)).
fn start_rest(
    config: &DaemonConfig,
    registry: &Arc<Registry>,
    tls: Option<rest::tls::TlsReloader>,
) -> std::io::Result<Option<RestRunning>> {
    let mut listeners = Vec::new();
    if let Some(addr) = &config.rest {
        listeners.push(rest::Listen::Tcp(std::net::TcpListener::bind(addr)?));
        let (scheme, client_certs) = match &tls {
            Some(t) if t.files().client_ca.is_some() => ("https", " (and a client certificate, mTLS)"),
            Some(_) => ("https", ""),
            None => ("http", ""),
        };
        tracing::info!(
            "REST on {scheme}://{addr}/<store>/, callers identified by HTTP Basic auth{client_certs}: {}",
            served(registry, Door::Rest)
        );
    }
    if let Some(path) = &config.rest_socket {
        listeners.push(rest::Listen::Unix(rest::bind_unix(path, config.socket_mode)?));
        tracing::info!(
            "REST on unix:{}, callers identified by uid/gid (SO_PEERCRED) and Basic auth where a store has it: {}",
            path.display(),
            served(registry, Door::RestSocket)
        );
    }
    if listeners.is_empty() {
        return Ok(None);
    }
    if config.rest_metrics {
        tracing::info!("REST metrics on {} (no authentication)", rest::metrics::PATH);
        let exposed = config.rest.as_deref().and_then(|a| a.parse::<std::net::SocketAddr>().ok());
        if exposed.is_some_and(|a| !a.ip().is_loopback()) {
            tracing::warn!("{} needs no credentials and --rest is not on loopback", rest::metrics::PATH);
        }
    }
    let options = rest::RestOptions {
        mount: rest::Mount::PerStore,
        max_body: config.rest_max_body,
        workers: 2,
        metrics: config.rest_metrics,
        drain_unread: false,
        tls,
    };
    let server = rest::server(registry.clone(), &options, listeners)?;
    let handle = server.handle();
    Ok(Some((handle, actix_rt::spawn(server))))
}

async fn run(
    args: Args,
    config: DaemonConfig,
    tls: Option<rest::tls::TlsReloader>,
    inherited: Vec<(String, std::os::fd::OwnedFd)>,
    quick: Option<QuickStart>,
) -> i32 {
    // First of all: a supervisor (or a test) may send SIGTERM as soon as the socket or
    // READY is there, and must get a drain, not the default death by signal; SIGHUP
    // reloads instead of killing.
    let (mut term, mut int, mut hup) =
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup())) {
            (Ok(t), Ok(i), Ok(h)) => (t, i, h),
            _ => {
                tracing::error!("cannot install signal handlers");
                return 1;
            }
        };
    let (listener, socket_desc) = match inherited.into_iter().next() {
        Some((name, fd)) => match ipc_server::adopt(fd) {
            Ok(l) => (l, format!("socket from systemd ({})", if name.is_empty() { "unnamed" } else { &name })),
            Err(e) => {
                tracing::error!("cannot use the socket passed by systemd: {e}");
                return 1;
            }
        },
        None => match ipc_server::bind(&config.socket, config.socket_mode) {
            Ok(l) => (l, config.socket.display().to_string()),
            Err(e) => {
                tracing::error!("cannot listen on {}: {e}", config.socket.display());
                return 1;
            }
        },
    };
    let registry = match Registry::start(&config).await {
        Ok(r) => Arc::new(r),
        Err(e) => {
            tracing::error!("{}", e.message);
            return 1;
        }
    };
    let names: Vec<&str> = registry.names().collect();
    tracing::info!(
        "IPC on {socket_desc}, callers identified by uid/gid (SO_PEERCRED): {}",
        served(&registry, Door::Socket)
    );
    for (name, settings) in &config.stores {
        tracing::info!(store = %name, "fsync = {}", settings.fsync);
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let options =
        ServerOptions { max_frame: config.max_frame, server_name: format!("borgstored {}", env!("CARGO_PKG_VERSION")) };
    // The IPC server runs on the store thread, beside the store actors (see Registry).
    let (server_done, server) = tokio::sync::oneshot::channel::<()>();
    let serve = ipc_server::serve(listener, registry.clone(), options, stop_rx);
    if !registry.spawn_on_store_thread(async move {
        serve.await;
        let _ = server_done.send(());
    }) {
        tracing::error!("the store thread is not running");
        return 1;
    }
    let rest = match start_rest(&config, &registry, tls.clone()) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the REST listener: {e}");
            return 1;
        }
    };
    tokio::spawn(borgstore_daemon::memory::give_back_periodically());
    systemd::notify(Notice::Ready);
    if let Some(q) = &quick {
        let kept = if q.made { "made now and kept in" } else { "kept in" };
        // On stderr, for whoever started the daemon: the line to use from another terminal.
        eprintln!(
            "\nborgstored: serving the default store for borg 2 over REST (credentials {kept} {}).\n\
             From another terminal:\n\n    borg -r {} repo-create -e repokey-aes-ocb\n    \
             borg -r {} create first-backup ~/Documents\n",
            q.credentials_file.display(),
            q.url,
            q.url
        );
    }
    systemd::notify(Notice::Status(&format!("serving {} store(s)", names.len())));
    if let Some(interval) = systemd::watchdog_interval() {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval / 2).await;
                systemd::notify(Notice::Watchdog);
            }
        });
    }

    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: draining"); break }
            _ = int.recv() => { tracing::info!("SIGINT: draining"); break }
            _ = hup.recv() => reload_all(&args, &registry, tls.as_ref()),
        }
    }
    systemd::notify(Notice::Stopping);
    systemd::notify(Notice::Status("draining in-flight requests"));
    let _ = stop_tx.send(true);
    if let Some((handle, task)) = rest {
        handle.stop(true).await;
        let _ = task.await;
    }
    let _ = server.await;
    let mut code = 0;
    for (name, result) in registry.shutdown().await {
        if let Err(e) = result {
            tracing::error!(store = %name, "closing failed: {}", e.message);
            code = 1;
        }
    }
    if !config.socket.as_os_str().is_empty() && socket_desc == config.socket.display().to_string() {
        let _ = std::fs::remove_file(&config.socket);
    }
    tracing::info!("stopped");
    code
}
