//! Which text format `/metrics` answers in. Prometheus asks for OpenMetrics first;
//! curl, older scrapers and most agents send no `Accept` or `*/*` and read only the
//! classic text format (0.0.4), which is therefore the default.
//!
//! Both services answer `/metrics` through this one module.

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`: `# EOF`, counter families named
    /// without `_total`.
    OpenMetrics,
    /// `text/plain; version=0.0.4`.
    Prometheus,
}

impl Format {
    /// OpenMetrics only when the client accepts it and prefers it, by q-value, over
    /// `text/plain`. A tie (`*/*`), no `Accept`, or nothing acceptable at all gets the
    /// classic text: every Prometheus-compatible scraper reads that one, and a 406
    /// would only lose a scrape.
    pub fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str>) -> Format {
        let ranges: Vec<Range<'_>> = accept.into_iter().flat_map(|v| v.split(',')).filter_map(Range::parse).collect();
        if quality(&ranges, "application", "openmetrics-text") > quality(&ranges, "text", "plain") {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
        }
    }

    pub fn encode(self, registry: &Registry) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail; a metric's own encoder has no other error.
        let _ = match self {
            Format::OpenMetrics => text::encode(&mut out, registry),
            Format::Prometheus => prometheus_text::encode(&mut out, registry),
        };
        out
    }
}

/// One media range of an `Accept` header, its q-value in thousandths.
struct Range<'a> {
    kind: &'a str,
    subtype: &'a str,
    q: u16,
}

impl<'a> Range<'a> {
    /// `None` for what is not a media range, or has a q-value out of 0..=1: such a
    /// range is ignored rather than failing the scrape.
    fn parse(s: &'a str) -> Option<Range<'a>> {
        let mut parts = s.split(';');
        let (kind, subtype) = parts.next()?.trim().split_once('/')?;
        let (kind, subtype) = (kind.trim(), subtype.trim());
        if kind.is_empty() || subtype.is_empty() {
            return None;
        }
        let mut q = 1000;
        for param in parts {
            // Other parameters (`version`, `charset`) are not matched: both versions
            // of OpenMetrics a scraper may ask for are read by the same parsers.
            if let Some((k, v)) = param.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    let v: f64 = v.trim().parse().ok()?;
                    if !(0.0..=1.0).contains(&v) {
                        return None;
                    }
                    q = (v * 1000.0).round() as u16;
                }
            }
        }
        Some(Range { kind, subtype, q })
    }

    fn specificity(&self, kind: &str, subtype: &str) -> Option<u8> {
        match (self.kind, self.subtype) {
            ("*", "*") => Some(0),
            (k, "*") if k.eq_ignore_ascii_case(kind) => Some(1),
            (k, s) if k.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(subtype) => Some(2),
            _ => None,
        }
    }
}

/// The q-value the ranges give `kind/subtype` (0: not acceptable). As RFC 9110
/// §12.5.1 says, the most specific matching range decides; among equally specific
/// ones (two OpenMetrics versions, say) the highest q counts.
fn quality(ranges: &[Range<'_>], kind: &str, subtype: &str) -> u16 {
    ranges.iter().filter_map(|r| Some((r.specificity(kind, subtype)?, r.q))).max().map(|(_, q)| q).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::Format::{self, OpenMetrics, Prometheus};

    fn pick(accept: &[&str]) -> Format {
        Format::negotiate(accept.iter().copied())
    }

    #[test]
    fn openmetrics_only_when_it_is_acceptable_and_preferred() {
        // What Prometheus 2.x and 3.x send.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(pick(&[prometheus]), OpenMetrics);
        assert_eq!(pick(&["application/openmetrics-text"]), OpenMetrics);
        assert_eq!(pick(&["Application/OpenMetrics-Text; Version=1.0.0"]), OpenMetrics);
        assert_eq!(pick(&["application/*"]), OpenMetrics);
        assert_eq!(pick(&["text/plain;q=0, */*"]), OpenMetrics);
        assert_eq!(pick(&["text/plain;q=0.2", "application/openmetrics-text;q=0.3"]), OpenMetrics);

        assert_eq!(pick(&[]), Prometheus);
        assert_eq!(pick(&["*/*"]), Prometheus);
        assert_eq!(pick(&["text/plain"]), Prometheus);
        assert_eq!(pick(&["text/plain;version=0.0.4"]), Prometheus);
        assert_eq!(pick(&["application/openmetrics-text;q=0.5, text/plain"]), Prometheus);
        assert_eq!(pick(&["application/openmetrics-text;q=0, */*"]), Prometheus);
        // A tie: the classic text.
        assert_eq!(pick(&["application/openmetrics-text, text/plain"]), Prometheus);
        // Nothing acceptable, or nonsense: the classic text rather than a failed scrape.
        assert_eq!(pick(&["application/json"]), Prometheus);
        assert_eq!(pick(&["garbage, ;;, /, a/"]), Prometheus);
        assert_eq!(pick(&["application/openmetrics-text;q=2"]), Prometheus);
        assert_eq!(pick(&["application/openmetrics-text;q=abc"]), Prometheus);
    }

    #[test]
    fn each_format_has_its_content_type() {
        assert_eq!(Prometheus.content_type(), "text/plain; version=0.0.4; charset=utf-8");
        assert!(OpenMetrics.content_type().starts_with("application/openmetrics-text; version=1.0.0"));
    }
}
