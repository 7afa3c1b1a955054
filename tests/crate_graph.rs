//! The crate graph is the architecture (docs/architecture.md): these edges are
//! checked so that they cannot grow back. Every kind of dependency counts
//! (normal, build and dev): a test that needs the gateway lives in the
//! workspace's own `tests/`, not in a lower crate.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// What one workspace crate declares, from `cargo metadata`.
#[derive(Default)]
struct Deps {
    /// Workspace crates (without the `chaperone-` prefix), every kind.
    ours: BTreeSet<String>,
    /// Workspace and external crates it links (normal dependencies).
    linked: BTreeSet<String>,
}

/// Each workspace crate (without the `chaperone-` prefix) and what it declares.
fn graph() -> BTreeMap<String, Deps> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let mut graph = BTreeMap::new();
    for package in meta["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name").to_string();
        let mut deps = Deps::default();
        for dep in package["dependencies"].as_array().expect("dependencies") {
            let kind = dep["kind"].as_str();
            let dep = dep["name"].as_str().expect("dependency name");
            if let Some(ours) = dep.strip_prefix("chaperone-") {
                deps.ours.insert(ours.to_string());
            }
            if kind.is_none() {
                deps.linked.insert(dep.to_string());
            }
        }
        let short = name.strip_prefix("chaperone-").unwrap_or(&name).to_string();
        graph.insert(short, deps);
    }
    graph
}

fn workspace_deps<'a>(graph: &'a BTreeMap<String, Deps>, name: &str) -> &'a BTreeSet<String> {
    &graph
        .get(name)
        .unwrap_or_else(|| panic!("no crate chaperone-{name}"))
        .ours
}

#[test]
fn the_lower_crates_depend_only_on_what_is_below_them() {
    let graph = graph();
    let allowed: &[(&str, &[&str])] = &[
        ("schemas", &[]),
        ("store", &[]),
        ("mysql", &["schemas"]),
        ("sql", &["schemas"]),
        ("config", &["mysql"]),
        ("masking", &["config", "mysql", "sql"]),
        ("approvals", &["config", "schemas", "store"]),
        ("archive", &["schemas", "store"]),
        ("catalog", &["schemas", "store"]),
    ];
    for (name, may) in allowed {
        let extra: Vec<&String> = workspace_deps(&graph, name)
            .iter()
            .filter(|d| !may.contains(&d.as_str()))
            .collect();
        assert!(
            extra.is_empty(),
            "chaperone-{name} may depend only on {may:?} of the workspace; it also depends on {extra:?}"
        );
    }
}

#[test]
fn nothing_but_the_binary_and_the_benchmarks_depends_on_the_gateway() {
    let graph = graph();
    for (name, deps) in &graph {
        if ["chaperone", "benchmarks"].contains(&name.as_str()) {
            continue;
        }
        assert!(
            !deps.ours.contains("proxy"),
            "chaperone-{name} depends on chaperone-proxy (the gateway); depend on the crate that owns the concept instead"
        );
    }
    let proxy = workspace_deps(&graph, "proxy");
    for above in ["recorder", "archive", "catalog", "replayer", "query-ui"] {
        assert!(
            !proxy.contains(above),
            "the gateway must not depend on chaperone-{above}"
        );
    }
}

#[test]
fn the_write_side_does_not_link_datafusion() {
    let graph = graph();
    for name in ["recorder", "archive", "proxy"] {
        let linked = &graph[name].linked;
        assert!(
            !linked.contains("datafusion") && !linked.contains("chaperone-catalog"),
            "chaperone-{name} must not depend on DataFusion (SQL over the archive is chaperone-catalog)"
        );
    }
}
