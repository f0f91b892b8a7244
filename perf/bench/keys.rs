//! Key choice for the load generator: uniform or zipfian over `--keys` keys, and the fixed-width
//! text form of a key index.
//!
//! The zipfian generator follows Gray et al., "Quickly generating billion-record synthetic
//! databases" (the same construction YCSB uses): one O(n) zeta sum at start-up, then O(1) per
//! draw. Rank 0 is the hottest key. Must not: allocate per draw.

use rand::rngs::SmallRng;
use rand::Rng;

/// How keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDist {
    Uniform,
    Zipfian,
}

/// Draws key indexes in `0..keys_count`.
#[derive(Debug, Clone)]
pub enum KeyChooser {
    Uniform { keys_count: u64 },
    Zipfian(Zipfian),
}

impl KeyChooser {
    pub fn new(dist: KeyDist, keys_count: u64, theta: f64) -> KeyChooser {
        match dist {
            KeyDist::Uniform => KeyChooser::Uniform { keys_count },
            KeyDist::Zipfian => KeyChooser::Zipfian(Zipfian::new(keys_count, theta)),
        }
    }

    pub fn next(&self, rng: &mut SmallRng) -> u64 {
        match self {
            KeyChooser::Uniform { keys_count } => rng.gen_range(0..*keys_count),
            KeyChooser::Zipfian(z) => z.next(rng),
        }
    }
}

/// Zipfian distribution over `0..n` with skew `theta` (0 < theta < 1; 0.99 is the usual choice).
#[derive(Debug, Clone)]
pub struct Zipfian {
    n: u64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
    /// 1 + 0.5^theta: the cumulative weight of ranks 0 and 1, normalised by rank 0's.
    two_ranks: f64,
}

impl Zipfian {
    pub fn new(n: u64, theta: f64) -> Zipfian {
        let n = n.max(1);
        let zeta_n = zeta(n, theta);
        let zeta_2 = zeta(2.min(n), theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = if n <= 1 {
            0.0
        } else {
            (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n)
        };
        Zipfian {
            n,
            alpha,
            zeta_n,
            eta,
            two_ranks: 1.0 + 0.5f64.powf(theta),
        }
    }

    pub fn next(&self, rng: &mut SmallRng) -> u64 {
        let u: f64 = rng.gen();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < self.two_ranks {
            return 1.min(self.n - 1);
        }
        let rank = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.n - 1)
    }
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

/// Writes key `index` into `out` as `key_size_bytes` bytes: `k` then the zero-padded decimal index
/// (so keys sort in index order and range scans walk neighbouring indexes).
pub fn write_key(out: &mut Vec<u8>, index: u64, key_size_bytes: usize) {
    out.clear();
    let mut digits = [0u8; 20];
    let mut n = index;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push(b'k');
    let pad = key_size_bytes.saturating_sub(1 + len);
    out.resize(1 + pad, b'0');
    out.extend(digits[..len].iter().rev());
}

/// The smallest key size that can hold every index below `keys_count`.
pub fn min_key_size_bytes(keys_count: u64) -> usize {
    1 + keys_count.saturating_sub(1).max(1).to_string().len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn keys_are_fixed_width_and_ordered() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        write_key(&mut a, 9, 16);
        write_key(&mut b, 10, 16);
        assert_eq!(a.len(), 16);
        assert_eq!(&a, b"k000000000000009");
        assert!(a < b);
        assert_eq!(min_key_size_bytes(100_000), 6);
    }

    #[test]
    fn zipfian_stays_in_range_and_is_skewed() {
        let z = Zipfian::new(1000, 0.99);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[z.next(&mut rng) as usize] += 1;
        }
        assert!(counts[0] > counts[10] && counts[10] > counts[500]);
        assert!(counts[0] > 10_000, "rank 0 drew {}", counts[0]);
    }
}
