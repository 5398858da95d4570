//! Daemon configuration: a TOML file (`--config`) plus command-line flags.
//!
//! The file shape is DESIGN.md section 4. Flags override (`--socket`, `--socket-mode`,
//! `--max-frame`) or add to it (`--store NAME=URL` and the per-store flags). With no file
//! and no `--store`, one store named `default` lives under the user's data directory and
//! is created on first start, so `borgstored` works with no configuration at all.
//!
//! Every problem is reported as an InvalidArgument error that names the setting.

use crate::access::{Credentials, Door, Grants};
use crate::backends::durability::FsyncMode;
use crate::backends::posixfs::Permissions;
use crate::store::config::{NamespaceConfig, Namespaces};
use borgstore_ipc::{Error, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Default frame limit: 256 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 256 * 1024 * 1024;

/// The whole daemon configuration after files and flags are merged.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// Path of the IPC socket (default: [`default_socket`]).
    pub socket: PathBuf,
    /// File mode of the IPC socket and the REST Unix socket (default 0660).
    pub socket_mode: u32,
    /// Largest IPC frame body in bytes, announced to clients in the handshake (at least
    /// 4096, default [`DEFAULT_MAX_FRAME`]).
    pub max_frame: u32,
    /// REST listener on TCP (`HOST:PORT`), if any.
    pub rest: Option<String>,
    /// REST listener on a Unix socket (mode `socket_mode`), if any.
    pub rest_socket: Option<PathBuf>,
    /// Largest REST request body (a stored value) accepted.
    pub rest_max_body: u64,
    /// Serve `GET /-/metrics` (Prometheus text, no auth) on the REST listeners.
    pub rest_metrics: bool,
    /// TLS on the `rest` TCP listener: PEM certificate chain, its key, and the CA bundle
    /// client certificates must chain to (checked and loaded by `rest::tls`).
    pub tls_cert: Option<PathBuf>,
    /// See `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// See `tls_cert`.
    pub tls_client_ca: Option<PathBuf>,
    /// Request bytes held in memory at once, daemon-wide (IPC frames and REST bodies
    /// that are not streamed to disk); more waits.
    pub max_in_flight: u64,
    /// The served stores by name; never empty (the implicit `default` store otherwise).
    pub stores: BTreeMap<String, StoreSettings>,
    /// Where the daemon keeps its own state (the quarantine ledgers).
    pub state_dir: PathBuf,
}

/// Default daemon-wide budget of request bytes in memory: 256 MiB.
pub const DEFAULT_MAX_IN_FLIGHT: u64 = 256 << 20;

/// Default REST body limit: 1 GiB.
pub const DEFAULT_REST_MAX_BODY: u64 = 1 << 30;

/// One store the daemon serves.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    /// Store URL of the primary backend (`file:///abs/path`, `sftp://...`, `s3:...`);
    /// clients only ever see its scheme.
    pub url: String,
    /// Nesting levels per namespace (empty: one flat namespace, see [`Self::namespaces`]).
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// Quota in bytes (file: stores only); None: no quota.
    pub quota: Option<u64>,
    /// Permission letters per name, as in Python borgstore (file: stores only); None: all
    /// allowed.
    pub permissions: Option<BTreeMap<String, String>>,
    /// Uids granted this store on the Unix socket doors, besides the daemon's own.
    pub allow_uids: Vec<u32>,
    /// Groups (primary or supplementary) whose members are granted this store on the Unix
    /// socket doors.
    pub allow_gids: Vec<u32>,
    /// Create the store on start when it does not exist yet.
    pub create: bool,
    /// REST Basic-auth user; asked on every REST door when set together with the password.
    pub rest_username: Option<String>,
    /// REST Basic-auth password; only counts together with `rest_username`.
    pub rest_password: Option<String>,
    /// The cache backend (any store URL), for namespaces with a cache policy.
    pub cache_url: Option<String>,
    /// Cache policy per namespace (namespaces not listed: off).
    pub cache: BTreeMap<String, crate::store::cache::CachePolicy>,
    /// Emulated latency per primary backend call (us); None: `BORGSTORE_LATENCY`.
    pub latency_us: Option<f64>,
    /// Emulated bandwidth (bit/s); None: `BORGSTORE_BANDWIDTH`.
    pub bandwidth: Option<f64>,
    /// Durability of acknowledged writes (file: and sftp: stores).
    pub fsync: FsyncMode,
    /// Most connections the backend holds to carry concurrent operations (sftp: SSH
    /// connections; `rest://`: stdio server processes; 1 to 64; other backends ignore it).
    pub connections: usize,
    /// `s3:`/`b2:` stores (other backends ignore it): values larger than this many bytes
    /// are uploaded in parts of this size, loads larger than this are fetched as ranges
    /// of this size (5 MiB to 5 GiB, default 8 MiB).
    pub part_size: u64,
    /// `s3:`/`b2:` stores: parts (or ranges) of one value in flight at once (1 to 64,
    /// default 4).
    pub part_concurrency: usize,
    /// `s3:`/`b2:` stores: at open, multipart uploads under the store's prefix started more
    /// than this many seconds ago are aborted as abandoned, whoever started them (0: never;
    /// else at least 3600; default 86400). Our own uploads cut off by a crash are aborted
    /// at open whatever their age (the upload journal in `state_dir`).
    pub abandoned_upload_age: u64,
    /// The doors (listeners) this store is served on.
    pub serve_on: BTreeSet<Door>,
    /// The doors where this store needs no grant (see [`crate::access`]).
    pub public_on: BTreeSet<Door>,
    /// Who gets which profile, in order (empty: the rules the keys above stand for).
    pub rules: Vec<RuleSettings>,
    /// Deletes by a principal without `D` become soft deletes kept this many days.
    pub quarantine_days: Option<u32>,
    /// REST users from an Apache htpasswd file (bcrypt or SHA-crypt hashes).
    pub htpasswd: Option<PathBuf>,
    /// REST users given in the config: name -> bcrypt or SHA-crypt hash.
    pub rest_users: BTreeMap<String, String>,
    /// The store's audit log: every call that changes it, as JSON lines.
    pub audit: Option<PathBuf>,
    /// Rotate the audit log when it would pass this many bytes.
    pub audit_max_bytes: Option<u64>,
    /// Calls in flight on the primary, all clients together (None: the default of the
    /// URL's kind, see [`StoreSettings::flow`]).
    pub max_concurrency: Option<usize>,
    /// Bytes per second into the primary, all clients together.
    pub bandwidth_in: Option<u64>,
    /// Bytes per second out of the primary, all clients together.
    pub bandwidth_out: Option<u64>,
    /// Coalesce identical concurrent loads and infos (None: the URL kind's default).
    pub coalesce_reads: Option<bool>,
    /// Write-behind namespaces: namespace -> its local spool (see
    /// [`crate::flow::write_behind`]).
    pub write_behind: BTreeMap<String, WriteBehindSettings>,
    /// Other daemons (other hosts) use the same primary, so a cached copy may be stale
    /// (None: the URL kind's default, see [`StoreSettings::shared_primary`]).
    pub shared: Option<bool>,
}

/// The write-behind setting of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteBehindSettings {
    /// The spool directory (absolute; created 0700).
    pub spool: PathBuf,
    /// Writers wait while the spool would hold more value bytes than this.
    pub max_bytes: u64,
}

/// `max_concurrency` of a remote store that does not set it.
pub const REMOTE_MAX_CONCURRENCY: usize = 16;

/// Directories a recursive listing of a remote store lists ahead, concurrently: a
/// namespace nested at one level has 256 directories, and one listing request after
/// another pays the round trip 256 times.
pub const REMOTE_LIST_AHEAD: usize = 8;

/// The largest `max_concurrency` a store may set.
pub const MAX_CONCURRENCY_LIMIT: usize = 1024;

/// One `[[stores.NAME.rules]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSettings {
    /// Its label in stats, metrics and the audit log (default: `uid:1001`, `rest:alice`...).
    pub name: Option<String>,
    /// Whom it is for.
    pub principal: crate::access::Match,
    /// Its permission letters per name (None: the store's `permissions`).
    pub permissions: Option<BTreeMap<String, String>>,
    /// Its quota share: its writes are refused once the store would hold more.
    pub quota: Option<u64>,
    /// Its deletes without `D` are quarantined when the store has `quarantine_days`
    /// (default); false: refused.
    pub quarantine: bool,
}

impl StoreSettings {
    /// A store at `url` with the defaults: flat, no quota, no restrictions, no cache,
    /// served on every door to the daemon's own uid only, not created on start.
    pub fn new(url: impl Into<String>) -> Self {
        StoreSettings {
            url: url.into(),
            namespaces: BTreeMap::new(),
            quota: None,
            permissions: None,
            allow_uids: Vec::new(),
            allow_gids: Vec::new(),
            create: false,
            rest_username: None,
            rest_password: None,
            cache_url: None,
            cache: BTreeMap::new(),
            latency_us: None,
            bandwidth: None,
            fsync: FsyncMode::default(),
            connections: crate::backends::url::DEFAULT_CONNECTIONS,
            part_size: crate::backends::parts::DEFAULT_PART_SIZE,
            part_concurrency: crate::backends::parts::DEFAULT_PART_CONCURRENCY,
            abandoned_upload_age: crate::backends::parts::DEFAULT_ABANDONED_UPLOAD_AGE.as_secs(),
            serve_on: Door::ALL.into_iter().collect(),
            public_on: BTreeSet::new(),
            rules: Vec::new(),
            quarantine_days: None,
            htpasswd: None,
            rest_users: BTreeMap::new(),
            audit: None,
            audit_max_bytes: None,
            max_concurrency: None,
            bandwidth_in: None,
            bandwidth_out: None,
            coalesce_reads: None,
            write_behind: BTreeMap::new(),
            shared: None,
        }
    }

    /// Whether other daemons may change the primary behind our back: the `shared` key,
    /// by default true for remote stores (anything but `file:`), which other hosts can
    /// reach, and false for `file:` stores. A shared store checks every cache hit of a
    /// `writethrough` namespace against the primary first ([`crate::store`],
    /// `Store::cached_load`).
    pub fn shared_primary(&self) -> bool {
        self.shared.unwrap_or(!self.url.starts_with("file:"))
    }

    /// The part settings of an `s3:`/`b2:` primary (see [`crate::backends::parts`]).
    pub fn parts(&self) -> crate::backends::parts::PartOptions {
        crate::backends::parts::PartOptions {
            part_size: self.part_size,
            part_concurrency: self.part_concurrency,
            abandoned_upload_age: (self.abandoned_upload_age > 0)
                .then(|| std::time::Duration::from_secs(self.abandoned_upload_age)),
        }
    }

    /// How this store's calls flow to its primary ([`crate::flow`]). A recursive listing
    /// of a remote store lists [`REMOTE_LIST_AHEAD`] directories ahead, concurrently. A remote store
    /// (anything but `file:`) defaults to [`REMOTE_MAX_CONCURRENCY`] calls in flight
    /// and coalesced reads; a `file:` store to neither (the disk queues better than we
    /// would, and a coalesced load cannot be sent from its open file).
    pub fn flow(&self) -> crate::flow::FlowSettings {
        let remote = !self.url.starts_with("file:");
        crate::flow::FlowSettings {
            limits: crate::flow::fair::Limits {
                max_concurrency: self.max_concurrency.or(remote.then_some(REMOTE_MAX_CONCURRENCY)),
                bandwidth_in: self.bandwidth_in,
                bandwidth_out: self.bandwidth_out,
            },
            coalesce: self.coalesce_reads.unwrap_or(remote),
            spools: self.spools(),
            list_ahead: if remote { REMOTE_LIST_AHEAD } else { 0 },
        }
    }

    /// The spools of its write-behind namespaces, for [`crate::flow::write_behind`].
    pub fn spools(&self) -> Vec<crate::flow::write_behind::SpoolConfig> {
        self.write_behind
            .iter()
            .map(|(ns, w)| crate::flow::write_behind::SpoolConfig {
                namespace: ns.clone(),
                dir: w.spool.clone(),
                max_bytes: w.max_bytes,
            })
            .collect()
    }

    /// Are permissions checked per principal by the store actor ([`crate::policy`])
    /// rather than by the posixfs backend? Yes with rules or a quarantine (a quarantined
    /// delete is the daemon's soft delete on the principal's behalf, which the backend
    /// must not refuse); otherwise the backend checks, exactly as Python's does.
    pub fn policy_checks_permissions(&self) -> bool {
        !self.rules.is_empty() || self.quarantine_days.is_some()
    }

    /// The permissions the backend itself checks (see
    /// [`Self::policy_checks_permissions`]).
    pub fn backend_permissions(&self) -> Result<Permissions> {
        match self.policy_checks_permissions() {
            true => Ok(Permissions::all()),
            false => self.permissions(),
        }
    }

    /// Who may use this store (named `name`) through which door, with which profile.
    pub fn grants(&self, name: &str) -> Result<Grants> {
        use crate::access::{Match, Rule};
        use crate::policy::Profile;
        use std::sync::Arc;
        let owner_uid = current_uid();
        let store_perms = if self.policy_checks_permissions() { self.permissions()? } else { Permissions::all() };
        let profile = |label: String, permissions: Permissions, quota: Option<u64>, owner: bool| {
            Arc::new(Profile { name: label, permissions, quota, quarantine_days: self.quarantine_days, owner })
        };
        let unquarantined = |p: Arc<Profile>| Arc::new(Profile { quarantine_days: None, ..(*p).clone() });
        let users = self.users(name)?;
        let mut rules = Vec::new();
        if self.rules.is_empty() {
            // What the older keys always meant: every principal they name gets the
            // store's permissions and quota.
            let mut principals = vec![Match::Uid(owner_uid)];
            principals.extend(self.allow_uids.iter().map(|u| Match::Uid(*u)));
            principals.extend(self.allow_gids.iter().map(|g| Match::Gid(*g)));
            principals.extend(users.iter().flat_map(|db| db.users()).map(|u| Match::RestUser(u.to_string())));
            principals.push(Match::Default);
            for m in principals {
                let label = if m == Match::Uid(owner_uid) { "owner".to_string() } else { m.label() };
                let owner = m == Match::Uid(owner_uid);
                rules.push(Rule { profile: profile(label, store_perms.clone(), None, owner), principal: m });
            }
        } else {
            for r in &self.rules {
                let permissions = match &r.permissions {
                    Some(map) => Permissions::new(map.clone())?,
                    None => store_perms.clone(),
                };
                let label = r.name.clone().unwrap_or_else(|| r.principal.label());
                let owner = r.principal == Match::Uid(owner_uid);
                let mut p = profile(label, permissions, r.quota, owner);
                if !r.quarantine {
                    p = unquarantined(p);
                }
                rules.push(Rule { profile: p, principal: r.principal.clone() });
            }
            // The daemon's own uid owns the store's files anyway: it keeps full rights
            // unless a rule above says otherwise for it.
            let owner = Arc::new(Profile::full("owner"));
            rules.push(Rule { principal: Match::Uid(owner_uid), profile: owner });
        }
        Ok(Grants {
            store: name.to_string(),
            owner_uid,
            allow_uids: self.allow_uids.clone(),
            allow_gids: self.allow_gids.clone(),
            users,
            serve_on: self.serve_on.clone(),
            public_on: self.public_on.clone(),
            rules,
        })
    }

    /// The store's REST users: the legacy `rest_username`/`rest_password`, `rest_users`
    /// and the `htpasswd` file (read now); None when there are none.
    pub fn users(&self, name: &str) -> Result<Option<std::sync::Arc<crate::access::users::UserDb>>> {
        use crate::access::users::UserDb;
        let mut db = UserDb::new();
        if let Some(c) = Credentials::optional(self.rest_username.as_deref(), self.rest_password.as_deref()) {
            db.insert_plain(
                c.username(),
                self.rest_password.as_deref().unwrap_or(""),
                &format!("store {name}: rest_username"),
            )?;
        }
        for (user, hash) in &self.rest_users {
            db.insert_hash(user, hash, &format!("store {name}: rest_users"))?;
        }
        if let Some(path) = &self.htpasswd {
            db.merge(UserDb::from_htpasswd(path)?)?;
        }
        Ok((!db.is_empty()).then(|| std::sync::Arc::new(db)))
    }

    /// The emulator of this store: its own settings, else the environment.
    pub fn emulator(&self) -> Result<crate::store::Emulator> {
        let env = crate::store::Emulator::from_env()?;
        let own = crate::store::Emulator::from_values(
            self.latency_us.map(|v| v.to_string()).as_deref(),
            self.bandwidth.map(|v| v.to_string()).as_deref(),
        )?;
        Ok(crate::store::Emulator {
            latency: if self.latency_us.is_some() { own.latency } else { env.latency },
            bandwidth: if self.bandwidth.is_some() { own.bandwidth } else { env.bandwidth },
        })
    }

    /// The namespace map, `"" -> [0]` when none is configured.
    pub fn namespaces(&self) -> Result<Namespaces> {
        if self.namespaces.is_empty() {
            return Ok(Namespaces::flat());
        }
        Namespaces::new(&self.namespaces)
    }

    /// The permissions of a file: store (no map: everything allowed); an error for
    /// letters other than `lrwWD`.
    pub fn permissions(&self) -> Result<Permissions> {
        match &self.permissions {
            None => Ok(Permissions::all()),
            Some(map) => Permissions::new(map.clone()),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    socket: Option<PathBuf>,
    socket_mode: Option<String>,
    rest: Option<String>,
    rest_socket: Option<PathBuf>,
    rest_max_body: Option<u64>,
    rest_metrics: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    max_frame: Option<u32>,
    max_in_flight: Option<u64>,
    state_dir: Option<PathBuf>,
    #[serde(default)]
    stores: BTreeMap<String, FileStore>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStore {
    url: String,
    cache_url: Option<String>,
    quota: Option<u64>,
    permissions: Option<FilePermissions>,
    #[serde(default)]
    allow_uids: Vec<u32>,
    #[serde(default)]
    allow_gids: Vec<u32>,
    #[serde(default)]
    create: bool,
    rest_username: Option<String>,
    rest_password: Option<String>,
    latency_us: Option<f64>,
    bandwidth: Option<f64>,
    fsync: Option<String>,
    connections: Option<i64>,
    part_size: Option<i64>,
    part_concurrency: Option<i64>,
    abandoned_upload_age: Option<i64>,
    serve_on: Option<Vec<String>>,
    public_on: Option<Vec<String>>,
    quarantine_days: Option<u32>,
    htpasswd: Option<PathBuf>,
    #[serde(default)]
    rest_users: BTreeMap<String, String>,
    audit: Option<PathBuf>,
    audit_max_bytes: Option<u64>,
    max_concurrency: Option<usize>,
    bandwidth_in: Option<u64>,
    bandwidth_out: Option<u64>,
    coalesce_reads: Option<bool>,
    shared: Option<bool>,
    #[serde(default)]
    rules: Vec<FileRule>,
    #[serde(default)]
    namespaces: BTreeMap<String, FileNamespace>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    name: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    rest_user: Option<String>,
    cert_cn: Option<String>,
    default: Option<bool>,
    permissions: Option<FilePermissions>,
    quota: Option<u64>,
    quarantine: Option<bool>,
}

/// Permission letters: a borg mode (`no-delete`, `borgbackup-read-only`, ...), letters
/// for the whole store (`lr`), or a table of letters per name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FilePermissions {
    Named(String),
    Map(BTreeMap<String, String>),
}

/// A permission map from a borg mode name, letters for the root, or a map (validated).
fn permission_map(spec: FilePermissions, what: &str) -> Result<BTreeMap<String, String>> {
    let map = match spec {
        FilePermissions::Map(m) => m,
        FilePermissions::Named(name) => match crate::backends::posixfs::permissions::borg_mode(&name) {
            Some(mode) => mode.unwrap_or_default(),
            None if !name.is_empty() && name.chars().all(|c| "lrwWD".contains(c)) => [(String::new(), name)].into(),
            None => {
                return Err(Error::invalid(format!(
                    "{what}: permissions {name:?} is neither a borg mode ({}) nor letters of lrwWD",
                    crate::backends::posixfs::permissions::BORG_MODES.join(", ")
                )))
            }
        },
    };
    Permissions::new(map.clone()).map_err(|e| Error::invalid(format!("{what}: {}", e.message)))?;
    Ok(map)
}

impl FileRule {
    fn settings(self, what: &str) -> Result<RuleSettings> {
        use crate::access::Match;
        let mut principals = Vec::new();
        principals.extend(self.uid.map(Match::Uid));
        principals.extend(self.gid.map(Match::Gid));
        principals.extend(self.rest_user.map(Match::RestUser));
        principals.extend(self.cert_cn.map(Match::CertCn));
        if self.default == Some(true) {
            principals.push(Match::Default);
        }
        let principal = match <[Match; 1]>::try_from(principals) {
            Ok([m]) => m,
            Err(_) => {
                return Err(Error::invalid(format!(
                    "{what}: name exactly one principal: uid, gid, rest_user, cert_cn or default = true"
                )))
            }
        };
        if let Some(name) = &self.name {
            if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_graphic()) {
                return Err(Error::invalid(format!("{what}: name must be 1-64 printable ASCII characters")));
            }
        }
        let permissions = self.permissions.map(|p| permission_map(p, what)).transpose()?;
        Ok(RuleSettings {
            name: self.name,
            principal,
            permissions,
            quota: self.quota,
            quarantine: self.quarantine.unwrap_or(true),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNamespace {
    levels: Vec<u32>,
    cache: Option<String>,
    max_age: Option<f64>,
    size: Option<u64>,
    write_behind: Option<PathBuf>,
    write_behind_max_bytes: Option<u64>,
}

/// Flags that refine the configuration (what `borgstored` parses from its command line).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--socket`: the IPC socket path, replacing the file's.
    pub socket: Option<PathBuf>,
    /// `--socket-mode`: an octal mode like `0660`, replacing the file's.
    pub socket_mode: Option<String>,
    /// `--max-frame`: the frame limit in bytes, replacing the file's.
    pub max_frame: Option<u32>,
    /// REST listener `HOST:PORT`.
    pub rest: Option<String>,
    /// REST listener on a Unix socket.
    pub rest_socket: Option<PathBuf>,
    /// `NAME=USER:PASSWORD` REST Basic auth.
    pub rest_auth: Vec<String>,
    /// Serve `GET /-/metrics` (true enables; false leaves the file's setting).
    pub rest_metrics: bool,
    /// `--tls-cert`, `--tls-key`, `--tls-client-ca`: each replaces the file's.
    pub tls_cert: Option<PathBuf>,
    /// See `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// See `tls_cert`.
    pub tls_client_ca: Option<PathBuf>,
    /// `NAME=URL`
    pub stores: Vec<String>,
    /// `NAME:NAMESPACE=L[,L...]`
    pub levels: Vec<String>,
    /// `NAME=BYTES`
    pub quotas: Vec<String>,
    /// `NAME=JSON` or `NAME=LETTERS` (root only)
    pub permissions: Vec<String>,
    /// `NAME=UID`
    pub allow_uids: Vec<String>,
    /// `NAME=GID`
    pub allow_gids: Vec<String>,
    /// `NAME=MICROSECONDS` of emulated latency per backend call.
    pub latencies: Vec<String>,
    /// `NAME=off|always|batch`
    pub fsync: Vec<String>,
    /// `NAME=DOOR[,DOOR...]`: the listeners a store is served on.
    pub serve_on: Vec<String>,
    /// `NAME=DOOR[,DOOR...]`: the listeners where a store needs no grant.
    pub public_on: Vec<String>,
    /// Daemon-wide budget of request bytes in memory.
    pub max_in_flight: Option<u64>,
}

/// Parse an octal mode like `0660`.
pub fn parse_mode(s: &str) -> Result<u32> {
    let digits = s.trim().trim_start_matches("0o");
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| Error::invalid(format!("socket_mode {s:?} is not an octal mode like 0660")))
}

fn split_pair<'a>(flag: &str, value: &'a str) -> Result<(&'a str, &'a str)> {
    value
        .split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| Error::invalid(format!("{flag} expects NAME=VALUE, got {value:?}")))
}

fn doors(list: &[String], what: &str) -> Result<BTreeSet<Door>> {
    list.iter()
        .map(|d| d.parse::<Door>())
        .collect::<Result<_>>()
        .map_err(|e| Error::invalid(format!("{what}: {}", e.message)))
}

/// Where in the config `text` the error `e` is: ` line N (the line)`, or nothing.
/// A TOML error message without the offending value: serde says "invalid type: integer
/// `12345678`, expected a string", and that value may be a password.
fn without_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((got, expected)) = message.strip_prefix(prefix).and_then(|rest| rest.split_once(", expected")) {
            let kind = got.split_whitespace().next().unwrap_or("value");
            return format!("{prefix}{kind}, expected{expected}");
        }
    }
    message.to_string()
}

fn at_line(text: &str, e: &toml::de::Error) -> String {
    let Some(before) = e.span().and_then(|s| text.get(..s.start)) else {
        return String::new();
    };
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let number = before.matches('\n').count() + 1;
    // The key only: the value may be a password or a URL with keys in it, and this
    // message goes to logs.
    match line.split_once('=') {
        Some((key, _)) => format!(" line {number} ({} = …)", key.trim()),
        None => format!(" line {number}"),
    }
}

/// The part settings of store `name` from its keys (defaults for keys left out); an
/// error names the store and the key and says what is allowed.
fn part_settings(
    name: &str,
    part_size: Option<i64>,
    part_concurrency: Option<i64>,
    abandoned_upload_age: Option<i64>,
) -> Result<crate::backends::parts::PartOptions> {
    use crate::backends::parts::PartOptions;
    let defaults = PartOptions::default();
    // A negative number is out of range like any other: the check below says so.
    let parts = PartOptions {
        part_size: part_size.map_or(defaults.part_size, |n| u64::try_from(n).unwrap_or(0)),
        part_concurrency: part_concurrency.map_or(defaults.part_concurrency, |n| usize::try_from(n).unwrap_or(0)),
        abandoned_upload_age: match abandoned_upload_age {
            None => defaults.abandoned_upload_age,
            Some(0) => None,
            Some(n) => Some(std::time::Duration::from_secs(u64::try_from(n).unwrap_or(1))),
        },
    };
    parts.check().map_err(|(key, allowed)| {
        let given = match key {
            "part_size" => part_size,
            "part_concurrency" => part_concurrency,
            _ => abandoned_upload_age,
        };
        Error::invalid(format!("store {name}: {key} must be {allowed}, not {}", given.unwrap_or_default()))
    })?;
    Ok(parts)
}

fn check_store_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "store name {name:?} must be 1-64 characters of a-z, 0-9, '-' and '_' (it appears in URLs)"
        )))
    }
}

/// The uid of this process.
pub fn current_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// Where the IPC socket goes by default (shared with the clients, see
/// [`borgstore_ipc::paths`]).
pub fn default_socket() -> PathBuf {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    borgstore_ipc::paths::default_socket_for(current_uid(), runtime.as_deref())
}

/// The name of the implicit store (no config file, no `--store`).
pub const DEFAULT_STORE: &str = "default";

/// Credentials of the implicit store on the REST TCP listener, generated on first use:
/// `borg` and 24 random letters and digits, kept beside the store (mode 0600) so a
/// restart keeps them. Returns (user, password, made now).
pub fn default_rest_credentials() -> std::io::Result<(String, String, PathBuf, bool)> {
    use rand::distributions::{Alphanumeric, DistString};
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = default_store_path().with_extension("rest-credentials");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Some((u, p)) = text.trim().split_once(':').filter(|(u, p)| !u.is_empty() && !p.is_empty()) {
            return Ok((u.to_string(), p.to_string(), path, false));
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let password = Alphanumeric.sample_string(&mut rand::thread_rng(), 24);
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
    writeln!(f, "borg:{password}")?;
    f.sync_all()?;
    Ok(("borg".to_string(), password, path, true))
}

/// Where the implicit `default` store lives: `$XDG_DATA_HOME/borgstore/default`,
/// `~/.local/share/borgstore/default`, or `/var/lib/borgstore/default` for root.
pub fn default_store_path() -> PathBuf {
    if current_uid() == 0 {
        return PathBuf::from("/var/lib/borgstore/default");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    data.join("borgstore/default")
}

/// Where the daemon keeps its own state by default: `$XDG_STATE_HOME/borgstore`,
/// `~/.local/state/borgstore`, or `/var/lib/borgstore/state` for root.
pub fn default_state_dir() -> PathBuf {
    if current_uid() == 0 {
        return PathBuf::from("/var/lib/borgstore/state");
    }
    std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("borgstore")
}

/// Percent-encode a local path into a `file://` URL.
pub fn file_url(path: &Path) -> String {
    const KEEP: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    format!("file://{}", percent_encoding::utf8_percent_encode(&path.to_string_lossy(), KEEP))
}

impl DaemonConfig {
    /// Parse a TOML config text (no flags applied).
    pub fn from_toml(text: &str) -> Result<Self> {
        Self::build(Some(text), &Overrides::default())
    }

    /// Merge an optional config file text with flags.
    pub fn build(toml_text: Option<&str>, flags: &Overrides) -> Result<Self> {
        let file: FileConfig = match toml_text {
            Some(t) => toml::from_str(t).map_err(|e| {
                Error::invalid(format!("config file{}: {}", at_line(t, &e), without_value(e.message())))
            })?,
            None => FileConfig::default(),
        };
        let mut stores = BTreeMap::new();
        for (name, s) in file.stores {
            check_store_name(&name)?;
            if s.rest_username.is_some() != s.rest_password.is_some() {
                return Err(Error::invalid(format!(
                    "store {name}: give both rest_username and rest_password, or neither"
                )));
            }
            let mut cache = BTreeMap::new();
            let mut namespaces = BTreeMap::new();
            let mut write_behind = BTreeMap::new();
            for (ns, n) in s.namespaces {
                let where_ = format!("store {name}, namespace {ns:?}");
                match (n.write_behind, n.write_behind_max_bytes) {
                    (None, Some(_)) => {
                        return Err(Error::invalid(format!("{where_}: write_behind_max_bytes needs write_behind")))
                    }
                    (Some(spool), max) => {
                        if !spool.is_absolute() {
                            return Err(Error::invalid(format!(
                                "{where_}: write_behind must be an absolute path (the spool directory)"
                            )));
                        }
                        let max_bytes = max.unwrap_or(crate::flow::write_behind::DEFAULT_MAX_BYTES);
                        if max_bytes == 0 {
                            return Err(Error::invalid(format!("{where_}: write_behind_max_bytes must be > 0")));
                        }
                        write_behind.insert(ns.clone(), WriteBehindSettings { spool, max_bytes });
                    }
                    (None, None) => {}
                }
                let mode: crate::store::cache::CacheMode = match n.cache.as_deref() {
                    Some(m) => m.parse().map_err(|e: Error| Error::invalid(format!("{where_}: {}", e.message)))?,
                    None => crate::store::cache::CacheMode::Off,
                };
                if n.max_age.is_some_and(|a| !(a >= 0.0 && a.is_finite())) {
                    return Err(Error::invalid(format!("{where_}: max_age must be a number of seconds >= 0")));
                }
                if mode == crate::store::cache::CacheMode::Off && (n.max_age.is_some() || n.size.is_some()) {
                    return Err(Error::invalid(format!(
                        "{where_}: max_age and size need cache = mirror or writethrough"
                    )));
                }
                if mode != crate::store::cache::CacheMode::Off {
                    if s.cache_url.is_none() {
                        return Err(Error::invalid(format!("{where_}: cache = {mode:?} needs the store's cache_url")));
                    }
                    cache.insert(
                        ns.clone(),
                        crate::store::cache::CachePolicy { mode, max_age: n.max_age, size: n.size },
                    );
                }
                namespaces.insert(ns, NamespaceConfig { levels: n.levels });
            }
            let fsync = match s.fsync.as_deref() {
                Some(m) => m.parse().map_err(|e: Error| Error::invalid(format!("store {name}: {}", e.message)))?,
                None => FsyncMode::default(),
            };
            let connections = match s.connections {
                None => crate::backends::url::DEFAULT_CONNECTIONS,
                Some(n) => usize::try_from(n)
                    .ok()
                    .filter(|n| (1..=crate::backends::url::MAX_CONNECTIONS).contains(n))
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "store {name}: connections must be between 1 and {}, not {n}",
                            crate::backends::url::MAX_CONNECTIONS
                        ))
                    })?,
            };
            let parts = part_settings(&name, s.part_size, s.part_concurrency, s.abandoned_upload_age)?;
            let serve_on = match &s.serve_on {
                Some(list) => doors(list, &format!("store {name}: serve_on"))?,
                None => Door::ALL.into_iter().collect(),
            };
            let permissions = s.permissions.map(|p| permission_map(p, &format!("store {name}"))).transpose()?;
            let rules = s
                .rules
                .into_iter()
                .enumerate()
                .map(|(i, r)| r.settings(&format!("store {name}, rule {}", i + 1)))
                .collect::<Result<Vec<_>>>()?;
            if rules.iter().any(|r| r.quota.is_some()) && s.quota.is_none() {
                return Err(Error::invalid(format!(
                    "store {name}: a rule's quota is its share of the store's quota: give the store a quota too"
                )));
            }
            if let Some(n) = s.max_concurrency.filter(|n| !(1..=MAX_CONCURRENCY_LIMIT).contains(n)) {
                return Err(Error::invalid(format!(
                    "store {name}: max_concurrency must be 1 to {MAX_CONCURRENCY_LIMIT}, got {n}"
                )));
            }
            for (key, v) in [("bandwidth_in", s.bandwidth_in), ("bandwidth_out", s.bandwidth_out)] {
                if v == Some(0) {
                    return Err(Error::invalid(format!(
                        "store {name}: {key} is in bytes per second and must be at least 1 (leave it out for no limit)"
                    )));
                }
            }
            let public_on = match &s.public_on {
                Some(list) => doors(list, &format!("store {name}: public_on"))?,
                None => BTreeSet::new(),
            };
            stores.insert(
                name,
                StoreSettings {
                    url: s.url,
                    namespaces,
                    quota: s.quota,
                    permissions,
                    allow_uids: s.allow_uids,
                    allow_gids: s.allow_gids,
                    create: s.create,
                    rest_username: s.rest_username,
                    rest_password: s.rest_password,
                    cache_url: s.cache_url,
                    cache,
                    latency_us: s.latency_us,
                    bandwidth: s.bandwidth,
                    fsync,
                    connections,
                    part_size: parts.part_size,
                    part_concurrency: parts.part_concurrency,
                    abandoned_upload_age: parts.abandoned_upload_age.map_or(0, |a| a.as_secs()),
                    serve_on,
                    public_on,
                    rules,
                    quarantine_days: s.quarantine_days,
                    htpasswd: s.htpasswd,
                    rest_users: s.rest_users,
                    audit: s.audit,
                    audit_max_bytes: s.audit_max_bytes,
                    max_concurrency: s.max_concurrency,
                    bandwidth_in: s.bandwidth_in,
                    bandwidth_out: s.bandwidth_out,
                    coalesce_reads: s.coalesce_reads,
                    write_behind,
                    shared: s.shared,
                },
            );
        }
        for spec in &flags.stores {
            let (name, url) = split_pair("--store", spec)?;
            check_store_name(name)?;
            stores.insert(name.to_string(), StoreSettings::new(url));
        }
        if stores.is_empty() {
            // The implicit store, there before the per-store flags so they can refine it.
            let mut s = StoreSettings::new(file_url(&default_store_path()));
            s.create = true;
            stores.insert(DEFAULT_STORE.to_string(), s);
        }
        let store_mut = |stores: &mut BTreeMap<String, StoreSettings>, flag: &str, name: &str| {
            if stores.contains_key(name) {
                Ok(())
            } else {
                Err(Error::invalid(format!("{flag}: no store named {name:?} is configured")))
            }
        };
        for spec in &flags.levels {
            let (target, levels) = split_pair("--levels", spec)?;
            let (name, ns) = target.split_once(':').unwrap_or((target, ""));
            store_mut(&mut stores, "--levels", name)?;
            let levels: Vec<u32> = levels
                .split(',')
                .map(|l| l.trim().parse::<u32>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| Error::invalid(format!("--levels {spec:?}: levels must be numbers like 2 or 0,2")))?;
            if let Some(s) = stores.get_mut(name) {
                s.namespaces.insert(ns.to_string(), NamespaceConfig { levels });
            }
        }
        for spec in &flags.rest_auth {
            let (name, cred) = split_pair("--rest-auth", spec)?;
            store_mut(&mut stores, "--rest-auth", name)?;
            let (user, pass) = cred
                .split_once(':')
                .filter(|(u, p)| !u.is_empty() && !p.is_empty())
                .ok_or_else(|| Error::invalid(format!("--rest-auth for {name}: expected NAME=USER:PASSWORD")))?;
            if let Some(s) = stores.get_mut(name) {
                s.rest_username = Some(user.to_string());
                s.rest_password = Some(pass.to_string());
            }
        }
        for spec in &flags.quotas {
            let (name, bytes) = split_pair("--quota", spec)?;
            store_mut(&mut stores, "--quota", name)?;
            let q = bytes.parse::<u64>().map_err(|_| Error::invalid(format!("--quota {spec:?}: not a byte count")))?;
            if let Some(s) = stores.get_mut(name) {
                s.quota = Some(q);
            }
        }
        for spec in &flags.permissions {
            let (name, value) = split_pair("--permissions", spec)?;
            store_mut(&mut stores, "--permissions", name)?;
            let map: BTreeMap<String, String> = if value.trim_start().starts_with('{') {
                serde_json::from_str(value)
                    .map_err(|e| Error::invalid(format!("--permissions {name}: invalid JSON object: {e}")))?
            } else {
                [(String::new(), value.to_string())].into()
            };
            Permissions::new(map.clone())?;
            if let Some(s) = stores.get_mut(name) {
                s.permissions = Some(map);
            }
        }
        for (flag, specs, gids) in [("--allow-uid", &flags.allow_uids, false), ("--allow-gid", &flags.allow_gids, true)]
        {
            for spec in specs {
                let (name, id) = split_pair(flag, spec)?;
                store_mut(&mut stores, flag, name)?;
                let id = id.parse::<u32>().map_err(|_| Error::invalid(format!("{flag} {spec:?}: not a number")))?;
                if let Some(s) = stores.get_mut(name) {
                    if gids {
                        s.allow_gids.push(id)
                    } else {
                        s.allow_uids.push(id)
                    }
                }
            }
        }
        for spec in &flags.latencies {
            let (name, us) = split_pair("--latency", spec)?;
            store_mut(&mut stores, "--latency", name)?;
            let us = us
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| Error::invalid(format!("--latency {spec:?}: not a number of microseconds")))?;
            if let Some(s) = stores.get_mut(name) {
                s.latency_us = Some(us);
            }
        }
        for spec in &flags.fsync {
            let (name, mode) = split_pair("--fsync", spec)?;
            store_mut(&mut stores, "--fsync", name)?;
            let mode: FsyncMode =
                mode.parse().map_err(|e: Error| Error::invalid(format!("--fsync {name}: {}", e.message)))?;
            if let Some(s) = stores.get_mut(name) {
                s.fsync = mode;
            }
        }
        for (flag, specs, public) in [("--serve-on", &flags.serve_on, false), ("--public-on", &flags.public_on, true)] {
            for spec in specs {
                let (name, list) = split_pair(flag, spec)?;
                store_mut(&mut stores, flag, name)?;
                let set = Door::parse_list(list, flag)?;
                if let Some(s) = stores.get_mut(name) {
                    if public {
                        s.public_on.extend(set);
                    } else {
                        s.serve_on = set;
                    }
                }
            }
        }
        let mut audit_files = BTreeMap::new();
        for (name, s) in &stores {
            if let Some(path) = &s.audit {
                if let Some(other) = audit_files.insert(path.clone(), name.clone()) {
                    return Err(Error::invalid(format!(
                        "stores {other} and {name} have the same audit file {}: give each its own",
                        path.display()
                    )));
                }
            }
        }
        let mut spools: BTreeMap<PathBuf, String> = BTreeMap::new();
        for (name, s) in &stores {
            if !s.write_behind.is_empty() && (s.permissions.is_some() || s.quota.is_some()) {
                return Err(Error::invalid(format!(
                    "store {name}: write_behind cannot be combined with the store's permissions or quota \
                     (the primary could refuse later what the spool already acknowledged)"
                )));
            }
            for (ns, w) in &s.write_behind {
                let key: PathBuf = w.spool.components().collect();
                if let Some(other) = spools.insert(key, format!("store {name}, namespace {ns:?}")) {
                    return Err(Error::invalid(format!(
                        "{other} and store {name}, namespace {ns:?} have the same write_behind spool {}: \
                         give each its own",
                        w.spool.display()
                    )));
                }
            }
        }
        for (name, s) in &stores {
            s.namespaces().map_err(|e| Error::invalid(format!("store {name}: {}", e.message)))?;
            s.permissions().map_err(|e| Error::invalid(format!("store {name}: {}", e.message)))?;
            s.emulator().map_err(|e| Error::invalid(format!("store {name}: {}", e.message)))?;
        }
        let socket_mode = match flags.socket_mode.as_deref().or(file.socket_mode.as_deref()) {
            Some(m) => parse_mode(m)?,
            None => 0o660,
        };
        let max_frame = flags.max_frame.or(file.max_frame).unwrap_or(DEFAULT_MAX_FRAME);
        if max_frame < 4096 {
            return Err(Error::invalid("max_frame must be at least 4096 bytes"));
        }
        let rest = flags.rest.clone().or(file.rest);
        if let Some(addr) = &rest {
            addr.parse::<std::net::SocketAddr>().map_err(|_| {
                Error::invalid(format!("rest {addr:?} is not an address like 127.0.0.1:5618 or [::1]:5618"))
            })?;
        }
        let rest_max_body = file.rest_max_body.unwrap_or(DEFAULT_REST_MAX_BODY);
        if rest.is_some() {
            for (name, s) in &stores {
                s.grants(name)?.check_listener(Door::Rest)?;
            }
        }
        let max_in_flight = flags.max_in_flight.or(file.max_in_flight).unwrap_or(DEFAULT_MAX_IN_FLIGHT);
        if max_in_flight < 1 << 20 {
            return Err(Error::invalid("max_in_flight must be at least 1048576 bytes (1 MiB)"));
        }
        Ok(DaemonConfig {
            socket: flags.socket.clone().or(file.socket).unwrap_or_else(default_socket),
            socket_mode,
            max_frame,
            rest,
            rest_socket: flags.rest_socket.clone().or(file.rest_socket),
            rest_max_body,
            rest_metrics: flags.rest_metrics || file.rest_metrics.unwrap_or(false),
            tls_cert: flags.tls_cert.clone().or(file.tls_cert),
            tls_key: flags.tls_key.clone().or(file.tls_key),
            tls_client_ca: flags.tls_client_ca.clone().or(file.tls_client_ca),
            max_in_flight,
            stores,
            state_dir: file.state_dir.unwrap_or_else(default_state_dir),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_example_without_cache_parses() {
        let cfg = DaemonConfig::from_toml(
            r#"
socket = "/run/borgstore/borgstored.sock"
socket_mode = "0660"
max_frame = 268435456

[stores.main]
url = "file:///srv/borgstore/main"
quota = 1073741824
permissions = { "" = "lrwWD" }
allow_uids = [1000]
rest_username = "user"
rest_password = "secret"

[stores.main.namespaces."data/"]
levels = [2]
"#,
        )
        .unwrap();
        let main = &cfg.stores["main"];
        assert_eq!(main.quota, Some(1073741824));
        assert_eq!(main.allow_uids, [1000]);
        assert_eq!(main.namespaces["data/"].levels, [2]);
        assert_eq!(cfg.socket_mode, 0o660);
        assert!(!cfg.rest_metrics);
    }

    #[test]
    fn flow_defaults_by_url_kind_and_checked_limits() {
        let cfg = DaemonConfig::from_toml(
            r#"
[stores.local]
url = "file:///srv/a"
[stores.remote]
url = "sftp://backup@host/repo"
[stores.tuned]
url = "s3:key:secret@http://127.0.0.1:9000/bucket/repo"
max_concurrency = 4
bandwidth_in = 1000000
bandwidth_out = 2000000
coalesce_reads = false
"#,
        )
        .unwrap();
        let local = cfg.stores["local"].flow();
        assert!(local.limits.is_unlimited() && !local.coalesce, "a file: store neither queues nor coalesces");
        let remote = cfg.stores["remote"].flow();
        assert_eq!(remote.limits.max_concurrency, Some(REMOTE_MAX_CONCURRENCY));
        assert!(remote.coalesce);
        let tuned = cfg.stores["tuned"].flow();
        assert_eq!(tuned.limits.max_concurrency, Some(4));
        assert_eq!((tuned.limits.bandwidth_in, tuned.limits.bandwidth_out), (Some(1000000), Some(2000000)));
        assert!(!tuned.coalesce);
        for bad in ["max_concurrency = 0", "max_concurrency = 100000", "bandwidth_in = 0", "bandwidth_out = -1"] {
            let e = DaemonConfig::from_toml(&format!("[stores.x]\nurl = \"file:///a\"\n{bad}")).unwrap_err();
            assert!(e.message.contains("store x") || e.message.contains("expected u64"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn write_behind_keys_parse_and_are_checked() {
        let ns = |extra: &str, more: &str| {
            format!(
                "[stores.a]\nurl = \"http://127.0.0.1:1/\"\n{more}\n[stores.a.namespaces.\"data/\"]\nlevels = [2]\n{extra}"
            )
        };
        let cfg = DaemonConfig::from_toml(&ns("write_behind = \"/var/spool/a\"", "")).unwrap();
        let w = &cfg.stores["a"].write_behind["data/"];
        assert_eq!((w.spool.as_path(), w.max_bytes), (Path::new("/var/spool/a"), 1 << 30));
        let cfg = DaemonConfig::from_toml(&ns("write_behind = \"/s\"\nwrite_behind_max_bytes = 4096", "")).unwrap();
        assert_eq!(cfg.stores["a"].spools()[0].max_bytes, 4096);
        for (text, needle) in [
            (ns("write_behind = \"relative/spool\"", ""), "absolute"),
            (ns("write_behind_max_bytes = 5", ""), "needs write_behind"),
            (ns("write_behind = \"/s\"\nwrite_behind_max_bytes = 0", ""), "> 0"),
            (ns("write_behind = \"/s\"", "quota = 100"), "quota"),
            (ns("write_behind = \"/s\"", "permissions = \"lr\""), "permissions"),
            (
                ns("write_behind = \"/s\"", "") + "\n[stores.b]\nurl = \"file:///b\"\n[stores.b.namespaces.\"\"]\nlevels = [0]\nwrite_behind = \"/s/\"",
                "same write_behind spool",
            ),
        ] {
            let err = DaemonConfig::from_toml(&text).unwrap_err();
            assert!(err.message.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn tls_files_from_file_or_flag() {
        let cfg = DaemonConfig::from_toml("tls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\ntls_client_ca = \"/ca.pem\"")
            .unwrap();
        assert_eq!(cfg.tls_cert.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(cfg.tls_key.as_deref(), Some(Path::new("/k.pem")));
        assert_eq!(cfg.tls_client_ca.as_deref(), Some(Path::new("/ca.pem")));
        let flag = Overrides { tls_cert: Some("/flag.pem".into()), ..Default::default() };
        let cfg = DaemonConfig::build(Some("tls_cert = \"/c.pem\""), &flag).unwrap();
        assert_eq!(cfg.tls_cert.as_deref(), Some(Path::new("/flag.pem")));
        assert_eq!(cfg.tls_key, None);
        assert!(DaemonConfig::from_toml("tls_cert = 1").is_err());
    }

    #[test]
    fn rest_metrics_from_file_or_flag() {
        assert!(DaemonConfig::from_toml("rest_metrics = true").unwrap().rest_metrics);
        assert!(!DaemonConfig::from_toml("rest_metrics = false").unwrap().rest_metrics);
        let flag = Overrides { rest_metrics: true, ..Default::default() };
        assert!(DaemonConfig::build(Some("rest_metrics = false"), &flag).unwrap().rest_metrics);
        assert!(DaemonConfig::from_toml("rest_metrics = 1").is_err());
    }

    #[test]
    fn bad_configs_get_clear_errors() {
        for (text, needle) in [
            ("sockett = 1", "unknown field"),
            ("[stores.Main]\nurl = \"file:///x\"", "store name"),
            ("socket_mode = \"999\"", "octal"),
            ("[stores.a]\nurl = \"file:///x\"\n[stores.a.namespaces.\"data/\"]\nlevels = []", "levels"),
            ("[stores.a]\nurl = \"file:///x\"\n[stores.a.namespaces.\"d/\"]\nlevels = [0]\ncache = \"writethrough\"", "cache_url"),
            ("[stores.a]\nurl = \"file:///x\"\ncache_url = \"file:///c\"\n[stores.a.namespaces.\"d/\"]\nlevels = [0]\ncache = \"often\"", "cache mode"),
            ("[stores.a]\nurl = \"file:///x\"\n[stores.a.namespaces.\"d/\"]\nlevels = [0]\nsize = 5", "need cache"),
            ("[stores.a]\nurl = \"file:///x\"\npermissions = { \"\" = \"rx\" }", "letters"),
            ("max_frame = 10", "max_frame"),
            ("rest = \"localhost\"", "not an address"),
            ("[stores.a]\nurl = \"file:///x\"\nrest_username = \"u\"", "rest_password"),
            ("[stores.a]\nurl = \"file:///x\"\nfsync = \"sometimes\"", "use off, always or batch"),
            ("[stores.a]\nurl = \"file:///x\"\npublic_on = [\"tcp\"]", "unknown listener \"tcp\""),
            ("[stores.a]\nurl = \"file:///x\"\nserve_on = [\"ipc\"]", "serve_on: unknown listener"),
            ("max_in_flight = 1000", "max_in_flight"),
            ("this is not toml", "config file line 1: "),
            ("[stores.a]\nurl = \"file:///x\"\nconnections = \"4\"", "line 3 (connections = …): invalid type"),
        ] {
            let e = DaemonConfig::from_toml(text).unwrap_err();
            assert!(e.message.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn config_errors_never_show_a_value() {
        // A password of the wrong type, a URL with keys cut off by a missing quote: the
        // error names the line and key, never what is after `=` (it goes to logs).
        for text in [
            "[stores.a]\nurl = \"file:///x\"\nrest_username = \"u\"\nrest_password = 12345678",
            "[stores.a]\nurl = \"s3:AKIA:12345678@http://h/b/p\nshared = true",
        ] {
            let e = DaemonConfig::from_toml(text).unwrap_err();
            assert!(e.message.contains("config file line"), "{e}");
            assert!(!e.message.contains("12345678"), "a value in the error: {e}");
        }
    }

    #[test]
    fn shared_defaults_by_url_kind() {
        let cfg = DaemonConfig::from_toml(
            "[stores.a]\nurl = \"s3:k:s@http://h/b/p\"\n[stores.b]\nurl = \"file:///x\"\n\
             [stores.c]\nurl = \"sftp://h/c\"\nshared = false\n[stores.d]\nurl = \"file:///d\"\nshared = true",
        )
        .unwrap();
        let shared: Vec<bool> = ["a", "b", "c", "d"].iter().map(|n| cfg.stores[*n].shared_primary()).collect();
        assert_eq!(shared, [true, false, false, true]);
        assert!(!StoreSettings::new("file:///x").shared_primary());
        assert!(StoreSettings::new("rest://h/x").shared_primary());
        let e = DaemonConfig::from_toml("[stores.a]\nurl = \"s3:/b/p\"\nshared = \"yes\"").unwrap_err();
        assert!(e.message.contains("line 3") && e.message.contains("invalid type"), "{e}");
    }

    #[test]
    fn connections_per_store() {
        let cfg = DaemonConfig::from_toml(
            "[stores.a]\nurl = \"sftp://h/a\"\nconnections = 16\n[stores.b]\nurl = \"sftp://h/b\"\n\
             [stores.c]\nurl = \"sftp://h/c\"\nconnections = 1",
        )
        .unwrap();
        assert_eq!(cfg.stores["a"].connections, 16);
        assert_eq!(cfg.stores["b"].connections, 4, "the default");
        assert_eq!(cfg.stores["c"].connections, 1, "one connection, as before pooling");
        assert_eq!(StoreSettings::new("file:///x").connections, 4);
        for bad in ["0", "65", "-1", "99999999999"] {
            let e =
                DaemonConfig::from_toml(&format!("[stores.a]\nurl = \"sftp://h/a\"\nconnections = {bad}")).unwrap_err();
            assert!(e.message.contains("store a: connections must be between 1 and 64"), "{bad}: {e}");
        }
        assert!(DaemonConfig::from_toml("[stores.a]\nurl = \"sftp://h/a\"\nconnections = \"4\"").is_err());
    }

    #[test]
    fn part_keys_per_store() {
        let cfg = DaemonConfig::from_toml(
            "[stores.a]\nurl = \"s3:k:s@http://h/b/a\"\npart_size = 5242880\npart_concurrency = 16\n\
             abandoned_upload_age = 7200\n[stores.b]\nurl = \"s3:/b/b\"\n[stores.c]\nurl = \"b2:/b/c\"\n\
             abandoned_upload_age = 0\npart_size = 5368709120\npart_concurrency = 1",
        )
        .unwrap();
        let (a, b, c) = (&cfg.stores["a"], &cfg.stores["b"], &cfg.stores["c"]);
        assert_eq!((a.part_size, a.part_concurrency, a.abandoned_upload_age), (5 << 20, 16, 7200));
        assert_eq!(a.parts().abandoned_upload_age, Some(std::time::Duration::from_secs(7200)));
        assert_eq!((b.part_size, b.part_concurrency, b.abandoned_upload_age), (8 << 20, 4, 86400), "the defaults");
        assert_eq!(b.parts(), crate::backends::parts::PartOptions::default());
        assert_eq!(StoreSettings::new("s3:/x/y").parts(), crate::backends::parts::PartOptions::default());
        assert_eq!((c.part_size, c.part_concurrency, c.parts().abandoned_upload_age), (5 << 30, 1, None), "0: off");
        // Other backends ignore the keys, but a bad value is an error for every store.
        assert!(DaemonConfig::from_toml("[stores.f]\nurl = \"file:///f\"\npart_size = 6291456").is_ok());
        let cases = [
            (
                "part_size = 5242879",
                "store a: part_size must be between 5242880 (5 MiB) and 5368709120 (5 GiB) bytes, not 5242879",
            ),
            (
                "part_size = 5368709121",
                "store a: part_size must be between 5242880 (5 MiB) and 5368709120 (5 GiB) bytes, not 5368709121",
            ),
            (
                "part_size = -1",
                "store a: part_size must be between 5242880 (5 MiB) and 5368709120 (5 GiB) bytes, not -1",
            ),
            ("part_size = 0", "store a: part_size must be between"),
            ("part_concurrency = 0", "store a: part_concurrency must be between 1 and 64, not 0"),
            ("part_concurrency = 65", "store a: part_concurrency must be between 1 and 64, not 65"),
            ("part_concurrency = -4", "store a: part_concurrency must be between 1 and 64, not -4"),
            (
                "abandoned_upload_age = 60",
                "store a: abandoned_upload_age must be 0 (never) or at least 3600 seconds, not 60",
            ),
            (
                "abandoned_upload_age = -1",
                "store a: abandoned_upload_age must be 0 (never) or at least 3600 seconds, not -1",
            ),
        ];
        for (bad, want) in cases {
            let e = DaemonConfig::from_toml(&format!("[stores.a]\nurl = \"s3:/b/a\"\n{bad}")).unwrap_err();
            assert_eq!(e.kind, borgstore_ipc::ErrorKind::InvalidArgument, "{bad}");
            assert!(e.message.contains(want), "{bad}: {e}");
        }
        for bad in ["part_size = \"8M\"", "part_concurrency = 2.5", "abandoned_upload_age = true"] {
            let e = DaemonConfig::from_toml(&format!("[stores.a]\nurl = \"s3:/b/a\"\n{bad}")).unwrap_err();
            assert!(e.message.contains(bad.split(' ').next().unwrap()), "{bad}: {e}");
        }
    }

    #[test]
    fn flags_add_and_refine() {
        let flags = Overrides {
            stores: vec!["a=file:///tmp/a".into()],
            levels: vec!["a:data/=0,2".into()],
            quotas: vec!["a=1000".into()],
            permissions: vec![r#"a={"": "lr"}"#.into()],
            allow_uids: vec!["a=1234".into()],
            ..Default::default()
        };
        let cfg = DaemonConfig::build(None, &flags).unwrap();
        let a = &cfg.stores["a"];
        assert_eq!(a.namespaces["data/"].levels, [0, 2]);
        assert_eq!((a.quota, a.allow_uids.as_slice()), (Some(1000), &[1234][..]));
        assert!(!cfg.stores.contains_key("default"));
        let bad = Overrides { quotas: vec!["nope=1".into()], ..Default::default() };
        assert!(DaemonConfig::build(None, &bad).unwrap_err().message.contains("no store named"));
    }

    #[test]
    fn listeners_fsync_and_budget_from_file_and_flags() {
        let cfg = DaemonConfig::from_toml(
            r#"
rest = "127.0.0.1:5618"
max_in_flight = 33554432
[stores.a]
url = "file:///x"
fsync = "always"
serve_on = ["socket", "rest_socket"]
[stores.b]
url = "file:///y"
public_on = ["rest"]
[stores.c]
url = "file:///z"
rest_username = "u"
rest_password = "p"
"#,
        )
        .unwrap();
        assert_eq!(cfg.max_in_flight, 32 << 20);
        let a = &cfg.stores["a"];
        assert_eq!(a.fsync, FsyncMode::Always);
        assert_eq!(a.serve_on, [Door::Socket, Door::RestSocket].into_iter().collect());
        assert_eq!(cfg.stores["b"].fsync, FsyncMode::Batch, "batch is the default");
        assert_eq!(cfg.stores["b"].public_on, [Door::Rest].into_iter().collect());
        assert_eq!(cfg.stores["c"].serve_on.len(), 3, "every listener by default");
        assert_eq!(DaemonConfig::from_toml("").unwrap().max_in_flight, DEFAULT_MAX_IN_FLIGHT);

        let flags = Overrides {
            stores: vec!["a=file:///a".into(), "b=file:///b".into()],
            rest: Some("127.0.0.1:1".into()),
            fsync: vec!["a=off".into()],
            serve_on: vec!["a=socket".into()],
            public_on: vec!["b=rest,rest_socket".into()],
            max_in_flight: Some(1 << 20),
            ..Default::default()
        };
        let cfg = DaemonConfig::build(None, &flags).unwrap();
        assert_eq!(cfg.stores["a"].fsync, FsyncMode::Off);
        assert_eq!(cfg.stores["a"].serve_on, [Door::Socket].into_iter().collect());
        assert_eq!(cfg.stores["b"].public_on, [Door::Rest, Door::RestSocket].into_iter().collect());
    }

    #[test]
    fn a_store_without_credentials_is_refused_on_tcp_unless_public_or_kept_off() {
        let text = "rest = \"127.0.0.1:5618\"\n[stores.open]\nurl = \"file:///x\"\nallow_uids = [1000]";
        let e = DaemonConfig::from_toml(text).unwrap_err();
        assert!(e.message.contains("store open") && e.message.contains("--rest-auth open="), "{e}");
        assert!(DaemonConfig::from_toml(&format!("{text}\npublic_on = [\"rest\"]")).is_ok());
        assert!(DaemonConfig::from_toml(&format!("{text}\nserve_on = [\"socket\"]")).is_ok());
        assert!(DaemonConfig::from_toml(&format!("{text}\nrest_username = \"u\"\nrest_password = \"p\"")).is_ok());
        // Without a TCP listener there is nothing to refuse.
        assert!(DaemonConfig::from_toml("rest_socket = \"/tmp/r.sock\"\n[stores.open]\nurl = \"file:///x\"").is_ok());
        // The implicit default store too.
        let flags = Overrides { rest: Some("127.0.0.1:5618".into()), ..Default::default() };
        assert!(DaemonConfig::build(None, &flags).unwrap_err().message.contains("store default"));
    }

    #[test]
    fn rules_parse_with_borg_modes_letters_and_maps_and_clear_errors() {
        use crate::access::Match;
        let cfg = DaemonConfig::from_toml(
            r#"
[stores.a]
url = "file:///x"
quota = 1000
quarantine_days = 3
permissions = "read-only"
[[stores.a.rules]]
name = "backup"
uid = 1001
permissions = "borgbackup-no-delete"
quota = 500
[[stores.a.rules]]
rest_user = "admin"
permissions = "lrwWD"
[[stores.a.rules]]
gid = 100
quarantine = false
[[stores.a.rules]]
cert_cn = "host"
permissions = { "" = "l", "data" = "lr" }
[[stores.a.rules]]
default = true
"#,
        )
        .unwrap();
        let a = &cfg.stores["a"];
        assert_eq!(a.quarantine_days, Some(3));
        let principals: Vec<_> = a.rules.iter().map(|r| r.principal.clone()).collect();
        assert_eq!(
            principals,
            [
                Match::Uid(1001),
                Match::RestUser("admin".into()),
                Match::Gid(100),
                Match::CertCn("host".into()),
                Match::Default
            ]
        );
        let g = a.grants("a").unwrap();
        let labels: Vec<&str> = g.rules.iter().map(|r| r.profile.name.as_str()).collect();
        let owner = current_uid();
        assert_eq!(labels, ["backup", "rest:admin", "gid:100", "cert:host", "default", "owner"], "owner last");
        assert_eq!(g.rules.last().unwrap().principal, Match::Uid(owner));
        let backup = &g.rules[0].profile;
        assert_eq!((backup.quota, backup.quarantine_days), (Some(500), Some(3)));
        assert!(backup.quarantines("packs/00/0011") && !backup.quarantines("keys/repokey"));
        // A rule without permissions inherits the store's (read-only here); quarantine = false.
        let group = &g.rules[2].profile;
        assert!(group.permissions.check("data/x", "w").is_err() && group.quarantine_days.is_none());
        assert!(g.rules[1].profile.permissions.check("x", "D").is_ok());
        // With rules the store actor checks permissions, not the backend.
        assert!(a.backend_permissions().unwrap().is_unrestricted());

        for (rules, needle) in [
            ("uid = 1\ngid = 2", "exactly one principal"),
            ("permissions = \"no-delete\"", "exactly one principal"),
            ("uid = 1\npermissions = \"everything\"", "neither a borg mode"),
            ("uid = 1\npermissions = { \"\" = \"lx\" }", "letters"),
            ("uid = 1\nname = \"\"", "name must be"),
            ("uid = 1\nbogus = 1", "unknown field"),
        ] {
            let text = format!("[stores.a]\nurl = \"file:///x\"\nquota = 10\n[[stores.a.rules]]\n{rules}");
            let e = DaemonConfig::from_toml(&text).unwrap_err();
            assert!(e.message.contains(needle), "{rules:?}: {e}");
        }
        let e = DaemonConfig::from_toml("[stores.a]\nurl = \"file:///x\"\n[[stores.a.rules]]\nuid = 1\nquota = 5")
            .unwrap_err();
        assert!(e.message.contains("give the store a quota too"), "{e}");
        let shared = "[stores.a]\nurl = \"file:///x\"\naudit = \"/tmp/a.jsonl\"\n[stores.b]\nurl = \"file:///y\"\naudit = \"/tmp/a.jsonl\"";
        assert!(DaemonConfig::from_toml(shared).unwrap_err().message.contains("same audit file"));
    }

    #[test]
    fn without_rules_the_older_keys_stand_for_them() {
        use crate::access::Match;
        let cfg = DaemonConfig::from_toml(
            "[stores.a]\nurl = \"file:///x\"\nallow_uids = [7]\nallow_gids = [8]\nrest_username = \"u\"\nrest_password = \"p\"\npermissions = \"no-delete\"",
        )
        .unwrap();
        let a = &cfg.stores["a"];
        let g = a.grants("a").unwrap();
        let principals: Vec<_> = g.rules.iter().map(|r| r.principal.clone()).collect();
        let owner = current_uid();
        assert_eq!(
            principals,
            [Match::Uid(owner), Match::Uid(7), Match::Gid(8), Match::RestUser("u".into()), Match::Default]
        );
        // The backend checks the letters exactly as Python's does; profiles are open.
        assert!(!a.backend_permissions().unwrap().is_unrestricted());
        assert!(g.rules.iter().all(|r| r.profile.permissions.is_unrestricted()));
        // A quarantine moves the check to the store actor.
        let q = DaemonConfig::from_toml(
            "[stores.a]\nurl = \"file:///x\"\npermissions = \"no-delete\"\nquarantine_days = 1",
        )
        .unwrap();
        let g = q.stores["a"].grants("a").unwrap();
        assert!(q.stores["a"].backend_permissions().unwrap().is_unrestricted());
        assert!(g.rules.iter().all(|r| r.profile.quarantines("packs/00/0011")));
    }

    #[test]
    fn default_store_when_nothing_configured() {
        let cfg = DaemonConfig::build(None, &Overrides::default()).unwrap();
        let d = &cfg.stores["default"];
        assert!(d.url.starts_with("file:///") && d.create);
        assert_eq!(d.namespaces().unwrap(), Namespaces::flat());
    }
}
