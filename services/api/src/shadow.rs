//! Shadow copies of writes. A mirroring layer (Envoy, Istio, a cloud load balancer, or
//! the lab's load generator) sends a copy of live requests to the new version with the
//! Host's name suffixed `-shadow`. A copied read is harmless; a copied job would be
//! applied twice. So a copy goes to the shadow sink (`ZD_SHADOW_QUEUE`, whose worker
//! writes a ledger of its own), and a pod without one refuses it instead of applying it
//! to the real ledger.
//!
//! The mark is trusted as the mesh's own: the routing tier in front must not let
//! outside clients set it (they could only send their own jobs to the shadow ledger).

use crate::error::ApiError;
use crate::publisher::Sink;
use axum::http::{header, HeaderMap, StatusCode};

/// The suffix a mirroring layer appends to the Host's name.
pub const SUFFIX: &str = "-shadow";

/// Where this request's job goes: the shadow sink for a copy, else the work queue.
pub fn sink(headers: &HeaderMap) -> Sink {
    match headers.get(header::HOST).and_then(|v| v.to_str().ok()) {
        Some(host) if is_shadow_host(host) => Sink::Shadow,
        _ => Sink::Work,
    }
}

/// Whether `host` (a Host header: name, optional port) names a shadow copy.
pub fn is_shadow_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // An IPv6 literal has no name to suffix.
        Some(_) => return false,
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.len() > SUFFIX.len() && name.to_ascii_lowercase().ends_with(SUFFIX)
}

/// The answer to a copied job on a pod with no shadow sink: 421 Misdirected Request,
/// since it reached a server that cannot apply it safely. Nothing was published.
pub fn no_sink() -> ApiError {
    ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "a shadow copy of a job (Host ends in -shadow), and this pod has no shadow sink; set ZD_SHADOW_QUEUE, \
         or stop mirroring writes to it: applying the copy would apply the job twice",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_host_name_ending_in_the_suffix_is_a_copy() {
        assert!(is_shadow_host("api-shadow"));
        assert!(is_shadow_host("api-shadow:8000"));
        assert!(is_shadow_host("127.96.1.1-SHADOW:8000"));
        assert!(!is_shadow_host("api:8000"));
        assert!(!is_shadow_host("-shadow"), "a bare suffix names nothing");
        assert!(!is_shadow_host("api:8000-shadow"), "the suffix belongs to the name, not the port");
        assert!(!is_shadow_host("shadow-api"));
        assert!(!is_shadow_host("[::1]:8000"));
    }

    #[test]
    fn the_sink_follows_the_host_header() {
        let mut h = HeaderMap::new();
        assert_eq!(sink(&h), Sink::Work, "no Host: the work queue");
        h.insert(header::HOST, "api-shadow:80".parse().unwrap());
        assert_eq!(sink(&h), Sink::Shadow);
        h.insert(header::HOST, "api:80".parse().unwrap());
        assert_eq!(sink(&h), Sink::Work);
    }
}
