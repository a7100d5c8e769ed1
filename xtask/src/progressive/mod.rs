//! Progressive delivery on the local platform: v1 and v2 of the api behind a real
//! routing tier (HAProxy), a canary staircase judged by sample-size-aware gates with
//! automatic rollback, and a blue-green switch. See docs/progressive-delivery.md.

pub mod blue_green;
pub mod client_report;
pub mod clients;
pub mod gate_args;
pub mod gates;
pub mod kind_plan;
pub mod lab;
pub mod model;
pub mod report;
pub mod routing;
pub mod shadow;
pub mod shadow_writes;
pub mod smoke;
pub mod stats;
pub mod steps;
