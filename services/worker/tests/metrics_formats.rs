//! `/metrics` of a real worker in both exposition formats, each read by a real parser
//! of its format, after a job went from the real api through RabbitMQ to the ledger:
//! the format follows `Accept`, and the job histograms are there, typed as histograms.

mod common;

use common::api::ApiProc;
use common::{amqp_url, stage_env, wait_until, Fixture};
use std::time::Duration;
use zerodrop_metrics_check::{
    header, openmetrics_sample_names, openmetrics_type, parse_openmetrics, parse_text, text_histogram_count,
    text_sample_names, text_type, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_ACCEPT, TEXT_ACCEPT, TEXT_CONTENT_TYPE,
};
use zerodrop_stages::StageName;

const STAGE: StageName = StageName::SurgeJitter;
const APPLIED: &str = "zerodrop_worker_jobs_total{outcome=\"applied\"}";
const HISTOGRAMS: [&str; 2] = ["zerodrop_worker_job_processing_seconds", "zerodrop_worker_job_queue_wait_seconds"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_accept_and_carry_the_job_histograms() {
    match tokio::time::timeout(Duration::from_secs(55), scrape_both_formats()).await {
        Ok(()) => {}
        Err(_) => panic!("the test overran its 55 s budget"),
    }
}

async fn scrape_both_formats() {
    let fx = Fixture::new("metrics_formats").await;
    let mut w = fx.spawn_worker(&stage_env(STAGE));
    w.wait_ready(Duration::from_secs(15)).await;
    // Through the api, whose publish stamp the time-in-queue histogram reads.
    let api = ApiProc::start(&amqp_url(), &fx.topology.queue, &stage_env(STAGE));
    assert_eq!(api.post_job(&fx.job_id("job"), 5), Some(202));
    assert!(
        wait_until(Duration::from_secs(15), || async { w.metric(APPLIED).await == Some(1) }).await,
        "the job was never applied:\n{}",
        w.dump()
    );

    for (accept, content_type) in [
        (None, TEXT_CONTENT_TYPE),
        (Some("*/*"), TEXT_CONTENT_TYPE),
        (Some(TEXT_ACCEPT), TEXT_CONTENT_TYPE),
        (Some(PROMETHEUS_ACCEPT), OPENMETRICS_CONTENT_TYPE),
        (Some("application/openmetrics-text"), OPENMETRICS_CONTENT_TYPE),
    ] {
        let (status, head, _) = w.get_accepting("/metrics", accept).await.expect("a scrape");
        assert_eq!(status, 200, "{head}");
        assert_eq!(header(&head, "content-type"), Some(content_type), "Accept: {accept:?}\n{head}");
        assert_eq!(header(&head, "vary"), Some("accept"), "{head}");
    }

    let (_, _, text) = w.get_accepting("/metrics", Some(TEXT_ACCEPT)).await.expect("a scrape");
    let scrape = parse_text(&text);
    for h in HISTOGRAMS {
        assert_eq!(text_type(&scrape, h), Some("histogram"), "{h}:\n{text}");
        assert_eq!(text_histogram_count(&scrape, h), Some(1.0), "one job, one observation of {h}:\n{text}");
    }
    assert_eq!(text_type(&scrape, "zerodrop_worker_jobs_total"), Some("counter"), "{text}");
    assert_eq!(text_type(&scrape, "zerodrop_worker_phase"), Some("gauge"), "{text}");

    let (_, _, om) = w.get_accepting("/metrics", Some(PROMETHEUS_ACCEPT)).await.expect("a scrape");
    let families = parse_openmetrics(&om);
    for h in HISTOGRAMS {
        assert_eq!(openmetrics_type(&families, h).as_deref(), Some("histogram"), "{h}:\n{om}");
        assert!(om.contains(&format!("{h}_count 1\n")), "one job, one observation of {h}:\n{om}");
    }
    assert_eq!(openmetrics_type(&families, "zerodrop_worker_jobs").as_deref(), Some("counter"), "{om}");
    // The same series, whichever the format; and the classic text is no OpenMetrics.
    assert_eq!(text_sample_names(&scrape), openmetrics_sample_names(&families));
    assert!(!zerodrop_metrics_check::is_openmetrics(&text), "the classic text has no # EOF:\n{text}");

    api.stop();
    w.sigterm();
    let status = w.wait_exit(Duration::from_secs(10)).await.expect("the worker exits on SIGTERM");
    assert!(status.success(), "exit {status}:\n{}", w.dump());
    fx.cleanup().await;
}
