//! `/metrics` read as scrapers read it: the classic text format (0.0.4) by
//! prometheus-parse, OpenMetrics by nom-openmetrics. Both parsers forgive a lot, so
//! what they let through is checked here too: every line of the classic text is a
//! HELP, a TYPE or a sample, every sample typed by its TYPE line; every OpenMetrics
//! sample belongs to the family it is listed under. Both services' tests read their
//! `/metrics` through it.

use nom_openmetrics::{Family, MetricDescriptor};
use prometheus_parse::{LineInfo, Scrape, Value};
use std::collections::BTreeSet;

/// What Prometheus 2.x and 3.x send: OpenMetrics preferred, the classic text accepted.
pub const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
/// What a client of the classic text asks for.
pub const TEXT_ACCEPT: &str = "text/plain; version=0.0.4";

pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The value of `name` in a response head (case-insensitive name).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Parses the classic text; panics (a test helper) on anything a 0.0.4 scraper would
/// misread.
pub fn parse_text(body: &str) -> Scrape {
    for line in body.lines() {
        let ok =
            matches!(LineInfo::parse(line), LineInfo::Doc { .. } | LineInfo::Type { .. } | LineInfo::Sample { .. });
        assert!(ok, "not a HELP, TYPE or sample line in the classic text: {line:?}\n{body}");
    }
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("prometheus-parse reads it");
    let histograms: BTreeSet<&str> =
        scrape.samples.iter().filter(|s| matches!(s.value, Value::Histogram(_))).map(|s| s.metric.as_str()).collect();
    for s in &scrape.samples {
        // prometheus-parse types a histogram's buckets only; `_sum` and `_count` are
        // the histogram's when it has buckets under that name.
        let of_histogram = ["_sum", "_count"]
            .iter()
            .any(|suffix| s.metric.strip_suffix(suffix).is_some_and(|base| histograms.contains(base)));
        assert!(
            !matches!(s.value, Value::Untyped(_)) || of_histogram,
            "{} has no TYPE line of its own name in the classic text:\n{body}",
            s.metric
        );
    }
    scrape
}

/// The type the classic text gives `metric` (a histogram by its base name).
pub fn text_type(scrape: &Scrape, metric: &str) -> Option<&'static str> {
    scrape.samples.iter().find(|s| s.metric == metric).map(|s| match s.value {
        Value::Counter(_) => "counter",
        Value::Gauge(_) => "gauge",
        Value::Histogram(_) => "histogram",
        Value::Summary(_) => "summary",
        Value::Untyped(_) => "untyped",
    })
}

/// The histogram's observation count, from its `+Inf` bucket in the classic text.
pub fn text_histogram_count(scrape: &Scrape, metric: &str) -> Option<f64> {
    scrape.samples.iter().find(|s| s.metric == metric).and_then(|s| match &s.value {
        Value::Histogram(buckets) => buckets.iter().find(|b| b.less_than == f64::INFINITY).map(|b| b.count),
        _ => None,
    })
}

/// Parses OpenMetrics; panics (a test helper) unless all of it parses, ending in
/// `# EOF`, and every sample is named after its family.
/// Whether an OpenMetrics parser takes `body` at all (the classic text, with no
/// `# EOF`, must not pass).
pub fn is_openmetrics(body: &str) -> bool {
    nom_openmetrics::parser::openmetrics(body).is_ok()
}

pub fn parse_openmetrics(body: &str) -> Vec<Family<'_>> {
    let families = match nom_openmetrics::parser::openmetrics(body) {
        Ok(("", families)) => families,
        Ok((rest, _)) => panic!("OpenMetrics left unparsed: {rest:?}\n{body}"),
        Err(e) => panic!("not OpenMetrics: {e:?}\n{body}"),
    };
    for f in &families {
        let name = family_name(f).unwrap_or_else(|| panic!("a family without a TYPE line: {f:?}"));
        for s in &f.samples {
            assert!(s.name().starts_with(name), "sample {} listed under family {name}:\n{body}", s.name());
        }
    }
    families
}

fn family_name<'a>(f: &Family<'a>) -> Option<&'a str> {
    f.descriptors.iter().find_map(|d| match d {
        MetricDescriptor::Type { metric, .. } => Some(*metric),
        _ => None,
    })
}

/// The type OpenMetrics gives the family `metric` (a counter by its name without
/// `_total`). nom-openmetrics 0.3 parses `histogram` as an unknown type whose text is
/// "histogram", so the type is compared as text.
pub fn openmetrics_type(families: &[Family<'_>], metric: &str) -> Option<String> {
    families.iter().find(|f| family_name(f) == Some(metric)).and_then(|f| {
        f.descriptors.iter().find_map(|d| match d {
            MetricDescriptor::Type { r#type, .. } => Some(r#type.to_string().to_lowercase()),
            _ => None,
        })
    })
}

/// Every sample name in the classic text, histogram buckets as `<name>_bucket`.
pub fn text_sample_names(scrape: &Scrape) -> BTreeSet<String> {
    scrape
        .samples
        .iter()
        .map(|s| match s.value {
            Value::Histogram(_) => format!("{}_bucket", s.metric),
            _ => s.metric.clone(),
        })
        .collect()
}

/// Every sample name in OpenMetrics.
pub fn openmetrics_sample_names(families: &[Family<'_>]) -> BTreeSet<String> {
    families.iter().flat_map(|f| f.samples.iter().map(|s| s.name().to_string())).collect()
}
