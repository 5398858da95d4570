//! The machine's limits, measured in the same run as the figures they bound: what the
//! hardware and kernel do with none of our code in the way.
//!
//! - [`socket_rtt`]: a plain std Unix-socket ping-pong (64 bytes, two threads), the floor
//!   under any IPC request; with an 8 MiB answer, the floor under an 8 MiB load;
//! - [`socket_pairs`]: that ping-pong on N pairs of threads at once, the most round
//!   trips per second the machine's cores give N clients;
//! - [`raw_fs`]: file operations on the store's own layout (`data/01/23/0123…`, fsync off):
//!   temp file + write + rename, read whole file (into a reused buffer), stat, unlink, and a recursive readdir
//!   with a stat per item (what list answers), on 1 or N threads;
//! - [`nginx_static`] + [`wrk`] / [`http_load`]: nginx serving the store's files
//!   statically, measured with the same HTTP client as our REST front end;
//! - [`http_load`]: a small keep-alive HTTP/1.1 load generator (N threads, one connection
//!   each) for what wrk cannot do without scripts: PUT with bodies, and 8 MiB GETs
//!   whose body is read like a client would.

use crate::common::{make_dirs_for, nested, Rates};
use borgstore_tests::nginx::Nginx;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::Instant;

/// Seconds per round trip between two threads over a std Unix socket: a 64-byte request,
/// an answer of `answer` bytes (read into a reused buffer). With 64 bytes, the floor under
/// any IPC request; with 8 MiB, under an 8 MiB load.
pub fn socket_rtt(answer: usize, rounds: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ping.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut req = [0u8; 64];
        let value = vec![0x5au8; answer];
        while s.read_exact(&mut req).is_ok() {
            if s.write_all(&value).is_err() {
                break;
            }
        }
    });
    let mut c = UnixStream::connect(&path).unwrap();
    let req = [0x5au8; 64];
    let mut buf = vec![0u8; answer];
    let mut round = |c: &mut UnixStream| {
        c.write_all(&req).unwrap();
        c.read_exact(&mut buf).unwrap();
    };
    for _ in 0..rounds.clamp(1, 200) {
        round(&mut c); // warm-up: both threads scheduled, caches hot
    }
    let t = Instant::now();
    for _ in 0..rounds {
        round(&mut c);
    }
    let rtt = t.elapsed().as_secs_f64() / rounds as f64;
    drop(c);
    server.join().unwrap();
    rtt
}

/// Round trips per second of `pairs` std Unix-socket ping-pongs (64 bytes each way) run
/// at once, `rounds` each: what the cores allow N concurrent clients before any work.
pub fn socket_pairs(pairs: usize, rounds: usize) -> f64 {
    let start = Barrier::new(pairs + 1);
    let start = &start;
    // The scope returns once every pair is done: the clock runs from the start signal
    // to the last pair's end.
    let started = std::thread::scope(|s| {
        for _ in 0..pairs {
            let (mut a, mut b) = UnixStream::pair().unwrap();
            s.spawn(move || {
                let mut req = [0u8; 64];
                while b.read_exact(&mut req).is_ok() {
                    if b.write_all(&req).is_err() {
                        break;
                    }
                }
            });
            s.spawn(move || {
                let mut buf = [0x5au8; 64];
                start.wait();
                for _ in 0..rounds {
                    a.write_all(&buf.clone()).unwrap();
                    a.read_exact(&mut buf).unwrap();
                }
            });
        }
        start.wait();
        Instant::now()
    });
    (pairs * rounds) as f64 / started.elapsed().as_secs_f64()
}

/// Store `value` as `leaf` in `dir` the way the posixfs backend does with fsync off: a
/// new temp file beside the item (its directories made when missing), write, rename.
fn raw_store(dir: &Path, leaf: &str, value: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{leaf}.tmp"));
    let open = || fs::OpenOptions::new().write(true).create_new(true).open(&tmp);
    let mut f = match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
            open()?
        }
        other => other?,
    };
    f.write_all(value)?;
    drop(f);
    fs::rename(&tmp, dir.join(leaf))
}

/// Read the whole file at `path` into this thread's reused buffer; its length. A fresh
/// buffer per read is the reader's cost, not the machine's (with glibc, a fresh 8 MiB
/// buffer can mean page faults on every read).
fn raw_read(path: &Path) -> io::Result<usize> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let mut f = fs::File::open(path)?;
    let len = f.metadata()?.len() as usize;
    BUF.with_borrow_mut(|buf| {
        if buf.len() < len {
            buf.resize(len, 0);
        }
        f.read_exact(&mut buf[..len])
    })?;
    Ok(len)
}

/// Every item under the namespace root, recursively, with a stat of each (a listing
/// answers sizes): what `list("data")` has to do at 2 nesting levels.
fn raw_list(root: &Path) -> io::Result<usize> {
    let mut n = 0;
    for l1 in fs::read_dir(root)? {
        for l2 in fs::read_dir(l1?.path())? {
            for item in fs::read_dir(l2?.path())? {
                fs::metadata(item?.path())?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Run `op` on every path, split over `threads` threads; ops/s from the first worker's
/// start to the last one's end (the spawning thread may be descheduled when the workers
/// are released, so it cannot hold the clock).
fn timed(paths: &[PathBuf], threads: usize, op: impl Fn(&Path) + Sync) -> f64 {
    if threads <= 1 {
        let t = Instant::now();
        paths.iter().for_each(|p| op(p));
        return paths.len() as f64 / t.elapsed().as_secs_f64();
    }
    let start = Barrier::new(threads);
    let (start, op) = (&start, &op);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|ti| {
                s.spawn(move || {
                    start.wait();
                    let t = Instant::now();
                    paths.iter().skip(ti).step_by(threads).for_each(|p| op(p));
                    (t, Instant::now())
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let first = spans.iter().map(|s| s.0).min().unwrap();
    let last = spans.iter().map(|s| s.1).max().unwrap();
    paths.len() as f64 / (last - first).as_secs_f64()
}

/// Write every dirty page out before a timed store phase, so that no phase pays for the
/// writeback of the values an earlier one left (8 MiB stores measured 105/s or 611/s
/// depending on which phase came after which).
pub fn settle_writes() {
    nix::unistd::sync();
}

/// Raw file ops of the bench workload (`keys`, values of `size` bytes) on `threads`
/// threads in a fresh directory of the store's layout; ops/s of store, load, info,
/// delete, and (one thread only: one call) list. Load and info go over the keys
/// `passes` times.
pub fn raw_fs(keys: &[String], size: usize, threads: usize, passes: usize) -> Rates {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    fs::create_dir(&root).unwrap();
    let paths: Vec<PathBuf> = keys.iter().map(|k| root.join(nested(k))).collect();
    let value = vec![0x5au8; size];
    let mut r = Rates::new();
    make_dirs_for(&root, keys);
    settle_writes();
    r.insert(
        "store",
        timed(&paths, threads, |p| {
            let leaf = p.file_name().unwrap().to_str().unwrap();
            raw_store(p.parent().unwrap(), leaf, &value).unwrap()
        }),
    );
    let reads: Vec<PathBuf> = paths.iter().cycle().take(paths.len() * passes.max(1)).cloned().collect();
    r.insert("load", timed(&reads, threads, |p| assert_eq!(raw_read(p).unwrap(), size)));
    r.insert("info", timed(&reads, threads, |p| assert_eq!(fs::metadata(p).unwrap().len(), size as u64)));
    if threads <= 1 {
        let t = Instant::now();
        assert_eq!(raw_list(&root).unwrap(), keys.len());
        r.insert("list", keys.len() as f64 / t.elapsed().as_secs_f64());
    }
    r.insert("delete", timed(&paths, threads, |p| fs::remove_file(p).unwrap()));
    r
}

/// nginx serving the directory `root` statically under `/prefix/` (so its URLs are the
/// REST URLs of a store whose files live in `root`). No access log, sendfile on: the
/// best plain nginx does. One worker (the test fixture's; the machine has 2 cores and
/// the load generator needs the other).
pub fn nginx_static(prefix: &str, root: &Path) -> Nginx {
    Nginx::start(&format!("        location /{prefix}/ {{ alias {}/; access_log off; sendfile on; }}", root.display()))
}

/// Requests/s of `wrk -t{threads} -c{conns}` GETting `url` for `secs` seconds, with the
/// REST Accept header and `auth` as Basic auth.
pub fn wrk(url: &str, threads: usize, conns: usize, secs: usize, auth: Option<(&str, &str)>) -> Result<f64, String> {
    let mut cmd = std::process::Command::new("wrk");
    cmd.args([format!("-t{threads}"), format!("-c{conns}"), format!("-d{secs}s")]);
    cmd.args(["-H", &format!("Accept: {}", borgstore_tests::rest::ACCEPT)]);
    if let Some(auth) = auth {
        cmd.args(["-H", &format!("Authorization: Basic {}", basic(auth))]);
    }
    let out = cmd.arg(url).output().map_err(|e| format!("wrk: {e} (apt-get install wrk)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        return Err(format!("wrk saw error answers from {url}: {text}"));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("unexpected wrk output: {text}"))
}

fn basic((user, pass): (&str, &str)) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
}

/// One HTTP load: `method` on every path once, over `conns` keep-alive connections (one
/// thread each), with `body` (PUT/POST) and `auth`; each answer must be 200, and a GET's
/// body `expect_len` bytes long (read into a reused buffer, as a client would).
pub struct HttpLoad<'a> {
    pub port: u16,
    pub method: &'a str,
    pub paths: &'a [String],
    pub body: &'a [u8],
    pub conns: usize,
    pub auth: Option<(&'a str, &'a str)>,
    pub expect_len: Option<usize>,
}

impl HttpLoad<'_> {
    /// Requests/s, from the first connection's start to the last one's end.
    pub fn run(&self) -> f64 {
        let start = Barrier::new(self.conns);
        let start = &start;
        let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..self.conns)
                .map(|ci| {
                    let stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
                    s.spawn(move || {
                        start.wait();
                        let t = Instant::now();
                        self.connection(stream, ci)
                            .unwrap_or_else(|e| panic!("{} on port {}: {e}", self.method, self.port));
                        (t, Instant::now())
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let first = spans.iter().map(|s| s.0).min().unwrap();
        let last = spans.iter().map(|s| s.1).max().unwrap();
        self.paths.len() as f64 / (last - first).as_secs_f64()
    }

    fn connection(&self, stream: std::net::TcpStream, ci: usize) -> io::Result<()> {
        stream.set_nodelay(true)?;
        let mut w = stream.try_clone()?;
        let mut r = BufReader::with_capacity(64 << 10, stream);
        let auth = self.auth.map(|a| format!("Authorization: Basic {}\r\n", basic(a))).unwrap_or_default();
        let mut req = Vec::with_capacity(512 + self.body.len());
        let mut line = String::new();
        let mut sink = vec![0u8; 1 << 20];
        for path in self.paths.iter().skip(ci).step_by(self.conns) {
            req.clear();
            write!(
                req,
                "{} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {}\r\n{auth}Content-Length: {}\r\n\r\n",
                self.method,
                borgstore_tests::rest::ACCEPT,
                self.body.len()
            )?;
            req.extend_from_slice(self.body);
            w.write_all(&req)?;
            // The answer's head, then its body.
            line.clear();
            r.read_line(&mut line)?;
            let status = line.split(' ').nth(1).unwrap_or("");
            if status != "200" {
                return Err(io::Error::other(format!("{path}: answer {line:?}")));
            }
            let mut len = 0usize;
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                if line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().map_err(io::Error::other)?;
                    }
                }
            }
            if let Some(want) = self.expect_len {
                if len != want {
                    return Err(io::Error::other(format!("{path}: {len} bytes, expected {want}")));
                }
            }
            let mut left = len;
            while left > 0 {
                let m = r.read(&mut sink[..left.min(1 << 20)])?;
                if m == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                left -= m;
            }
        }
        Ok(())
    }
}
