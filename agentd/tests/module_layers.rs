//! The library's top-level modules import each other without cycles, so
//! each can be read (and changed) knowing only the modules below it.
//!
//! The graph is read from the source text: every `crate::NAME` path (and
//! `crate::{NAME, ..}` group) outside comments and `#[cfg(test)]` modules is
//! an edge from the module whose file holds it to `NAME`. A failure prints
//! the cycle with the files that make each of its edges.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges `from -> to -> files that hold such a path`.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The library's top-level modules, as `lib.rs` declares them.
fn top_modules(src: &Path) -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .chain(lib.lines().filter_map(|l| l.trim().strip_prefix("mod ")))
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect()
}

/// Every `.rs` file under `dir`, except the binaries' tree and test files.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// The text of a file without its comments and its `#[cfg(test)] mod`
/// blocks (a test may reach anywhere).
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim_start() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod ") && next.ends_with('{'))
        {
            // Skip to the block's closing brace at the same indentation.
            let indent = line.len() - line.trim_start().len();
            let close = format!("{}}}", " ".repeat(indent));
            for skipped in lines.by_ref() {
                if skipped == close {
                    break;
                }
            }
            continue;
        }
        let code = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// The names a `crate::` path reaches in `code`: `crate::a::..` gives `a`,
/// `crate::{a, b::c}` gives `a` and `b`.
fn reached(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                names.insert(ident(item.trim()));
            }
        } else {
            names.insert(ident(rest));
        }
    }
    names
}

fn graph() -> Graph {
    let src = src();
    let modules = top_modules(&src);
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let Some(first) = rel.components().next() else {
            continue;
        };
        let from = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if !modules.contains(&from) {
            continue; // lib.rs itself
        }
        let text = std::fs::read_to_string(&file).expect("read");
        for to in reached(&code_of(&text)) {
            if to != from && modules.contains(&to) {
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .insert(rel.display().to_string());
            }
        }
    }
    graph
}

/// A cycle of `graph`, if it has one (depth-first search).
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = visit(next, graph, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut done, &mut Vec::new()))
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let graph = graph();
    assert!(
        graph.len() > 10,
        "the graph was not read: {} modules with imports",
        graph.len()
    );
    if let Some(cycle) = find_cycle(&graph) {
        let edges: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("  {} -> {}: {:?}", w[0], w[1], graph[&w[0]][&w[1]]))
            .collect();
        panic!("module cycle {}:\n{}", cycle.join(" -> "), edges.join("\n"));
    }
}

#[test]
fn the_reader_finds_paths_and_groups_and_skips_tests_and_comments() {
    let code = code_of(
        "use crate::audit::AuditLog;\n\
         use crate::{config, gateway::Gateway};\n\
         // crate::daemon is only named here\n\
         let x = crate::policy::compile(s); // crate::api\n\
         #[cfg(test)]\n\
         mod tests {\n    use crate::console;\n}\n",
    );
    let names: Vec<String> = reached(&code).into_iter().collect();
    assert_eq!(names, ["audit", "config", "gateway", "policy"]);
    let mut cyclic = Graph::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a")] {
        cyclic
            .entry(a.into())
            .or_default()
            .entry(b.into())
            .or_default()
            .insert(format!("{a}.rs"));
    }
    assert_eq!(
        find_cycle(&cyclic),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    cyclic.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&cyclic), None);
}
