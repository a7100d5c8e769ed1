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
    let requests = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
    // Away from the api pods' node: preferred, so a one-node cluster still runs it.
    let affinity = pod.affinity.as_ref().unwrap();
    let anti = affinity.pod_anti_affinity.as_ref().unwrap();
    assert!(anti.required_during_scheduling_ignored_during_execution.is_none());
    let term = &anti.preferred_during_scheduling_ignored_during_execution.as_ref().unwrap()[0].pod_affinity_term;
    assert_eq!(term.topology_key, "kubernetes.io/hostname");
    let selector = term.label_selector.as_ref().unwrap().match_labels.as_ref().unwrap();
    assert_eq!(selector.get("app").map(String::as_str), Some("api"));
    let node = affinity.node_affinity.as_ref().unwrap().preferred_during_scheduling_ignored_during_execution.as_ref();
    let expr = &node.unwrap()[0].preference.match_expressions.as_ref().unwrap()[0];
    assert_eq!((expr.key.as_str(), expr.operator.as_str()), ("zerodrop.dev/pool", "In"));
}
