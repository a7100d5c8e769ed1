//! What the relay does to the bytes it carries, and its JSON form (the control API's
//! body and answer, and the chaos report's profile): `{"kind":"delay","ms":800}`,
//! `{"kind":"cut"}`; `null` is no fault.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The longest delay the relay accepts: far past what a chaos phase uses, and small
/// enough that `Instant + delay` can never overflow.
pub const MAX_DELAY: Duration = Duration::from_secs(600);

// Read through [`Wire`]: serde ignores unknown fields of a unit variant in an
// internally tagged enum even under `deny_unknown_fields`, so `{"kind":"cut","ms":5}`
// would pass as a cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", try_from = "Wire")]
pub enum NetFault {
    /// Every chunk is held this long, in each direction (throughput unchanged).
    Delay {
        #[serde(rename = "ms", serialize_with = "as_ms")]
        each_way: Duration,
    },
    /// Nothing is forwarded until the fault is removed; then what was held goes on
    /// (a partition that heals, with TCP retransmitting what it held).
    Cut,
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The JSON form as it arrives: every field a fault may have, none other.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    kind: String,
    #[serde(default)]
    ms: Option<u64>,
}

/// Whole milliseconds up to [`MAX_DELAY`] for a delay, none for a cut; anything longer
/// is refused at parse time, so no request can put an overflowing deadline into the
/// relay.
impl TryFrom<Wire> for NetFault {
    type Error = String;

    fn try_from(w: Wire) -> Result<NetFault, String> {
        match (w.kind.as_str(), w.ms) {
            ("delay", Some(ms)) if Duration::from_millis(ms) > MAX_DELAY => {
                Err(format!("a delay of {ms} ms is longer than the relay allows ({} ms)", MAX_DELAY.as_millis()))
            }
            ("delay", Some(ms)) => Ok(NetFault::Delay { each_way: Duration::from_millis(ms) }),
            ("delay", None) => Err("a delay needs \"ms\"".into()),
            ("cut", None) => Ok(NetFault::Cut),
            ("cut", Some(_)) => Err("a cut takes no \"ms\"".into()),
            (other, _) => Err(format!("unknown fault kind {other:?}; expected \"delay\" or \"cut\"")),
        }
    }
}

impl NetFault {
    pub fn describe(&self) -> String {
        match self {
            NetFault::Delay { each_way } => format!("+{} ms each way", each_way.as_millis()),
            NetFault::Cut => "cut (nothing forwarded)".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_form_round_trips_and_refuses_what_it_cannot_carry() {
        let delay = NetFault::Delay { each_way: Duration::from_millis(800) };
        assert_eq!(serde_json::to_string(&delay).unwrap(), r#"{"kind":"delay","ms":800}"#);
        assert_eq!(serde_json::to_string(&NetFault::Cut).unwrap(), r#"{"kind":"cut"}"#);
        for f in [Some(delay), Some(NetFault::Cut), None] {
            let back: Option<NetFault> = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
            assert_eq!(back, f);
        }
        for bad in [
            r#"{"kind":"delay"}"#,
            r#"{"kind":"delay","ms":-1}"#,
            r#"{"kind":"delay","ms":600001}"#,
            r#"{"kind":"partition"}"#,
            r#"{"kind":"delay","ms":5,"jitter":1}"#,
            r#"{"kind":"cut","ms":5}"#,
            r#"{"kind":"cut","jitter":1}"#,
            r#"{"ms":5}"#,
        ] {
            assert!(serde_json::from_str::<Option<NetFault>>(bad).is_err(), "{bad} was accepted");
        }
    }
}
