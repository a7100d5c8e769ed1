//! The commands the kind platform runs outside Kubernetes' API: creating and deleting
//! the cluster, building the images, loading them into the nodes (or pushing them to
//! the `--registry` the cluster pulls from). Each is built as
//! data first ([`Cmd`]), so `--dry-run` prints exactly what a real run executes.

use super::objects::{images, Rendered};
use super::KindOptions;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use zerodrop_stages::{Entrypoint, Stage, StageName};

/// One external command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    /// Working directory; `None` is the runner's own.
    pub dir: Option<PathBuf>,
}

impl Cmd {
    fn new(program: &str, args: &[&str]) -> Cmd {
        Cmd { program: program.into(), args: args.iter().map(|s| s.to_string()).collect(), dir: None }
    }

    /// As a shell line, quoted where needed.
    pub fn display(&self) -> String {
        let quote = |s: &str| {
            if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c)) {
                s.to_string()
            } else {
                format!("'{}'", s.replace('\'', r"'\''"))
            }
        };
        let line = std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .map(quote)
            .collect::<Vec<_>>()
            .join(" ");
        match &self.dir {
            Some(d) => format!("(cd {} && {line})", quote(&d.display().to_string())),
            None => line,
        }
    }

    /// Runs it with its output going to the terminal.
    pub fn run(&self) -> Result<()> {
        let sh = xshell::Shell::new()?;
        if let Some(d) = &self.dir {
            sh.change_dir(d);
        }
        eprintln!("[kind] {}", self.display());
        sh.cmd(&self.program).args(&self.args).run().with_context(|| format!("`{}` failed", self.display()))
    }
}

/// An image the runner builds from `services/Dockerfile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub target: String,
    pub tag: String,
}

/// Every image a run needs: both entrypoint forms of both apps (the guardian
/// exercise uses the final stage's exec images whatever stages run) and the load
/// generator, read off the rendered manifests so the tags cannot drift from them.
pub fn images_for(opts: &KindOptions) -> Result<Vec<Image>> {
    let mut out = Vec::new();
    let render = opts.render_options("q", "s");
    for app in zerodrop_manifests::App::ALL {
        for form in [Entrypoint::Shell, Entrypoint::Init] {
            out.push(Image { target: app.dockerfile_target(form), tag: render.app_image(app, form) });
        }
    }
    // The rendered objects must use exactly these images.
    let mut used: Vec<String> = Vec::new();
    for name in [StageName::Naive, StageName::SurgeJitter] {
        for o in Rendered::all(&zerodrop_manifests::stage(&Stage::get(name), &render)) {
            used.extend(images(&o.json));
        }
    }
    let job = Rendered::from_object(&zerodrop_manifests::load_job(
        &zerodrop_manifests::LoadJobSpec { name: "load".into(), args: vec![] },
        &render,
    ));
    let load = images(&job.json).into_iter().next().context("the load Job has no image")?;
    out.push(Image { target: "load".into(), tag: load.clone() });
    used.push(load);
    for u in &used {
        if !out.iter().any(|i| &i.tag == u) {
            bail!("the manifests use image {u}, which no Dockerfile target here builds");
        }
    }
    Ok(out)
}

pub fn docker_build(opts: &KindOptions, image: &Image) -> Cmd {
    let mut c =
        Cmd::new("docker", &["build", "-f", "services/Dockerfile", "--target", &image.target, "-t", &image.tag, "."]);
    c.dir = Some(opts.root.clone());
    c
}

pub fn kind_load(opts: &KindOptions, image: &Image) -> Cmd {
    Cmd::new("kind", &["load", "docker-image", "--name", &opts.cluster, &image.tag])
}

/// With --registry: the image goes to the registry the cluster pulls from.
pub fn docker_push(image: &Image) -> Cmd {
    Cmd::new("docker", &["push", &image.tag])
}

/// The public images a run may start: RabbitMQ's and PostgreSQL's (every run) and
/// HAProxy's (`canary`, `blue-green`).
pub fn public_images() -> Vec<&'static str> {
    zerodrop_manifests::INFRA_IMAGES.into_iter().chain([zerodrop_manifests::HAPROXY_IMAGE]).collect()
}

/// With --registry: the [`public_images`], mirrored under the prefix (pull, tag,
/// push) so a cluster that pulls only from there can start them; the objects name
/// them so.
pub fn mirror_infra(opts: &KindOptions) -> Vec<Cmd> {
    let render = opts.render_options("q", "s");
    public_images()
        .into_iter()
        .flat_map(|public| {
            let mirrored = render.registry_image(public.to_string());
            [
                Cmd::new("docker", &["pull", public]),
                Cmd::new("docker", &["tag", public, &mirrored]),
                Cmd::new("docker", &["push", &mirrored]),
            ]
        })
        .collect()
}

pub fn create_cluster(opts: &KindOptions) -> Cmd {
    let config = opts.config_path().display().to_string();
    Cmd::new("kind", &["create", "cluster", "--name", &opts.cluster, "--config", &config, "--wait", "120s"])
}

pub fn delete_cluster(opts: &KindOptions) -> Cmd {
    Cmd::new("kind", &["delete", "cluster", "--name", &opts.cluster])
}

/// What runs before the first object is applied, in order.
pub fn setup_commands(opts: &KindOptions) -> Result<Vec<Cmd>> {
    let images = images_for(opts)?;
    let mut cmds = Vec::new();
    if opts.creates_cluster() {
        cmds.push(create_cluster(opts));
    }
    cmds.extend(images.iter().map(|i| docker_build(opts, i)));
    if opts.registry.is_some() {
        cmds.extend(images.iter().map(docker_push));
        cmds.extend(mirror_infra(opts));
    } else {
        cmds.extend(images.iter().map(|i| kind_load(opts, i)));
    }
    Ok(cmds)
}
