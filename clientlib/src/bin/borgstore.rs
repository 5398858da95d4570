//! `borgstore`: the command line client of `borgstored`.

use borgstore_client::{Client, ClientOptions, Error, ErrorKind, ItemInfo, MoveAction, StatValue};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

/// Use the key/value stores served by borgstored.
///
/// Exit codes: 0 success, 1 error, 2 bad usage, 3 not found (no such item or store),
/// 4 permission denied or quota exceeded, 5 daemon not reachable / connection lost.
#[derive(Parser, Debug)]
#[command(name = "borgstore", version, about, long_about)]
struct Cli {
    /// The daemon's socket [default: $BORGSTORE_SOCKET, else borgstored's default].
    #[arg(long, global = true, value_name = "PATH", env = "BORGSTORE_SOCKET")]
    socket: Option<PathBuf>,
    /// The store to use, by its name in the daemon's configuration.
    #[arg(long, global = true, default_value = "default", env = "BORGSTORE_STORE")]
    store: String,
    /// Give the store a cache backend (its own user only; the cache is shared by all clients).
    #[arg(long, global = true, value_name = "URL", requires = "cache")]
    cache_url: Option<String>,
    /// Cache policy of a namespace: NS=MODE[,max_age=SECONDS][,size=BYTES], MODE mirror or
    /// writethrough, e.g. data/=writethrough,size=1073741824 (repeatable; with --cache-url).
    #[arg(long = "cache", global = true, value_name = "NS=POLICY", requires = "cache_url")]
    cache: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

/// `NS=MODE[,max_age=S][,size=B]` -> a namespace policy.
fn cache_policy(spec: &str, options: borgstore_client::CacheOptions) -> Result<borgstore_client::CacheOptions, Error> {
    let bad =
        || Error::new(ErrorKind::InvalidArgument, format!("--cache {spec:?}: expected NS=MODE[,max_age=S][,size=B]"));
    let (ns, rest) = spec.split_once('=').ok_or_else(bad)?;
    let mut parts = rest.split(',');
    let mode = parts.next().filter(|m| !m.is_empty()).ok_or_else(bad)?;
    let (mut max_age, mut size) = (None, None);
    for p in parts {
        match p.split_once('=') {
            Some(("max_age", v)) => {
                let secs: f64 = v.parse().ok().filter(|s: &f64| *s >= 0.0 && s.is_finite()).ok_or_else(bad)?;
                max_age = Some(std::time::Duration::from_secs_f64(secs));
            }
            Some(("size", v)) => size = Some(v.parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        }
    }
    Ok(options.namespace(ns, mode, max_age, size))
}

#[derive(Args, Debug, Clone, Copy)]
struct Json {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the store.
    Create,
    /// Delete the store and everything in it.
    Destroy,
    /// Store a value from FILE (or standard input when FILE is - or missing).
    Store { name: String, file: Option<PathBuf> },
    /// Write an item's value (or a range of it) to standard output or --output.
    Load {
        name: String,
        /// Start at this byte; negative counts from the end.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        offset: i64,
        /// Read at most this many bytes.
        #[arg(long)]
        size: Option<u64>,
        /// Address the soft-deleted item.
        #[arg(long)]
        deleted: bool,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Show an item's metadata.
    Info {
        name: String,
        #[arg(long)]
        deleted: bool,
        #[command(flatten)]
        json: Json,
    },
    /// List the items of a namespace (recursively, sorted).
    List {
        #[arg(default_value = "")]
        namespace: String,
        /// List soft-deleted items instead of live ones.
        #[arg(long)]
        deleted: bool,
        #[command(flatten)]
        json: Json,
    },
    /// Delete an item for good (see `move --delete` for soft deletion).
    Delete {
        name: String,
        #[arg(long)]
        deleted: bool,
    },
    /// Soft delete, undelete, change the nesting level of, or rename an item.
    Move {
        name: String,
        /// New name (rename).
        new_name: Option<String>,
        /// Soft delete.
        #[arg(long, conflicts_with_all = ["undelete", "change_level", "new_name"])]
        delete: bool,
        /// Undo a soft delete.
        #[arg(long, conflicts_with_all = ["change_level", "new_name"])]
        undelete: bool,
        /// Move to the namespace's current nesting level.
        #[arg(long, conflicts_with = "new_name")]
        change_level: bool,
        /// With --change-level or a rename: address soft-deleted items.
        #[arg(long)]
        deleted: bool,
    },
    /// Print an item's hex digest.
    Hash {
        name: String,
        /// md5, sha1, sha224, sha256, sha384, sha512, sha3_224/256/384/512, blake2b, blake2s, blake3.
        #[arg(long, short, default_value = "sha256")]
        algorithm: String,
        #[arg(long)]
        deleted: bool,
        #[command(flatten)]
        json: Json,
    },
    /// Wait until the store's write-behind uploads reach the primary backend.
    ///
    /// A store with write-behind namespaces (the `write_behind` key in borgstored's
    /// config) acknowledges a value once it is durable in a local spool on the daemon's
    /// host, and uploads it to the primary (remote) backend in the background. `sync`
    /// returns once every value acknowledged before it is on the primary; until then
    /// the remote copy may lack recent writes. Run it after a backup (`borg create`,
    /// `borg compact`, ...) before relying on the remote copy alone. It waits as long
    /// as the primary is unreachable (stop it with Ctrl-C: nothing is lost, the uploads
    /// go on). For a store without write-behind it returns at once.
    #[command(long_about)]
    Sync,
    /// Show the quota limit and usage (-1: off).
    Quota {
        #[command(flatten)]
        json: Json,
    },
    /// Show the store's operation statistics (--by-principal: per principal instead).
    Stats {
        /// Counters per principal (calls, bytes in/out, refusals): every principal's for
        /// the daemon's own user, your own for anyone else.
        #[arg(long)]
        by_principal: bool,
        #[command(flatten)]
        json: Json,
    },
    /// Delete for good the items of the store's delete quarantine (deletes by principals
    /// without D, kept for quarantine_days) whose window has passed. The daemon also
    /// does this by itself every hour. Needs D at the store's root.
    Purge {
        #[command(flatten)]
        json: Json,
    },
    /// List the stores the daemon serves to you.
    Stores {
        #[command(flatten)]
        json: Json,
    },
    /// A short round trip (store, list, load, soft delete, clean up) on the store.
    Demo,
    /// Show a store's audit log: the last records, or new ones as they come (--follow).
    ///
    /// Reads FILE, the audit log borgstored writes for a store (one JSON object per
    /// line), directly: no daemon is asked, and the file's own permissions decide who may
    /// read it (borgstored creates it with mode 0640: its user and group). Rotated files
    /// are FILE.1 (newest) to FILE.N; give one of them to read it.
    ///
    /// Columns: time (UTC), principal, door, operation, names, size, result. A line that
    /// is not an audit record is shown raw after "!! malformed line:" (with --json, on
    /// standard error, so standard output stays JSON Lines). --socket and --store are
    /// not used.
    #[command(long_about)]
    Audit {
        /// The audit log file.
        file: PathBuf,
        /// Show the last N records first (0: none).
        #[arg(long, short = 'n', value_name = "N", default_value_t = 20)]
        lines: usize,
        /// Keep printing records as they are appended, and go on in the new file when the
        /// log is rotated; stop with Ctrl-C.
        #[arg(long, short)]
        follow: bool,
        /// Print each record as written (JSON Lines) instead of columns.
        #[arg(long)]
        json: bool,
    },
}

fn exit_code(e: &Error) -> i32 {
    match e.kind {
        ErrorKind::ObjectNotFound | ErrorKind::BackendDoesNotExist => 3,
        ErrorKind::PermissionDenied | ErrorKind::QuotaExceeded => 4,
        ErrorKind::ConnectionLost => 5,
        _ => 1,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Audit { file, lines, follow, json } => std::process::exit(audit(&file, lines, follow, json)),
        command => command,
    };
    let mut options = ClientOptions::new(cli.store.clone());
    options.client_name = format!("borgstore-cli {}", env!("CARGO_PKG_VERSION"));
    if let Some(s) = &cli.socket {
        options.socket = s.clone();
    }
    if let Some(url) = &cli.cache_url {
        let mut cache = borgstore_client::CacheOptions::new(url.clone());
        for spec in &cli.cache {
            cache = match cache_policy(spec, cache) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("borgstore: {}", e.message);
                    std::process::exit(2);
                }
            };
        }
        options.cache = Some(cache);
    }
    let result = match Client::connect(options).await {
        Ok(client) => run(&client, command).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        eprintln!("borgstore: {}: {}", e.kind, e.message);
        std::process::exit(exit_code(&e));
    }
}

/// `borgstore audit`: print the last `lines` records of `file`, then (with `follow`) new
/// ones as they are appended. Returns the exit code: 3 no such file, 4 not allowed to
/// read it, 1 another error, 0 otherwise (also when standard output is closed).
fn audit(file: &std::path::Path, lines: usize, follow: bool, json: bool) -> i32 {
    use borgstore_client::audit::{tail, Columns, Entry, Follower, MALFORMED};
    use std::io::ErrorKind as Io;
    let fail = |e: std::io::Error| {
        eprintln!("borgstore: audit: {}: {e}", file.display());
        match e.kind() {
            Io::NotFound => 3,
            Io::PermissionDenied => 4,
            _ => 1,
        }
    };
    let mut columns = Columns::default();
    // Print a group of lines; false once standard output is gone.
    let mut print = |raw: Vec<Vec<u8>>| -> bool {
        let entries: Vec<Entry> = raw.into_iter().map(Entry::parse).collect();
        let mut out = std::io::stdout().lock();
        columns.fit(&entries);
        for e in &entries {
            let written = match (json, e) {
                (true, Entry::Record(_, line)) => out.write_all(line).and_then(|()| out.write_all(b"\n")),
                (true, Entry::Malformed(raw)) => {
                    eprintln!("{MALFORMED} {}", String::from_utf8_lossy(raw));
                    Ok(())
                }
                (false, e) => writeln!(out, "{}", columns.render(e)),
            };
            if written.is_err() {
                return false;
            }
        }
        out.flush().is_ok()
    };
    let f = match std::fs::File::open(file) {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_dir()) => {
            return fail(std::io::Error::new(Io::IsADirectory, "is a directory, not an audit log"))
        }
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let t = match tail(&f, lines) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    if !follow {
        let mut all = t.lines;
        if lines > 0 && !t.partial.is_empty() {
            all.push(t.partial); // a torn last line, shown as such
        }
        print(all);
        return 0;
    }
    if !print(t.lines) {
        return 0;
    }
    let mut follower = match Follower::new(file, f, t.end, t.partial) {
        Ok(fo) => fo,
        Err(e) => return fail(e),
    };
    loop {
        match follower.poll() {
            Ok(new) if new.is_empty() => {}
            Ok(new) => {
                if !print(new) {
                    return 0;
                }
            }
            Err(e) => return fail(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn io_err(e: std::io::Error) -> Error {
    Error::backend(format!("I/O error: {e}"))
}

fn bar(total: u64, what: &str) -> Option<ProgressBar> {
    if total < 8 << 20 || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    Some(pb)
}

/// The next (bytes received, frame size) of the reply arriving; never resolves without a
/// receiver or once the connection is gone.
async fn next_progress(rx: &mut Option<tokio::sync::watch::Receiver<(u64, u64)>>) -> (u64, u64) {
    let Some(r) = rx else { return std::future::pending().await };
    if r.changed().await.is_err() {
        *rx = None;
        return std::future::pending().await;
    }
    let p = *r.borrow_and_update();
    p
}

fn info_json(i: &ItemInfo) -> serde_json::Value {
    serde_json::json!({
        "name": i.name, "exists": i.exists, "size": i.size, "directory": i.directory,
        "atime": i.atime, "mtime": i.mtime,
    })
}

fn stat_json(v: &StatValue) -> serde_json::Value {
    match v {
        StatValue::Int(i) => (*i).into(),
        StatValue::Float(f) => serde_json::Number::from_f64(*f).map(Into::into).unwrap_or(serde_json::Value::Null),
        StatValue::Bool(b) => (*b).into(),
    }
}

async fn run(client: &Client, command: Command) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Create => client.create().await?,
        Command::Destroy => client.destroy().await?,
        Command::Store { name, file } => {
            let mut value = Vec::new();
            match file.as_deref().filter(|f| f.as_os_str() != "-") {
                Some(path) => value = std::fs::read(path).map_err(io_err)?,
                None => {
                    std::io::stdin().read_to_end(&mut value).map_err(io_err)?;
                }
            }
            let pb = bar(value.len() as u64, "store");
            let progress = |done: u64, _total: u64| {
                if let Some(pb) = &pb {
                    pb.set_position(done);
                }
            };
            client.store_with_progress(&name, value, &progress).await?;
            if let Some(pb) = pb {
                pb.finish_and_clear();
            }
        }
        Command::Load { name, offset, size, deleted, output } => {
            // The bar is sized from the reply frame as it arrives: no `info` round trip
            // first, and none at all when nobody watches a terminal.
            let mut progress = match std::io::stderr().is_terminal() {
                true => Some(client.receive_progress().await?),
                false => None,
            };
            if let Some(rx) = &mut progress {
                rx.borrow_and_update(); // an earlier reply's progress is not ours
            }
            let load = client.load(&name, offset, size, deleted);
            tokio::pin!(load);
            let mut pb = None;
            let data = loop {
                tokio::select! {
                    data = &mut load => break data?,
                    (got, total) = next_progress(&mut progress) => {
                        if pb.is_none() {
                            pb = bar(total, "load");
                        }
                        if let Some(pb) = &pb {
                            pb.set_position(got);
                        }
                    }
                }
            };
            if let Some(pb) = pb {
                pb.finish_and_clear();
            }
            match output {
                Some(path) => std::fs::write(path, &data).map_err(io_err)?,
                None => out.write_all(&data).map_err(io_err)?,
            }
        }
        Command::Info { name, deleted, json } => {
            let i = client.info(&name, deleted).await?;
            if json.json {
                writeln!(out, "{}", info_json(&i)).map_err(io_err)?;
            } else if !i.exists {
                return Err(Error::not_found(&name));
            } else {
                writeln!(
                    out,
                    "name: {}\nsize: {}\ndirectory: {}\natime: {}\nmtime: {}",
                    i.name, i.size, i.directory, i.atime, i.mtime
                )
                .map_err(io_err)?;
            }
        }
        Command::List { namespace, deleted, json } => {
            let mut items = client.list(&namespace, deleted).await?;
            while let Some(i) = items.next().await? {
                if json.json {
                    writeln!(out, "{}", info_json(&i)).map_err(io_err)?;
                } else {
                    writeln!(out, "{}\t{}", i.name, i.size).map_err(io_err)?;
                }
            }
        }
        Command::Delete { name, deleted } => client.delete(&name, deleted).await?,
        Command::Move { name, new_name, delete, undelete, change_level, deleted } => {
            let action = match (delete, undelete, change_level, new_name) {
                (true, _, _, _) => MoveAction::Delete,
                (_, true, _, _) => MoveAction::Undelete,
                (_, _, true, _) => MoveAction::ChangeLevel { deleted },
                (_, _, _, Some(new_name)) => MoveAction::Rename { new_name, deleted },
                _ => return Err(Error::invalid("move needs --delete, --undelete, --change-level or a NEW_NAME")),
            };
            client.move_(&name, action).await?;
        }
        Command::Hash { name, algorithm, deleted, json } => {
            let digest = client.hash(&name, &algorithm, deleted).await?;
            if json.json {
                writeln!(out, "{}", serde_json::json!({"name": name, "algorithm": algorithm, "digest": digest}))
            } else {
                writeln!(out, "{digest}")
            }
            .map_err(io_err)?;
        }
        Command::Sync => client.sync().await?,
        Command::Quota { json } => {
            let q = client.quota().await?;
            if json.json {
                writeln!(out, "{}", serde_json::json!({"limit": q.limit, "usage": q.usage}))
            } else {
                writeln!(out, "limit: {}\nusage: {}", q.limit, q.usage)
            }
            .map_err(io_err)?;
        }
        Command::Stats { by_principal: true, json } => {
            let counters = client.principal_stats().await?;
            if json.json {
                let list: Vec<serde_json::Value> = counters
                    .iter()
                    .map(|c| {
                        serde_json::json!({"principal": c.principal, "calls": c.calls, "bytes_in": c.bytes_in,
                            "bytes_out": c.bytes_out, "refusals": c.refusals})
                    })
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(list)).map_err(io_err)?;
            } else {
                writeln!(
                    out,
                    "{:<24} {:>10} {:>14} {:>14} {:>9}",
                    "principal", "calls", "bytes_in", "bytes_out", "refusals"
                )
                .map_err(io_err)?;
                for c in &counters {
                    writeln!(
                        out,
                        "{:<24} {:>10} {:>14} {:>14} {:>9}",
                        c.principal, c.calls, c.bytes_in, c.bytes_out, c.refusals
                    )
                    .map_err(io_err)?;
                }
            }
        }
        Command::Purge { json } => {
            let p = client.purge().await?;
            if json.json {
                let v = serde_json::json!({"purged": p.purged, "kept": p.kept, "gone": p.gone, "failed": p.failed});
                writeln!(out, "{v}")
            } else {
                writeln!(out, "purged: {}\nkept: {}\ngone: {}\nfailed: {}", p.purged, p.kept, p.gone, p.failed)
            }
            .map_err(io_err)?;
        }
        Command::Stats { by_principal: false, json } => {
            let st = client.stats().await?;
            if json.json {
                let map: serde_json::Map<String, serde_json::Value> =
                    st.iter().map(|(k, v)| (k.clone(), stat_json(v))).collect();
                writeln!(out, "{}", serde_json::Value::Object(map)).map_err(io_err)?;
            } else {
                for (k, v) in &st {
                    writeln!(out, "{k}: {}", stat_json(v)).map_err(io_err)?;
                }
            }
        }
        Command::Stores { json } => {
            let stores = client.stores().await?;
            for s in stores {
                if json.json {
                    writeln!(out, "{}", serde_json::json!({"name": s.name, "scheme": s.url_scheme}))
                } else {
                    writeln!(out, "{}\t{}", s.name, s.url_scheme)
                }
                .map_err(io_err)?;
            }
        }
        Command::Demo => demo(client, &mut out).await?,
        // Handled in `main` before connecting: it reads a file, not the daemon.
        Command::Audit { .. } => return Err(Error::invalid("audit reads its file without a daemon")),
    }
    Ok(())
}

async fn demo(client: &Client, out: &mut impl Write) -> Result<(), Error> {
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(io_err);
    w(out, format!("daemon: {}, store: {}", client.server_name().await?, client.options().store))?;
    client.store("demo/settings", b"answer = 42".to_vec()).await?;
    w(out, "stored demo/settings".into())?;
    let items = client.list("demo", false).await?.collect().await?;
    let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
    w(out, format!("listed demo: {}", names.join(", ")))?;
    let value = client.load("demo/settings", 0, None, false).await?;
    w(out, format!("loaded demo/settings: {}", String::from_utf8_lossy(&value)))?;
    client.move_("demo/settings", MoveAction::Delete).await?;
    let deleted = client.list("demo", true).await?.collect().await?;
    w(out, format!("soft-deleted; deleted items now: {}", deleted.len()))?;
    client.delete("demo/settings", true).await?;
    let st = client.stats().await?;
    let n = |k: &str| st.get(k).map(|v| v.as_f64()).unwrap_or(0.0);
    w(
        out,
        format!(
            "stats: store_calls={} load_calls={} list_calls={}",
            n("store_calls"),
            n("load_calls"),
            n("list_calls")
        ),
    )?;
    w(out, "round trip ok".into())
}
