use zerodrop_manifests::{load_job, LoadJobSpec, Object, RenderOptions};

#[test]
fn the_load_job_runs_once_with_the_given_args() {
    let o = RenderOptions::default();
    let spec = LoadJobSpec::quick_example(&o);
    assert_eq!(spec.args[..3], ["run", "--target", "api.zerodrop.svc.cluster.local:80"]);
    assert_eq!(spec.args[spec.args.len() - 2..], ["--out", "-"]);
    let Object::Job(job) = load_job(&spec, &o) else { panic!("not a Job") };
    let js = job.spec.as_ref().unwrap();
    assert_eq!(js.backoff_limit, Some(0));
    assert_eq!(js.ttl_seconds_after_finished, Some(600));
    let pod = js.template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("zerodrop-load:dev"));
    assert_eq!(c.args.as_ref(), Some(&spec.args));
    assert_eq!(c.command, None, "the image's ENTRYPOINT is the binary");
}
