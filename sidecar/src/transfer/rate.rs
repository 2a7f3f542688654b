//! `--rate`: how many bytes per second an export reads or an import writes, so that either
//! can run next to serving sidecars without taking memcached's whole bandwidth.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Bytes per second, or no bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    Unlimited,
    PerSecond(NonZeroU64),
}

impl FromStr for Rate {
    type Err = String;

    /// `unlimited`, or a number with an optional unit: `B`, `K`/`KiB`, `M`/`MiB`, `G`/`GiB`
    /// (powers of 1024) or `KB`, `MB`, `GB` (powers of 1000), optionally followed by `/s`.
    fn from_str(text: &str) -> Result<Rate, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("unlimited") {
            return Ok(Rate::Unlimited);
        }
        let body = text.strip_suffix("/s").unwrap_or(text);
        let split = body
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(body.len());
        let (number, unit) = body.split_at(split);
        let unit_bytes: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            other => {
                return Err(format!(
                    "unknown unit {other:?} in rate {text:?}: use B, KiB, MiB, GiB, KB, MB, GB \
                     or `unlimited`"
                ));
            }
        };
        let bytes = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit_bytes))
            .and_then(NonZeroU64::new)
            .ok_or_else(|| {
                format!(
                    "rate {text:?} is not a positive number of bytes per second (e.g. 64MiB, or \
                     `unlimited`)"
                )
            })?;
        Ok(Rate::PerSecond(bytes))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Unlimited => f.write_str("unlimited"),
            Rate::PerSecond(bytes) => write!(f, "{}/s", indicatif::BinaryBytes(bytes.get())),
        }
    }
}

/// Keeps a transfer at its rate: never ahead of `rate` bytes per second since it started.
pub struct Pace {
    rate: Rate,
    started: Instant,
    bytes: u64,
}

impl Pace {
    pub fn new(rate: Rate) -> Pace {
        Pace {
            rate,
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Count `bytes` moved, and wait if the transfer is ahead of its rate.
    pub async fn moved(&mut self, bytes: u64) {
        self.bytes += bytes;
        if let Rate::PerSecond(rate) = self.rate {
            let due = Duration::from_secs_f64(self.bytes as f64 / rate.get() as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_units_and_refuse_nonsense() {
        let per = |n: u64| Rate::PerSecond(NonZeroU64::new(n).unwrap());
        assert_eq!("unlimited".parse(), Ok(Rate::Unlimited));
        assert_eq!("1000".parse(), Ok(per(1000)));
        assert_eq!("64MiB".parse(), Ok(per(64 << 20)));
        assert_eq!("64M/s".parse(), Ok(per(64 << 20)));
        assert_eq!("2GB".parse(), Ok(per(2_000_000_000)));
        assert_eq!("5 KiB".parse(), Ok(per(5 << 10)));
        assert!("0".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
        assert!(
            "10 parsecs"
                .parse::<Rate>()
                .unwrap_err()
                .contains("parsecs")
        );
        assert!("99999999999999999999G".parse::<Rate>().is_err());
    }
}
