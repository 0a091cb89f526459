//! Synthetic clusters for benchmarks and tests: the "realistic mix" of the scheduler's
//! performance target, generated deterministically from a seed.
//!
//! Units: 50 global units (half of them needing `disk=ssd`), about 10% template instances
//! with `Conflicts=%p@*.service` (100 instances per template, so each fits one per
//! machine), about 20% with `MachineMetadata=` on the `region` and `disk` keys, about 1%
//! in `MachineOf=` chains of three, the rest plain; a quarter of the units ask for memory
//! and CPU. Machines: 32-hex-digit IDs, `region` (4 values), `zone` (3 per region) and
//! `disk`, with 64 GiB and 16 CPUs each.

use std::collections::BTreeMap;

use crate::{Capacity, Machine, Resources, UnitSpec};

const REGIONS: [&str; 4] = ["us-east", "us-west", "eu-west", "ap-south"];

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// `n` machines with the mix's metadata and capacity.
pub fn machines(n: usize, seed: u64) -> Vec<Machine> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let region = REGIONS[i % REGIONS.len()];
            let mut metadata = BTreeMap::new();
            metadata.insert("region".to_owned(), region.to_owned());
            metadata.insert(
                "zone".to_owned(),
                format!("{region}-{}", (i / REGIONS.len()) % 3),
            );
            metadata.insert(
                "disk".to_owned(),
                if rng.below(2) == 0 { "ssd" } else { "hdd" }.to_owned(),
            );
            Machine {
                id: format!("{:016x}{:016x}", rng.next_u64(), i),
                metadata,
                capacity: Capacity {
                    memory_bytes: Some(64 << 30),
                    cpu_percent: Some(1600),
                    cpu_weight: None,
                    max_units: None,
                },
            }
        })
        .collect()
}

/// `n` units in the mix (at least the 50 global ones).
pub fn units(n: usize, seed: u64) -> Vec<UnitSpec> {
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut out = Vec::with_capacity(n);
    for g in 0..50.min(n) {
        let mut u = UnitSpec::new(format!("global-{g:02}.service"));
        u.global = true;
        if g % 2 == 1 {
            u.machine_metadata = vec![("disk".into(), "ssd".into())];
        }
        out.push(u);
    }
    let mut i = 0usize;
    while out.len() < n {
        let roll = rng.below(100);
        if roll < 10 {
            // A whole template's instances at once.
            let t = i;
            for k in 0..100 {
                if out.len() >= n {
                    break;
                }
                let mut u = UnitSpec::new(format!("app{t}@{k}.service"));
                u.conflicts = vec![format!("app{t}@*.service")];
                out.push(u);
            }
            i += 1;
            continue;
        }
        let mut u = UnitSpec::new(format!("svc{i}.service"));
        if roll < 30 {
            let region = REGIONS[rng.below(4) as usize];
            u.machine_metadata = match rng.below(3) {
                0 => vec![("region".into(), region.into())],
                1 => vec![
                    ("region".into(), region.into()),
                    ("disk".into(), "ssd".into()),
                ],
                _ => vec![
                    ("region".into(), region.into()),
                    ("region".into(), REGIONS[(rng.below(4)) as usize].into()),
                ],
            };
        } else if roll < 31 {
            // A chain of three: c follows b follows a.
            let a = format!("chain{i}-a.service");
            let b = format!("chain{i}-b.service");
            out.push(UnitSpec::new(a.clone()));
            let mut ub = UnitSpec::new(b.clone());
            ub.machine_of = vec![a];
            out.push(ub);
            u = UnitSpec::new(format!("chain{i}-c.service"));
            u.machine_of = vec![b];
        }
        if rng.below(4) == 0 {
            u.demand = Resources {
                memory_bytes: 256 << 20,
                cpu_percent: 10,
                cpu_weight: 0,
            };
        }
        out.push(u);
        i += 1;
    }
    out.truncate(n);
    out
}
