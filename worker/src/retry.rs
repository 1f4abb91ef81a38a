//! Retry policy: exponential backoff, capped, with jitter.
//!
//! Attempt `n` (1-based, the attempt that just failed) waits
//! `min(cap, base · 2^(n-1))`, then a random jitter keeps between 50 % and
//! 100 % of it ("equal jitter"), so the delays still grow with the attempt
//! while workers that failed together do not retry together.

use std::time::Duration;

/// How long to wait after failed attempt `attempt` (1-based).
pub fn backoff(attempt: i32, base: Duration, cap: Duration) -> Duration {
    let exp = attempt.clamp(1, 31) as u32 - 1;
    let full = base
        .checked_mul(1u32.checked_shl(exp).unwrap_or(u32::MAX))
        .unwrap_or(cap)
        .min(cap);
    let half = full / 2;
    let jitter = half.mul_f64(rand::random::<f64>());
    half + jitter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        for attempt in 1..10 {
            let d = backoff(attempt, base, cap);
            let full = (base * 2u32.pow(attempt as u32 - 1)).min(cap);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert!(backoff(1000, base, cap) <= cap);
        // The lower bound of attempt n+1 is the upper bound of attempt n: delays never shrink.
        assert!(backoff(3, base, cap) >= backoff(2, base, cap));
    }
}
