//! One SSH connection with its sftp session: connecting (host key check, authentication,
//! sftp start, all under one deadline) and the sftp requests the backend is built from.
//!
//! Requests go through [`RawSftpSession`], so every one of them carries its own timeout,
//! reads and writes are pipelined (many requests in flight, chunks as large as the server's
//! `limits@openssh.com` allow), and the extensions the server announces
//! (`posix-rename@openssh.com`, `check-file*`) are used where it has them.
//!
//! Errors stay [`SftpError`] here; the backend decides what they mean for a store
//! ([`is_no_such_file`], [`is_lost`]).

use super::config::{SftpOptions, Target};
use super::known_hosts::{self, KnownHost, Verdict};
use crate::hashing::HashAlgorithm;
use borgstore_ipc::{Error, ErrorKind, Result};
use futures::stream::{FuturesOrdered, FuturesUnordered, StreamExt};
use russh::client::{self, Handle};
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::rawsession::Limits;
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Read/write chunk when the server announces no limits (the size every server must take).
const SAFE_CHUNK: u64 = 32 * 1024;
/// Largest chunk we ever ask for (OpenSSH allows 255 KiB of data per request).
const MAX_CHUNK: u64 = 255 * 1024;
/// Requests in flight per read or write.
const PIPELINE: usize = 32;
/// Largest sftp packet we accept from the server.
const MAX_PACKET: u32 = 1024 * 1024;
/// Hash algorithms the `check-file` extensions define that we also know.
const CHECK_FILE_ALGORITHMS: [HashAlgorithm; 6] = [
    HashAlgorithm::Md5,
    HashAlgorithm::Sha1,
    HashAlgorithm::Sha224,
    HashAlgorithm::Sha256,
    HashAlgorithm::Sha384,
    HashAlgorithm::Sha512,
];

/// Ciphers, fastest first where the CPU has AES instructions (russh's default list, with
/// AES-GCM ahead of ChaCha20-Poly1305: about twice the bulk throughput here).
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_256_GCM,
    russh::cipher::AES_128_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];

/// A connection-level failure: the connection is (or must be taken as) gone.
pub fn lost(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::ConnectionLost, message)
}

/// Does this sftp error say "no such file"?
pub fn is_no_such_file(e: &SftpError) -> bool {
    matches!(e, SftpError::Status(s) if s.status_code == StatusCode::NoSuchFile)
}

/// Does this sftp error mean the connection is gone (so a reconnect could help)? Status
/// replies from the server and local limit checks are real answers; everything else
/// (timeouts, a closed session, broken packets) is a lost connection.
pub fn is_lost(e: &SftpError) -> bool {
    match e {
        SftpError::Status(s) => matches!(s.status_code, StatusCode::NoConnection | StatusCode::ConnectionLost),
        SftpError::Limited(_) => false,
        _ => true,
    }
}

/// Key material and known hosts, loaded from files before connecting (off the executor).
pub struct Prepared {
    /// Where to connect and as whom.
    pub target: Target,
    /// The known_hosts entries for this host and port.
    pub known: Vec<KnownHost>,
    /// Configured keys (options, then ssh_config), with why one is unusable.
    pub keys: Vec<(PathBuf, std::result::Result<Arc<PrivateKey>, String>)>,
    /// The default `~/.ssh/id_*` keys that exist and load.
    pub default_keys: Vec<(PathBuf, Arc<PrivateKey>)>,
    /// Default keys that exist but could not be used (encrypted...), for messages.
    pub skipped: Vec<String>,
}

fn load_key(path: &std::path::Path) -> std::result::Result<Arc<PrivateKey>, String> {
    match russh::keys::load_secret_key(path, None) {
        Ok(k) => Ok(Arc::new(k)),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            Err("is encrypted (passphrases are not asked for: add the key to ssh-agent)".into())
        }
        Err(russh::keys::Error::IO(e)) if e.kind() == std::io::ErrorKind::NotFound => Err("does not exist".into()),
        Err(e) => Err(format!("cannot be used: {e}")),
    }
}

/// Read everything from disk that connecting needs. Blocking.
pub fn prepare(target: Target, options: &SftpOptions) -> Prepared {
    let known = known_hosts::load_entries(&target.known_hosts, &target.host, target.port);
    let keys = target.identity_files.iter().map(|p| (p.clone(), load_key(p))).collect();
    let mut default_keys = Vec::new();
    let mut skipped = Vec::new();
    if options.default_identities {
        if let Some(home) = &options.home {
            for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                let path = home.join(".ssh").join(name);
                if !path.exists() {
                    continue;
                }
                match load_key(&path) {
                    Ok(k) => default_keys.push((path, k)),
                    Err(why) => skipped.push(format!("{} {why}", path.display())),
                }
            }
        }
    }
    Prepared { target, known, keys, default_keys, skipped }
}

/// The russh handler: checks the server's host key against known_hosts.
struct Client {
    host: String,
    port: u16,
    known: Vec<KnownHost>,
    files: Vec<PathBuf>,
}

#[derive(Debug)]
enum ClientError {
    Ssh(russh::Error),
    HostKey(String),
}

impl From<russh::Error> for ClientError {
    fn from(e: russh::Error) -> Self {
        ClientError::Ssh(e)
    }
}

impl client::Handler for Client {
    type Error = ClientError;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> std::result::Result<bool, ClientError> {
        match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => match known_hosts::verify(&self.known, key) {
                Verdict::Trusted => Ok(true),
                verdict => Err(ClientError::HostKey(known_hosts::refusal_message(
                    &verdict,
                    &self.host,
                    self.port,
                    key,
                    &self.files,
                ))),
            },
            PublicKeyOrCertificate::Certificate(_) => Err(ClientError::HostKey(format!(
                "sftp: host key verification failed for {}: the server presented a host certificate, \
                 which was not asked for",
                known_hosts::host_port_name(&self.host, self.port)
            ))),
        }
    }
}

/// Does `e` mean the server cannot be reached right now (worth another try), rather
/// than a permanent refusal?
fn ssh_error(label: &str, e: russh::Error) -> Error {
    use russh::Error as E;
    let msg = format!("sftp: connecting to {label} failed: {e}");
    match e {
        E::KexInit
        | E::UnknownAlgo
        | E::NoCommonAlgo { .. }
        | E::Version
        | E::Kex
        | E::WrongServerSig
        | E::UnknownKey
        | E::KeyChanged { .. }
        | E::NoAuthMethod
        | E::InvalidConfig(_)
        | E::StrictKeyExchangeViolation { .. } => Error::backend(msg),
        _ => lost(msg),
    }
}

/// Host key algorithms to offer, those known for this host first (as OpenSSH orders
/// them), so a host recorded with e.g. only an RSA key is not asked for its ed25519 key.
fn preferred_host_keys(known: &[KnownHost]) -> Vec<Algorithm> {
    let all = russh::Preferred::DEFAULT.key.to_vec();
    let known_types: Vec<String> = known.iter().map(|k| k.key.algorithm().as_str().to_string()).collect();
    let family = |a: &Algorithm| match a {
        Algorithm::Rsa { .. } => "ssh-rsa".to_string(),
        other => other.as_str().to_string(),
    };
    let (mut first, rest): (Vec<Algorithm>, Vec<Algorithm>) =
        all.into_iter().partition(|a| known_types.iter().any(|t| *t == family(a)));
    first.extend(rest);
    first
}

/// One live connection and what its server supports.
pub struct Conn {
    /// Tells connections apart, so concurrent failures reconnect only once.
    pub id: u64,
    ssh: Handle<Client>,
    /// The sftp session on this connection.
    pub sftp: Arc<RawSftpSession>,
    /// The store directory: absolute once opened (realpath), else as in the URL.
    pub base: String,
    /// The server offers `posix-rename@openssh.com` (rename replaces atomically).
    pub posix_rename: bool,
    /// The server offers `fsync@openssh.com`.
    pub fsync: bool,
    /// The `check-file` flavour the server announced, if any.
    pub check_file: Option<&'static str>,
    read_len: u32,
    write_len: u32,
}

impl Conn {
    /// Connect, verify the host key, authenticate, start sftp. Bounded by the connect timeout.
    pub async fn connect(prepared: Prepared, options: &SftpOptions, id: u64) -> Result<Conn> {
        let label = prepared.target.label();
        match tokio::time::timeout(options.connect_timeout, Self::connect_inner(prepared, options, id)).await {
            Ok(r) => r,
            Err(_) => Err(lost(format!(
                "sftp: connecting to {label} timed out after {:.1} s",
                options.connect_timeout.as_secs_f64()
            ))),
        }
    }

    async fn connect_inner(prepared: Prepared, options: &SftpOptions, id: u64) -> Result<Conn> {
        let Prepared { target, known, keys, default_keys, skipped } = prepared;
        let label = target.label();
        let config = client::Config {
            keepalive_interval: Some(options.keepalive_interval),
            keepalive_max: 3,
            nodelay: true,
            window_size: 16 * 1024 * 1024,
            preferred: russh::Preferred {
                key: Cow::Owned(preferred_host_keys(&known)),
                cipher: Cow::Borrowed(CIPHERS),
                ..Default::default()
            },
            ..Default::default()
        };
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| lost(format!("sftp: cannot connect to {}:{}: {e}", target.host, target.port)))?;
        let _ = tcp.set_nodelay(true);
        let handler = Client { host: target.host.clone(), port: target.port, known, files: target.known_hosts.clone() };
        let mut ssh = match client::connect_stream(Arc::new(config), tcp, handler).await {
            Ok(h) => h,
            Err(ClientError::HostKey(m)) => return Err(Error::backend(m)),
            Err(ClientError::Ssh(e)) => return Err(ssh_error(&label, e)),
        };
        authenticate(&mut ssh, &target, options, keys, default_keys, skipped).await?;
        let mut channel = ssh.channel_open_session().await.map_err(|e| ssh_error(&label, e))?;
        channel.request_subsystem(true, "sftp").await.map_err(|e| ssh_error(&label, e))?;
        loop {
            match channel.wait().await {
                Some(ChannelMsg::Success) => break,
                Some(ChannelMsg::Failure) => {
                    return Err(Error::backend(format!("sftp: {label} refused to start the sftp subsystem")))
                }
                Some(_) => continue,
                None => return Err(lost(format!("sftp: {label} closed the channel while starting sftp"))),
            }
        }
        let cfg = russh_sftp::client::Config {
            max_packet_len: MAX_PACKET,
            request_timeout_secs: options.request_timeout.as_secs_f64().ceil().max(1.0) as u64,
            ..Default::default()
        };
        let mut sftp = RawSftpSession::new_with_config(channel.into_stream(), cfg);
        let version = sftp.init().await.map_err(|e| lost(format!("sftp: starting sftp on {label} failed: {e}")))?;
        let has = |ext: &str| version.extensions.contains_key(ext);
        let mut limits = Limits::default();
        if has("limits@openssh.com") {
            match sftp.limits().await {
                Ok(l) => {
                    limits = Limits::from(l);
                    sftp.set_limits(limits);
                }
                Err(e) if is_lost(&e) => return Err(lost(format!("sftp: {label}: {e}"))),
                Err(_) => {}
            }
        }
        let check_file = ["check-file-name", "check-file-handle", "check-file"].into_iter().find(|e| has(e));
        let chunk = |limit: Option<u64>| limit.unwrap_or(SAFE_CHUNK).clamp(1024, MAX_CHUNK) as u32;
        tracing::debug!(
            "sftp: connected to {label} (sftp v{}, extensions {:?})",
            version.version,
            version.extensions.keys().collect::<Vec<_>>()
        );
        Ok(Conn {
            id,
            ssh,
            sftp: Arc::new(sftp),
            base: target.path.clone(),
            posix_rename: has("posix-rename@openssh.com"),
            fsync: has("fsync@openssh.com"),
            check_file,
            read_len: chunk(limits.read_len),
            write_len: chunk(limits.write_len),
        })
    }

    /// Is the SSH connection known to be gone?
    pub fn is_closed(&self) -> bool {
        self.ssh.is_closed()
    }

    /// Say goodbye (best effort, bounded).
    pub async fn disconnect(&self) {
        let _ = self.sftp.close_session();
        let bye = self.ssh.disconnect(Disconnect::ByApplication, "", "en");
        let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
    }

    /// The server path of `name` below the store directory (`""`: the directory itself).
    pub fn path(&self, name: &str) -> String {
        join(&self.base, name)
    }

    /// The attributes of the server path `path` (symlinks followed).
    pub async fn stat(&self, path: &str) -> std::result::Result<FileAttributes, SftpError> {
        Ok(self.sftp.stat(path).await?.attrs)
    }

    /// The server's canonical absolute form of `path`.
    pub async fn realpath(&self, path: &str) -> std::result::Result<String, SftpError> {
        let name = self.sftp.realpath(path).await?;
        name.files
            .into_iter()
            .next()
            .map(|f| f.filename)
            .ok_or_else(|| SftpError::UnexpectedBehavior("realpath answered without a name".into()))
    }

    /// Is `path` a directory? (Missing: false.)
    pub async fn is_dir(&self, path: &str) -> std::result::Result<bool, SftpError> {
        match self.stat(path).await {
            Ok(a) => Ok(a.is_dir()),
            Err(e) if is_no_such_file(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `mkdir -p`: create `path` and its missing parents; an existing directory is fine.
    pub async fn mkdir_p(&self, path: &str) -> std::result::Result<(), SftpError> {
        let mut missing = Vec::new();
        let mut current = path.trim_end_matches('/').to_string();
        if current.is_empty() {
            return Ok(()); // "/" or the start directory: exists
        }
        loop {
            match self.sftp.mkdir(current.as_str(), FileAttributes::empty()).await {
                Ok(_) => break,
                Err(e) if is_no_such_file(&e) => match parent(&current) {
                    Some(p) => missing.push(std::mem::replace(&mut current, p)),
                    None => return Err(e),
                },
                Err(e) => {
                    if self.is_dir(&current).await? {
                        break;
                    }
                    return Err(e);
                }
            }
        }
        while let Some(dir) = missing.pop() {
            if let Err(e) = self.sftp.mkdir(dir.as_str(), FileAttributes::empty()).await {
                if !self.is_dir(&dir).await? {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// All entries of directory `path` (without `.` and `..`), unsorted.
    pub async fn read_dir(&self, path: &str) -> std::result::Result<Vec<(String, FileAttributes)>, SftpError> {
        let handle = self.sftp.opendir(path).await?.handle;
        let mut out = Vec::new();
        let result = loop {
            match self.sftp.readdir(handle.as_str()).await {
                Ok(name) => out.extend(
                    name.files
                        .into_iter()
                        .filter(|f| f.filename != "." && f.filename != "..")
                        .map(|f| (f.filename, f.attrs)),
                ),
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.close_later(handle);
        result.map(|()| out)
    }

    /// Close a handle without waiting for the answer (reads need no confirmation).
    fn close_later(&self, handle: String) {
        let sftp = self.sftp.clone();
        tokio::spawn(async move {
            let _ = sftp.close(handle).await;
        });
    }

    /// Open `path` for reading; the handle goes back through [`Conn::close_read`].
    pub async fn open_read(&self, path: &str) -> std::result::Result<String, SftpError> {
        Ok(self.sftp.open(path, OpenFlags::READ, FileAttributes::empty()).await?.handle)
    }

    /// Close a handle from [`Conn::open_read`] without waiting.
    pub fn close_read(&self, handle: String) {
        self.close_later(handle)
    }

    /// The size in bytes of the open file; an error when the server does not say.
    pub async fn size(&self, handle: &str) -> std::result::Result<u64, SftpError> {
        let attrs = self.sftp.fstat(handle).await?.attrs;
        attrs.size.ok_or_else(|| SftpError::UnexpectedBehavior("the server did not tell the file size".into()))
    }

    /// Read from `start` for `want` bytes (None: to the end), pipelined; each chunk goes
    /// to `sink` in file order. Stops early at the end of the file. Returns bytes read.
    pub async fn read_into(
        &self,
        handle: &str,
        start: u64,
        want: Option<u64>,
        mut sink: impl FnMut(&[u8]),
    ) -> std::result::Result<u64, SftpError> {
        let end = want.map(|w| start.saturating_add(w));
        let chunk = u64::from(self.read_len);
        let request = |offset: u64, len: u32| {
            let sftp = &self.sftp;
            async move { (offset, len, sftp.read(handle, offset, len).await) }
        };
        let mut next = start;
        let mut inflight = FuturesOrdered::new();
        loop {
            while inflight.len() < PIPELINE && end.is_none_or(|e| next < e) {
                let len = end.map_or(chunk, |e| (e - next).min(chunk));
                inflight.push_back(request(next, len as u32));
                next += len;
            }
            let Some((offset, len, result)) = inflight.next().await else {
                break;
            };
            let data = match result {
                Ok(d) => d.data,
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break,
                Err(e) => return Err(e),
            };
            if data.is_empty() {
                break;
            }
            let got = (data.len() as u64).min(u64::from(len));
            sink(&data[..got as usize]);
            if got < u64::from(len) {
                // A short read: drop what is in flight and go on right after it.
                inflight = FuturesOrdered::new();
                next = offset + got;
            }
        }
        Ok(next.min(end.unwrap_or(u64::MAX)).saturating_sub(start))
    }

    /// Create (or truncate) `path` and write all of `data`, pipelined, then close it and
    /// wait for the close: when this returns Ok the server has the whole file.
    /// Write `data` as the file `path`; with `fsync` (and a server that offers
    /// `fsync@openssh.com`) the server flushes it to its disk before this returns.
    pub async fn write_file(&self, path: &str, data: &[u8], fsync: bool) -> std::result::Result<(), SftpError> {
        let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
        let handle = self.sftp.open(path, flags, FileAttributes::empty()).await?.handle;
        let mut written = self.write_all(&handle, data).await;
        if written.is_ok() && fsync && self.fsync {
            written = self.sftp.fsync(handle.as_str()).await.map(|_| ());
        }
        if written.is_err() {
            self.close_later(handle);
            return written;
        }
        self.sftp.close(handle).await.map(|_| ())
    }

    async fn write_all(&self, handle: &str, data: &[u8]) -> std::result::Result<(), SftpError> {
        let chunk = self.write_len as usize;
        let mut inflight = FuturesUnordered::new();
        let mut offset = 0usize;
        loop {
            while inflight.len() < PIPELINE && offset < data.len() {
                let n = chunk.min(data.len() - offset);
                let piece = data[offset..offset + n].to_vec();
                inflight.push(self.sftp.write(handle, offset as u64, piece));
                offset += n;
            }
            match inflight.next().await {
                Some(result) => {
                    result?;
                }
                None => return Ok(()),
            }
        }
    }

    /// Rename `from` to `to`, replacing `to` atomically where the server offers
    /// `posix-rename@openssh.com`. Without it (plain SFTP v3 rename refuses to replace),
    /// an existing `to` is removed first: readers may then briefly see no item.
    pub async fn rename(&self, from: &str, to: &str) -> std::result::Result<(), SftpError> {
        if self.posix_rename {
            let mut data = Vec::with_capacity(from.len() + to.len() + 8);
            put_string(&mut data, from.as_bytes());
            put_string(&mut data, to.as_bytes());
            return match self.sftp.extended("posix-rename@openssh.com", data).await? {
                Packet::Status(s) if s.status_code == StatusCode::Ok => Ok(()),
                Packet::Status(s) => Err(SftpError::Status(s)),
                _ => Err(SftpError::UnexpectedPacket),
            };
        }
        match self.sftp.rename(from, to).await {
            Ok(_) => Ok(()),
            Err(e) if !is_lost(&e) && !is_no_such_file(&e) => {
                match self.stat(to).await {
                    Ok(a) if !a.is_dir() => {
                        let _ = self.sftp.remove(to).await;
                    }
                    _ => return Err(e),
                }
                self.sftp.rename(from, to).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// Ask the server for the digest of `path` (`check-file` extensions). None when the
    /// server does not offer it for this algorithm or answers something unusable.
    pub async fn server_hash(
        &self,
        path: &str,
        algorithm: HashAlgorithm,
    ) -> std::result::Result<Option<String>, SftpError> {
        let Some(ext) = self.check_file else { return Ok(None) };
        if !CHECK_FILE_ALGORITHMS.contains(&algorithm) {
            return Ok(None);
        }
        let handle = if ext == "check-file-name" { None } else { Some(self.open_read(path).await?) };
        let mut data = Vec::new();
        put_string(&mut data, handle.as_deref().unwrap_or(path).as_bytes());
        put_string(&mut data, algorithm.as_str().as_bytes());
        data.extend_from_slice(&0u64.to_be_bytes()); // start offset
        data.extend_from_slice(&0u64.to_be_bytes()); // length 0: the whole file
        data.extend_from_slice(&0u32.to_be_bytes()); // block size 0: one hash
        let reply = self.sftp.extended(ext, data).await;
        if let Some(h) = handle {
            self.close_later(h);
        }
        match reply? {
            Packet::ExtendedReply(r) => Ok(parse_check_file_reply(&r.data, algorithm)),
            Packet::Status(s) if s.status_code == StatusCode::NoSuchFile => Err(SftpError::Status(s)),
            _ => Ok(None),
        }
    }
}

/// `a/b` from a base path and a name, without doubling slashes.
pub fn join(base: &str, name: &str) -> String {
    if name.is_empty() {
        base.to_string()
    } else if base.is_empty() {
        name.to_string()
    } else if base.ends_with('/') {
        format!("{base}{name}")
    } else {
        format!("{base}/{name}")
    }
}

/// The parent of a server path: `/a/b` -> `/a`, `/a` -> `/`, `a/b` -> `a`, `a` -> None.
pub fn parent(path: &str) -> Option<String> {
    let path = path.trim_end_matches('/');
    match path.rsplit_once('/') {
        Some(("", _)) => Some("/".to_string()),
        Some((head, _)) => Some(head.to_string()),
        None => None,
    }
}

fn put_string(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
    buf.extend_from_slice(s);
}

fn get_string<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let s = buf.get(4..4 + len)?;
    *buf = &buf[4 + len..];
    Some(s)
}

/// The digest in a `check-file` reply: `[string "check-file"] string algorithm, hash`.
/// None unless it is one digest of the algorithm we asked for.
pub fn parse_check_file_reply(data: &[u8], algorithm: HashAlgorithm) -> Option<String> {
    let mut rest = data;
    let mut used = get_string(&mut rest)?;
    if used.starts_with(b"check-file") {
        used = get_string(&mut rest)?;
    }
    if used != algorithm.as_str().as_bytes() || rest.len() != algorithm.hasher().finalize_hex().len() / 2 {
        return None;
    }
    Some(hex::encode(rest))
}

/// Try public key authentication, in paramiko's order: the configured keys, then the
/// agent's keys, then the default `~/.ssh/id_*` files. A clear error when none is accepted.
async fn authenticate(
    ssh: &mut Handle<Client>,
    target: &Target,
    options: &SftpOptions,
    keys: Vec<(PathBuf, std::result::Result<Arc<PrivateKey>, String>)>,
    default_keys: Vec<(PathBuf, Arc<PrivateKey>)>,
    mut notes: Vec<String>,
) -> Result<()> {
    let label = target.label();
    let mut auth = Auth { ssh, user: target.user.clone(), label: label.clone(), rsa_hash: None, tried: Vec::new() };
    let mut configured = Vec::new();
    for (path, key) in keys {
        match key {
            Ok(k) => configured.push((path, k)),
            Err(why) => notes.push(format!("{} {why}", path.display())),
        }
    }
    for (path, key) in configured {
        if auth.with_key(&path, key).await? {
            return Ok(());
        }
    }
    if let Some(sock) = &options.agent_socket {
        if auth.with_agent(sock, &mut notes).await? {
            return Ok(());
        }
    }
    for (path, key) in default_keys {
        if auth.with_key(&path, key).await? {
            return Ok(());
        }
    }
    let mut msg = format!("sftp: public key authentication as {label} failed");
    if auth.tried.is_empty() {
        msg.push_str("; no usable key was found");
    } else {
        msg.push_str(&format!("; keys offered: {}", auth.tried.join(", ")));
    }
    if !notes.is_empty() {
        msg.push_str(&format!("; not usable: {}", notes.join("; ")));
    }
    msg.push_str(
        ". Give a key with BORGSTORE_SFTP_KEY=/path/to/key, load one into ssh-agent (SSH_AUTH_SOCK), or use \
         ~/.ssh/id_ed25519, and make sure the server lists its public key in authorized_keys.",
    );
    Err(Error::new(ErrorKind::PermissionDenied, msg))
}

/// Authentication attempts on one connection.
struct Auth<'a> {
    ssh: &'a mut Handle<Client>,
    user: String,
    label: String,
    rsa_hash: Option<Option<HashAlg>>,
    tried: Vec<String>,
}

impl Auth<'_> {
    async fn hash_for(&mut self, algorithm: &Algorithm) -> Option<HashAlg> {
        if !matches!(algorithm, Algorithm::Rsa { .. }) {
            return None;
        }
        if let Some(h) = self.rsa_hash {
            return h;
        }
        let h = match self.ssh.best_supported_rsa_hash().await {
            Ok(Some(h)) => h,
            _ => Some(HashAlg::Sha256),
        };
        self.rsa_hash = Some(h);
        h
    }

    fn check_alive(&self) -> Result<()> {
        if self.ssh.is_closed() {
            return Err(lost(format!("sftp: {} closed the connection during authentication", self.label)));
        }
        Ok(())
    }

    async fn with_key(&mut self, path: &std::path::Path, key: Arc<PrivateKey>) -> Result<bool> {
        let hash = self.hash_for(&key.algorithm()).await;
        let user = self.user.clone();
        match self.ssh.authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash)).await {
            Ok(r) if r.success() => return Ok(true),
            Ok(_) => self.tried.push(path.display().to_string()),
            Err(e) => return Err(ssh_error(&self.label, e)),
        }
        self.check_alive()?;
        Ok(false)
    }

    async fn with_agent(&mut self, sock: &std::path::Path, notes: &mut Vec<String>) -> Result<bool> {
        let mut agent = match russh::keys::agent::client::AgentClient::connect_uds(sock).await {
            Ok(a) => a,
            Err(e) => {
                notes.push(format!("ssh-agent at {} not reachable: {e}", sock.display()));
                return Ok(false);
            }
        };
        let ids = match agent.request_identities().await {
            Ok(ids) => ids,
            Err(e) => {
                notes.push(format!("ssh-agent at {} did not list its keys: {e}", sock.display()));
                return Ok(false);
            }
        };
        for id in ids {
            let russh::keys::agent::AgentIdentity::PublicKey { key, comment } = id else {
                continue; // certificates are not offered
            };
            let hash = self.hash_for(&key.algorithm()).await;
            let user = self.user.clone();
            match self.ssh.authenticate_publickey_with(user, key, hash, &mut agent).await {
                Ok(r) if r.success() => return Ok(true),
                Ok(_) => self.tried.push(format!("agent key {comment:?}")),
                Err(e) => notes.push(format!("agent key {comment:?}: {e}")),
            }
            self.check_alive()?;
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(join("/srv/s", "data/00"), "/srv/s/data/00");
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("rel/", "x"), "rel/x");
        assert_eq!(join("/srv/s", ""), "/srv/s");
        assert_eq!(parent("/a/b"), Some("/a".into()));
        assert_eq!(parent("/a"), Some("/".into()));
        assert_eq!(parent("a/b/"), Some("a".into()));
        assert_eq!(parent("a"), None);
    }

    #[test]
    fn check_file_replies() {
        let digest = HashAlgorithm::Sha256.hex_digest(b"x");
        let raw = hex::decode(&digest).unwrap();
        let mut plain = Vec::new();
        put_string(&mut plain, b"sha256");
        plain.extend_from_slice(&raw);
        assert_eq!(parse_check_file_reply(&plain, HashAlgorithm::Sha256), Some(digest.clone()));
        let mut named = Vec::new();
        put_string(&mut named, b"check-file");
        named.extend_from_slice(&plain);
        assert_eq!(parse_check_file_reply(&named, HashAlgorithm::Sha256), Some(digest));
        assert_eq!(parse_check_file_reply(&plain, HashAlgorithm::Sha512), None, "other algorithm");
        assert_eq!(parse_check_file_reply(&plain[..20], HashAlgorithm::Sha256), None, "short");
        assert_eq!(parse_check_file_reply(&[0, 0, 0, 9], HashAlgorithm::Sha256), None, "truncated");
        assert_eq!(parse_check_file_reply(&[], HashAlgorithm::Sha256), None);
    }

    #[test]
    fn lost_or_answer() {
        use russh_sftp::protocol::Status;
        let status = |code| {
            SftpError::Status(Status {
                id: 1,
                status_code: code,
                error_message: String::new(),
                language_tag: String::new(),
            })
        };
        assert!(is_no_such_file(&status(StatusCode::NoSuchFile)));
        assert!(!is_lost(&status(StatusCode::NoSuchFile)));
        assert!(!is_lost(&status(StatusCode::Failure)));
        assert!(is_lost(&status(StatusCode::ConnectionLost)));
        assert!(is_lost(&SftpError::Timeout));
        assert!(is_lost(&SftpError::UnexpectedBehavior("session closed".into())));
        assert!(!is_lost(&SftpError::Limited("x".into())));
    }
}
