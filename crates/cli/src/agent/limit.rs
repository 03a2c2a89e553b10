//! Usage and rate limits an agent ran into, and when they reset.
//!
//! For claude (stream-json) only structured lines count: a
//! `rate_limit_event` whose status is `rejected` (it carries the exact
//! reset instant), or the final `result` when it is an error with HTTP
//! status 429 or words that say a limit was hit. Text inside a tool result
//! or in the model's own prose never counts: an agent that greps a log
//! mentioning "429" must not pause anyone. For agents that print plain
//! text, a line counts when it says so in the words agents use.
//!
//! The messages people see, all understood with their time zones:
//! `Claude AI usage limit reached|1766502000`, `5-hour limit reached ∙
//! resets 3pm`, `You've hit your session limit · resets 3:50pm
//! (Asia/Tokyo)`, `You've hit your limit · resets May 5 at 9pm
//! (America/New_York)`, `You've hit your weekly limit · resets Dec 7,
//! 10:48pm (UTC)`, `Your limit will reset at 9am (America/Chicago).`

use chrono::{DateTime, Datelike, Local, NaiveDate, NaiveTime, TimeZone};

use super::stream::{Line, ResultLine};

/// A limit an agent hit, and until when.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageLimit {
    /// What said so, in words.
    pub message: String,
    /// When it resets, if that was said.
    pub until: Option<DateTime<Local>>,
}

/// Whether a stream-json line reports a limit. `patterns` (the plan's
/// `usage_limit_patterns`) are matched against the final result's text.
pub fn from_stream(line: &Line, patterns: &[String], now: &DateTime<Local>) -> Option<UsageLimit> {
    match line {
        Line::RateLimitEvent(e) if e.rate_limit_info.status == "rejected" => {
            let info = &e.rate_limit_info;
            Some(UsageLimit {
                message: format!(
                    "rate limit rejected{}",
                    info.rate_limit_type
                        .as_deref()
                        .map(|t| format!(" ({t})"))
                        .unwrap_or_default()
                ),
                until: info
                    .resets_at
                    .and_then(|s| Local.timestamp_opt(s, 0).single())
                    .filter(|t| t > now),
            })
        }
        Line::Result(r) if r.is_error => from_result(r, patterns, now),
        _ => None,
    }
}

fn from_result(r: &ResultLine, patterns: &[String], now: &DateTime<Local>) -> Option<UsageLimit> {
    let text = r.result.as_deref().unwrap_or("");
    let hit = r.api_error_status == Some(429) || says_limit(text) || matches_any(text, patterns);
    hit.then(|| UsageLimit {
        message: text.trim().to_owned(),
        until: reset_time(text, now),
    })
}

/// Whether a line of a plain-text agent's output reports a limit: in the
/// words agents use (`builtin`), or matching one of the plan's patterns.
pub fn from_text(
    line: &str,
    builtin: bool,
    patterns: &[String],
    now: &DateTime<Local>,
) -> Option<UsageLimit> {
    let hit = (builtin && says_limit(line)) || matches_any(line, patterns);
    hit.then(|| UsageLimit {
        message: line.trim().to_owned(),
        until: reset_time(line, now),
    })
}

fn matches_any(text: &str, patterns: &[String]) -> bool {
    let lower = text.to_lowercase();
    patterns
        .iter()
        .any(|p| !p.is_empty() && lower.contains(&p.to_lowercase()))
}

/// Whether `text` says a usage or rate limit was hit.
pub fn says_limit(text: &str) -> bool {
    let t = text.to_lowercase().replace('\u{2019}', "'");
    t.contains("usage limit reached")
        || (t.contains("hit your") && t.contains("limit"))
        || (t.contains("limit reached") && t.contains("reset"))
        || t.contains("rate_limit_error")
        || t.contains("too many requests")
        || t.contains("request rejected (429)")
        || t.contains("status 429")
        || t.contains("error 429")
        || t.contains("\"status\":429")
}

/// The reset instant a limit message gives: `...|<unix seconds>`, `resets
/// 3pm`, `resets 3:50pm (Asia/Tokyo)`, `resets May 5 at 9pm`, `resets Dec
/// 7, 10:48pm (UTC)`, `will reset at 9:30 AM`, `try again in 20 minutes`,
/// `retry after 120 seconds`. A time without a zone is the machine's
/// local time; a time of day already past today means tomorrow.
pub fn reset_time(text: &str, now: &DateTime<Local>) -> Option<DateTime<Local>> {
    if let Some(t) = epoch_after_bar(text) {
        return Some(t);
    }
    // Found in the text itself (not a lowercased copy, whose byte offsets
    // may differ).
    let starts = text.char_indices().map(|(i, _)| i).filter(|&i| {
        text.get(i..i + 5)
            .is_some_and(|w| w.eq_ignore_ascii_case("reset"))
    });
    for i in starts {
        let rest = &text[i..];
        // "resets", "reset at", "reset:": skip the word itself.
        let rest = rest
            .trim_start_matches(|c: char| c.is_alphabetic())
            .trim_start_matches([':', ' ']);
        if let Some(t) = clock_phrase(rest, now) {
            return Some(t);
        }
    }
    relative(&text.to_lowercase(), now)
}

fn epoch_after_bar(text: &str) -> Option<DateTime<Local>> {
    let (_, tail) = text.rsplit_once('|')?;
    let digits: String = tail
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let secs: i64 = digits.parse().ok()?;
    (secs > 1_000_000_000)
        .then(|| Local.timestamp_opt(secs, 0).single())
        .flatten()
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// `[at] [Mon D[,] [at]] H[:MM][ ]am|pm [(Zone)]` or `[at] HH:MM`.
fn clock_phrase(rest: &str, now: &DateTime<Local>) -> Option<DateTime<Local>> {
    // The phrase ends at the zone's parenthesis or the sentence's end.
    let end = rest
        .find(['(', '\u{b7}', '\u{2219}', '|', '\n'])
        .unwrap_or(rest.len());
    let zone = rest[end..]
        .strip_prefix('(')
        .and_then(|z| z.split_once(')'))
        .and_then(|(z, _)| z.trim().parse::<chrono_tz::Tz>().ok());
    let words: Vec<String> = rest[..end]
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .map(|w| w.trim_end_matches('.').to_lowercase())
        .collect();
    let mut k = 0;
    let word = |k: usize| words.get(k).map_or("", String::as_str);
    if word(k) == "at" || word(k) == "on" {
        k += 1;
    }
    let mut date: Option<(u32, u32)> = None;
    if let Some(m) = MONTHS
        .iter()
        .position(|m| word(k).len() >= 3 && word(k).starts_with(m))
    {
        let day: u32 = word(k + 1)
            .trim_end_matches(|c: char| c.is_alphabetic())
            .parse()
            .ok()?;
        date = Some((m as u32 + 1, day));
        k += 2;
        if word(k) == "at" {
            k += 1;
        }
    }
    let (h, m, meridiem) = clock(word(k), word(k + 1))?;
    let h = match (meridiem, h) {
        (Some(false), 12) => 0,
        (Some(true), 12) => 12,
        (Some(true), h) => h + 12,
        (_, h) => h,
    };
    let tod = NaiveTime::from_hms_opt(h, m, 0)?;
    match zone {
        Some(tz) => resolve(&tz, date, tod, now),
        None => resolve(&Local, date, tod, now),
    }
}

/// `3pm`, `3:50pm`, `10:48PM`, `9:30` + `am`, `15:30`: hours, minutes, and
/// whether it is pm (`None` for a 24-hour time).
fn clock(word: &str, next: &str) -> Option<(u32, u32, Option<bool>)> {
    let (body, suffix) = match word.find(|c: char| c.is_alphabetic()) {
        Some(i) => (&word[..i], &word[i..]),
        None => (word, next),
    };
    let meridiem = match suffix.replace('.', "").as_str() {
        "pm" => Some(true),
        "am" => Some(false),
        _ => None,
    };
    let (h, m) = match body.split_once(':') {
        Some((h, m)) => (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?),
        None if meridiem.is_some() => (body.parse::<u32>().ok()?, 0),
        None => return None,
    };
    let valid = match meridiem {
        Some(_) => (1..=12).contains(&h),
        None => h < 24,
    };
    (valid && m < 60).then_some((h, m, meridiem))
}

/// The instant of `tod` (on `date`, else today) in `tz`: the next one
/// after `now` (tomorrow for a time of day already past, next year for a
/// date already past).
fn resolve<Z: TimeZone>(
    tz: &Z,
    date: Option<(u32, u32)>,
    tod: NaiveTime,
    now: &DateTime<Local>,
) -> Option<DateTime<Local>> {
    let here = now.with_timezone(tz);
    let at = |d: NaiveDate| {
        tz.from_local_datetime(&d.and_time(tod))
            .earliest()
            .map(|t| t.with_timezone(&Local))
    };
    match date {
        Some((month, day)) => {
            let this = at(NaiveDate::from_ymd_opt(here.year(), month, day)?)?;
            // A reset is never much in the past: "Jan 2" said on Dec 30
            // is next year's.
            if this < *now - chrono::Duration::days(1) {
                at(NaiveDate::from_ymd_opt(here.year() + 1, month, day)?)
            } else {
                Some(this)
            }
        }
        None => {
            let today = at(here.date_naive())?;
            if today <= *now {
                at(here.date_naive().succ_opt()?)
            } else {
                Some(today)
            }
        }
    }
}

/// `in 20 minutes`, `in 4hr 29min`, `after 120 seconds`, `retry-after: 120`.
fn relative(lower: &str, now: &DateTime<Local>) -> Option<DateTime<Local>> {
    let words: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
        .filter(|w| !w.is_empty())
        .collect();
    for (i, w) in words.iter().enumerate() {
        if !matches!(*w, "in" | "after" | "retry-after:" | "retry-after") {
            continue;
        }
        let mut secs = 0.0;
        let mut k = i + 1;
        while let Some(word) = words.get(k) {
            // "20 minutes" or "20min".
            let digits = word
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(word.len());
            let Ok(n) = word[..digits].parse::<f64>() else {
                break;
            };
            let (unit, used) = if digits < word.len() {
                (&word[digits..], 1)
            } else {
                (words.get(k + 1).copied().unwrap_or(""), 2)
            };
            let scale = if unit.starts_with("min") || unit == "m" {
                60.0
            } else if unit.starts_with('h') {
                3600.0
            } else if unit.starts_with('s') || unit.is_empty() {
                1.0
            } else {
                break;
            };
            secs += n * scale;
            k += if scale == 1.0 && unit.is_empty() {
                1
            } else {
                used
            };
        }
        if secs > 0.0 && secs < 7.0 * 86400.0 {
            return Some(*now + chrono::Duration::milliseconds((secs * 1000.0) as i64));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Local> {
        Local
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("time")
    }

    fn in_zone(zone: &str, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Local> {
        let tz: chrono_tz::Tz = zone.parse().expect("zone");
        tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("time")
            .with_timezone(&Local)
    }

    #[test]
    fn every_message_people_see_has_its_reset() {
        let now = in_zone("UTC", 2026, 12, 3, 7, 0);
        let cases: Vec<(&str, DateTime<Local>)> = vec![
            (
                "Claude AI usage limit reached|1796290911",
                Local.timestamp_opt(1_796_290_911, 0).single().expect("t"),
            ),
            // 3pm local, later today.
            ("5-hour limit reached ∙ resets 3pm", {
                let t = at(2026, 12, 3, 15, 0);
                if t <= now {
                    t + chrono::Duration::days(1)
                } else {
                    t
                }
            }),
            // 15:50 in Tokyo is 06:50 UTC: already past, so tomorrow.
            (
                "You've hit your session limit · resets 3:50pm (Asia/Tokyo)",
                in_zone("Asia/Tokyo", 2026, 12, 4, 15, 50),
            ),
            (
                "You've hit your limit · resets Apr 23 at 4pm (America/New_York)",
                in_zone("America/New_York", 2027, 4, 23, 16, 0),
            ),
            (
                "You've hit your weekly limit · resets Dec 7, 10:48pm (UTC)",
                in_zone("UTC", 2026, 12, 7, 22, 48),
            ),
            (
                "Claude usage limit reached. Your limit will reset at 9am (America/Chicago).",
                in_zone("America/Chicago", 2026, 12, 3, 9, 0),
            ),
            (
                "You\u{2019}ve hit your limit for Claude messages. Limits will reset at 9:30 AM (Europe/Paris).",
                in_zone("Europe/Paris", 2026, 12, 3, 9, 30),
            ),
            (
                "You've hit your limit · resets 1:30am (Asia/Dhaka)",
                in_zone("Asia/Dhaka", 2026, 12, 4, 1, 30),
            ),
        ];
        for (text, want) in cases {
            assert!(says_limit(text), "{text}");
            assert_eq!(reset_time(text, &now), Some(want), "{text}");
        }
    }

    #[test]
    fn relative_resets_and_plain_words() {
        let now = at(2026, 11, 21, 13, 0);
        let t = "HTTP error 429: Too Many Requests, retry after 120 seconds";
        assert!(says_limit(t));
        assert_eq!(
            reset_time(t, &now),
            Some(now + chrono::Duration::seconds(120))
        );
        assert_eq!(
            reset_time("resets in 4hr 29min", &now),
            Some(now + chrono::Duration::minutes(4 * 60 + 29))
        );
        assert_eq!(
            reset_time("limit resets at 18:30", &now),
            Some(at(2026, 11, 21, 18, 30))
        );
        // Text whose lowercase form is longer than itself.
        assert_eq!(
            reset_time("\u{130}\u{130} limit Resets at 18:30", &now),
            Some(at(2026, 11, 21, 18, 30))
        );
        assert!(!says_limit("all good"));
        assert!(!says_limit("limit reached"), "needs a reset to count");
        assert_eq!(reset_time("no time here", &now), None);
    }

    #[test]
    fn only_structured_lines_count_for_stream_agents() {
        let now = at(2026, 11, 21, 13, 0);
        let prose = Line::parse(r#"{"type":"assistant","message":{"id":"m","content":[{"type":"text","text":"The log says: Claude AI usage limit reached|1796290911 and HTTP 429"}]}}"#).expect("line");
        assert_eq!(from_stream(&prose, &[], &now), None);
        let tool = Line::parse(r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t","content":"rate_limit_error 429 Too Many Requests","is_error":true}]}}"#).expect("line");
        assert_eq!(from_stream(&tool, &[], &now), None);
        let ok = Line::parse(r#"{"type":"result","subtype":"success","is_error":false,"result":"I fixed the 429 handling; usage limit reached messages now show"}"#).expect("line");
        assert_eq!(from_stream(&ok, &[], &now), None);
        let warn = Line::parse(r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed_warning","resetsAt":1796290911}}"#).expect("line");
        assert_eq!(from_stream(&warn, &[], &now), None);
        let rejected = Line::parse(r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1796290911,"rateLimitType":"five_hour"}}"#).expect("line");
        let l = from_stream(&rejected, &[], &now).expect("limit");
        assert_eq!(l.until.map(|t| t.timestamp()), Some(1_796_290_911));
        let api = Line::parse(r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"result":"API Error: Request rejected (429) · per-minute rate limit"}"#).expect("line");
        assert!(from_stream(&api, &[], &now).is_some());
        let custom = Line::parse(
            r#"{"type":"result","subtype":"success","is_error":true,"result":"QUOTA EXHAUSTED"}"#,
        )
        .expect("line");
        assert!(from_stream(&custom, &["quota exhausted".to_owned()], &now).is_some());
        assert!(from_stream(&custom, &[], &now).is_none());
    }
}
