//! The source tree's shape, checked: no module cycle in `src/`, no file
//! over the size a reader can hold in mind, and the top-level modules named
//! only from above them ([`LAYERS`]; docs/architecture.md draws them).
//!
//! A module's dependencies are the modules its `use` declarations and inline
//! `crate::`/`super::` paths name, resolved to the longest module path that
//! exists; a `mod x;` declaration is not a dependency. Test modules
//! (`#[cfg(test)]` to the end of a file) are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest a source file may grow (the web player's JavaScript aside).
const MAX_LINES: usize = 700;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/server/media/serve.rs` -> `["server", "media", "serve"]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts
}

/// The code of a file without comments, string contents and its test module.
fn code_of(text: &str) -> String {
    let body = match text.find("#[cfg(test)]\nmod ") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = String::with_capacity(body.len());
    for line in body.lines() {
        let line = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    // Blank out string literals so paths in messages do not count.
    let mut clean = String::with_capacity(out.len());
    let mut in_str = false;
    let mut prev = ' ';
    for c in out.chars() {
        if c == '"' && prev != '\\' && prev != '\'' {
            in_str = !in_str;
            clean.push('"');
        } else if !in_str {
            clean.push(c);
        }
        prev = if prev == '\\' && c == '\\' { ' ' } else { c };
    }
    clean
}

/// Every path a `use` tree or an inline path names (`a::b`, `a::{b, c}`),
/// as segment lists.
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !(word(chars[i - 1]) || chars[i - 1] == ':');
        if starts_word && word(chars[i]) {
            let mut end = i;
            while end < chars.len() && word(chars[end]) {
                end += 1;
            }
            if end + 1 < chars.len() && chars[end] == ':' && chars[end + 1] == ':' {
                let (trees, after) = parse_tree(&chars, i);
                out.extend(trees);
                i = after.max(end);
                continue;
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// Parses `a::b::{c, d::e}` from `at`; returns the expanded paths and the end.
fn parse_tree(s: &[char], mut at: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        while at < s.len() && s[at].is_whitespace() {
            at += 1;
        }
        if at < s.len() && s[at] == '{' {
            at += 1;
            let mut all = Vec::new();
            loop {
                while at < s.len() && (s[at].is_whitespace() || s[at] == ',') {
                    at += 1;
                }
                if at >= s.len() || s[at] == '}' {
                    at += 1;
                    break;
                }
                let (trees, end) = parse_tree(s, at);
                for t in trees {
                    let mut p = prefix.clone();
                    p.extend(t);
                    all.push(p);
                }
                at = end;
            }
            return (all, at);
        }
        let start = at;
        while at < s.len() && (s[at].is_alphanumeric() || s[at] == '_' || s[at] == '*') {
            at += 1;
        }
        if start == at {
            return (vec![prefix], at);
        }
        prefix.push(s[start..at].iter().collect());
        if at + 1 < s.len() && s[at] == ':' && s[at + 1] == ':' {
            at += 2;
        } else {
            return (vec![prefix], at);
        }
    }
}

/// Modules that name no other module of the crate: anything may use them.
const LEAVES: &[&str] = &[
    "errors", "fold", "key_file", "logging", "pem", "signals", "version",
];

/// Which top-level modules each top-level module may name, besides itself
/// and the [`LEAVES`]: dependencies point down, from the program to the
/// command line to the server and the clients to the wire contract. The
/// crate root (`lib.rs`: declarations and re-exports) may name anything.
const LAYERS: &[(&str, &[&str])] = &[
    // Parses the command line, sets up logging, dispatches.
    (
        "app",
        &["cli", "man", "server", "client", "loadtest", "protocol"],
    ),
    // The flags, and `radio serve`'s conversion into a ServerConfig.
    ("cli", &["server", "client", "loadtest", "protocol"]),
    // The man pages: the clap tree, and `radio broadcast`'s command language.
    ("man", &["cli", "client"]),
    // The server never names the command line: cli makes its ServerConfig.
    ("server", &["protocol", "m3u"]),
    // The clients take their subcommand's clap arguments (cli's `*Args`)
    // as they are: they are the clients' whole configuration.
    ("client", &["cli", "protocol", "m3u"]),
    ("loadtest", &["cli", "client", "protocol"]),
    // Playlists as written (M3U) and how an entry names a library track:
    // read by the server's own stations and by `radio broadcast`.
    ("m3u", &[]),
    // The wire contract stands alone.
    ("protocol", &[]),
];

/// What the test reads: every module of `src/`, the modules each names, and
/// the files over [`MAX_LINES`].
struct Tree {
    deps: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
    too_long: Vec<String>,
}

fn tree() -> Tree {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();

    let mut too_long = Vec::new();
    let mut deps: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("read source");
        let lines = text.lines().count();
        if lines > MAX_LINES {
            too_long.push(format!("{} ({lines} lines)", file.display()));
        }
        let mut edges = BTreeSet::new();
        for path in paths_in(&code_of(&text)) {
            let mut abs: Vec<String> = Vec::new();
            let mut segs = path.iter();
            match segs.next().map(String::as_str) {
                Some("crate") => {}
                Some("super") => {
                    abs = module.clone();
                    abs.pop();
                }
                Some("self") => abs = module.clone(),
                // A child module named without `self::`.
                Some(child) => {
                    abs = module.clone();
                    abs.push(child.to_owned());
                    if !modules.contains_key(&abs) {
                        continue;
                    }
                }
                None => continue,
            }
            for seg in segs {
                if seg == "super" {
                    abs.pop();
                } else {
                    abs.push(seg.clone());
                }
            }
            // The longest prefix that is a module of its own file.
            while !abs.is_empty() && !modules.contains_key(&abs) {
                abs.pop();
            }
            if &abs != module {
                edges.insert(abs);
            }
        }
        deps.insert(module.clone(), edges);
    }
    Tree { deps, too_long }
}

#[test]
fn no_module_cycles_and_no_long_files() {
    let Tree { deps, too_long } = tree();

    // Depth-first search for a back edge.
    fn visit(
        m: &Vec<String>,
        deps: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(m.clone(), 1);
        stack.push(m.clone());
        for d in deps.get(m).into_iter().flatten() {
            match state.get(d).copied().unwrap_or(0) {
                0 => visit(d, deps, state, stack, cycles),
                1 => {
                    let from = stack.iter().position(|x| x == d).unwrap_or(0);
                    let names: Vec<String> = stack[from..]
                        .iter()
                        .chain(std::iter::once(d))
                        .map(|p| format!("crate::{}", p.join("::")))
                        .collect();
                    cycles.push(names.join(" -> "));
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.clone(), 2);
    }
    let mut state = BTreeMap::new();
    let mut cycles = Vec::new();
    for m in deps.keys() {
        if state.get(m).copied().unwrap_or(0) == 0 {
            visit(m, &deps, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(
        cycles.is_empty() && too_long.is_empty(),
        "module cycles in src/:\n{}\nfiles over {MAX_LINES} lines: {too_long:?}",
        cycles.join("\n")
    );
}

/// The edges of the top-level graph that [`LAYERS`] does not allow, as
/// `from -> to (file module)` lines; and the top-level modules it lacks.
fn layer_violations(deps: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<String> {
    let mut out = Vec::new();
    for (module, edges) in deps {
        let Some(from) = module.first() else {
            continue; // the crate root
        };
        let allowed: &[&str] = if LEAVES.contains(&from.as_str()) {
            &[]
        } else if let Some((_, to)) = LAYERS.iter().find(|(m, _)| m == from) {
            to
        } else {
            out.push(format!(
                "crate::{from} is in neither LAYERS nor LEAVES (tests/it/layout.rs): \
                 say what it may name"
            ));
            continue;
        };
        for edge in edges {
            let Some(to) = edge.first() else {
                out.push(format!("crate::{} names the crate root", module.join("::")));
                continue;
            };
            let fine = to == from
                || (LEAVES.contains(&to.as_str()) && !LEAVES.contains(&from.as_str()))
                || allowed.contains(&to.as_str());
            if !fine {
                out.push(format!(
                    "crate::{} names crate::{}",
                    module.join("::"),
                    edge.join("::")
                ));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn top_level_modules_are_named_only_from_above() {
    let violations = layer_violations(&tree().deps);
    assert!(
        violations.is_empty(),
        "dependencies that point up or sideways (LAYERS in tests/it/layout.rs says \
         which top-level module may name which):\n{}",
        violations.join("\n")
    );
}

/// The check itself: a server file naming the command line, or a leaf
/// naming anything, is caught; the allowed direction is not.
#[test]
fn a_layer_violation_is_caught() {
    let path = |p: &str| p.split("::").map(str::to_owned).collect::<Vec<_>>();
    let graph = |edges: &[(&str, &str)]| {
        let mut deps: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for (from, to) in edges {
            deps.entry(path(from)).or_default().insert(path(to));
        }
        deps
    };
    assert!(
        layer_violations(&graph(&[
            ("cli", "server::config"),
            ("server::http", "protocol")
        ]))
        .is_empty()
    );
    assert_eq!(
        layer_violations(&graph(&[("server::config", "cli")])),
        ["crate::server::config names crate::cli"]
    );
    assert_eq!(
        layer_violations(&graph(&[("protocol::ids", "server::peer")])),
        ["crate::protocol::ids names crate::server::peer"]
    );
    assert_eq!(
        layer_violations(&graph(&[("logging", "cli")])),
        ["crate::logging names crate::cli"]
    );
    assert_eq!(
        layer_violations(&graph(&[("newcomer", "protocol")])).len(),
        1
    );
}
