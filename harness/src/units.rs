//! Human units in scenario files: durations (`"250ms"`), sizes (`"64KiB"`) and rates
//! (`"10Mbps"`, `"1MB/s"`).

use std::time::Duration;

/// Parses `"250ms"`, `"2s"`, `"1.5s"`, `"2m"`, `"500us"`, `"0"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| {
            format!("{s:?} has no unit: expected a duration like \"250ms\" or \"2s\"")
        })?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like \"250ms\" or \"2s\""))?;
    let secs = match unit.trim() {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?}: expected ns, us, ms, s, m or h"
            ));
        }
    };
    if !secs.is_finite() || !(0.0..=1e7).contains(&secs) {
        return Err(format!("duration {s:?} is out of range (0 to 10^7 s)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Writes a duration the way [`parse_duration`] reads it back.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        "0s".into()
    } else if ns % 1_000_000_000 == 0 {
        format!("{}s", ns / 1_000_000_000)
    } else if ns % 1_000_000 == 0 {
        format!("{}ms", ns / 1_000_000)
    } else if ns % 1000 == 0 {
        format!("{}us", ns / 1000)
    } else {
        format!("{ns}ns")
    }
}

fn split_number(s: &str) -> Option<(f64, &str)> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    Some((num.parse().ok()?, unit.trim()))
}

/// Parses a byte count: `"100"`, `"64KiB"`, `"1MB"`, `"2MiB"`, `"1GB"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let expected =
        || format!("{s:?} is not a size: expected bytes like 1000, \"64KiB\" or \"1MB\"");
    let (n, unit) = split_number(s).ok_or_else(expected)?;
    let mult = match unit {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(expected()),
    };
    let v = n * mult;
    if !v.is_finite() || !(0.0..=1e13).contains(&v) {
        return Err(format!("size {s:?} is out of range"));
    }
    Ok(v.round() as u64)
}

/// Parses a rate into bytes per second: `"10Mbps"` (bits), `"1MB/s"`, `"100KiB/s"`, `"500B/s"`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let expected =
        || format!("{s:?} is not a rate: expected e.g. \"10Mbps\", \"1MB/s\" or \"100KiB/s\"");
    let (n, unit) = split_number(s).ok_or_else(expected)?;
    let v = match unit {
        "bps" => n / 8.0,
        "kbps" | "Kbps" => n * 1e3 / 8.0,
        "Mbps" => n * 1e6 / 8.0,
        "Gbps" => n * 1e9 / 8.0,
        "B/s" => n,
        "KB/s" | "kB/s" => n * 1e3,
        "MB/s" => n * 1e6,
        "GB/s" => n * 1e9,
        "KiB/s" => n * 1024.0,
        "MiB/s" => n * 1024.0 * 1024.0,
        _ => return Err(expected()),
    };
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("rate {s:?} must be positive"));
    }
    Ok(v)
}

/// Bytes per second as text (`"12.3 MB/s"`).
pub fn format_rate(bps: f64) -> String {
    if bps >= 1e9 {
        format!("{:.2} GB/s", bps / 1e9)
    } else if bps >= 1e6 {
        format!("{:.2} MB/s", bps / 1e6)
    } else if bps >= 1e3 {
        format!("{:.2} kB/s", bps / 1e3)
    } else {
        format!("{bps:.0} B/s")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_rate("8Mbps").unwrap(), 1e6);
        assert!(parse_rate("fast").is_err());
    }
}
