//! ARCHITECTURE.md stays true: every repository path it names exists, and every
//! `Type::member` it names is defined in our sources (a struct, enum, trait or type
//! alias of that name, with a function, variant, field or associated type of the
//! member's name). A rename or move that forgets the map fails here, with the stale names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top-level entries a named path may start with (the rest of the text also uses
/// `a/b` for store names, which are not repository paths).
const TOP: [&str; 8] = ["daemon", "ipc", "clientlib", "tests", "scripts", "systemd", ".ci", "docs"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

/// Every `code span` of a Markdown text.
fn code_spans(text: &str) -> Vec<String> {
    let mut spans = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(start) = rest.find('`') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('`') else { break };
            spans.push(after[..end].to_string());
            rest = &after[end + 1..];
        }
    }
    spans
}

/// The span as a repository path, if it is one (no placeholders, no spaces).
fn as_path(span: &str) -> Option<&str> {
    if span.contains([' ', '<', '(', '*']) {
        return None;
    }
    let first = span.split('/').next()?;
    let is_root_file = !span.contains('/') && (span.ends_with(".md") || span.ends_with(".toml"));
    (TOP.contains(&first) && span.contains('/') || is_root_file).then_some(span)
}

/// The span as (`Type`, `member`), if it has that shape.
fn as_member(span: &str) -> Option<(&str, &str)> {
    let (ty, member) = span.split_once("::")?;
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    (ty.starts_with(|c: char| c.is_ascii_uppercase()) && word(ty) && word(member) && !member.contains("::"))
        .then_some((ty, member))
}

fn rust_sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).expect("read a source directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).expect("read a source file"));
            out.push('\n');
        }
    }
}

fn defines_type(src: &str, ty: &str) -> bool {
    ["struct", "enum", "trait", "type"].iter().any(|kw| {
        src.match_indices(&format!("{kw} {ty}")).any(|(i, m)| {
            let next = src[i + m.len()..].chars().next();
            !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    })
}

fn defines_member(src: &str, member: &str) -> bool {
    let is_word_end = |s: &str| !s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let as_fn_or_type = ["fn ", "type ", "const "]
        .iter()
        .any(|kw| src.match_indices(&format!("{kw}{member}")).any(|(i, m)| is_word_end(&src[i + m.len()..])));
    // An enum variant or a struct field: the name at the start of a line (after `pub`),
    // then `,`, `(`, ` {`, `{` or `:`.
    let as_variant_or_field = src.lines().any(|l| {
        let l = l.trim_start();
        let l = l.strip_prefix("pub ").unwrap_or(l);
        l.strip_prefix(member).is_some_and(|rest| rest.starts_with([',', '(', '{', ' ', ':']))
    });
    as_fn_or_type || as_variant_or_field
}

#[test]
fn every_path_and_member_architecture_md_names_exists() {
    let root = root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md at the root");
    let mut src = String::new();
    for dir in ["ipc/src", "daemon/src", "clientlib/src", "tests/src"] {
        rust_sources(&root.join(dir), &mut src);
    }
    let spans = code_spans(&text);
    let mut stale = BTreeSet::new();
    let (mut paths, mut members) = (0, 0);
    for span in &spans {
        if let Some(p) = as_path(span) {
            paths += 1;
            if !root.join(p.trim_end_matches('/')).exists() {
                stale.insert(format!("path {p}"));
            }
        } else if let Some((ty, member)) = as_member(span) {
            members += 1;
            if !defines_type(&src, ty) || !defines_member(&src, member) {
                stale.insert(format!("{ty}::{member}"));
            }
        }
    }
    // The map names the layers; a parser that found nothing would pass vacuously.
    assert!(paths >= 40, "only {paths} paths found in ARCHITECTURE.md: is the span parser broken?");
    assert!(members >= 5, "only {members} Type::member names found in ARCHITECTURE.md");
    assert!(stale.is_empty(), "ARCHITECTURE.md names what does not exist (update the map): {stale:#?}");
}

#[test]
fn the_checker_catches_a_stale_name() {
    let spans = code_spans("see `daemon/src/nowhere.rs` and `Store::no_such_method`, not `data/0123`");
    assert_eq!(as_path(&spans[0]), Some("daemon/src/nowhere.rs"));
    assert!(!root().join("daemon/src/nowhere.rs").exists());
    assert_eq!(as_member(&spans[1]), Some(("Store", "no_such_method")));
    let mut src = String::new();
    rust_sources(&root().join("daemon/src"), &mut src);
    assert!(defines_type(&src, "Store") && !defines_member(&src, "no_such_method"));
    assert_eq!(as_path(&spans[2]), None, "store names are not repository paths");
}
