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
    /// Shadow traffic: a share of requests is also sent as a copy to the version in
    /// shadow ([`crate::Mirror`]); `None` copies none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
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

/// Shadow traffic from the load path. A share of the requests is sent twice at the
/// same moment: the original, served as usual, and a copy carrying a pin header (the
/// router's `x-canary: always`) that takes it to the version in shadow. The copy's
/// answer never reaches the user's view of the run (it is not in
/// [`RunResult::records`](crate::RunResult::records), the live counters or the
/// accepted jobs); it is kept beside the run, paired with its original by sequence
/// number, so status and latency can be compared request by request.
///
/// Why here and not in the router: open-source HAProxy mirrors only through an
/// external SPOE agent (spoa-mirror, a C program Debian does not package), and the
/// lab already owns every request at its source, on both platforms.
///
/// A `Mirror` says which requests are copied, and how the copy is told apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirror {
    /// Share of requests copied, in permille. Which ones depends on the seed and the
    /// sequence number alone (a stream apart from the marker's), so mirroring leaves
    /// the rest of the plan as it was.
    pub permille: u32,
    /// The header the copy carries, and its value.
    pub header: String,
    pub value: String,
    /// Only requests intended to start before this are copied: the shadow phase.
    #[serde(with = "ms", rename = "until_ms")]
    pub until: Duration,
}

/// Keeps the mirror's choice independent of the marker's for the same seed.
const SALT: u64 = 0x5a4d_0d0c_0b5e_77ed;

impl Mirror {
    /// Whether request `seq`, intended at `offset`, of a run with `seed` is copied.
    pub fn mirrors(&self, seed: u64, seq: u64, offset: Duration) -> bool {
        offset < self.until
            && splitmix64((seed ^ SALT) ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)) % 1000 < u64::from(self.permille)
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
            mirror: None,
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

#[cfg(test)]
mod mirror_tests {
    use super::*;

    fn mirror(permille: u32, until_s: u64) -> Mirror {
        Mirror { permille, header: "x-canary".into(), value: "always".into(), until: Duration::from_secs(until_s) }
    }

    #[test]
    fn the_share_holds_and_nothing_is_copied_after_the_shadow_phase() {
        let m = mirror(200, 10);
        let copied = (0..10_000u64).filter(|&s| m.mirrors(7, s, Duration::from_millis(s))).count();
        // 20% of 10,000: a binomial's 4-sigma band is 2000 ± 160.
        assert!((1840..=2160).contains(&copied), "{copied}");
        assert!(!(0..1000u64).any(|s| m.mirrors(7, s, Duration::from_secs(10))));
        assert!(!(0..1000u64).any(|s| mirror(0, 10).mirrors(7, s, Duration::ZERO)));
        assert!((0..1000u64).all(|s| mirror(1000, 10).mirrors(7, s, Duration::ZERO)));
    }

    #[test]
    fn the_copied_requests_are_not_the_marked_ones() {
        let m = mirror(500, 10);
        let mark = crate::Mark { permille: 500, header: "x-tester".into(), value: "1".into() };
        let both = (0..2000u64).filter(|&s| m.mirrors(3, s, Duration::ZERO) && mark.marks(3, s)).count();
        // Independent halves overlap on about a quarter: 500 ± 4 sigma (about 77).
        assert!((423..=577).contains(&both), "{both}");
    }

    #[test]
    fn the_profile_field_round_trips_with_its_phase_in_ms() {
        let json = serde_json::to_value(mirror(100, 15)).unwrap();
        assert_eq!(json["until_ms"], 15_000);
        assert_eq!(serde_json::from_value::<Mirror>(json).unwrap(), mirror(100, 15));
    }
}
