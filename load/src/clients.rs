//! The clients behind a run's requests: each request comes from one of `count`
//! clients, drawn Zipf-like (client k, from 0, with weight 1/(k+1)^s), and names it in
//! a header (`c0`, `c1`, ...). A few heavy clients and a long tail, as real traffic
//! has; the router can pin a client to one side by that header (sticky sessions).

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The most clients a profile may name: the api counts clients `c0`..`c9999` per id in
/// its metrics, and ignores any other, so that a client cannot grow its label set.
pub const MAX_CLIENTS: u32 = 10_000;

/// The header a client is named in unless a profile says otherwise; the api counts
/// clients by this name (its `CLIENT_HEADER`).
pub const CLIENT_HEADER: &str = "x-zd-client";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clients {
    pub count: u32,
    /// The Zipf exponent: 0 spreads the requests evenly, 1 gives the first client about
    /// 1/H(count) of them.
    pub zipf_s: f64,
    /// The header that names the client.
    pub header: String,
}

impl Clients {
    /// How a client is named in the header and in reports.
    pub fn id(client: u32) -> String {
        format!("c{client}")
    }
}

/// Draws clients from a stream of its own (not the mix's), so adding clients to a
/// profile leaves every request's kind and time as they were.
pub(crate) struct ClientDraw {
    rng: ChaCha8Rng,
    cdf: Vec<f64>,
}

impl ClientDraw {
    pub fn new(c: &Clients, seed: u64) -> ClientDraw {
        let weights: Vec<f64> = (0..c.count.max(1)).map(|k| 1.0 / f64::from(k + 1).powf(c.zipf_s)).collect();
        let total: f64 = weights.iter().sum();
        let cdf = weights
            .iter()
            .scan(0.0, |acc, w| {
                *acc += w / total;
                Some(*acc)
            })
            .collect();
        ClientDraw { rng: ChaCha8Rng::seed_from_u64(seed ^ 0xc11e_4750_5eed_0001), cdf }
    }

    pub fn next(&mut self) -> u32 {
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let i = self.cdf.partition_point(|&p| p <= u);
        i.min(self.cdf.len() - 1) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(count: u32, s: f64, n: usize) -> Vec<u64> {
        let mut d = ClientDraw::new(&Clients { count, zipf_s: s, header: "x-zd-client".into() }, 42);
        let mut hits = vec![0u64; count as usize];
        for _ in 0..n {
            hits[d.next() as usize] += 1;
        }
        hits
    }

    #[test]
    fn zipf_one_gives_the_first_client_about_one_over_h_n() {
        let hits = draws(20, 1.0, 20_000);
        // H(20) = 3.598, so client 0 expects 27.8% and client 19 expects 1.39%.
        let share = |k: usize| hits[k] as f64 / 20_000.0;
        assert!((0.26..0.30).contains(&share(0)), "{hits:?}");
        assert!((0.008..0.020).contains(&share(19)), "{hits:?}");
        assert!(hits.windows(2).filter(|w| w[0] < w[1]).count() < 6, "mostly falling: {hits:?}");
    }

    #[test]
    fn zipf_zero_is_even_and_every_draw_is_a_client() {
        let hits = draws(10, 0.0, 10_000);
        assert!(hits.iter().all(|&h| (850..1150).contains(&h)), "{hits:?}");
        assert_eq!(draws(1, 1.0, 100), vec![100]);
    }
}
