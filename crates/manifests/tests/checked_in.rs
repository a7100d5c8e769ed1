//! The renders under `k8s/` are what this crate renders now, and every document in
//! them parses strictly. `ZERODROP_BLESS=1` rewrites them instead of failing.

use std::path::{Path, PathBuf};
use zerodrop_manifests::{files, parse_strict, KindCluster, RenderOptions, HEADER};

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../k8s")
}

fn blessing() -> bool {
    std::env::var("ZERODROP_BLESS").is_ok_and(|v| v == "1")
}

#[test]
fn checked_in_renders_match_the_generator() {
    let dir = k8s_dir();
    let rendered = files(&RenderOptions::default());
    let mut drifted = Vec::new();
    for f in &rendered {
        let path = dir.join(&f.path);
        if blessing() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &f.contents).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(on_disk) if on_disk == f.contents => {}
            Ok(_) => drifted.push(format!("k8s/{} differs", f.path)),
            Err(e) => drifted.push(format!("k8s/{}: {e}", f.path)),
        }
    }
    // A stage that was renamed or removed must not leave its old render behind.
    // (A missing directory is already reported above, file by file.)
    let listing = std::fs::read_dir(dir.join("stages")).into_iter().flatten();
    for entry in listing {
        let path = entry.unwrap().path();
        let rel = format!("stages/{}", path.file_name().unwrap().to_string_lossy());
        if rel.ends_with(".yaml") && !rendered.iter().any(|f| f.path == rel) {
            if blessing() {
                std::fs::remove_file(&path).unwrap();
            } else {
                drifted.push(format!("k8s/{rel} is not rendered by anything"));
            }
        }
    }
    assert!(
        drifted.is_empty(),
        "{}\nrun `ZERODROP_BLESS=1 cargo test -p zerodrop-manifests` and review the diff",
        drifted.join("\n")
    );
}

#[test]
fn every_checked_in_document_parses_strictly() {
    let dir = k8s_dir();
    for f in files(&RenderOptions::default()) {
        // Read what is on disk when it is there, so a hand edit is caught even if the
        // drift test is being blessed in the same run.
        let text = std::fs::read_to_string(dir.join(&f.path)).unwrap_or(f.contents.clone());
        assert!(text.starts_with(HEADER), "k8s/{} has no generated-file header", f.path);
        if f.path == "kind-cluster.yaml" {
            let cluster: KindCluster = serde_norway::from_str(&text).unwrap();
            assert_eq!(cluster, KindCluster::zerodrop());
            continue;
        }
        let objects = parse_strict(&text).unwrap_or_else(|e| panic!("k8s/{}: {e}", f.path));
        assert!(!objects.is_empty(), "k8s/{} has no documents", f.path);
        let documents = text.matches("\n---\n").count() + 1;
        assert_eq!(objects.len(), documents, "k8s/{}: a document was skipped", f.path);
    }
}

#[test]
fn the_kind_cluster_has_a_control_plane_and_two_workers() {
    let cluster = KindCluster::zerodrop();
    assert_eq!(cluster.api_version, "kind.x-k8s.io/v1alpha4");
    let roles: Vec<_> = cluster.nodes.iter().map(|n| n.role.as_str()).collect();
    assert_eq!(roles, ["control-plane", "worker", "worker"]);
    // The second worker is kept for the load generator; the app pods avoid it.
    let pools: Vec<_> = cluster.nodes.iter().map(|n| n.labels.get("zerodrop.dev/pool").map(String::as_str)).collect();
    assert_eq!(pools, [None, None, Some("load")]);
}
