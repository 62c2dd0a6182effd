//! Keeps the house standing: the modules of `src/` follow the request's way in
//! layers, each depending only on layers below it, with no import cycle between
//! modules, files of at most 400 lines of code and functions of at most 80.
//!
//! Read from the sources (`crate::` and `super::` paths in `use` lines and
//! inline), test code excluded, so that it needs nothing of the crate's internals.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use modules of lower layers, and its own
/// folder; nothing above it.
const LAYERS: &[&[&str]] = &[
    &["snapshot", "sampling", "transport", "error"],
    &["tls"],
    &["telemetry"],
    &["http"],
    &["upstream"],
    &["body"],
    &["splice"],
    &["mirror"],
    &["route"],
    &["proxy"],
    &["listen"],
    &["engine"],
    &["bindings"],
];

const MAX_FILE_LINES: usize = 400;
const MAX_FN_LINES: usize = 80;

struct Source {
    /// `mirror::copy`; `mirror` for `mirror/mod.rs`.
    module: String,
    path: PathBuf,
    /// Non-test code, blank and comment lines removed.
    code: Vec<String>,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

/// Modules declared `#[cfg(test)] mod name;`: whole files of tests.
fn test_modules(sources: &[(String, String)]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (module, text) in sources {
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for pair in lines.windows(2) {
            if pair[0] == "#[cfg(test)]" {
                if let Some(name) = pair[1]
                    .strip_prefix("mod ")
                    .and_then(|n| n.strip_suffix(';'))
                {
                    let child = if module.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{module}::{name}")
                    };
                    out.insert(child);
                }
            }
        }
    }
    out
}

/// The code before the file's `#[cfg(test)] mod tests`, without blank and
/// comment lines.
fn code_of(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut code = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        let next = lines.get(i + 1).map_or("", |l| l.trim());
        if t == "#[cfg(test)]" && next.starts_with("mod ") && next.ends_with('{') {
            break;
        }
        if t.is_empty() || t.starts_with("//") {
            continue;
        }
        code.push((*line).to_owned());
    }
    code
}

fn sources() -> Vec<Source> {
    let mut paths = Vec::new();
    rust_files(&src(), &mut paths);
    paths.sort();
    let texts: Vec<(String, String)> = paths
        .iter()
        .map(|p| (module_of(p), fs::read_to_string(p).unwrap()))
        .collect();
    let tests = test_modules(&texts);
    paths
        .into_iter()
        .zip(texts)
        .filter(|(_, (module, _))| !tests.contains(module))
        .map(|(path, (module, text))| Source {
            module,
            path,
            code: code_of(&text),
        })
        .collect()
}

/// Every module path a line names, absolute (`super::` resolved against `module`).
fn paths_named(line: &str, module: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent(module))] {
        let mut rest = line;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `$crate::` is a macro's own path; `xsuper::` is no path
            }
            let segments: Vec<String> = rest
                .split("::")
                .map_while(|s| {
                    let ident: String = s
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    (!ident.is_empty()
                        && ident.len() == s.len().min(ident.len())
                        && ident.chars().next().unwrap().is_lowercase())
                    .then_some(ident)
                })
                .collect();
            if !segments.is_empty() {
                out.push(base.iter().cloned().chain(segments).collect());
            }
        }
    }
    out
}

fn parent(module: &str) -> Vec<String> {
    let mut parts: Vec<String> = module.split("::").map(str::to_owned).collect();
    parts.pop();
    parts
}

/// The module edges of the crate: from each module to the longest module
/// prefix of each path it names. A module naming its own ancestors (their
/// re-exports) or descendants (a folder's facade) is not an edge.
fn edges(sources: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let known: BTreeSet<&str> = sources.iter().map(|s| s.module.as_str()).collect();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sources {
        let entry = out.entry(s.module.clone()).or_default();
        for line in &s.code {
            for path in paths_named(line, &s.module) {
                let target = (1..=path.len())
                    .rev()
                    .map(|n| path[..n].join("::"))
                    .find(|m| known.contains(m.as_str()));
                let Some(target) = target else { continue };
                let related = target == s.module
                    || s.module.starts_with(&format!("{target}::"))
                    || target.starts_with(&format!("{}::", s.module));
                if !related && !target.is_empty() {
                    entry.insert(target);
                }
            }
        }
    }
    out
}

fn layer_of(module: &str) -> usize {
    let top = module.split("::").next().unwrap();
    LAYERS
        .iter()
        .position(|layer| layer.contains(&top))
        .unwrap_or_else(|| panic!("module `{module}` is in no layer: add its folder to LAYERS"))
}

#[test]
fn every_edge_goes_down_the_layers() {
    let mut wrong = Vec::new();
    for (from, targets) in edges(&sources()) {
        if from.is_empty() {
            continue; // lib.rs: declares and re-exports
        }
        let top = from.split("::").next().unwrap();
        for to in targets {
            let same_folder = to.split("::").next().unwrap() == top;
            if !same_folder && layer_of(&to) >= layer_of(&from) {
                wrong.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "edges against the layer order:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_module_cycle() {
    let graph = edges(&sources());
    // Depth-first search; a back edge is a cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let start = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, state, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node) {
            let cycle = visit(node, &graph, &mut state, &mut Vec::new());
            assert!(
                cycle.is_none(),
                "import cycle: {}",
                cycle.unwrap().join(" -> ")
            );
        }
    }
}

#[test]
fn files_and_functions_stay_small() {
    let mut wrong = Vec::new();
    for s in sources() {
        let name = s.path.strip_prefix(src()).unwrap().display().to_string();
        if s.code.len() > MAX_FILE_LINES {
            wrong.push(format!("{name}: {} lines of code", s.code.len()));
        }
        for (fn_name, lines) in functions(&s.code) {
            if lines > MAX_FN_LINES {
                wrong.push(format!("{name}: fn {fn_name} has {lines} lines"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "over the size limits:\n{}",
        wrong.join("\n")
    );
}

/// Each function's name and its length in code lines, braces matched.
fn functions(code: &[String]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (i, line) in code.iter().enumerate() {
        let Some(at) = line.find("fn ") else { continue };
        let head = &line[..at];
        let is_fn = head.split_whitespace().all(|w| {
            matches!(w, "pub" | "async" | "const" | "unsafe" | "extern") || w.starts_with("pub(")
        });
        if !is_fn || line.trim_end().ends_with(';') {
            continue;
        }
        let name: String = line[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let (mut depth, mut opened) = (0i64, false);
        for (j, l) in code[i..].iter().enumerate() {
            let opens = l.matches('{').count() as i64;
            depth += opens - l.matches('}').count() as i64;
            opened |= opens > 0;
            if opened && depth <= 0 {
                out.push((name.clone(), j + 1));
                break;
            }
            if !opened && l.trim_end().ends_with(';') {
                break; // a declaration without a body
            }
        }
    }
    out
}
