//! What the benches share: paired timing of a rule against BP, and the bench filter.
//!
//! On a small, shared virtual machine one bench can run 20 % slower than the next for reasons that
//! have nothing to do with it: here the hypervisor steals 5–60 % of the CPU, varying within
//! seconds. Two things cancel that. BP and the rule run in alternating rounds of the same process
//! and the median of the per-round ratios is reported, so both sides see the same machine state
//! within a round. And each round is timed in CPU time of the process (summed over its threads)
//! as well as wall time: Linux does not count time stolen by the hypervisor as CPU time
//! (paravirtual steal accounting), so the CPU-time ratio measures the work each side does.

#![allow(dead_code)] // each bench binary uses a different part

use std::time::{Duration, Instant};

use signsym::feedback::FeedbackRule;

/// The autodiff device the model benches run on: `SIGNSYM_BENCH_DEVICE` = `cpu` (the default,
/// Flex), `wgpu` or `cuda` (built with that cargo feature). Host memory counts
/// (`memory` benches) are only meaningful on `cpu`.
pub fn device() -> burn::tensor::Device {
    let name = std::env::var("SIGNSYM_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let choice: signsym::study::DeviceChoice = name
        .parse()
        .unwrap_or_else(|e| panic!("SIGNSYM_BENCH_DEVICE={name}: {e}"));
    choice.device().unwrap_or_else(|e| panic!("{e}"))
}

/// CPU time used so far by this process, all threads.
pub fn cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Wall and CPU time of one call.
fn timed(f: &mut dyn FnMut()) -> (f64, f64) {
    let (wall, cpu) = (Instant::now(), cpu_time());
    f();
    (
        wall.elapsed().as_secs_f64(),
        (cpu_time() - cpu).as_secs_f64(),
    )
}

/// Median and quartiles of per-round ratios `other / base`, in wall and in CPU time.
#[derive(Clone, Copy, Debug)]
pub struct PairedRatio {
    /// The ratios in CPU time of the process.
    pub cpu: Ratio,
    /// The ratios in wall time.
    pub wall: Ratio,
    /// Rounds measured.
    pub rounds: usize,
}

/// Median and quartiles of per-round ratios, with the median time of each side.
#[derive(Clone, Copy, Debug)]
pub struct Ratio {
    /// Median of `other / base` over the rounds.
    pub median: f64,
    /// First quartile of the ratios.
    pub q1: f64,
    /// Third quartile of the ratios.
    pub q3: f64,
    /// Median time of one `base` call.
    pub base: Duration,
    /// Median time of one `other` call.
    pub other: Duration,
}

impl Ratio {
    fn new(base: &[f64], other: &[f64]) -> Self {
        let mut ratios: Vec<f64> = other.iter().zip(base).map(|(o, b)| o / b).collect();
        let (mut base, mut other) = (base.to_vec(), other.to_vec());
        for v in [&mut ratios, &mut base, &mut other] {
            v.sort_by(f64::total_cmp);
        }
        Self {
            median: quantile(&ratios, 0.5),
            q1: quantile(&ratios, 0.25),
            q3: quantile(&ratios, 0.75),
            base: Duration::from_secs_f64(quantile(&base, 0.5)),
            other: Duration::from_secs_f64(quantile(&other, 0.5)),
        }
    }
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "×{:.3} [{:.3}, {:.3}] ({:.2} vs {:.2} ms)",
            self.median,
            self.q1,
            self.q3,
            self.other.as_secs_f64() * 1e3,
            self.base.as_secs_f64() * 1e3,
        )
    }
}

impl std::fmt::Display for PairedRatio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cpu {} · wall {} · {} rounds",
            self.cpu, self.wall, self.rounds
        )
    }
}

/// Rounds for the paired comparisons: `SIGNSYM_PAIRED_ROUNDS`, else `default`; 0 skips them.
pub fn paired_rounds(default: usize) -> usize {
    std::env::var("SIGNSYM_PAIRED_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Times `base` and `other` in `rounds` alternating rounds (which one goes first alternates too),
/// after one untimed call of each.
pub fn paired<A, B>(
    rounds: usize,
    mut base: impl FnMut() -> A,
    mut other: impl FnMut() -> B,
) -> PairedRatio {
    assert!(rounds > 0, "at least one round");
    std::hint::black_box(base());
    std::hint::black_box(other());
    let (mut wall, mut cpu) = ([vec![], vec![]], [vec![], vec![]]);
    for round in 0..rounds {
        let mut run_base = || {
            std::hint::black_box(base());
        };
        let mut run_other = || {
            std::hint::black_box(other());
        };
        let (b, o) = if round % 2 == 0 {
            let b = timed(&mut run_base);
            (b, timed(&mut run_other))
        } else {
            let o = timed(&mut run_other);
            (timed(&mut run_base), o)
        };
        for (side, (w, c)) in [b, o].into_iter().enumerate() {
            wall[side].push(w);
            cpu[side].push(c);
        }
    }
    PairedRatio {
        cpu: Ratio::new(&cpu[0], &cpu[1]),
        wall: Ratio::new(&wall[0], &wall[1]),
        rounds,
    }
}

/// Whether the bench filter given on the command line (`cargo bench --bench X -- FILTER`) selects
/// `name`: the passes outside criterion (paired ratios, memory) follow it too. The filter is read
/// as substrings separated by `|`, a subset of criterion's regular expressions.
pub fn selected(name: &str) -> bool {
    const WITH_VALUE: [&str; 14] = [
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--save-baseline",
        "--baseline",
        "--load-baseline",
        "--output-format",
        "--color",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--plotting-backend",
    ];
    let mut args = std::env::args().skip(1);
    let mut filter = None;
    while let Some(arg) = args.next() {
        if WITH_VALUE.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            filter = Some(arg);
        }
    }
    filter.is_none_or(|f| f.split('|').any(|part| name.contains(part)))
}

/// Times every rule against BP with [`paired`] and prints one line per rule; `make` builds the
/// closure that runs one step under a rule (each gets its own copy of the model).
pub fn print_paired<R, F: FnMut() -> R>(
    title: &str,
    rounds: usize,
    mut make: impl FnMut(FeedbackRule) -> F,
) -> Vec<(FeedbackRule, PairedRatio)> {
    if rounds == 0 || !selected(title) {
        return vec![];
    }
    println!("\n{title}: time of each rule / time of BP, paired rounds (median [quartiles])");
    let mut rows = vec![];
    for rule in FeedbackRule::ALL.into_iter().skip(1) {
        let ratio = paired(rounds, make(FeedbackRule::Bp), make(rule));
        println!("  {:<5} {ratio}", rule.name());
        rows.push((rule, ratio));
    }
    rows
}
