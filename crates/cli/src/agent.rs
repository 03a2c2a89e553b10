//! Agents: the argv of a prompt task, and the one reader of what an agent
//! prints, which the worker, the monitor and the follow view share.
//!
//! [`Reader`] takes an agent's output line by line. For claude's
//! stream-json ([`stream`]) it keeps what the run reported (session id,
//! turns, tool calls, cost, tokens, refused tool calls) and renders each
//! line as one line a person reads in `logs/<task>.log`: `assistant: ...`,
//! `tool Write src/a.rs`, `tool Bash: npm test (exit 1)`, `result:
//! success, 4 turns, $0.031`. Limits are told apart in [`limit`].

pub mod limit;
pub mod stream;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use orch_session::plan::agent::AgentFormat;
use orch_session::plan::Task;
use orch_session::result::AgentReport;

use stream::{content_text, tool_target, Block, Line, UserBlock, UserContent};

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

/// Longest text of an `assistant:` line in the readable log.
const TEXT_CHARS: usize = 240;
/// Longest command or path in a `tool` line.
const TARGET_CHARS: usize = 160;

/// What one line of output gave.
#[derive(Debug, Default)]
pub struct Fed {
    /// Lines for the readable log, in order.
    pub readable: Vec<String>,
    /// The parsed line (stream-json agents), for limits.
    pub parsed: Option<Line>,
    /// Whether the turns or tool calls shown as progress changed.
    pub progress: bool,
}

/// A tool call waiting for its result.
#[derive(Debug, Clone)]
struct Call {
    name: String,
    target: Option<String>,
}

/// Reads one agent run's output as it comes.
#[derive(Debug, Clone)]
pub struct Reader {
    format: AgentFormat,
    /// Paths under this directory are shown relative to it.
    cwd: Option<String>,
    /// What the run reported so far.
    pub report: AgentReport,
    /// The final `result` line's text, once it came.
    pub result_text: Option<String>,
    /// Whether a final `result` line came.
    pub finished: bool,
    /// Tool calls the permission mode refused: tool and target.
    pub denials: Vec<(String, Option<String>)>,
    /// Lines of a stream-json agent's stdout that were not stream-json.
    pub unparsed: usize,
    /// The agent said the session it was asked to resume does not exist.
    pub resume_missing: bool,
    messages: HashSet<String>,
    calls: HashMap<String, Call>,
}

impl Reader {
    /// A reader for one run of an agent of `format`, in `cwd`.
    pub fn new(format: AgentFormat, cwd: Option<&Path>) -> Reader {
        Reader {
            format,
            cwd: cwd.map(|c| c.to_string_lossy().into_owned()),
            report: AgentReport::default(),
            result_text: None,
            finished: false,
            denials: Vec::new(),
            unparsed: 0,
            resume_missing: false,
            messages: HashSet::new(),
            calls: HashMap::new(),
        }
    }

    /// Whether the output is stream-json.
    pub fn is_stream(&self) -> bool {
        self.format == AgentFormat::ClaudeStreamJson
    }

    /// Takes one line the agent printed (on stderr or stdout).
    pub fn feed(&mut self, stderr: bool, text: &str) -> Fed {
        if !self.is_stream() {
            return Fed {
                readable: vec![text.to_owned()],
                ..Fed::default()
            };
        }
        if stderr {
            if text.contains("No conversation found with session ID") {
                self.resume_missing = true;
            }
            return Fed {
                readable: vec![text.to_owned()],
                ..Fed::default()
            };
        }
        let Some(line) = Line::parse(text) else {
            if !text.trim().is_empty() {
                self.unparsed += 1;
            }
            return Fed {
                readable: vec![text.to_owned()],
                ..Fed::default()
            };
        };
        let mut fed = Fed::default();
        self.take(&line, &mut fed);
        fed.parsed = Some(line);
        fed
    }

    fn take(&mut self, line: &Line, fed: &mut Fed) {
        match line {
            Line::System(s) => {
                if let Some(id) = &s.session_id {
                    self.report.session_id = Some(id.clone());
                }
                match s.subtype.as_str() {
                    "init" => {
                        if let Some(m) = &s.model {
                            self.report.model = Some(m.clone());
                        }
                        if let Some(c) = &s.cwd {
                            self.cwd = Some(c.clone());
                        }
                        fed.readable.push(format!(
                            "claude {}started: model {}, permission mode {}, session {}",
                            s.claude_code_version
                                .as_deref()
                                .map(|v| format!("{v} "))
                                .unwrap_or_default(),
                            s.model.as_deref().unwrap_or("?"),
                            s.permission_mode.as_deref().unwrap_or("?"),
                            s.session_id.as_deref().unwrap_or("?"),
                        ));
                    }
                    "api_retry" => fed.readable.push(format!(
                        "API error{}{}; retry {}/{} in {:.1}s",
                        s.error_status.map(|c| format!(" {c}")).unwrap_or_default(),
                        s.error
                            .as_deref()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default(),
                        s.attempt.unwrap_or(0),
                        s.max_retries.unwrap_or(0),
                        s.retry_delay_ms.unwrap_or(0.0) / 1000.0
                    )),
                    _ => {}
                }
            }
            Line::Assistant(a) => {
                if let Some(id) = &a.session_id {
                    self.report.session_id = Some(id.clone());
                }
                let main = a.parent_tool_use_id.is_none() && !a.message.is_synthetic();
                // A message of several blocks comes as several lines with
                // one id; a line without an id is a message of its own.
                let new_message = a
                    .message
                    .id
                    .as_ref()
                    .is_none_or(|id| self.messages.insert(id.clone()));
                if main && new_message {
                    self.report.turns += 1;
                    fed.progress = true;
                }
                let who = if a.message.is_synthetic() {
                    "error"
                } else if a.parent_tool_use_id.is_some() {
                    "subagent"
                } else {
                    "assistant"
                };
                for block in &a.message.content {
                    match block {
                        Block::Text { text } if !text.trim().is_empty() => {
                            fed.readable
                                .push(format!("{who}: {}", cut(text, TEXT_CHARS)));
                        }
                        Block::ToolUse { id, name, input } => {
                            let target = tool_target(name, input).map(|t| self.shorten(&t));
                            if main {
                                self.report.tool_uses += 1;
                                fed.progress = true;
                            }
                            fed.readable.push(tool_line(
                                if main { "tool" } else { "subagent tool" },
                                name,
                                target.as_deref(),
                                None,
                            ));
                            self.calls.insert(
                                id.clone(),
                                Call {
                                    name: name.clone(),
                                    target,
                                },
                            );
                        }
                        _ => {}
                    }
                }
            }
            Line::User(u) => {
                let UserContent::Blocks(blocks) = &u.message.content else {
                    return;
                };
                for b in blocks {
                    let UserBlock::ToolResult {
                        tool_use_id,
                        content,
                        is_error,
                    } = b
                    else {
                        continue;
                    };
                    let call = self.calls.remove(tool_use_id);
                    if !is_error {
                        continue;
                    }
                    let text = content_text(content);
                    let first = text.lines().next().unwrap_or("").trim();
                    let outcome = match first.strip_prefix("Exit code ") {
                        Some(code) => format!("exit {code}"),
                        None => {
                            let inner = first
                                .trim_start_matches("<tool_use_error>")
                                .trim_end_matches("</tool_use_error>");
                            format!("error: {}", cut(inner, TEXT_CHARS))
                        }
                    };
                    let (name, target) = call
                        .map(|c| (c.name, c.target))
                        .unwrap_or_else(|| ("?".to_owned(), None));
                    fed.readable
                        .push(tool_line("tool", &name, target.as_deref(), Some(&outcome)));
                }
            }
            Line::Result(r) => {
                self.finished = true;
                if let Some(id) = &r.session_id {
                    self.report.session_id = Some(id.clone());
                }
                self.report.subtype = Some(r.subtype.clone());
                self.report.is_error = r.is_error;
                self.report.api_error_status = r.api_error_status;
                self.report.api_error = r.is_error
                    && (r.api_error_status.is_some()
                        || r.result
                            .as_deref()
                            .is_some_and(|t| t.starts_with("API Error")));
                self.report.cost_usd = r.cost();
                if let Some(u) = r.usage {
                    self.report.input_tokens = Some(u.input_tokens);
                    self.report.output_tokens = Some(u.output_tokens);
                    self.report.cache_read_tokens = Some(u.cache_read_input_tokens);
                    self.report.cache_creation_tokens = Some(u.cache_creation_input_tokens);
                }
                self.result_text = r.result.clone();
                for d in &r.permission_denials {
                    let target = tool_target(&d.tool_name, &d.tool_input).map(|t| self.shorten(&t));
                    self.denials.push((d.tool_name.clone(), target));
                }
                let mut parts = vec![if r.is_error {
                    match r.api_error_status {
                        Some(code) => format!("error (API {code})"),
                        None => format!("error ({})", r.subtype),
                    }
                } else {
                    r.subtype.clone()
                }];
                parts.push(format!(
                    "{} turn{}",
                    self.report.turns,
                    if self.report.turns == 1 { "" } else { "s" }
                ));
                if let Some(c) = r.cost() {
                    parts.push(format!("${c:.3}"));
                }
                if let Some(ms) = r.duration_ms {
                    parts.push(orch_session::time::format_duration(
                        std::time::Duration::from_millis(ms),
                    ));
                }
                if !r.permission_denials.is_empty() {
                    parts.push(format!("{} refused", r.permission_denials.len()));
                }
                let mut line = format!("result: {}", parts.join(", "));
                if r.is_error {
                    if let Some(t) = &r.result {
                        line.push_str(&format!(": {}", cut(t, TEXT_CHARS)));
                    }
                }
                fed.readable.push(line);
                fed.progress = true;
            }
            Line::RateLimitEvent(e) => {
                let info = &e.rate_limit_info;
                let mut line = format!("rate limit: {}", info.status);
                if let Some(t) = &info.rate_limit_type {
                    line.push_str(&format!(" ({t})"));
                }
                if let Some(u) = info.utilization {
                    line.push_str(&format!(", {:.0}% used", u * 100.0));
                }
                if let Some(at) = info
                    .resets_at
                    .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                {
                    line.push_str(&format!(
                        ", resets {}",
                        orch_session::time::rfc3339(&at.with_timezone(&chrono::Local))
                    ));
                }
                fed.readable.push(line);
            }
            Line::Other => {}
        }
    }

    /// A path inside the working directory, relative to it.
    fn shorten(&self, target: &str) -> String {
        let rel = self
            .cwd
            .as_deref()
            .and_then(|c| target.strip_prefix(c))
            .and_then(|r| r.strip_prefix('/'))
            .filter(|r| !r.is_empty());
        cut(rel.unwrap_or(target), TARGET_CHARS)
    }

    /// Progress detail for the heartbeat.
    pub fn progress_detail(&self) -> String {
        format!(
            "claude: {} turn{}, {} tool call{}",
            self.report.turns,
            if self.report.turns == 1 { "" } else { "s" },
            self.report.tool_uses,
            if self.report.tool_uses == 1 { "" } else { "s" },
        )
    }
}

/// `tool Write a.txt`, `tool Bash: npm test (exit 1)`.
fn tool_line(label: &str, name: &str, target: Option<&str>, outcome: Option<&str>) -> String {
    let mut s = format!("{label} {name}");
    if let Some(t) = target {
        // A command reads better after a colon; a path needs none.
        s.push_str(if name == "Bash" { ": " } else { " " });
        s.push_str(t);
    }
    if let Some(o) = outcome {
        s.push_str(&format!(" ({o})"));
    }
    s
}

/// One line of at most `max` characters: whitespace runs (newlines too)
/// become one space, and a longer text is cut at a word with `...`.
pub fn cut(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let mut end = flat.char_indices().nth(max).map_or(flat.len(), |(i, _)| i);
    if let Some(space) = flat[..end].rfind(' ').filter(|&s| s > end / 2) {
        end = space;
    }
    format!("{}...", &flat[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(r: &mut Reader, lines: &[&str]) -> Vec<String> {
        lines
            .iter()
            .flat_map(|l| r.feed(false, l).readable)
            .collect()
    }

    #[test]
    fn a_real_run_reads_as_prose_and_counts_messages_not_lines() {
        let mut r = Reader::new(AgentFormat::ClaudeStreamJson, None);
        let out = feed_all(
            &mut r,
            &[
                r#"{"type":"system","subtype":"init","cwd":"/w/t","session_id":"s1","model":"claude-x","permissionMode":"acceptEdits","claude_code_version":"2.1.197"}"#,
                r#"{"type":"assistant","message":{"id":"msg_0","model":"claude-x","content":[{"type":"text","text":"I will write\n two files."}]},"parent_tool_use_id":null,"session_id":"s1"}"#,
                r#"{"type":"assistant","message":{"id":"msg_0","model":"claude-x","content":[{"type":"tool_use","id":"t1","name":"Write","input":{"file_path":"/w/t/src/a.txt","content":"x"}}]},"parent_tool_use_id":null,"session_id":"s1"}"#,
                r#"{"type":"assistant","message":{"id":"msg_0","model":"claude-x","content":[{"type":"tool_use","id":"t2","name":"Bash","input":{"command":"npm test"}}]},"parent_tool_use_id":null,"session_id":"s1"}"#,
                r#"{"type":"user","message":{"role":"user","content":[{"type":"tool_result","content":"ok","tool_use_id":"t1"}]}}"#,
                r#"{"type":"user","message":{"role":"user","content":[{"type":"tool_result","content":"Exit code 1\nFAIL","is_error":true,"tool_use_id":"t2"}]}}"#,
                r#"{"type":"assistant","message":{"id":"msg_1","model":"claude-x","content":[{"type":"text","text":"Done."}]},"parent_tool_use_id":null,"session_id":"s1"}"#,
                r#"{"type":"result","subtype":"success","is_error":false,"duration_ms":2000,"num_turns":3,"result":"Done.","session_id":"s1","total_cost_usd":0.0312,"usage":{"input_tokens":300,"output_tokens":40,"cache_read_input_tokens":50,"cache_creation_input_tokens":0},"permission_denials":[]}"#,
            ],
        );
        assert_eq!(
            out,
            [
                "claude 2.1.197 started: model claude-x, permission mode acceptEdits, session s1",
                "assistant: I will write two files.",
                "tool Write src/a.txt",
                "tool Bash: npm test",
                "tool Bash: npm test (exit 1)",
                "assistant: Done.",
                "result: success, 2 turns, $0.031, 2.0s",
            ]
        );
        assert_eq!((r.report.turns, r.report.tool_uses), (2, 2));
        assert_eq!(r.report.cost_usd, Some(0.0312));
        assert_eq!(r.report.input_tokens, Some(300));
        assert_eq!(r.report.session_id.as_deref(), Some("s1"));
        assert!(r.finished && r.denials.is_empty());
    }

    #[test]
    fn refusals_errors_and_other_lines() {
        let mut r = Reader::new(AgentFormat::ClaudeStreamJson, Some(Path::new("/w")));
        let out = feed_all(
            &mut r,
            &[
                r#"{"type":"assistant","message":{"id":"m","content":[{"type":"tool_use","id":"t1","name":"Write","input":{"file_path":"/etc/x","content":"x"}}]},"parent_tool_use_id":null}"#,
                r#"{"type":"user","message":{"content":[{"type":"tool_result","content":"Claude requested permissions to write to /etc/x, but you haven't granted it yet.","is_error":true,"tool_use_id":"t1"}]}}"#,
                r#"{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"retry_delay_ms":1000,"error_status":529,"error":"overloaded"}"#,
                r#"{"type":"assistant","message":{"id":"x","model":"<synthetic>","content":[{"type":"text","text":"API Error: 529 Overloaded"}]},"error":"server_error"}"#,
                r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":529,"result":"API Error: 529 Overloaded","total_cost_usd":0,"permission_denials":[{"tool_name":"Write","tool_use_id":"t1","tool_input":{"file_path":"/etc/x"}}]}"#,
                r#"{"type":"stream_event","event":{}}"#,
                "plain words",
            ],
        );
        assert_eq!(
            out,
            [
                "tool Write /etc/x",
                "tool Write /etc/x (error: Claude requested permissions to write to /etc/x, but you haven't granted it yet.)",
                "API error 529 (overloaded); retry 1/10 in 1.0s",
                "error: API Error: 529 Overloaded",
                "result: error (API 529), 1 turn, $0.000, 1 refused: API Error: 529 Overloaded",
                "plain words",
            ]
        );
        assert_eq!(r.report.turns, 1, "the synthetic message is no turn");
        assert_eq!(r.denials, [("Write".to_owned(), Some("/etc/x".to_owned()))]);
        assert_eq!(r.unparsed, 1);
        assert!(
            r.feed(true, "No conversation found with session ID: abc")
                .readable
                .len()
                == 1
        );
        assert!(r.resume_missing);
    }

    #[test]
    fn text_agents_pass_through_and_long_text_is_cut_at_a_word() {
        let mut r = Reader::new(AgentFormat::Text, None);
        assert_eq!(
            r.feed(false, r#"{"type":"result"}"#).readable,
            [r#"{"type":"result"}"#]
        );
        assert!(!r.finished);
        let long = "word ".repeat(100);
        let c = cut(&long, 20);
        assert_eq!(c, "word word word word...");
    }
}
