//! The layer rule, checked: every module of the crate belongs to one layer, and a module names
//! only modules of its own layer or of layers below it (for a type, a function or the clock).
//! A new top-level module must be given a layer here, or the check fails.

/// From the top down. `main.rs` sits above them all and may use anything.
const LAYERS: &[(&str, &[&str])] = &[
    // The fuzz targets' entry points drive the server's parser and the log directly.
    ("fuzzing", &["fuzzing"]),
    ("server", &["server"]),
    ("api", &["api"]),
    (
        "services",
        &[
            "broker",
            "log_manager",
            "log_cleaner",
            "group",
            "producer_ids",
            "fetch_session",
            "txn",
            "connection_limit",
            "error",
        ],
    ),
    ("storage", &["log", "meta"]),
    (
        "foundation",
        &[
            "config",
            "clock",
            "metrics",
            "alloc",
            "storage_task",
            "kafka_uuid",
        ],
    ),
];

/// The layer a top-level module belongs to (0 is the top).
fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, modules)| modules.contains(&module))
}

/// The top-level modules a source text names through `crate::` paths, `use crate::{..}` groups
/// included. Comments are skipped, since they may mention any module.
fn named_modules(source: &str) -> Vec<String> {
    let code: String = source
        .lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut named = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c}`: each item's first segment, at the group's top level.
            let (mut depth, mut item) = (0, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        named.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            named.push(item);
        } else {
            named.push(
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    named
        .into_iter()
        .map(|item| {
            let item = item.trim();
            item.split("::").next().unwrap_or("").trim().to_string()
        })
        .filter(|m| !m.is_empty() && m != "self")
        .collect()
}

fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_imports_only_its_own_layer_or_lower_ones() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(
        files.len() > 20,
        "found only {} source files under {}",
        files.len(),
        root.display()
    );
    let mut violations = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&root).expect("under src");
        let first = relative
            .components()
            .next()
            .expect("a path")
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs");
        // The crate roots sit above every layer; this checker is a test of them all.
        if matches!(module, "main" | "lib" | "layers") {
            continue;
        }
        let Some(own) = rank(module) else {
            violations.push(format!(
                "{}: module `{module}` has no layer in layers.rs",
                relative.display()
            ));
            continue;
        };
        let source = std::fs::read_to_string(&file).expect("readable source");
        for named in named_modules(&source) {
            match rank(&named) {
                Some(r) if r < own => violations.push(format!(
                    "{}: `{module}` ({}) names `crate::{named}` ({}), a layer above it",
                    relative.display(),
                    LAYERS[own].0,
                    LAYERS[r].0
                )),
                Some(_) => {}
                None => violations.push(format!(
                    "{}: names `crate::{named}`, which has no layer in layers.rs",
                    relative.display()
                )),
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layer violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_every_form_of_a_crate_path() {
    let source = "use crate::api::Reply;\nuse crate::{log::PartitionLog, meta::{self, MetaStore}};\n\
                  // crate::server in a comment does not count\nlet x = crate::clock::now_ms();";
    assert_eq!(named_modules(source), ["api", "log", "meta", "clock"]);
}
