//! Agents: presets, the argv of a prompt task, reading `claude`'s
//! `stream-json` output, and noticing usage limits.

use std::path::Path;

use chrono::{DateTime, Local, TimeZone};
use orch_session::plan::Task;
use orch_session::result::AgentReport;
use serde_json::Value;

/// A known agent's argv template.
pub fn preset(name: &str) -> Option<Vec<String>> {
    let argv: &[&str] = match name {
        "claude" => &[
            "claude",
            "-p",
            "{prompt}",
            "--output-format",
            "stream-json",
            "--verbose",
        ],
        "codex" => &["codex", "exec", "{prompt}"],
        "aider" => &["aider", "--yes-always", "--message", "{prompt}"],
        "gemini" => &["gemini", "-p", "{prompt}"],
        _ => return None,
    };
    Some(argv.iter().map(|s| (*s).to_owned()).collect())
}

/// Which agent an argv runs: the program's file name (`claude`, ...).
pub fn kind(argv: &[String]) -> String {
    argv.first()
        .and_then(|p| Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The agent's argv: `{prompt}`, `{prompt_file}`, `{task}`, `{workdir}`
/// substituted inside each element (each stays one argument). Without
/// `{prompt}` or `{prompt_file}` in the template and without `stdin`, the
/// prompt is appended as the last argument.
pub fn argv(
    template: &[String],
    prompt: &str,
    prompt_file: &Path,
    task: &Task,
    workdir: &Path,
    stdin: bool,
) -> Vec<String> {
    let placed = template
        .iter()
        .any(|a| a.contains("{prompt}") || a.contains("{prompt_file}"));
    let mut argv: Vec<String> = template
        .iter()
        .map(|a| {
            a.replace("{task}", &task.id)
                .replace("{workdir}", &workdir.to_string_lossy())
                .replace("{prompt_file}", &prompt_file.to_string_lossy())
                .replace("{prompt}", prompt)
        })
        .collect();
    if !placed && !stdin {
        argv.push(prompt.to_owned());
    }
    argv
}

/// Reads `claude -p --output-format stream-json --verbose` line by line.
#[derive(Debug, Default)]
pub struct StreamJson {
    /// What the agent said about its run.
    pub report: AgentReport,
    /// The final `result` message's text.
    pub result_text: Option<String>,
    /// Lines that were not JSON.
    pub unparsed: usize,
    /// Whether a final `result` message arrived.
    pub finished: bool,
}

impl StreamJson {
    /// Feeds one stdout line. Returns whether it changed the counts shown
    /// as progress.
    pub fn line(&mut self, line: &str) -> bool {
        let t = line.trim();
        if t.is_empty() {
            return false;
        }
        let Ok(v) = serde_json::from_str::<Value>(t) else {
            self.unparsed += 1;
            return false;
        };
        if let Some(sid) = v.get("session_id").and_then(Value::as_str) {
            self.report.session_id = Some(sid.to_owned());
        }
        match v.get("type").and_then(Value::as_str) {
            Some("system") => {
                if let Some(m) = v.get("model").and_then(Value::as_str) {
                    self.report.model = Some(m.to_owned());
                }
                false
            }
            Some("assistant") => {
                self.report.turns += 1;
                let content = v.pointer("/message/content").and_then(Value::as_array);
                let tools = content.map_or(0, |c| {
                    c.iter()
                        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
                        .count()
                });
                self.report.tool_uses += tools as u32;
                true
            }
            Some("result") => {
                self.finished = true;
                self.report.subtype = v.get("subtype").and_then(Value::as_str).map(str::to_owned);
                self.report.is_error = v.get("is_error").and_then(Value::as_bool).unwrap_or(false);
                self.result_text = v.get("result").and_then(Value::as_str).map(str::to_owned);
                self.report.cost_usd = v
                    .get("total_cost_usd")
                    .or_else(|| v.get("cost_usd"))
                    .and_then(Value::as_f64);
                if let Some(n) = v.get("num_turns").and_then(Value::as_u64) {
                    self.report.turns = u32::try_from(n).unwrap_or(u32::MAX);
                }
                if let Some(u) = v.get("usage") {
                    let get = |k: &str| u.get(k).and_then(Value::as_u64);
                    self.report.input_tokens = get("input_tokens");
                    self.report.output_tokens = get("output_tokens");
                    self.report.cache_read_tokens = get("cache_read_input_tokens");
                    self.report.cache_creation_tokens = get("cache_creation_input_tokens");
                }
                true
            }
            _ => false,
        }
    }
}

/// A usage limit an agent ran into, and until when.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageLimit {
    /// The line that said so.
    pub line: String,
    /// When it resets, if the line said.
    pub until: Option<DateTime<Local>>,
}

/// Whether `line` says the agent hit a usage or rate limit: claude's
/// "usage limit reached" (with its reset time), HTTP 429 / rate-limit
/// errors, or one of the plan's `usage_limit_patterns` (substrings,
/// case-insensitive).
pub fn usage_limit(line: &str, patterns: &[String], now: &DateTime<Local>) -> Option<UsageLimit> {
    let lower = line.to_ascii_lowercase();
    let builtin = lower.contains("usage limit reached")
        || lower.contains("limit reached") && lower.contains("reset")
        || lower.contains("rate_limit_error")
        || lower.contains("too many requests")
        || lower.contains(" 429 ")
        || lower.contains("status 429")
        || lower.contains("\"status\":429")
        || lower.contains("error 429");
    let custom = patterns
        .iter()
        .any(|p| !p.is_empty() && lower.contains(&p.to_ascii_lowercase()));
    if !builtin && !custom {
        return None;
    }
    Some(UsageLimit {
        line: line.to_owned(),
        until: reset_time(line, now),
    })
}

/// The reset time a limit message gives: `...|1732200000` (claude's epoch
/// seconds), `resets 3pm` / `resets at 15:30`, `try again in 20 minutes`,
/// `retry after 120 seconds` / `retry-after: 120`.
pub fn reset_time(line: &str, now: &DateTime<Local>) -> Option<DateTime<Local>> {
    if let Some((_, tail)) = line.rsplit_once('|') {
        let digits: String = tail
            .trim()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(secs) = digits.parse::<i64>() {
            if secs > 1_000_000_000 {
                return Local.timestamp_opt(secs, 0).single();
            }
        }
    }
    let lower = line.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
        .filter(|w| !w.is_empty())
        .collect();
    for (i, w) in words.iter().enumerate() {
        let next = |k: usize| words.get(i + k).copied().unwrap_or("");
        if *w == "resets" || *w == "reset" {
            let t = if next(1) == "at" { next(2) } else { next(1) };
            if let Some(at) = time_of_day(t, now) {
                return Some(at);
            }
        }
        if (*w == "in" || *w == "after" || *w == "retry-after:" || *w == "retry-after")
            && !next(1).is_empty()
        {
            if let Ok(n) = next(1).trim_end_matches('s').parse::<f64>() {
                let unit = next(2);
                let secs = if unit.starts_with("min") {
                    n * 60.0
                } else if unit.starts_with("hour") || unit == "h" {
                    n * 3600.0
                } else {
                    n
                };
                if secs > 0.0 && secs < 7.0 * 86400.0 {
                    return Some(*now + chrono::Duration::milliseconds((secs * 1000.0) as i64));
                }
            }
        }
    }
    None
}

/// `3pm`, `3:30pm`, `15:30`: the next such time after `now`.
fn time_of_day(word: &str, now: &DateTime<Local>) -> Option<DateTime<Local>> {
    let w = word.trim_end_matches('.');
    let (body, pm, am) = if let Some(b) = w.strip_suffix("pm") {
        (b, true, false)
    } else if let Some(b) = w.strip_suffix("am") {
        (b, false, true)
    } else {
        (w, false, false)
    };
    let (h, m) = match body.split_once(':') {
        Some((h, m)) => (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?),
        None if pm || am => (body.parse::<u32>().ok()?, 0),
        None => return None,
    };
    let h = match (pm, am, h) {
        (true, _, 12) => 12,
        (true, _, h) => h + 12,
        (_, true, 12) => 0,
        (_, _, h) => h,
    };
    let tod = chrono::NaiveTime::from_hms_opt(h, m, 0)?;
    let mut t = now
        .date_naive()
        .and_time(tod)
        .and_local_timezone(Local)
        .earliest()?;
    if t <= *now {
        t += chrono::Duration::days(1);
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_json_is_read() {
        let mut s = StreamJson::default();
        s.line(r#"{"type":"system","subtype":"init","session_id":"s1","model":"claude-x"}"#);
        s.line(r#"{"type":"assistant","message":{"content":[{"type":"text","text":"hi"},{"type":"tool_use","name":"Bash","input":{}}]},"session_id":"s1"}"#);
        s.line("not json at all");
        s.line(r#"{"type":"result","subtype":"success","is_error":false,"num_turns":3,"result":"done","session_id":"s1","total_cost_usd":0.25,"usage":{"input_tokens":10,"output_tokens":20}}"#);
        assert_eq!(s.report.session_id.as_deref(), Some("s1"));
        assert_eq!(s.report.turns, 3);
        assert_eq!(s.report.tool_uses, 1);
        assert_eq!(s.report.cost_usd, Some(0.25));
        assert_eq!(s.report.output_tokens, Some(20));
        assert_eq!(s.result_text.as_deref(), Some("done"));
        assert_eq!(s.unparsed, 1);
        assert!(s.finished && !s.report.is_error);
    }

    #[test]
    fn limits_and_reset_times() {
        let now = Local
            .with_ymd_and_hms(2026, 11, 21, 13, 0, 0)
            .single()
            .expect("time");
        let l = usage_limit("Claude AI usage limit reached|1763737200", &[], &now).expect("limit");
        assert_eq!(l.until.map(|t| t.timestamp()), Some(1_763_737_200));
        let l = usage_limit("5-hour limit reached - resets 3pm", &[], &now).expect("limit");
        assert_eq!(
            l.until.map(|t| t.format("%H:%M").to_string()),
            Some("15:00".to_owned())
        );
        let l = usage_limit(
            "HTTP error 429: Too Many Requests, retry after 120 seconds",
            &[],
            &now,
        )
        .expect("limit");
        assert_eq!(l.until, Some(now + chrono::Duration::seconds(120)));
        assert!(usage_limit("all good", &[], &now).is_none());
        assert!(usage_limit("QUOTA EXHAUSTED", &["quota exhausted".to_owned()], &now).is_some());
        assert!(
            usage_limit("limit reached", &[], &now).is_none(),
            "needs a reset to count"
        );
    }
}
