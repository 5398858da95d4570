//! Reading a store's audit log, for `borgstore audit`: the last lines of the file
//! ([`tail`]), the lines appended since ([`Follower`], across rotations), and a one-line
//! human rendering ([`Columns`]). The line shape is [`AuditLine`], the one the daemon
//! writes (defined once in `borgstore_ipc::audit`).
//!
//! The file is read directly, not through the daemon: its permissions decide who may
//! read it. Nothing here panics or stops on a line that is not an audit record (a
//! torn line, garbage, a future format): such a line comes back as [`Entry::Malformed`].

pub use borgstore_ipc::audit::AuditLine;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Bytes read at a time.
const CHUNK: usize = 64 << 10;
/// A "line" that grows past this without a newline is handed out as it is (malformed)
/// rather than held in memory without bound.
const MAX_LINE: usize = 16 << 20;

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A complete audit record, and the line exactly as written.
    Record(Box<AuditLine>, Vec<u8>),
    /// A line that is not one: shown raw, with a marker.
    Malformed(Vec<u8>),
}

impl Entry {
    /// Classify one line (without its `\n`).
    pub fn parse(line: Vec<u8>) -> Entry {
        match AuditLine::parse(&line) {
            Some(a) => Entry::Record(Box::new(a), line),
            None => Entry::Malformed(line),
        }
    }
}

/// The end of a log file as [`tail`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// The last complete lines asked for, oldest first, without their `\n`.
    pub lines: Vec<Vec<u8>>,
    /// The offset just after the last complete line: where following goes on.
    pub end: u64,
    /// Bytes after the last newline: a line being written, or torn by a crash.
    pub partial: Vec<u8>,
}

/// The last `n` complete lines of `file`, reading back from its end only as far as
/// needed.
pub fn tail(file: &File, n: usize) -> io::Result<Tail> {
    let len = file.metadata()?.len();
    // Read back until n + 1 newlines are seen (the extra one starts the oldest line
    // wanted) or the start of the file.
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0;
    let mut pos = len;
    while pos > 0 && newlines <= n {
        let start = pos.saturating_sub(CHUNK as u64);
        let mut chunk = vec![0u8; (pos - start) as usize];
        file.read_exact_at(&mut chunk, start)?;
        newlines += chunk.iter().filter(|&&b| b == b'\n').count();
        chunks.push(chunk);
        pos = start;
    }
    chunks.reverse();
    let text = chunks.concat();
    let mut pieces: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    let partial = pieces.pop().unwrap_or_default().to_vec();
    if pos > 0 && !pieces.is_empty() {
        pieces.remove(0); // the end of a line that starts before what was read
    }
    let skip = pieces.len().saturating_sub(n);
    Ok(Tail { lines: pieces[skip..].iter().map(|l| l.to_vec()).collect(), end: len - partial.len() as u64, partial })
}

/// (device, inode): which file a path names.
fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

/// The lines appended to a log after a point, following rotation: when the path names
/// a new file (the old one was renamed to `FILE.1`), the rest of the old file is read,
/// then the new one from its start. A file cut shorter is read again from its start.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: File,
    id: (u64, u64),
    pos: u64,
    partial: Vec<u8>,
}

impl Follower {
    /// Follow `file` (opened from `path`) from `pos` on, `partial` being bytes already
    /// read after `pos`'s last newline (see [`Tail`]).
    pub fn new(path: &Path, file: File, pos: u64, partial: Vec<u8>) -> io::Result<Follower> {
        let id = identity(&file.metadata()?);
        let pos = pos + partial.len() as u64;
        Ok(Follower { path: path.to_path_buf(), file, id, pos, partial })
    }

    /// The complete lines appended since the last call (none when nothing changed);
    /// does not wait.
    pub fn poll(&mut self) -> io::Result<Vec<Vec<u8>>> {
        let mut lines = Vec::new();
        self.read_new(&mut lines)?;
        match std::fs::metadata(&self.path) {
            // Between a rotation's rename and the new file, or removed: keep the old one.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
            Ok(m) if identity(&m) != self.id => {
                // Rotated: finish the old file, then start on the new one.
                self.read_new(&mut lines)?;
                if !self.partial.is_empty() {
                    lines.push(std::mem::take(&mut self.partial));
                }
                let file = match File::open(&self.path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(lines),
                    Err(e) => return Err(e),
                };
                self.id = identity(&file.metadata()?);
                self.file = file;
                self.pos = 0;
                self.read_new(&mut lines)?;
            }
            Ok(m) if m.len() < self.pos => {
                // Cut shorter (truncated): read it again from the start.
                self.pos = 0;
                self.partial.clear();
                self.read_new(&mut lines)?;
            }
            Ok(_) => {}
        }
        Ok(lines)
    }

    /// Read from `pos` to the end of the current file; complete lines go to `lines`.
    fn read_new(&mut self, lines: &mut Vec<Vec<u8>>) -> io::Result<()> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match self.file.read_at(&mut buf, self.pos) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(());
            }
            self.pos += n as u64;
            for piece in buf[..n].split_inclusive(|&b| b == b'\n') {
                match piece.strip_suffix(b"\n") {
                    Some(rest) => {
                        self.partial.extend_from_slice(rest);
                        lines.push(std::mem::take(&mut self.partial));
                    }
                    None => {
                        self.partial.extend_from_slice(piece);
                        if self.partial.len() > MAX_LINE {
                            lines.push(std::mem::take(&mut self.partial));
                        }
                    }
                }
            }
        }
    }
}

/// `s` with control characters escaped, so a field can never break a line or move the
/// cursor on a terminal.
fn clean(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
    } else {
        s.to_string()
    }
}

/// A name as shown: as it is when plain, quoted and escaped when it has spaces,
/// quotes or control characters (so names stay apart).
fn show_name(name: &str) -> String {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"') {
        format!("{name:?}")
    } else {
        name.to_string()
    }
}

/// The human rendering of lines in aligned columns: time, principal, door, op, names,
/// size, result. Widths grow to fit what was shown, never shrink.
#[derive(Debug, Default, Clone)]
pub struct Columns {
    widths: [usize; 6],
}

impl Columns {
    fn fields(a: &AuditLine) -> [String; 6] {
        let names = match a.names.as_slice() {
            [] => "-".to_string(),
            names => names.iter().map(|n| show_name(n)).collect::<Vec<_>>().join(" "),
        };
        let size = a.size.map_or_else(|| "-".to_string(), |s| s.to_string());
        [clean(&a.time), clean(&a.principal), clean(&a.door), clean(&a.op), names, size]
    }

    /// Widen the columns for `entries` (call before rendering a group of lines).
    pub fn fit(&mut self, entries: &[Entry]) {
        for e in entries {
            if let Entry::Record(a, _) = e {
                for (w, f) in self.widths.iter_mut().zip(Self::fields(a)) {
                    *w = (*w).max(f.chars().count());
                }
            }
        }
    }

    /// One line of text, without a newline.
    pub fn render(&self, entry: &Entry) -> String {
        match entry {
            Entry::Record(a, _) => {
                let [time, principal, door, op, names, size] = Self::fields(a);
                let [wt, wp, wd, wo, wn, ws] = self.widths;
                let result = match (&a.error, &a.message) {
                    _ if a.is_ok() => clean(&a.result),
                    (Some(kind), Some(m)) => format!("{} {}: {}", clean(&a.result), clean(kind), clean(m)),
                    (Some(kind), None) => format!("{} {}", clean(&a.result), clean(kind)),
                    (None, _) => clean(&a.result),
                };
                format!("{time:<wt$}  {principal:<wp$}  {door:<wd$}  {op:<wo$}  {names:<wn$}  {size:>ws$}  {result}")
            }
            Entry::Malformed(raw) => format!("{MALFORMED} {}", clean(&String::from_utf8_lossy(raw))),
        }
    }
}

/// The marker in front of a line that is not an audit record.
pub const MALFORMED: &str = "!! malformed line:";

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn line(n: u32) -> String {
        format!(
            r#"{{"time":"2026-11-30T12:34:56.789Z","store":"s","principal":"uid {n}","door":"socket","op":"store","names":["data/{n}"],"size":{n},"result":"ok"}}"#
        )
    }

    fn file_with(text: &str) -> (tempfile::TempDir, PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, text).unwrap();
        let f = File::open(&path).unwrap();
        (dir, path, f)
    }

    #[test]
    fn tail_finds_the_last_lines_across_chunks() {
        let mut text = String::new();
        for n in 0..2000 {
            text.push_str(&line(n));
            text.push('\n');
        }
        text.push_str("{\"torn");
        let (_d, _p, f) = file_with(&text);
        let t = tail(&f, 3).unwrap();
        let got: Vec<String> = t.lines.iter().map(|l| String::from_utf8(l.clone()).unwrap()).collect();
        assert_eq!(got, [line(1997), line(1998), line(1999)]);
        assert_eq!(t.partial, b"{\"torn");
        assert_eq!(t.end, (text.len() - 6) as u64);
        assert_eq!(tail(&f, 5000).unwrap().lines.len(), 2000);
        assert!(tail(&f, 0).unwrap().lines.is_empty());
        let (_d, _p, empty) = file_with("");
        assert_eq!(tail(&empty, 20).unwrap(), Tail { lines: vec![], end: 0, partial: vec![] });
    }

    #[test]
    fn follower_sees_appends_completes_partial_lines_and_follows_rotation() {
        let (_d, path, f) = file_with(&format!("{}\n{{\"par", line(0)));
        let t = tail(&f, 10).unwrap();
        let mut fo = Follower::new(&path, f, t.end, t.partial).unwrap();
        assert!(fo.poll().unwrap().is_empty());
        let mut w = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        write!(w, "tial\"}}\n{}\n", line(1)).unwrap();
        assert_eq!(fo.poll().unwrap(), [b"{\"partial\"}".to_vec(), line(1).into_bytes()]);
        // Rotation: a last line into the old file, rename, a new file.
        writeln!(w, "{}", line(2)).unwrap();
        std::fs::rename(&path, path.with_extension("log.1")).unwrap();
        writeln!(w, "{}", line(99)).unwrap(); // written after the rename: still the old file's
        std::fs::write(&path, format!("{}\n", line(3))).unwrap();
        let got = fo.poll().unwrap();
        assert_eq!(got, [line(2).into_bytes(), line(99).into_bytes(), line(3).into_bytes()]);
        // Truncated in place (shorter than what was read): read again from the start.
        std::fs::write(&path, "{\"a\":1}\n").unwrap();
        assert_eq!(fo.poll().unwrap(), [b"{\"a\":1}".to_vec()]);
    }

    #[test]
    fn rendering_aligns_columns_and_escapes_what_could_break_a_line() {
        let ok = Entry::parse(line(7).into_bytes());
        let err = Entry::parse(
            br#"{"time":"t","store":"s","principal":"a\nb","door":"rest","op":"delete","names":["x y","z"],"result":"error","error":"PermissionDenied","message":"no\u001b[2J"}"#
                .to_vec(),
        );
        let bad = Entry::parse(b"garbage\x1b[2J \xff".to_vec());
        assert!(matches!(bad, Entry::Malformed(_)));
        let mut c = Columns::default();
        c.fit(&[ok.clone(), err.clone(), bad.clone()]);
        let (a, b) = (c.render(&ok), c.render(&err));
        assert!(a.contains("uid 7") && a.contains("data/7") && a.ends_with(" 7  ok"), "{a}");
        assert!(b.contains(r"a\nb") && b.contains(r#""x y" z"#), "{b}");
        assert!(b.ends_with(r"error PermissionDenied: no\u{1b}[2J"), "{b}");
        assert_eq!(a.find("socket"), b.find("rest"), "door column aligned:\n{a}\n{b}");
        assert_eq!(a.find("store"), b.find("delete"), "op column aligned:\n{a}\n{b}");
        let m = c.render(&bad);
        assert!(m.starts_with(MALFORMED) && !m.chars().any(char::is_control), "{m:?}");
    }
}
