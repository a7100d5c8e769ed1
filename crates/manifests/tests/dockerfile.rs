//! Every image the manifests name is built by a target of `services/Dockerfile`,
//! with the CMD form its name promises. (No Docker here: this reads the file.)

use std::collections::BTreeMap;
use zerodrop_manifests::{load_job, stage, LoadJobSpec, Object, RenderOptions};
use zerodrop_stages::Stage;

/// `FROM ... AS <name>` stages, each with its instruction lines.
fn stages(dockerfile: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in dockerfile.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words[0].eq_ignore_ascii_case("FROM") {
            current = match words[..] {
                [_, _, as_, name] if as_.eq_ignore_ascii_case("AS") => Some(name.to_string()),
                _ => None,
            };
            if let Some(name) = &current {
                assert!(out.insert(name.clone(), Vec::new()).is_none(), "stage {name} defined twice");
            }
        } else if let Some(name) = &current {
            out.get_mut(name).unwrap().push(line.to_string());
        }
    }
    out
}

/// The Dockerfile target an image name stands for: `zerodrop-api:shell-<tag>` ->
/// `api-shell`, `zerodrop-load:<tag>` -> `load`.
fn target(image: &str, tag: &str) -> String {
    let (repo, image_tag) = image.split_once(':').unwrap();
    let app = repo.strip_prefix("zerodrop-").unwrap();
    match image_tag.strip_suffix(&format!("-{tag}")) {
        Some(form) => format!("{app}-{form}"),
        None => {
            assert_eq!(image_tag, tag);
            app.to_string()
        }
    }
}

fn images(objects: &[Object]) -> Vec<String> {
    objects
        .iter()
        .filter_map(|o| {
            let pod = match o {
                Object::Deployment(d) => d.spec.as_ref()?.template.spec.as_ref()?,
                Object::Job(j) => j.spec.as_ref()?.template.spec.as_ref()?,
                _ => return None,
            };
            Some(pod.containers.iter().filter_map(|c| c.image.clone()).collect::<Vec<_>>())
        })
        .flatten()
        .collect()
}

#[test]
fn every_image_in_the_manifests_has_a_dockerfile_target() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../services/Dockerfile");
    let dockerfile = std::fs::read_to_string(path).unwrap();
    let targets = stages(&dockerfile);
    let o = RenderOptions::default();
    let mut objects: Vec<Object> = Stage::all().iter().flat_map(|s| stage(s, &o)).collect();
    objects.push(load_job(&LoadJobSpec::quick_example(&o), &o));
    let mut wanted: Vec<String> = images(&objects).iter().map(|i| target(i, &o.image_tag)).collect();
    wanted.sort();
    wanted.dedup();
    assert_eq!(wanted, ["api-init", "api-shell", "load", "worker-init", "worker-shell"]);

    for name in &wanted {
        let lines = targets.get(name).unwrap_or_else(|| panic!("services/Dockerfile has no target {name}"));
        if name == "load" {
            assert!(lines.iter().any(|l| l.starts_with("ENTRYPOINT [")), "{name}: {lines:?}");
            continue;
        }
        let cmd = lines.iter().find(|l| l.starts_with("CMD ")).unwrap_or_else(|| panic!("{name} has no CMD"));
        let binary = format!("/usr/local/bin/zerodrop-{}", name.split('-').next().unwrap());
        if name.ends_with("-shell") {
            // A list, so /bin/sh stays PID 1 instead of exec-ing the app.
            assert_eq!(cmd, &format!("CMD {binary}; echo \"app exited $?\""));
        } else {
            // An init as PID 1 that forwards SIGTERM to the app.
            assert_eq!(cmd, &format!("CMD [\"/usr/local/bin/zerodrop-init\", \"--\", \"{binary}\"]"));
        }
    }
    let builder = &targets["builder"];
    assert!(builder.iter().any(|l| l.contains("-p zerodrop-api -p zerodrop-worker -p zerodrop-load -p zerodrop-init")));
}

/// The broker relay runs from the load image: the builder builds and installs it, and
/// the load target copies it to exactly the path the relay Deployment's `command` names.
#[test]
fn the_relay_binary_ships_in_the_load_image() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../services/Dockerfile");
    let dockerfile = std::fs::read_to_string(path).unwrap();
    let targets = stages(&dockerfile);
    let builder = targets["builder"].join("\n");
    assert!(builder.contains("-p zerodrop-fault-relay"), "{builder}");
    assert!(builder.contains("target/release/zerodrop-fault-relay"), "{builder}");
    let copy = format!("COPY --from=builder {0} {0}", zerodrop_manifests::RELAY_BIN);
    assert!(targets["load"].contains(&copy), "{:?}", targets["load"]);
    let o = RenderOptions { broker_relay: true, ..RenderOptions::default() };
    let relay = zerodrop_manifests::broker_relay(&o);
    assert_eq!(images(&relay), [o.load_image()]);
}
