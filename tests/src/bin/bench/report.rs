//! Figures a benchmark prints: latency percentiles, process memory, tables.

use std::time::Duration;

/// Latency samples of one kind of operation.
#[derive(Default, Clone, Debug)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn new(samples: Vec<Duration>) -> Latencies {
        let mut samples = samples;
        samples.sort_unstable();
        Latencies(samples)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `p`-th percentile (0–100), nearest rank; zero when there are no samples.
    pub fn percentile(&self, p: u32) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = (self.0.len() * p as usize).div_ceil(100).max(1);
        self.0[rank.min(self.0.len()) - 1]
    }

    /// `p50 … / p99 …` in milliseconds.
    pub fn summary(&self) -> String {
        format!(
            "p50 {} / p99 {} / max {}",
            millis(self.percentile(50)),
            millis(self.percentile(99)),
            millis(self.percentile(100))
        )
    }
}

/// A duration in milliseconds with one decimal.
pub fn millis(d: Duration) -> String {
    let tenths = d.as_micros() / 100;
    format!("{}.{} ms", tenths / 10, tenths % 10)
}

/// A duration in seconds with two decimals.
pub fn seconds(d: Duration) -> String {
    let hundredths = d.as_millis() / 10;
    format!("{}.{:02} s", hundredths / 100, hundredths % 100)
}

/// `count / elapsed`, per second, as an integer.
pub fn per_second(count: u64, elapsed: Duration) -> u64 {
    let micros = elapsed.as_micros().max(1);
    (u128::from(count) * 1_000_000 / micros) as u64
}

/// `a / b` with two decimals (`12.34×`).
pub fn ratio(a: Duration, b: Duration) -> String {
    let hundredths = a.as_micros() * 100 / b.as_micros().max(1);
    format!("{}.{:02}×", hundredths / 100, hundredths % 100)
}

/// A field of `/proc/<pid>/status` in KiB (`VmHWM` = peak RSS, `VmRSS` = now).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Peak RSS of this process, in KiB.
pub fn own_peak_rss_kib() -> u64 {
    proc_status_kib(std::process::id(), "VmHWM").unwrap_or(0)
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{}.{} MiB", kib / 1024, (kib % 1024) * 10 / 1024)
}

/// A Markdown table (what docs/benchmarks.md holds).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", headers.join(" | "));
    out.push_str(&format!(
        "|{}\n",
        headers.iter().map(|_| "---|").collect::<String>()
    ));
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let l = Latencies::new((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(l.percentile(50), Duration::from_millis(50));
        assert_eq!(l.percentile(99), Duration::from_millis(99));
        assert_eq!(l.percentile(100), Duration::from_millis(100));
        assert_eq!(Latencies::default().percentile(50), Duration::ZERO);
    }

    #[test]
    fn figures_print_without_floats() {
        assert_eq!(millis(Duration::from_micros(1_234_567)), "1234.5 ms");
        assert_eq!(seconds(Duration::from_millis(61_239)), "61.23 s");
        assert_eq!(per_second(500, Duration::from_millis(250)), 2000);
        assert_eq!(
            ratio(Duration::from_secs(3), Duration::from_secs(2)),
            "1.50×"
        );
        assert_eq!(mib(1536), "1.5 MiB");
    }
}
