//! `image_registry`: the runner's images behind a registry prefix, for clusters that
//! pull (any cluster that is not kind); without it the render is unchanged.

use zerodrop_manifests::{
    base, files, load_job, stage, LoadJobSpec, Object, RenderOptions, POSTGRES_IMAGE, RABBITMQ_IMAGE,
};
use zerodrop_stages::Stage;

fn pod_images(objects: &[Object]) -> Vec<String> {
    objects
        .iter()
        .filter_map(|o| {
            let pod = match o {
                Object::Deployment(d) => d.spec.as_ref()?.template.spec.as_ref()?,
                Object::Job(j) => j.spec.as_ref()?.template.spec.as_ref()?,
                _ => return None,
            };
            Some(
                pod.containers
                    .iter()
                    .chain(pod.init_containers.iter().flatten())
                    .map(|c| c.image.clone().unwrap())
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect()
}

/// Every stage and the load Job: the objects whose pods run the runner's images.
fn runner_objects(o: &RenderOptions) -> Vec<Object> {
    let mut all: Vec<Object> = Stage::all().iter().flat_map(|s| stage(s, o)).collect();
    all.push(load_job(&LoadJobSpec::quick_example(o), o));
    all
}

#[test]
fn the_registry_prefix_reaches_every_pod_image() {
    let plain = RenderOptions::default();
    let o = RenderOptions { image_registry: Some("registry.local:5000/lab".into()), ..RenderOptions::default() };
    let images = pod_images(&runner_objects(&o));
    assert_eq!(images.len(), Stage::all().len() * 2 + 1);
    for i in &images {
        assert!(i.starts_with("registry.local:5000/lab/zerodrop-"), "{i}");
    }
    assert!(images.contains(&"registry.local:5000/lab/zerodrop-api:shell-dev".to_string()));
    assert!(images.contains(&"registry.local:5000/lab/zerodrop-worker:init-dev".to_string()));
    assert!(images.contains(&"registry.local:5000/lab/zerodrop-load:dev".to_string()));
    // The same images, only prefixed.
    let unprefixed: Vec<String> =
        images.iter().map(|i| i.strip_prefix("registry.local:5000/lab/").unwrap().to_string()).collect();
    assert_eq!(unprefixed, pod_images(&runner_objects(&plain)));
    // A trailing slash does not double up.
    let slash = RenderOptions { image_registry: Some("ghcr.io/me/".into()), ..RenderOptions::default() };
    assert_eq!(slash.load_image(), "ghcr.io/me/zerodrop-load:dev");
    // RabbitMQ and PostgreSQL too: the runner mirrors them under the prefix (a
    // cluster that pulls only from the registry could not start them otherwise).
    assert_eq!(
        pod_images(&base(&o)),
        [format!("registry.local:5000/lab/{RABBITMQ_IMAGE}"), format!("registry.local:5000/lab/{POSTGRES_IMAGE}")]
    );
    assert_eq!(pod_images(&base(&plain)), [RABBITMQ_IMAGE, POSTGRES_IMAGE]);
}

#[test]
fn without_a_registry_the_render_is_unchanged() {
    let plain = RenderOptions::default();
    assert_eq!(plain.image_registry, None);
    for i in pod_images(&runner_objects(&plain)) {
        assert!(i.starts_with("zerodrop-") && !i.contains('/'), "{i}");
    }
    // Byte for byte: the only difference a registry makes is the prefix on the
    // image lines (the checked-in files are `files(&default)`; see
    // checked_in.rs for the drift test against k8s/).
    let o = RenderOptions { image_registry: Some("ghcr.io/me".into()), ..RenderOptions::default() };
    let (a, b) = (files(&plain), files(&o));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.contents, y.contents.replace("image: ghcr.io/me/", "image: "), "{}", x.path);
    }
    assert!(b.iter().any(|f| f.contents.contains("image: ghcr.io/me/zerodrop-load:dev")));
}
