//! Kubernetes resource requirements (`250m`, `512Mi`) turned into Compose's (`"0.25"`, `"512M"`).
//!
//! The spec holds Kubernetes quantities because the CRD is a Kubernetes type; Swarm reads CPUs as
//! a decimal and memory with binary units, so the same spec yields the same amounts on both.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::compose::{ResourceAmounts, Resources};
use crate::error::{Error, Result};

const MIB: u128 = 1 << 20;

/// `field` names the spec field in error messages, e.g. `memcached.resources`.
pub fn to_compose(requirements: &ResourceRequirements, field: &str) -> Result<Resources> {
    Ok(Resources {
        limits: amounts(requirements.limits.as_ref(), &format!("{field}.limits"))?,
        reservations: amounts(requirements.requests.as_ref(), &format!("{field}.requests"))?,
    })
}

/// Only cpu and memory have a Swarm counterpart; other resources (ephemeral-storage, devices)
/// are left to the node.
fn amounts(
    map: Option<&BTreeMap<String, Quantity>>,
    field: &str,
) -> Result<Option<ResourceAmounts>> {
    let Some(map) = map else {
        return Ok(None);
    };
    let invalid = |key: &str, q: &Quantity| Error::InvalidQuantity {
        field: format!("{field}.{key}"),
        value: q.0.clone(),
    };
    let cpus = map
        .get("cpu")
        .map(|q| cpus(&q.0).ok_or_else(|| invalid("cpu", q)))
        .transpose()?;
    let memory = map
        .get("memory")
        .map(|q| memory(&q.0).ok_or_else(|| invalid("memory", q)))
        .transpose()?;
    Ok((cpus.is_some() || memory.is_some()).then_some(ResourceAmounts { cpus, memory }))
}

/// CPUs as a decimal with at most three places, rounded up to the millicore as Kubernetes does.
fn cpus(text: &str) -> Option<String> {
    let (num, den) = parse(text)?;
    let millis = (num.checked_mul(1000)?).div_ceil(den);
    let (whole, frac) = (millis / 1000, millis % 1000);
    if frac == 0 {
        return Some(whole.to_string());
    }
    let frac = format!("{frac:03}");
    Some(format!("{whole}.{}", frac.trim_end_matches('0')))
}

/// Memory in whole MiB when it is one (the usual case), else in bytes.
fn memory(text: &str) -> Option<String> {
    let (num, den) = parse(text)?;
    let bytes = num.div_ceil(den);
    Some(if bytes % MIB == 0 {
        format!("{}M", bytes / MIB)
    } else {
        bytes.to_string()
    })
}

/// A non-negative Kubernetes quantity as the exact fraction `num / den`.
fn parse(text: &str) -> Option<(u128, u128)> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = format!("{whole}{frac}");
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mantissa: u128 = digits.parse().ok()?;
    let (mul, div) = suffix_factor(suffix)?;
    let num = mantissa.checked_mul(mul)?;
    let den = 10u128
        .checked_pow(u32::try_from(frac.len()).ok()?)?
        .checked_mul(div)?;
    Some((num, den))
}

/// The multiplier and divisor of a quantity suffix: binary, decimal, or a decimal exponent.
fn suffix_factor(suffix: &str) -> Option<(u128, u128)> {
    let binary = |shift: u32| Some((1u128 << shift, 1));
    let decimal = |exp: u32| Some((10u128.pow(exp), 1));
    match suffix {
        "" => decimal(0),
        "m" => Some((1, 1000)),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            let exp = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))?;
            let exp: u32 = exp.parse().ok()?;
            (exp <= 18).then(|| (10u128.pow(exp), 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_are_decimals() {
        for (k8s, compose) in [
            ("250m", "0.25"),
            ("2", "2"),
            ("0.5", "0.5"),
            ("1500m", "1.5"),
            ("1.2345", "1.235"),
            ("100m", "0.1"),
        ] {
            assert_eq!(cpus(k8s).as_deref(), Some(compose), "{k8s}");
        }
    }

    #[test]
    fn memory_is_in_mib_or_bytes() {
        for (k8s, compose) in [
            ("1190Mi", "1190M"),
            ("1Gi", "1024M"),
            ("1.5Gi", "1536M"),
            ("512M", "512000000"),
            ("128974848", "123M"),
            ("129e6", "129000000"),
            ("1Ki", "1024"),
        ] {
            assert_eq!(memory(k8s).as_deref(), Some(compose), "{k8s}");
        }
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in ["", "abc", "-1", "1.2.3", "12Qi", "1e99", "Mi", "."] {
            assert_eq!(memory(bad), None, "{bad}");
        }
    }
}
