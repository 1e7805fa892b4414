//! The layer map of lib.rs's doc, held to: every `crate::…` path in every source file
//! (`use` lines, multi-line `use crate::{…}` groups, paths in code, and `super::…` climbing
//! out of a top-level module) is checked against the table of allowed imports there. The
//! table is read from lib.rs itself, so it is written down once; it must also be free of
//! circles.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Source files the check skips: the crate root (it only declares the modules) and this
/// file (its samples are strings).
const SKIPPED: &[&str] = &["lib.rs", "main.rs", "tests.rs"];

/// One reference to another module: where it is and the path it names, from the crate
/// root (`containers::names::Meta`).
#[derive(Debug, PartialEq, Eq)]
struct Reference {
    line: usize,
    path: Vec<String>,
}

/// Module → the path prefixes it may import (`table`, `host::facts`), from lib.rs's table.
fn allowed_imports(lib: &str) -> BTreeMap<String, Vec<Vec<String>>> {
    let mut rows = BTreeMap::new();
    let table = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("//!"))
        .map(str::trim)
        .skip_while(|l| !l.starts_with("| module"))
        .skip(2)
        .take_while(|l| l.starts_with('|'));
    for row in table {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let [_, module, _, allowed, ..] = cells[..] else {
            panic!("lib.rs layer table: a row needs module, layer and imports: {row}");
        };
        let prefixes = allowed
            .split(',')
            .map(|a| a.trim().trim_matches('`'))
            .filter(|a| !a.is_empty() && *a != "—")
            .map(|a| a.split("::").map(String::from).collect())
            .collect();
        rows.insert(module.trim_matches('`').to_string(), prefixes);
    }
    rows
}

/// The modules lib.rs declares (`pub mod x;`, `mod x;`), this test's own left out.
fn declared_modules(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))?;
            rest.strip_suffix(';').map(String::from)
        })
        .filter(|m| m != "tests")
        .collect()
}

/// The source text with comments, string and character literals blanked out (newlines
/// kept, so line numbers hold): what they say is not an import.
fn code_only(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, s: &[char]| {
        out.extend(s.iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }));
    };
    let mut i = 0;
    while i < c.len() {
        let end = literal_end(&c, i);
        if end > i {
            blank(&mut out, &c[i..end]);
            i = end;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Where the comment or literal starting at `i` ends (`i` itself when none starts there).
fn literal_end(c: &[char], i: usize) -> usize {
    let at = |k: usize| c.get(k).copied().unwrap_or('\0');
    let ident_before = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
    match (at(i), at(i + 1)) {
        ('/', '/') => (i..c.len()).find(|&k| c[k] == '\n').unwrap_or(c.len()),
        ('/', '*') => {
            let (mut depth, mut k) = (0usize, i);
            while k < c.len() {
                match (at(k), at(k + 1)) {
                    ('/', '*') => (depth, k) = (depth + 1, k + 2),
                    ('*', '/') if depth == 1 => return k + 2,
                    ('*', '/') => (depth, k) = (depth - 1, k + 2),
                    _ => k += 1,
                }
            }
            c.len()
        }
        ('"', _) => {
            let mut k = i + 1;
            while k < c.len() && c[k] != '"' {
                k += if c[k] == '\\' { 2 } else { 1 };
            }
            (k + 1).min(c.len())
        }
        ('r', '"' | '#') if !ident_before => {
            let hashes = (i + 1..c.len()).take_while(|&k| c[k] == '#').count();
            if at(i + 1 + hashes) != '"' {
                return i;
            }
            let close = format!("\"{}", "#".repeat(hashes));
            let from = i + 2 + hashes;
            let rest: String = c[from..].iter().collect();
            rest.find(&close)
                .map_or(c.len(), |k| from + rest[..k].chars().count() + close.len())
        }
        ('\'', '\\') => (i + 3..c.len())
            .find(|&k| c[k] == '\'')
            .map_or(c.len(), |k| k + 1),
        ('\'', _) if at(i + 2) == '\'' => i + 3,
        _ => i,
    }
}

/// Identifiers and the punctuation a path is made of, with their lines.
fn tokens(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let c: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < c.len() {
            let ch = c[i];
            if ch.is_alphabetic() || ch == '_' {
                let start = i;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
                out.push((n + 1, c[start..i].iter().collect()));
            } else if ch == ':' && c.get(i + 1) == Some(&':') {
                out.push((n + 1, "::".into()));
                i += 2;
            } else {
                if !ch.is_whitespace() {
                    out.push((n + 1, ch.to_string()));
                }
                i += 1;
            }
        }
    }
    out
}

/// The paths of the `use` tree or path starting at token `i` (after its `crate::` or
/// `super::`s), each prefixed with `base`: a `{…}` group gives one path per leaf.
fn expand(t: &[(usize, String)], i: &mut usize, base: &[String], out: &mut Vec<Reference>) {
    let mut path = base.to_vec();
    let line = t.get(*i).map_or(0, |x| x.0);
    while let Some((_, tok)) = t.get(*i) {
        match tok.as_str() {
            "{" => {
                *i += 1;
                while t.get(*i).is_some_and(|x| x.1 != "}") {
                    let before = *i;
                    expand(t, i, &path, out);
                    if *i == before {
                        *i += 1;
                    }
                    if t.get(*i).is_some_and(|x| x.1 == ",") {
                        *i += 1;
                    }
                }
                *i += 1;
                return;
            }
            "self" => *i += 1,
            "*" => {
                path.push("*".into());
                *i += 1;
                break;
            }
            s if s.starts_with(|c: char| c.is_alphabetic() || c == '_') => {
                path.push(s.to_string());
                *i += 1;
                if t.get(*i).is_some_and(|x| x.1 == "::") {
                    *i += 1;
                    continue;
                }
                if t.get(*i).is_some_and(|x| x.1 == "as") {
                    *i += 2;
                }
                break;
            }
            _ => break,
        }
    }
    out.push(Reference { line, path });
}

/// Every path of `src` that leaves the top-level module it is in: `crate::…`, and
/// `super::…` chains that climb to the crate root. `module` is the file's module path
/// (`["views", "metrics"]` for views/metrics/mod.rs); inline `mod x { … }` blocks deepen it.
fn references(src: &str, module: &[String]) -> Vec<Reference> {
    let t = tokens(&code_only(src));
    let mut out = Vec::new();
    // Brace depths at which inline modules opened.
    let (mut depth, mut inline): (usize, Vec<usize>) = (0, Vec::new());
    let mut i = 0;
    while i < t.len() {
        match t[i].1.as_str() {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last() == Some(&depth) {
                    inline.pop();
                }
            }
            "mod" if is(&t, i + 2, "{") => inline.push(depth),
            "crate" if is(&t, i + 1, "::") && (i == 0 || t[i - 1].1 != "::") => {
                i += 2;
                expand(&t, &mut i, &[], &mut out);
                continue;
            }
            "super" if i == 0 || t[i - 1].1 != "::" => {
                let mut climbs = 0;
                while is(&t, i, "super") && is(&t, i + 1, "::") {
                    climbs += 1;
                    i += 2;
                }
                if climbs == 0 {
                    i += 1;
                    continue;
                }
                if climbs >= module.len() + inline.len() {
                    expand(&t, &mut i, &[], &mut out);
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

fn is(t: &[(usize, String)], i: usize, s: &str) -> bool {
    t.get(i).is_some_and(|x| x.1 == s)
}

/// The module path of a source file under src/ (`views/metrics/mod.rs` → views, metrics).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Whether the table's module-level graph has a circle: Kahn's algorithm leaves one.
fn circle(rows: &BTreeMap<String, Vec<Vec<String>>>) -> Option<Vec<String>> {
    let mut deps: BTreeMap<&str, BTreeSet<&str>> = rows
        .iter()
        .map(|(m, ps)| {
            let to = ps.iter().map(|p| p[0].as_str()).filter(|t| t != m);
            (m.as_str(), to.collect())
        })
        .collect();
    loop {
        let free: Vec<&str> = deps
            .iter()
            .filter(|(_, d)| d.is_empty())
            .map(|(m, _)| *m)
            .collect();
        if free.is_empty() {
            break;
        }
        for m in &free {
            deps.remove(m);
        }
        for d in deps.values_mut() {
            for m in &free {
                d.remove(m);
            }
        }
    }
    (!deps.is_empty()).then(|| deps.keys().map(|m| m.to_string()).collect())
}

/// Each reference in src/ that the table does not allow: "file:line: from imports path".
fn violations(src_dir: &Path, rows: &BTreeMap<String, Vec<Vec<String>>>) -> Vec<String> {
    let mut files = Vec::new();
    sources(src_dir, &mut files);
    files.sort();
    let mut bad = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src_dir).unwrap();
        if SKIPPED.contains(&rel.to_string_lossy().as_ref()) {
            continue;
        }
        let module = module_of(rel);
        let from = &module[0];
        let Some(allowed) = rows.get(from) else {
            bad.push(format!(
                "{}: module `{from}` has no row in lib.rs's layer table",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap();
        for r in references(&text, &module) {
            let ok = r.path.first() == Some(from) || allowed.iter().any(|a| r.path.starts_with(a));
            if !ok {
                bad.push(format!(
                    "{}:{}: `{from}` imports `crate::{}`, which lib.rs's layer table does not allow",
                    rel.display(),
                    r.line,
                    r.path.join("::")
                ));
            }
        }
    }
    bad
}

/// The imports between top-level modules follow lib.rs's table, and the table has no
/// circle: data flows one way.
#[test]
fn every_import_between_modules_is_one_the_layer_table_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let rows = allowed_imports(&lib);
    let declared = declared_modules(&lib);
    let listed: BTreeSet<String> = rows.keys().cloned().collect();
    assert_eq!(
        listed, declared,
        "the layer table lists every module of lib.rs"
    );
    for (m, prefixes) in &rows {
        for p in prefixes {
            assert!(
                rows.contains_key(&p[0]),
                "`{m}` may import `{}`: no such module",
                p.join("::")
            );
        }
    }
    assert_eq!(
        circle(&rows),
        None,
        "the layer table has a circle among these modules"
    );
    let bad = violations(&src, &rows);
    assert!(
        bad.is_empty(),
        "{} imports break the layer map:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// The reader of paths: groups over several lines, `self`, renames, globs, inline test
/// modules, `super` climbing out of a module, and paths in comments and strings ignored.
#[test]
fn references_are_read_from_groups_paths_and_super_chains() {
    let src = r#"
use crate::{
    containers::{names::Meta, pods::{self, Pod}},
    table::summary::ContainerSummary as S,
};
use super::model::x; // crate::not::this
fn f() { let _ = crate::host::clock::now(); let _ = "crate::nor::this"; let _ = '"'; }
use super::super::api::*;
mod tests { use super::super::super::agent::Health; use super::super::views::x; }
"#;
    let module = vec!["views".to_string(), "metrics".to_string()];
    let got: Vec<(usize, String)> = references(src, &module)
        .into_iter()
        .map(|r| (r.line, r.path.join("::")))
        .collect();
    let want = [
        (3, "containers::names::Meta"),
        (3, "containers::pods"),
        (3, "containers::pods::Pod"),
        (4, "table::summary::ContainerSummary"),
        (7, "host::clock::now"),
        (8, "api::*"),
        (9, "agent::Health"),
    ];
    let want: Vec<(usize, String)> = want.iter().map(|&(l, p)| (l, p.to_string())).collect();
    assert_eq!(got, want);
}
