//! `borgstore-server-rest`: one store over the borgstore REST protocol v1, a drop-in
//! for the Python server of the same name (same flags, same defaults).
//!
//! Requests go through a store actor exactly as in `borgstored`, so the REST semantics
//! are the daemon's. See `--help`, README.md and REST-API.md.

use borgstore_daemon::access::Door;
use borgstore_daemon::actor::Registry;
use borgstore_daemon::config::{
    file_url, DaemonConfig, StoreSettings, DEFAULT_MAX_FRAME, DEFAULT_MAX_IN_FLIGHT, DEFAULT_REST_MAX_BODY,
};
use borgstore_daemon::rest::tls::{TlsFiles, TlsReloader};
use borgstore_daemon::rest::{self, borg_serve, idle::Activity, Listen, Mount, RestOptions};
use borgstore_daemon::systemd::{self, Notice};
use clap::Parser;
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// Serve one borgstore backend over the borgstore REST protocol v1 (borg 2: `borg -r http://...`).
///
/// Listens on --host/--port (TCP), on the socket systemd passes (--socket-activation), or
/// speaks HTTP on stdin/stdout (--stdio, what `rest://` URLs start over ssh). With
/// --idle-timeout it exits once idle; under socket activation the next connection starts
/// it again (systemd/borgstore-rest@.service).
#[derive(Parser, Debug)]
#[command(name = "borgstore-server-rest", version, about, long_about)]
struct Args {
    /// Address to listen on (ignored with --socket-activation and --stdio).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (ignored with --socket-activation and --stdio).
    #[arg(long, default_value_t = 5618)]
    port: u16,
    /// Backend URL, e.g. file:///srv/repos/main, or FILE:path for a path relative to the
    /// working directory (~ expanded), as `rest://` clients pass it.
    #[arg(long)]
    backend: String,
    /// Basic auth username (with --password; without both, no authentication).
    #[arg(long, env = "BORGSTORE_REST_USERNAME", hide_env_values = true)]
    username: Option<String>,
    /// Basic auth password.
    #[arg(long, env = "BORGSTORE_REST_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// REST users from an Apache htpasswd file (bcrypt as `htpasswd -B` writes, or
    /// SHA-crypt); together with --username/--password if both are given. Read again on
    /// SIGHUP (a file with an error keeps the users loaded before).
    #[arg(long, value_name = "FILE")]
    htpasswd: Option<PathBuf>,
    /// Permissions (file: backends): a JSON object {"path": "letters", ...} or one of
    /// borgbackup-all, borgbackup-no-delete, borgbackup-write-only, borgbackup-read-only.
    #[arg(long)]
    permissions: Option<String>,
    /// Quota in bytes (file: backends).
    #[arg(long)]
    quota: Option<u64>,
    /// Serve on the one socket systemd passes (LISTEN_FDS, fd 3).
    #[arg(long)]
    socket_activation: bool,
    /// Speak HTTP/1.1 on stdin/stdout; logs go to stderr; exit 0 at EOF.
    #[arg(long)]
    stdio: bool,
    /// Largest request body (stored value) accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_REST_MAX_BODY, value_name = "BYTES")]
    max_body: u64,
    /// HTTP worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Durability of acknowledged writes (file: and sftp: backends): off, always or batch.
    /// always: each write is flushed (file before its rename, directory after) before the
    /// reply; batch: the same promise, concurrent writes sharing flushes (group commit);
    /// off: as Python's server (a power loss may lose acknowledged writes).
    #[arg(long, default_value = "batch", value_name = "MODE")]
    fsync: String,
    /// Request bytes held in memory at once (bodies not streamed to disk); more waits up
    /// to 30 s, then gets 503.
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT, value_name = "BYTES")]
    max_in_flight: u64,
    /// Exit 0 after SECONDS with no request in flight and none arriving (0: never). Under
    /// systemd socket activation the next connection starts the server again.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    idle_timeout: u64,
    #[command(flatten)]
    tls: borgstore_daemon::rest::tls::TlsArgs,
    /// Log filter (tracing EnvFilter syntax) [env: RUST_LOG; default: info].
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
}

fn permissions(value: &str) -> Result<Option<BTreeMap<String, String>>, String> {
    if let Some(p) =
        borgstore_daemon::backends::posixfs::permissions::borg_mode(value).filter(|_| value.starts_with("borgbackup-"))
    {
        return Ok(p);
    }
    serde_json::from_str::<BTreeMap<String, String>>(value).map(Some).map_err(|_| {
        format!(
            "invalid --permissions {value:?}: use borgbackup-all, borgbackup-no-delete, borgbackup-write-only, \
             borgbackup-read-only or a JSON object like {{\"\": \"lr\", \"data\": \"lrw\"}}"
        )
    })
}

/// `FILE:path` (relative to the working directory, ~ expanded) -> a file:// URL.
fn backend_url(backend: &str) -> Result<String, String> {
    let Some(path) = backend.strip_prefix("FILE:") else {
        return Ok(backend.to_string());
    };
    let expanded: PathBuf = if let Some(rest) = path.strip_prefix('~') {
        let (user, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let home = if user.is_empty() {
            std::env::var_os("HOME").map(PathBuf::from).ok_or("FILE:~ needs $HOME")?
        } else {
            nix::unistd::User::from_name(user)
                .ok()
                .flatten()
                .map(|u| u.dir)
                .ok_or_else(|| format!("FILE:~{user}: no such user"))?
        };
        home.join(tail)
    } else {
        PathBuf::from(path)
    };
    let absolute = std::path::absolute(&expanded).map_err(|e| format!("FILE:{path}: {e}"))?;
    Ok(file_url(&normalize(&absolute)))
}

/// Remove `.` and resolve `..` lexically (the path may not exist yet).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn config(args: &Args) -> Result<DaemonConfig, String> {
    let url = backend_url(&args.backend)?;
    let mut store = StoreSettings::new(url.clone());
    let is_file = url.starts_with("file:");
    if let Some(p) = &args.permissions {
        if !is_file {
            return Err("--permissions only works with file: backends".into());
        }
        store.permissions = permissions(p)?;
    }
    if let Some(q) = args.quota {
        if !is_file {
            return Err("--quota only works with file: backends".into());
        }
        store.quota = Some(q);
    }
    store.rest_username = args.username.clone();
    store.rest_password = args.password.clone();
    store.htpasswd = args.htpasswd.clone();
    store.users("rest").map_err(|e| e.message)?;
    store.fsync = args.fsync.parse().map_err(|e: borgstore_ipc::Error| format!("--fsync: {}", e.message))?;
    // Like Python's server: whoever reaches the listener may use the store (with the
    // credentials, when given); there are no uid grants here.
    store.public_on = Door::ALL.into_iter().collect();
    store.permissions().map_err(|e| e.message)?;
    if args.max_in_flight < 1 << 20 {
        return Err("--max-in-flight must be at least 1048576 bytes (1 MiB)".into());
    }
    Ok(DaemonConfig {
        socket: PathBuf::new(),
        socket_mode: 0o660,
        max_frame: DEFAULT_MAX_FRAME,
        rest: None,
        rest_socket: None,
        rest_max_body: args.max_body,
        rest_metrics: false,
        tls_cert: args.tls.cert.clone(),
        tls_key: args.tls.key.clone(),
        tls_client_ca: args.tls.client_ca.clone(),
        max_in_flight: args.max_in_flight,
        stores: BTreeMap::from([("rest".to_string(), store)]),
        state_dir: borgstore_daemon::config::default_state_dir(),
    })
}

/// The systemd-passed socket as a listener (Unix or TCP, whatever it is).
fn adopt(fd: OwnedFd) -> std::io::Result<Listen> {
    use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike, SockaddrStorage};
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd()).map_err(std::io::Error::from)?;
    Ok(match addr.family() {
        Some(AddressFamily::Unix) => Listen::Unix(std::os::unix::net::UnixListener::from(fd)),
        _ => Listen::Tcp(std::net::TcpListener::from(fd)),
    })
}

fn main() {
    borgstore_daemon::memory::few_arenas();
    borgstore_daemon::limits::raise_open_files();
    let argv: Vec<String> = std::env::args().collect();
    let args = if argv.get(1).map(String::as_str) == Some("serve") { borg_serve(&argv[1..]) } else { Args::parse() };
    let inherited = if args.socket_activation {
        match systemd::listen_fds() {
            Ok(fds) if fds.len() == 1 => fds.into_iter().next().map(|(_, fd)| fd),
            Ok(fds) => {
                eprintln!(
                    "borgstore-server-rest: --socket-activation needs exactly one socket from systemd, got {}",
                    fds.len()
                );
                std::process::exit(2);
            }
            Err(e) => {
                eprintln!("borgstore-server-rest: bad socket activation environment: {e}");
                std::process::exit(2);
            }
        }
    } else {
        None
    };
    let filter = args.log.clone().or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "info".to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let config = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("borgstore-server-rest: {e}");
            std::process::exit(2);
        }
    };
    let tls = match load_tls(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("borgstore-server-rest: {e}");
            std::process::exit(2);
        }
    };
    let system = match borgstore_daemon::actor::system() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("borgstore-server-rest: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = system.block_on(run(args, config, tls, inherited));
    std::process::exit(code);
}

/// The TLS files, loaded and checked (None: plain HTTP).
fn load_tls(args: &Args) -> Result<Option<TlsReloader>, String> {
    let files = TlsFiles::from_settings(
        args.tls.cert.as_deref(),
        args.tls.key.as_deref(),
        args.tls.client_ca.as_deref(),
        rest::tls::FLAG_NAMES,
    )?;
    let Some(files) = files else { return Ok(None) };
    if args.stdio {
        return Err("--tls-cert does not apply to --stdio (the transport there is the ssh connection)".into());
    }
    TlsReloader::load(files).map(Some)
}

// ---- SIGHUP: reload -------------------------------------------------------------------
// One function does everything a SIGHUP reloads; add further reloads here.

/// Reload what can be reloaded at run time (see [`borgstore_daemon::reload`]).
fn reload_all(args: &Args, registry: &Registry, tls: Option<&TlsReloader>) {
    // The htpasswd file: the store's users.
    borgstore_daemon::reload::reload_all(registry, config(args), "users", tls);
}
// ---- end of SIGHUP --------------------------------------------------------------------

/// `serve --rest --backend FILE:…`: borg's remote side of an ssh:// repository (see
/// `rest::borg_serve`). Serves like `--stdio` or exits as `borg serve` would.
fn borg_serve(argv: &[String]) -> Args {
    // borg 2 gives the specific exit codes unless BORG_EXIT_CODES asks for others.
    let modern = !matches!(std::env::var("BORG_EXIT_CODES").as_deref(), Ok(v) if v != "modern");
    let original = std::env::var("SSH_ORIGINAL_COMMAND").ok();
    let env_permissions = std::env::var("BORG_REPO_PERMISSIONS").ok();
    let serve = match borg_serve::prepare(argv, original.as_deref(), env_permissions.as_deref()) {
        Ok(s) => s,
        Err(e @ borg_serve::ServeError::Help(_)) => {
            print!("{}", e.message());
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("{}", e.message());
            std::process::exit(e.exit_code(modern));
        }
    };
    let mut line = vec!["borgstore-server-rest", "--stdio", "--backend", &serve.backend, "--log", serve.log_filter];
    let permissions = serve.permissions.as_ref().map(|p| serde_json::json!(p).to_string());
    if let Some(p) = &permissions {
        line.extend(["--permissions", p]);
    }
    Args::parse_from(line)
}

async fn run(args: Args, config: DaemonConfig, tls: Option<TlsReloader>, inherited: Option<OwnedFd>) -> i32 {
    // First of all: a supervisor (or a test) may send SIGTERM as soon as the listener or
    // READY is there, and must get a drain, not the default death by signal.
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot install signal handlers");
            return 1;
        }
    };
    // SIGHUP reloads instead of killing; not under --stdio, where a hangup means the ssh
    // session is gone.
    let mut hup = if args.stdio {
        None
    } else {
        match signal(SignalKind::hangup()) {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::error!("cannot install the SIGHUP handler: {e}");
                return 1;
            }
        }
    };
    let registry = match Registry::start(&config).await {
        Ok(r) => Arc::new(r),
        Err(e) => {
            tracing::error!("{}", e.message);
            return 1;
        }
    };
    let options = RestOptions {
        mount: Mount::Root("rest".into()),
        max_body: config.rest_max_body,
        workers: args.workers,
        metrics: false,
        drain_unread: args.stdio,
        tls: tls.clone(),
    };
    let stdio_dir = if args.stdio { tempfile::Builder::new().prefix("borgstore-rest-").tempdir().ok() } else { None };
    let listener = if let Some(fd) = inherited {
        adopt(fd).map(|l| (l, "the socket from systemd".to_string()))
    } else if let Some(dir) = &stdio_dir {
        rest::bind_unix(&dir.path().join("http.sock"), 0o600).map(|l| (Listen::Unix(l), "stdin/stdout".to_string()))
    } else if args.stdio {
        Err(std::io::Error::other("cannot make a private temporary directory for --stdio"))
    } else {
        let addr = format!("{}:{}", args.host, args.port);
        let scheme = if tls.is_some() { "https" } else { "http" };
        std::net::TcpListener::bind(&addr).map(|l| (Listen::Tcp(l), format!("{scheme}://{addr}/")))
    };
    let (listener, where_) = match listener {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen: {e}");
            return 1;
        }
    };
    if tls.is_some() && matches!(listener, Listen::Unix(_)) {
        tracing::warn!("the socket from systemd is a Unix socket: it speaks plain HTTP, --tls-cert is not used");
    }
    let activity = (args.idle_timeout > 0).then(Activity::new);
    let server = match rest::server_tracked(registry.clone(), &options, vec![listener], activity.clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot start the HTTP server: {e}");
            return 1;
        }
    };
    let handle = server.handle();
    let task = actix_rt::spawn(server);
    tracing::info!("borgstore REST server on {where_}");
    tokio::spawn(borgstore_daemon::memory::give_back_periodically());
    systemd::notify(Notice::Ready);

    let idle = async {
        match &activity {
            Some(a) => a.idle(Duration::from_secs(args.idle_timeout)).await,
            None => std::future::pending().await,
        }
    };
    let mut code = 0;
    if let Some(dir) = &stdio_dir {
        let sock = dir.path().join("http.sock");
        tokio::select! {
            r = rest::stdio::pump(&sock) => if let Err(e) = r {
                tracing::error!("stdio: {e}");
                code = 1;
            },
            _ = term.recv() => {},
            _ = int.recv() => {},
            _ = idle => tracing::info!("no request for {} s: exiting", args.idle_timeout),
        }
    } else {
        tokio::pin!(idle);
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: draining"); break }
                _ = int.recv() => { tracing::info!("SIGINT: draining"); break }
                _ = &mut idle => { tracing::info!("no request for {} s: exiting", args.idle_timeout); break }
                _ = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    reload_all(&args, &registry, tls.as_ref())
                }
            }
        }
    }
    systemd::notify(Notice::Stopping);
    handle.stop(true).await;
    let _ = task.await;
    for (_, result) in registry.shutdown().await {
        if let Err(e) = result {
            tracing::error!("closing the store failed: {}", e.message);
            code = 1;
        }
    }
    code
}
