//! The layering of `src/`, checked from the source text: no import cycle between
//! files, dependencies pointing down the layers ([`LAYER_RULES`]), and no file or
//! function grown past what a reader takes in at once (flat dispatch tables aside).
//!
//! A file depends on another when it names it: a `crate::`, `super::` or `self::`
//! path (in a `use` line or inline) that resolves to that file's module, or a child
//! module named by its bare name (`backup::run` in `jobs/mod.rs`). Test-only modules
//! (`#[cfg(test)]`) are left out: tests may reach anywhere. The binaries in
//! `src/bin/` sit on top and are left out too. `docs/architecture.md` draws the
//! layers this keeps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Past this many lines a file is split by concept (STYLE.md).
const MAX_FILE_LINES: usize = 650;
/// Past this many lines a function is split into steps with names.
const MAX_FUNCTION_LINES: usize = 85;
/// Flat tables, one arm per request: longer, and clearer whole.
const FLAT_TABLES: &[(&str, &str)] =
    &[("api/mod.rs", "dispatch"), ("bin/envsnapctl.rs", "request")];

type Module = Vec<String>;

struct SourceFile {
    path: PathBuf,
    text: String,
}

#[test]
fn no_import_cycle_between_source_files() {
    let files = library_files();
    let graph = dependencies(&files);
    let cycles: Vec<String> = strongly_connected(&graph)
        .into_iter()
        .filter(|component| component.len() > 1)
        .map(|component| describe_cycle(&component, &graph))
        .collect();
    assert!(
        cycles.is_empty(),
        "import cycles between files of src/:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn no_source_file_is_too_long() {
    let too_long: Vec<String> = library_files()
        .values()
        .chain(binary_files().iter())
        .filter(|file| file.text.lines().count() > MAX_FILE_LINES)
        .map(|file| {
            format!(
                "{}: {} lines",
                file.path.display(),
                file.text.lines().count()
            )
        })
        .collect();
    assert!(
        too_long.is_empty(),
        "files over {MAX_FILE_LINES} lines (split them by concept):\n{}",
        too_long.join("\n")
    );
}

#[test]
fn no_function_is_too_long() {
    let root = source_root();
    let mut too_long = Vec::new();
    for file in library_files().values().chain(binary_files().iter()) {
        let relative = file.path.strip_prefix(&root).expect("under src");
        let relative = relative.to_string_lossy();
        for (name, lines) in function_lengths(&file.text) {
            let flat = FLAT_TABLES.contains(&(relative.as_ref(), name.as_str()));
            if lines > MAX_FUNCTION_LINES && !flat {
                too_long.push(format!("{relative}: fn {name}: {lines} lines"));
            }
        }
    }
    assert!(
        too_long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (split them into named steps):\n{}",
        too_long.join("\n")
    );
}

/// Each function's name and length, from its `fn` line to the closing brace at the
/// same indentation (rustfmt's layout).
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let words: Vec<&str> = line
            .split_whitespace()
            .skip_while(|w| w.starts_with("pub") || matches!(*w, "async" | "const" | "unsafe"))
            .collect();
        let (Some(&"fn"), Some(name)) = (words.first(), words.get(1)) else {
            continue;
        };
        let name: String = name
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let declaration_only = lines[start..]
            .iter()
            .map(|l| l.trim_end())
            .find(|l| l.ends_with('{') || l.ends_with(';'))
            .is_some_and(|l| l.ends_with(';'));
        if declaration_only {
            continue; // a trait method without a body
        }
        let closing = format!("{}}}", " ".repeat(indent));
        if let Some(end) = lines[start..].iter().position(|l| *l == closing) {
            found.push((name, end + 1));
        }
    }
    found
}

/// Who may not depend on whom, beyond having no cycle: dependencies point down,
/// from the binaries through the daemon's wiring, the API and the jobs to the
/// storage and config layers (`docs/architecture.md`). Each rule names a module (and
/// everything below it) and the modules it must not reach, directly or through others.
const LAYER_RULES: &[(&str, &[&str])] = &[
    // Only the binaries start a daemon.
    ("", &["daemon"]),
    // The transport knows nothing of what a request means.
    ("control", &["api", "jobs", "context", "daemon"]),
    // The shared state is a leaf above the storage layers only.
    (
        "context",
        &[
            "api",
            "daemon",
            "link",
            "metrics",
            "jobs::backup",
            "jobs::import",
            "jobs::restore",
            "jobs::drill",
            "jobs::prune",
            "jobs::scheduler",
            "jobs::recovery",
        ],
    ),
    // Jobs never answer requests.
    ("jobs", &["api", "daemon", "control::server"]),
    // The fleet view is domain: no service layer.
    (
        "fleet",
        &[
            "api", "jobs", "context", "daemon", "control", "link", "metrics",
        ],
    ),
    // Drills' sandbox and report are domain: no service layer.
    (
        "drill",
        &[
            "api", "jobs", "context", "daemon", "control", "link", "metrics",
        ],
    ),
    // Storage, config and the pure planners know nothing of the service layer.
    (
        "store",
        &[
            "api", "jobs", "context", "daemon", "control", "link", "metrics",
        ],
    ),
    (
        "repo",
        &[
            "api", "jobs", "context", "daemon", "control", "link", "metrics", "config",
        ],
    ),
    (
        "catalog",
        &[
            "api", "jobs", "context", "daemon", "control", "link", "metrics", "config",
        ],
    ),
    // (config checks names with the repository's own rule, `repo::manifest::is_safe_name`.)
    (
        "config",
        &[
            "api", "jobs", "context", "daemon", "control", "link", "metrics", "catalog",
        ],
    ),
    (
        "schedule",
        &[
            "api", "jobs", "context", "daemon", "control", "catalog", "config",
        ],
    ),
    (
        "retention",
        &[
            "api", "jobs", "context", "daemon", "control", "catalog", "config",
        ],
    ),
    (
        "clock",
        &[
            "api", "jobs", "context", "daemon", "control", "catalog", "config",
        ],
    ),
];

#[test]
fn dependencies_point_down_the_layers() {
    let graph = dependencies(&library_files());
    let mut broken = Vec::new();
    for (module, targets) in &graph {
        let name = module.join("::");
        for (rule, forbidden) in LAYER_RULES {
            if !within(&name, rule) {
                continue;
            }
            for target in reachable(&graph, module) {
                let target_name = target.join("::");
                if let Some(layer) = forbidden.iter().find(|f| within(&target_name, f)) {
                    let how = if targets.contains(&target) {
                        "imports"
                    } else {
                        "reaches"
                    };
                    broken.push(format!(
                        "{name} {how} {target_name} (no {rule:?} module may depend on {layer})"
                    ));
                }
            }
        }
    }
    broken.sort();
    broken.dedup();
    assert!(
        broken.is_empty(),
        "dependencies against the layers:\n{}",
        broken.join("\n")
    );
}

/// Whether `module` is `prefix` or inside it (`""` is the whole crate).
fn within(module: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || module == prefix
        || module
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with("::"))
}

/// Every module `from` depends on, directly or through others.
fn reachable(graph: &BTreeMap<Module, BTreeSet<Module>>, from: &Module) -> BTreeSet<Module> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&Module> = graph.get(from).into_iter().flatten().collect();
    while let Some(next) = stack.pop() {
        if seen.insert(next.clone()) {
            stack.extend(graph.get(next).into_iter().flatten());
        }
    }
    seen
}

/// The checker itself finds what it should (a checker that finds nothing proves nothing).
#[test]
fn the_checker_sees_every_kind_of_reference() {
    let file = |path: &str, text: &str| {
        (
            module_of(Path::new(path)),
            SourceFile {
                path: path.into(),
                text: text.into(),
            },
        )
    };
    let files: BTreeMap<Module, SourceFile> = [
        file("a.rs", "use crate::{b::{self, Thing}, c};\n"),
        file("b.rs", "fn f() { crate::a::g(); } // crate::d::h\n"),
        file("c.rs", "mod e;\nfn f() { e::g(\"crate::d\"); }\n"),
        file("c/e.rs", "use super::super::d as _;\n"),
        file("d.rs", "#[cfg(test)]\nmod tests {\n use crate::a;\n}\n"),
    ]
    .into_iter()
    .collect();
    let graph = dependencies(&files);
    let names = |m: &str| -> BTreeSet<String> {
        graph[&vec![m.to_owned()]]
            .iter()
            .map(|m| m.join("::"))
            .collect()
    };
    assert_eq!(names("a"), ["b", "c"].map(String::from).into());
    assert_eq!(names("b"), ["a"].map(String::from).into());
    assert_eq!(names("c"), ["c::e"].map(String::from).into());
    assert_eq!(names("d"), BTreeSet::new());
    let cycles: Vec<_> = strongly_connected(&graph)
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect();
    assert_eq!(cycles.len(), 1, "a <-> b");
    let text =
        "trait T {\n    fn declared(&self);\n}\n\npub async fn body(\n    x: u8,\n) {\n    x;\n}\n";
    assert_eq!(function_lengths(text), [("body".to_owned(), 5)]);
}

fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library file by its module path (`["jobs", "backup"]`), binaries excluded.
fn library_files() -> BTreeMap<Module, SourceFile> {
    let root = source_root();
    let mut files = BTreeMap::new();
    for path in rust_files(&root) {
        let relative = path.strip_prefix(&root).expect("under src").to_owned();
        if relative.starts_with("bin") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable source");
        files.insert(module_of(&relative), SourceFile { path, text });
    }
    files
}

fn binary_files() -> Vec<SourceFile> {
    rust_files(&source_root().join("bin"))
        .into_iter()
        .map(|path| SourceFile {
            text: std::fs::read_to_string(&path).expect("readable source"),
            path,
        })
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            found.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}

/// `jobs/backup.rs` → `jobs::backup`; `jobs/mod.rs` → `jobs`; `lib.rs` → the root.
fn module_of(relative: &Path) -> Module {
    let mut parts: Module = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// Each file's dependencies on other files (test-only files and modules left out).
fn dependencies(files: &BTreeMap<Module, SourceFile>) -> BTreeMap<Module, BTreeSet<Module>> {
    let test_only = test_only_files(files);
    let mut graph = BTreeMap::new();
    for (module, file) in files {
        if test_only.contains(module) {
            continue;
        }
        let code = without_test_modules(&code_only(&file.text));
        let is_directory_module = matches!(
            file.path.file_name().and_then(|n| n.to_str()),
            Some("mod.rs" | "lib.rs")
        ) || module.is_empty();
        let mut targets = BTreeSet::new();
        for path in referenced_paths(&code) {
            let absolute = absolute_path(module, is_directory_module, &path);
            if let Some(target) = absolute.and_then(|p| owning_file(files, &p))
                && target != *module
                && !test_only.contains(&target)
            {
                targets.insert(target);
            }
        }
        for child in bare_child_references(&code, module, files) {
            targets.insert(child);
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

/// Files declared as `#[cfg(test)] mod NAME;`.
fn test_only_files(files: &BTreeMap<Module, SourceFile>) -> BTreeSet<Module> {
    let mut test_only = BTreeSet::new();
    for (module, file) in files {
        let code = code_only(&file.text);
        let tokens: Vec<&str> = code.split_whitespace().collect();
        for window in tokens.windows(3) {
            if window[0] == "#[cfg(test)]"
                && window[1] == "mod"
                && let Some(name) = window[2].strip_suffix(';')
            {
                let mut child = module.clone();
                child.push(name.to_owned());
                test_only.insert(child);
            }
        }
    }
    test_only
}

/// The text with comments, strings and character literals blanked out.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
            out.push(' ');
        } else if c == 'r' && (next == Some('#') || next == Some('"')) && starts_raw(&chars, i) {
            let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
            i += 2 + hashes;
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            while i < chars.len() && !chars[i..].starts_with(&close) {
                i += 1;
            }
            i += close.len();
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && is_char_literal(&chars, i) {
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `r"..."` or `r#"..."#`, not an identifier that ends in `r`.
fn starts_raw(chars: &[char], i: usize) -> bool {
    let after_identifier = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
    !after_identifier && chars.get(i + 1 + hashes) == Some(&'"')
}

/// `'a'` or `'\n'`, not a lifetime `'a`.
fn is_char_literal(chars: &[char], i: usize) -> bool {
    chars.get(i + 1) == Some(&'\\') || chars.get(i + 2) == Some(&'\'')
}

/// The code with `#[cfg(test)] mod NAME { ... }` blocks removed.
fn without_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        let is_inline_module = after.starts_with("mod ")
            && after
                .find(['{', ';'])
                .is_some_and(|end| after.as_bytes()[end] == b'{');
        if !is_inline_module {
            out.push_str("#[cfg(test)]");
            rest = &rest[at + "#[cfg(test)]".len()..];
            continue;
        }
        let open = after.find('{').expect("checked above");
        let mut depth = 0usize;
        let mut end = after.len();
        for (offset, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + offset + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Every path that starts with `crate`, `super` or `self`, with `use` groups
/// (`crate::{a::{self, B}, c}`) expanded into one path each.
fn referenced_paths(code: &str) -> Vec<Vec<String>> {
    let tokens = tokenize(code);
    let mut paths = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let starts_path = matches!(tokens[i].as_str(), "crate" | "super" | "self")
            && tokens.get(i + 1).is_some_and(|t| t == "::")
            && (i == 0 || tokens[i - 1] != "::");
        if starts_path {
            let (end, found) = path_tree(&tokens, i, Vec::new());
            paths.extend(found);
            i = end;
        } else {
            i += 1;
        }
    }
    paths
}

/// Identifiers, `::`, and single punctuation characters.
fn tokenize(code: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push("::".into());
            i += 2;
        } else {
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
            i += 1;
        }
    }
    tokens
}

/// Reads a path (or a `{...}` group of them) from `tokens[i]` on, under `prefix`;
/// returns where it ended and the complete paths.
fn path_tree(
    tokens: &[String],
    mut i: usize,
    mut prefix: Vec<String>,
) -> (usize, Vec<Vec<String>>) {
    loop {
        match tokens.get(i).map(String::as_str) {
            Some("{") => {
                let mut found = Vec::new();
                i += 1;
                while i < tokens.len() && tokens[i] != "}" {
                    let (end, sub) = path_tree(tokens, i, prefix.clone());
                    found.extend(sub);
                    i = end;
                    if tokens.get(i).is_some_and(|t| t == ",") {
                        i += 1;
                    }
                }
                return (i + 1, found);
            }
            Some(word) if is_identifier(word) => {
                prefix.push(word.to_owned());
                i += 1;
                if tokens.get(i).is_some_and(|t| t == "::") {
                    i += 1;
                } else {
                    if tokens.get(i).is_some_and(|t| t == "as") {
                        i += 2;
                    }
                    return (i, vec![prefix]);
                }
            }
            _ => return (i, vec![prefix]),
        }
    }
}

fn is_identifier(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Resolves `crate::`, `super::` and `self::` against the file's own module.
fn absolute_path(module: &Module, is_directory_module: bool, path: &[String]) -> Option<Module> {
    // `self` in `foo.rs` is `foo`; `super` is its parent, as in `foo/mod.rs`.
    let mut base: Module = Vec::new();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => rest = &path[1..],
        Some("self") => {
            base = module.clone();
            rest = &path[1..];
        }
        Some("super") => {
            base = module.clone();
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    let _ = is_directory_module; // `self` and `super` mean the same in both layouts
    base.extend(rest.iter().filter(|s| s.as_str() != "self").cloned());
    Some(base)
}

/// The file that holds the item a path names: the longest prefix that is a file.
fn owning_file(files: &BTreeMap<Module, SourceFile>, path: &[String]) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| files.contains_key(prefix))
}

/// Child modules used by their bare name (`backup::run` beside `mod backup;`).
fn bare_child_references(
    code: &str,
    module: &Module,
    files: &BTreeMap<Module, SourceFile>,
) -> BTreeSet<Module> {
    let tokens = tokenize(code);
    let mut children = BTreeSet::new();
    for (i, token) in tokens.iter().enumerate() {
        let is_path_start = tokens.get(i + 1).is_some_and(|t| t == "::")
            && (i == 0 || tokens[i - 1] != "::")
            && is_identifier(token);
        let used_in_use = i >= 1 && tokens[i - 1] == "use" && is_identifier(token);
        if !(is_path_start || used_in_use) || matches!(token.as_str(), "crate" | "super" | "self") {
            continue;
        }
        let mut child = module.clone();
        child.push(token.clone());
        if files.contains_key(&child) {
            children.insert(child);
        }
    }
    children
}

/// Tarjan's strongly connected components.
fn strongly_connected(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'g> {
        graph: &'g BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'g Module, usize>,
        low: BTreeMap<&'g Module, usize>,
        stack: Vec<&'g Module>,
        on_stack: BTreeSet<&'g Module>,
        components: Vec<Vec<Module>>,
    }
    fn visit<'g>(state: &mut State<'g>, node: &'g Module) {
        let n = state.index.len();
        state.index.insert(node, n);
        state.low.insert(node, n);
        state.stack.push(node);
        state.on_stack.insert(node);
        for next in state.graph.get(node).into_iter().flatten() {
            if !state.index.contains_key(next) {
                visit(state, next);
                let low = state.low[node].min(state.low[next]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(next) {
                let low = state.low[node].min(state.index[next]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.push(member.clone());
                if member == node {
                    break;
                }
            }
            state.components.push(component);
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node) {
            visit(&mut state, node);
        }
    }
    state.components
}

fn describe_cycle(component: &[Module], graph: &BTreeMap<Module, BTreeSet<Module>>) -> String {
    let name = |m: &Module| {
        if m.is_empty() {
            "lib".to_owned()
        } else {
            m.join("::")
        }
    };
    let members: BTreeSet<&Module> = component.iter().collect();
    let mut lines = Vec::new();
    for module in component {
        let inside: Vec<String> = graph[module]
            .iter()
            .filter(|m| members.contains(m))
            .map(name)
            .collect();
        lines.push(format!("  {} -> {}", name(module), inside.join(", ")));
    }
    format!(
        "a cycle of {} files:\n{}",
        component.len(),
        lines.join("\n")
    )
}
