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

/// The report folders the docs link (`reports/<name>/`), read from the text.
fn linked_reports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("reports/") {
        let rest = &text[i + "reports/".len()..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
        // Only `reports/<name>/...` is a folder; `reports/README.md` and prose are not.
        if name.starts_with("example") && rest[name.len()..].starts_with('/') {
            out.insert(name);
        }
    }
    out
}

/// Every report folder a document links is committed: `/reports/*` is ignored, so a new
/// example needs its own `!` line in .gitignore, and without one it exists only on the
/// machine that ran it (this happened once).
#[test]
fn every_report_the_docs_link_is_tracked_by_git() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut docs = vec![root.join("README.md"), root.join("ARCHITECTURE.md"), root.join("reports/README.md")];
    for dir in ["docs", "runbook"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "md") {
                docs.push(p);
            }
        }
    }
    let mut linked = BTreeSet::new();
    for d in &docs {
        linked.extend(linked_reports(&std::fs::read_to_string(d).unwrap()));
    }
    assert!(linked.len() > 10, "the link reader found only {linked:?}");
    let out = std::process::Command::new("git")
        .args(["ls-files", "reports"])
        .current_dir(&root)
        .output()
        .expect("git must be on PATH for this check");
    assert!(out.status.success(), "git ls-files failed: {}", String::from_utf8_lossy(&out.stderr));
    let tracked: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("reports/")?.split('/').next().map(String::from))
        .collect();
    let missing: Vec<&String> = linked.difference(&tracked).collect();
    assert!(
        missing.is_empty(),
        "linked from the docs but not committed (add `!/reports/<name>/` to .gitignore): {missing:?}"
    );
}

#[test]
fn report_links_are_read_as_folders_only() {
    let text = "see [r](../reports/example-canary-shadow/report.md), reports/README.md, `reports/<run-id>/` and reports/example/kill-mid-job.md";
    assert_eq!(linked_reports(text), BTreeSet::from(["example-canary-shadow".to_string(), "example".to_string()]));
}
