//! Rate limits shared by every process of a session: at most `count`
//! starts in any window of `per`, kept as a sliding log of start times in
//! `status/rate-<name>.json` under the lock `locks/rate-<name>.lock`.
//!
//! A sliding log (not a token bucket) so that "30/min" means what people
//! read: no 60-second window ever holds more than 30 starts. Times are wall
//! clock, shared across processes; a clock jumping backwards only delays.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::atomic::{self, Durability};
use crate::error::{Error, Result};
use crate::json::{read_json, to_json_bytes};
use crate::layout::{check_name, SessionDir};
use crate::lock;
use crate::time::parse_duration;

/// `count` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// Starts allowed per window.
    pub count: u32,
    /// The window, milliseconds.
    pub per_ms: u64,
}

impl FromStr for Rate {
    type Err = String;
    /// `60/min`, `5/s`, `1000/h`, `10/30s`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid rate `{s}`: write it like \"60/min\", \"5/s\" or \"10/30s\"");
        let (n, per) = s.split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = per.trim();
        let per = match per {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86400),
            other => parse_duration(other).map_err(|_| bad())?,
        };
        if count == 0 || per.is_zero() {
            return Err(bad());
        }
        Ok(Rate {
            count,
            per_ms: u64::try_from(per.as_millis()).unwrap_or(u64::MAX),
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.count,
            crate::time::format_duration(Duration::from_millis(self.per_ms))
        )
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Log {
    /// Start times, milliseconds since the epoch, oldest first.
    starts: Vec<u64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Takes a start from limiter `name` if the window allows; otherwise says
/// how long to wait.
pub fn try_take(
    dir: &SessionDir,
    name: &str,
    rate: Rate,
) -> Result<std::result::Result<(), Duration>> {
    check_name("rate limit name", name)?;
    let lp = dir.named_lock(&format!("rate-{name}"));
    let Some(_g) = lock::lock_until(&lp, Some(Instant::now() + Duration::from_secs(30)))? else {
        return Err(Error::Locked {
            path: lp,
            holder: None,
        });
    };
    let path = dir.status_dir().join(format!("rate-{name}.json"));
    // A damaged log only costs the history: start a fresh one.
    let mut log: Log = read_json(&path).unwrap_or_default();
    let now = now_ms();
    log.starts
        .retain(|&t| t + rate.per_ms > now && t <= now + rate.per_ms);
    if log.starts.len() < rate.count as usize {
        log.starts.push(now);
        atomic::write_atomic(&path, &to_json_bytes(&log), Durability::Volatile)?;
        return Ok(Ok(()));
    }
    let oldest = log.starts.iter().copied().min().unwrap_or(now);
    Ok(Err(Duration::from_millis(
        (oldest + rate.per_ms).saturating_sub(now).max(1),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(
            "60/min".parse(),
            Ok(Rate {
                count: 60,
                per_ms: 60_000
            })
        );
        assert_eq!(
            "5/s".parse(),
            Ok(Rate {
                count: 5,
                per_ms: 1000
            })
        );
        assert_eq!(
            "10/30s".parse(),
            Ok(Rate {
                count: 10,
                per_ms: 30_000
            })
        );
        assert!("0/s".parse::<Rate>().is_err());
        assert!("five/s".parse::<Rate>().is_err());
        assert!("5".parse::<Rate>().is_err());
    }

    #[test]
    fn window_refuses_the_extra_start() {
        let tmp = tempfile::tempdir().expect("tmp");
        let s = SessionDir::new(tmp.path());
        std::fs::create_dir_all(s.status_dir()).expect("mkdir");
        std::fs::create_dir_all(s.locks_dir()).expect("mkdir");
        let r = Rate {
            count: 2,
            per_ms: 60_000,
        };
        assert!(try_take(&s, "api", r).expect("take").is_ok());
        assert!(try_take(&s, "api", r).expect("take").is_ok());
        let wait = try_take(&s, "api", r)
            .expect("take")
            .expect_err("third must wait");
        assert!(wait > Duration::from_secs(50), "{wait:?}");
    }
}
