//! The layering cannot drift back: the workspace's crate graph (from `cargo metadata`) must be
//! the table in docs/architecture.md, sibling modules inside a crate must not import each
//! other both ways, and no source file outside tests is over 700 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const MAX_LINES: usize = 700;

/// One row of the crate table: the crate, its folder, and the crates it may use.
struct Row {
    name: String,
    folder: String,
    may_use: BTreeSet<String>,
}

/// The crate table of docs/architecture.md, in its order (the layers, bottom first).
fn table() -> Vec<Row> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("docs/architecture.md"))
        .expect("docs/architecture.md is readable");
    text.lines()
        .filter(|line| line.starts_with("| `capstan"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
            let ticked = |cell: &str| -> Vec<String> {
                cell.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_string)
                    .collect()
            };
            let name = ticked(cells[0]).pop().expect("a crate name in backticks");
            let folder = ticked(cells[1]).pop().expect("a folder in backticks");
            let may_use = ticked(cells.last().expect("cells"))
                .into_iter()
                .filter(|used| used.starts_with("capstan"))
                .collect();
            Row {
                name,
                folder,
                may_use,
            }
        })
        .collect()
}

/// Each workspace member with its folder and the workspace crates it depends on (any kind:
/// normal, build or dev).
fn members() -> BTreeMap<String, (PathBuf, BTreeSet<String>)> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(ROOT)
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata is JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    let names: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    packages
        .iter()
        .map(|package| {
            let name = package["name"].as_str().expect("a name").to_string();
            let manifest = PathBuf::from(package["manifest_path"].as_str().expect("a manifest"));
            let folder = manifest.parent().expect("a folder").to_path_buf();
            let uses = package["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter_map(|d| d["name"].as_str())
                .filter(|d| names.contains(*d))
                .map(str::to_string)
                .collect();
            (name, (folder, uses))
        })
        .collect()
}

#[test]
fn every_crate_depends_only_on_crates_below_it_in_the_architecture_table() {
    let rows = table();
    let members = members();
    assert!(
        members.len() >= 9,
        "workspace members: {:?}",
        members.keys()
    );

    let listed: Vec<&str> = rows.iter().map(|row| row.name.as_str()).collect();
    let unlisted: Vec<&String> = members
        .keys()
        .filter(|name| !listed.contains(&name.as_str()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "crates missing from docs/architecture.md's table: {unlisted:?}"
    );

    let mut problems = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let below: BTreeSet<&str> = listed[..index].iter().copied().collect();
        for used in &row.may_use {
            if !below.contains(used.as_str()) {
                problems.push(format!(
                    "the table lets {} use {used}, which is not listed above it",
                    row.name
                ));
            }
        }
        let Some((folder, uses)) = members.get(&row.name) else {
            problems.push(format!(
                "{} is in the table but not a workspace member",
                row.name
            ));
            continue;
        };
        if folder
            != &Path::new(ROOT)
                .join(&row.folder)
                .canonicalize()
                .expect("folder")
        {
            problems.push(format!(
                "{} lives in {}, the table says {}",
                row.name,
                folder.display(),
                row.folder
            ));
        }
        for used in uses.difference(&row.may_use) {
            problems.push(format!(
                "{} depends on {used}, which its row does not allow",
                row.name
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A module of a crate: its path from the crate root (`["api", "rest"]`) and its source.
struct Module {
    path: Vec<String>,
    source: PathBuf,
}

/// Every module file under `src` (tests excluded), with its module path.
fn modules(src: &Path) -> Vec<Module> {
    fn walk(dir: &Path, prefix: &[String], out: &mut Vec<Module>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            if path.is_dir() {
                if stem == "tests" {
                    continue;
                }
                let mut inner = prefix.to_vec();
                inner.push(stem);
                walk(&path, &inner, out);
            } else if path.extension().is_some_and(|e| e == "rs") && !stem.ends_with("tests") {
                let mut module = prefix.to_vec();
                if !matches!(stem.as_str(), "mod" | "lib" | "main") {
                    module.push(stem);
                }
                out.push(Module {
                    path: module,
                    source: path,
                });
            }
        }
    }
    let mut out = Vec::new();
    walk(src, &[], &mut out);
    out
}

/// The module paths a source names (`crate::a::b`, `super::c`, `self::d`, one level of
/// `{…}` groups), resolved against `module`, from its code before any `#[cfg(test)]` and
/// outside comments.
fn references(module: &[String], text: &str) -> Vec<Vec<String>> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for (at, _) in code.match_indices("::") {
        // The identifier just before this `::` must start a path: `crate`, `super`, `self`,
        // not preceded by another `::` or identifier character.
        let before = &code[..at];
        let head_start = before.trim_end_matches(is_ident).len();
        let head = &before[head_start..];
        if !matches!(head, "crate" | "super" | "self") || before[..head_start].ends_with(':') {
            continue;
        }
        if before[..head_start].ends_with(is_ident) {
            continue;
        }
        let mut base: Vec<String> = match head {
            "crate" => Vec::new(),
            "self" => module.to_vec(),
            _ => module[..module.len().saturating_sub(1)].to_vec(),
        };
        // The rest of the path, and a `{…}` group's first segments.
        let rest = &code[at + 2..];
        let path_len = rest
            .find(|c: char| !(is_ident(c) || c == ':'))
            .unwrap_or(rest.len());
        let mut segments: Vec<&str> = rest[..path_len]
            .split("::")
            .filter(|s| !s.is_empty())
            .collect();
        while segments.first() == Some(&"super") {
            segments.remove(0);
            base.pop();
        }
        let mut prefixes = vec![segments.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
        if rest[path_len..].starts_with('{') && rest[..path_len].ends_with("::") {
            let group = &rest[path_len + 1..];
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let first = item.trim().split("::").next().unwrap_or_default();
                if !first.is_empty() && first.chars().all(is_ident) {
                    let mut path: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
                    path.push(first.to_string());
                    prefixes.push(path);
                }
            }
        }
        for prefix in prefixes {
            let mut full = base.clone();
            full.extend(prefix);
            out.push(full);
        }
    }
    out
}

/// The groups of two or more modules that reach each other through `edges`.
fn strongly_connected(edges: &BTreeSet<(String, String)>) -> BTreeSet<BTreeSet<String>> {
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(node) = todo.pop() {
            for (_, to) in edges.iter().filter(|(f, _)| *f == node) {
                if seen.insert(to.clone()) {
                    todo.push(to.clone());
                }
            }
        }
        seen
    };
    let nodes: BTreeSet<&String> = edges.iter().map(|(from, _)| from).collect();
    let reached: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|node| (*node, reach(node))).collect();
    nodes
        .iter()
        .filter(|node| reached[*node].contains(**node))
        .map(|node| {
            reached[*node]
                .iter()
                .filter(|other| reached.get(other).is_some_and(|back| back.contains(*node)))
                .cloned()
                .collect::<BTreeSet<String>>()
        })
        .filter(|group| group.len() > 1)
        .collect()
}

#[test]
fn sibling_modules_never_import_each_other_both_ways() {
    let mut sources: Vec<PathBuf> = vec![Path::new(ROOT).join("src")];
    for entry in std::fs::read_dir(Path::new(ROOT).join("crates"))
        .expect("crates/")
        .flatten()
    {
        sources.push(entry.path().join("src"));
    }
    let mut cycles = Vec::new();
    for src in sources {
        let modules = modules(&src);
        let known: BTreeSet<Vec<String>> = modules.iter().map(|m| m.path.clone()).collect();
        // Per folder: edges between the modules directly inside it.
        let mut edges: BTreeMap<Vec<String>, BTreeSet<(String, String)>> = BTreeMap::new();
        for module in &modules {
            let text = std::fs::read_to_string(&module.source).expect("readable source");
            for target in references(&module.path, &text) {
                // At every folder above this module: the child of that folder holding this
                // module, and the child holding the target.
                for depth in 0..module.path.len() {
                    let folder = &module.path[..depth];
                    if target.len() <= depth || target[..depth] != *folder {
                        continue;
                    }
                    let from = &module.path[depth];
                    let to = &target[depth];
                    let mut to_path = folder.to_vec();
                    to_path.push(to.clone());
                    if from != to && known.contains(&to_path) {
                        edges
                            .entry(folder.to_vec())
                            .or_default()
                            .insert((from.clone(), to.clone()));
                    }
                }
            }
        }
        for (folder, pairs) in &edges {
            for group in strongly_connected(pairs) {
                let names: Vec<String> = group
                    .iter()
                    .map(|name| {
                        [folder.as_slice(), std::slice::from_ref(name)]
                            .concat()
                            .join("::")
                    })
                    .collect();
                cycles.push(format!(
                    "{}: {} import each other",
                    src.display(),
                    names.join(", ")
                ));
            }
        }
    }
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

#[test]
fn no_source_file_outside_tests_is_over_700_lines() {
    let mut roots: Vec<PathBuf> = vec![Path::new(ROOT).join("src")];
    for entry in std::fs::read_dir(Path::new(ROOT).join("crates"))
        .expect("crates/")
        .flatten()
    {
        roots.push(entry.path().join("src"));
    }
    let mut long = Vec::new();
    for root in roots {
        for module in modules(&root) {
            let lines = std::fs::read_to_string(&module.source)
                .expect("readable source")
                .lines()
                .count();
            if lines > MAX_LINES {
                long.push(format!("{} has {lines} lines", module.source.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these by concern (at most {MAX_LINES} lines each):\n{}",
        long.join("\n")
    );
}
