//! The daemon's layout is a rule, not a habit (ARCHITECTURE.md, "Layout"):
//! `src/daemon` holds one folder per subsystem ("room"), each room imports
//! only from the rooms below it, and no module imports one that imports it
//! back. The pure core (everything in `src/` outside `src/daemon`) never
//! names the daemon at all.
//!
//! ```text
//! cli → runner → healing → serve → hub → os
//!                   ↘ cluster ↗
//! ```
//!
//! This test reads the sources, so it fails in CI on the first `use` that
//! breaks the rule, naming the file and the edge.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Which rooms each room may import from (besides itself).
const ALLOWED: &[(&str, &[&str])] = &[
    (
        "cli",
        &["runner", "healing", "serve", "hub", "cluster", "os"],
    ),
    ("runner", &["healing", "serve", "hub", "cluster", "os"]),
    ("healing", &["serve", "hub", "cluster", "os"]),
    ("serve", &["hub", "os"]),
    ("cluster", &["hub", "os"]),
    ("hub", &["os"]),
    ("os", &[]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/daemon/hub/door.rs` → `hub::door`; `src/daemon/hub/mod.rs` → `hub`.
fn module_of(daemon: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(daemon).expect("under src/daemon");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without its comments (doc links name modules too).
fn code(source: &str) -> String {
    source
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::daemon::a::b` path in `code`, as the longest known module.
fn imports(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::daemon::") {
        rest = &rest[at + "crate::daemon::".len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        for len in (1..=segments.len()).rev() {
            let candidate = segments[..len].join("::");
            if modules.contains(&candidate) {
                found.insert(candidate);
                break;
            }
        }
    }
    found
}

fn room(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

struct Graph {
    edges: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    fn load() -> Graph {
        let daemon = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/daemon");
        let mut files = Vec::new();
        rust_files(&daemon, &mut files);
        let modules: BTreeSet<String> = files.iter().map(|f| module_of(&daemon, f)).collect();
        let mut edges = BTreeMap::new();
        for file in &files {
            let module = module_of(&daemon, file);
            let source = fs::read_to_string(file).expect("read source");
            let mut deps = imports(&code(&source), &modules);
            deps.remove(&module);
            edges.insert(module, deps);
        }
        Graph { edges }
    }

    /// Module-level cycles (strongly connected components of two or more).
    fn cycles(&self) -> Vec<Vec<String>> {
        // Kosaraju: order by finish time, then walk the reversed graph.
        fn finish(
            g: &BTreeMap<String, BTreeSet<String>>,
            v: &str,
            seen: &mut BTreeSet<String>,
            out: &mut Vec<String>,
        ) {
            if !seen.insert(v.to_string()) {
                return;
            }
            for w in g.get(v).into_iter().flatten() {
                finish(g, w, seen, out);
            }
            out.push(v.to_string());
        }
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for v in self.edges.keys() {
            finish(&self.edges, v, &mut seen, &mut order);
        }
        let mut reversed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (v, ws) in &self.edges {
            for w in ws {
                reversed.entry(w.clone()).or_default().insert(v.clone());
            }
        }
        let mut assigned = BTreeSet::new();
        let mut cycles = Vec::new();
        for v in order.iter().rev() {
            let mut component = Vec::new();
            finish(&reversed, v, &mut assigned, &mut component);
            if component.len() > 1 {
                component.sort();
                cycles.push(component);
            }
        }
        cycles
    }
}

#[test]
fn every_daemon_file_lives_in_a_room() {
    let graph = Graph::load();
    let loose: Vec<&String> = graph
        .edges
        .keys()
        .filter(|m| !m.is_empty() && !ALLOWED.iter().any(|(r, _)| *r == room(m)))
        .collect();
    assert!(
        loose.is_empty(),
        "modules outside the rooms of ARCHITECTURE.md's layout: {loose:?}"
    );
}

#[test]
fn rooms_import_only_the_rooms_below_them() {
    let graph = Graph::load();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (module, deps) in &graph.edges {
        let from = room(module);
        for dep in deps {
            let to = room(dep);
            let ok = from == to || allowed.get(from).is_some_and(|rooms| rooms.contains(&to));
            if !ok {
                wrong.push(format!("{module} → {dep}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layout's direction (cli → runner → healing → serve → hub → os; \
         cluster → hub, os): {wrong:#?}"
    );
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let cycles = Graph::load().cycles();
    assert!(
        cycles.is_empty(),
        "import cycles between daemon modules: {cycles:#?}"
    );
}

#[test]
fn the_core_never_names_the_daemon() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| !f.starts_with(src.join("daemon")) && !f.ends_with("main.rs"))
        .filter(|f| {
            let source = fs::read_to_string(f).expect("read source");
            code(&source).contains("crate::daemon")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "core modules that use the daemon: {offenders:?}"
    );
}

#[test]
fn the_checker_sees_an_edge_against_the_direction() {
    // The rule must be able to fail: a hub module naming a healing module.
    let modules: BTreeSet<String> = ["hub", "healing::checkers"].map(String::from).into();
    let deps = imports("use crate::daemon::healing::checkers::Checker;", &modules);
    assert_eq!(deps, BTreeSet::from(["healing::checkers".to_string()]));
    let comment_only = code("/// See [`crate::daemon::healing::checkers`].\nfn f() {}");
    assert!(imports(&comment_only, &modules).is_empty());
}
