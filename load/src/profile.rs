use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Weights of the request kinds in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mix {
    pub fast: u32,
    pub slow: u32,
    pub job: u32,
}

/// Everything that shapes the load. The same profile is used for every stage and is
/// written into the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Intended requests per second (constant arrival rate).
    pub rate_per_sec: u32,
    #[serde(with = "ms", rename = "duration_ms")]
    pub duration: Duration,
    /// Seeds the request mix and job amounts: the same seed gives the same sequence.
    pub seed: u64,
    pub mix: Mix,
    /// `GET /work?ms=` for a fast request.
    pub fast_ms: u32,
    /// `GET /work?ms=` for a slow request.
    pub slow_ms: u32,
    /// Upper bound on open connections; a request that finds none idle and the pool
    /// full waits (its latency keeps counting from its intended start).
    pub max_connections: usize,
    #[serde(with = "ms", rename = "request_timeout_ms")]
    pub request_timeout: Duration,
    #[serde(with = "ms", rename = "connect_timeout_ms")]
    pub connect_timeout: Duration,
    /// A share of requests that carry a marker header (testers reaching a canary by a
    /// routing rule); `None` marks none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<Mark>,
    /// Each request comes from one of these clients and names it in a header; `None`
    /// sends no client header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<crate::Clients>,
}

/// Which requests carry a marker, and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// Share of requests marked, in permille. Which ones depends on the seed and the
    /// sequence number alone, apart from the mix's random stream, so marking a share
    /// leaves the rest of the plan as it was.
    pub permille: u32,
    /// The header the marked requests carry (`cookie` for a cookie rule) and its value.
    pub header: String,
    pub value: String,
}

impl Mark {
    /// Whether request `seq` of a run with `seed` is marked.
    pub fn marks(&self, seed: u64, seq: u64) -> bool {
        splitmix64(seed ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)) % 1000 < u64::from(self.permille)
    }
}

/// SplitMix64's finaliser: a fixed, well-mixed hash of one number.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            rate_per_sec: 200,
            duration: Duration::from_secs(30),
            seed: 42,
            mix: Mix { fast: 70, slow: 20, job: 10 },
            fast_ms: 5,
            slow_ms: 250,
            max_connections: 64,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            mark: None,
            clients: None,
        }
    }
}

mod ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
