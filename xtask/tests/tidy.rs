//! Tidy checks on the workspace's shape, so that ARCHITECTURE.md's crate table stays
//! what the code is: every crate's own dependencies on other workspace crates are among
//! those its row's "may depend on" column names, and every workspace member has a row.
//! The compiler then keeps the boundaries (the report cannot reach a platform, a
//! platform cannot reach the report).

use std::collections::{BTreeMap, BTreeSet};

mod workspace;

use workspace::{members, read, root};

/// The package name and the workspace crates named in `[dependencies]` and
/// `[build-dependencies]` (dev-dependencies may cross: a test may read the report).
fn package(toml: &str) -> (String, BTreeSet<String>) {
    let mut name = None;
    let mut deps = BTreeSet::new();
    let mut section = "";
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        let key = line.split(['=', '.', ' ']).next().unwrap_or("");
        if section == "[package]" && key == "name" {
            name = line.split('"').nth(1).map(str::to_string);
        }
        if (section == "[dependencies]" || section == "[build-dependencies]")
            && (key.starts_with("zerodrop-") || key == "xtask")
        {
            deps.insert(key.to_string());
        }
    }
    (name.expect("a package name"), deps)
}

/// Crate → the workspace crates its rows in ARCHITECTURE.md's table allow.
fn allowed(architecture: &str, crates: &BTreeSet<String>) -> BTreeMap<String, BTreeSet<String>> {
    let short = |c: &str| c.strip_prefix("zerodrop-").unwrap_or(c).to_string();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in architecture.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let Some(name) = cells.get(1).map(|c| c.trim_matches('`')) else { continue };
        if !crates.contains(name) {
            continue;
        }
        let may: BTreeSet<String> = cells
            .last()
            .map(|c| c.trim_end_matches(" |"))
            .unwrap_or("")
            .split([',', ' '])
            .filter_map(|w| crates.iter().find(|c| short(c) == w.trim()).cloned())
            .collect();
        out.entry(name.to_string()).or_default().extend(may);
    }
    out
}

#[test]
fn every_crate_depends_only_on_what_architecture_md_allows() {
    let root = root();
    let packages: Vec<(String, BTreeSet<String>)> = members(&read(&root.join("Cargo.toml")))
        .iter()
        .map(|m| package(&read(&root.join(m).join("Cargo.toml"))))
        .collect();
    let names: BTreeSet<String> = packages.iter().map(|(n, _)| n.clone()).collect();
    assert!(names.contains("zerodrop-platform") && names.contains("zerodrop-report"), "{names:?}");
    let allowed = allowed(&read(&root.join("ARCHITECTURE.md")), &names);
    let mut wrong = Vec::new();
    for (name, deps) in &packages {
        let Some(may) = allowed.get(name) else {
            wrong.push(format!("{name} has no row in ARCHITECTURE.md's crate table"));
            continue;
        };
        for d in deps.difference(may) {
            wrong.push(format!("{name} depends on {d}, which its row in ARCHITECTURE.md does not allow"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_parsers_read_what_they_are_given() {
    let toml = "[package]\nname = \"zerodrop-x\"\n[dependencies]\nzerodrop-a.workspace = true\nserde = \"1\"\n\
                [dev-dependencies]\nzerodrop-b.workspace = true\n";
    let (name, deps) = package(toml);
    assert_eq!(name, "zerodrop-x");
    assert_eq!(deps.into_iter().collect::<Vec<_>>(), ["zerodrop-a"]);
    let crates: BTreeSet<String> = ["zerodrop-x", "zerodrop-a", "zerodrop-b"].map(String::from).into();
    let table = "| `x/` | `zerodrop-x` | what, with a, b | a, serde only |\n";
    assert_eq!(allowed(table, &crates)["zerodrop-x"].iter().collect::<Vec<_>>(), ["zerodrop-a"]);
    // A report that reached for a platform would be caught.
    let (_, deps) = package("[package]\nname = \"zerodrop-x\"\n[dependencies]\nzerodrop-b = { path = \"b\" }\n");
    assert!(!deps.is_subset(&allowed(table, &crates)["zerodrop-x"]));
}
