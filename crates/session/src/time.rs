//! Timestamps and human durations.
//!
//! Timestamps are RFC 3339 with milliseconds and the local offset, so they
//! sort as text within one zone and stay unambiguous across zones.
//! Durations are written the way people write them in plans: `30m`,
//! `1h30m`, `45s`, `250ms`, or a bare number of seconds.

use std::time::Duration;

use chrono::{DateTime, Local, SecondsFormat};

/// Now, in local time.
pub fn now() -> DateTime<Local> {
    Local::now()
}

/// RFC 3339 with milliseconds: `2026-11-21T13:45:02.123+00:00`.
pub fn rfc3339(t: &DateTime<Local>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// Parses an RFC 3339 timestamp.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Local>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Local))
}

/// Parses `30m`, `1h30m`, `45s`, `1.5h`, `250ms`, `2d` or a bare number of
/// seconds. The error says what is accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let bad = || {
        format!("invalid duration `{text}`: use a number with a unit, like `90s`, `30m`, `1h30m` or `250ms`")
    };
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return seconds(secs).ok_or_else(bad);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = rest[unit_len..].trim_start();
        let factor = match unit {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            _ => return Err(bad()),
        };
        total += value * factor;
    }
    seconds(total).ok_or_else(bad)
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && (0.0..1e10).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// Parses a deadline: a duration from `now` (`6h`), a time of day today
/// or tomorrow (`18:30`), or an RFC 3339 time.
pub fn parse_deadline(text: &str, now: &DateTime<Local>) -> Result<DateTime<Local>, String> {
    let s = text.trim();
    if let Some(t) = parse_rfc3339(s) {
        return Ok(t);
    }
    if let Ok(d) = parse_duration(s) {
        return chrono::Duration::from_std(d)
            .map(|d| *now + d)
            .map_err(|e| e.to_string());
    }
    if let Ok(tod) = chrono::NaiveTime::parse_from_str(s, "%H:%M")
        .or_else(|_| chrono::NaiveTime::parse_from_str(s, "%H:%M:%S"))
    {
        let today = now.date_naive().and_time(tod);
        let mut t = today
            .and_local_timezone(Local)
            .earliest()
            .ok_or_else(|| format!("`{s}` does not exist today"))?;
        if t <= *now {
            t += chrono::Duration::days(1);
        }
        return Ok(t);
    }
    if let Ok(dt) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M") {
        return dt
            .and_local_timezone(Local)
            .earliest()
            .ok_or_else(|| format!("`{s}` does not exist"));
    }
    Err(format!("invalid time `{s}`: write a duration like \"6h\", a time like \"18:30\", or \"2026-11-21 18:30\""))
}

/// Formats a duration compactly: `250ms`, `4.2s`, `3m05s`, `2h10m`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let tenths = (ms + 50) / 100;
        format!("{}.{}s", tenths / 10, tenths % 10)
    } else if ms < 3_600_000 {
        let s = (ms + 500) / 1000;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = (ms + 30_000) / 60_000;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        for bad in ["", "m", "10x", "-5s", "1h30", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn durations_format() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(4200)), "4.2s");
        assert_eq!(format_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(format_duration(Duration::from_secs(7800)), "2h10m");
    }
}
