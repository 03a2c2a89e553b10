//! claude's `--output-format stream-json`, one typed value per line.
//!
//! The shapes are those the real CLI prints (checked against Claude Code
//! 2.1.x, see `docs/agents.md`): a `system` line (`init` at the start,
//! `api_retry` while it retries the API), `assistant` lines (one per
//! content block: a message with a text and two tool calls is three lines
//! sharing one message id), `user` lines carrying tool results, at most one
//! final `result`, and `rate_limit_event` lines. Every field the reader
//! does not need is ignored and every field it does is optional, so a
//! newer CLI that adds or drops a field still parses; a line of another
//! type is [`Line::Other`].

use serde::Deserialize;
use serde_json::Value;

/// One line of stream-json.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// `system`: `init`, `api_retry`, `status`, ...
    System(SystemLine),
    /// `assistant`: one content block of a model message.
    Assistant(AssistantLine),
    /// `user`: tool results going back to the model.
    User(UserLine),
    /// `result`: how the run ended, its cost and usage.
    Result(ResultLine),
    /// `rate_limit_event`: the account's rate-limit state changed.
    RateLimitEvent(RateLimitLine),
    /// Any other type (`stream_event`, `tool_progress`, ...).
    #[serde(other)]
    Other,
}

impl Line {
    /// Parses one line; `None` for a line that is not a JSON object with a
    /// `type`.
    pub fn parse(text: &str) -> Option<Line> {
        let t = text.trim();
        if !t.starts_with('{') {
            return None;
        }
        serde_json::from_str(t).ok()
    }
}

/// A `system` line.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SystemLine {
    /// `init`, `api_retry`, `status`, `compact_boundary`, ...
    pub subtype: String,
    /// claude's session id (to `--resume`).
    pub session_id: Option<String>,
    /// The model, on `init`.
    pub model: Option<String>,
    /// The working directory, on `init`.
    pub cwd: Option<String>,
    /// The permission mode in force, on `init`.
    #[serde(rename = "permissionMode")]
    pub permission_mode: Option<String>,
    /// The CLI's version, on `init`.
    pub claude_code_version: Option<String>,
    /// On `api_retry`: this retry's number.
    pub attempt: Option<u32>,
    /// On `api_retry`: how many it will make.
    pub max_retries: Option<u32>,
    /// On `api_retry`: the wait before it, milliseconds.
    pub retry_delay_ms: Option<f64>,
    /// On `api_retry`: the HTTP status that failed.
    pub error_status: Option<u16>,
    /// On `api_retry`: the kind of error (`rate_limit`, `overloaded`, ...).
    pub error: Option<String>,
}

/// An `assistant` line.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AssistantLine {
    /// The message (or the part of it this line carries).
    pub message: Message,
    /// Set when a sub-agent (the Task tool) said this, not the main agent.
    pub parent_tool_use_id: Option<String>,
    /// claude's session id.
    pub session_id: Option<String>,
    /// Set on messages the CLI made up to report an API error
    /// (`rate_limit`, `server_error`, ...).
    pub error: Option<String>,
}

/// A model message.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Message {
    /// The message id: shared by every line of one message.
    pub id: Option<String>,
    /// The model; `<synthetic>` for messages the CLI made itself.
    pub model: Option<String>,
    /// Content blocks.
    pub content: Vec<Block>,
}

impl Message {
    /// Whether the CLI made this message up (to report an error) rather
    /// than the model saying it.
    pub fn is_synthetic(&self) -> bool {
        self.model.as_deref() == Some("<synthetic>")
    }
}

/// A content block of a model message.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// Text.
    Text {
        /// The text.
        #[serde(default)]
        text: String,
    },
    /// A tool call.
    ToolUse {
        /// Its id, answered by a tool result.
        #[serde(default)]
        id: String,
        /// The tool (`Write`, `Bash`, ...).
        #[serde(default)]
        name: String,
        /// Its input.
        #[serde(default)]
        input: Value,
    },
    /// Anything else (`thinking`, ...).
    #[serde(other)]
    Other,
}

/// A `user` line.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UserLine {
    /// The message.
    pub message: UserMessage,
    /// Set for a sub-agent's tool results.
    pub parent_tool_use_id: Option<String>,
}

/// A user message: plain text or blocks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UserMessage {
    /// Its content.
    pub content: UserContent,
}

/// The content of a user message.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum UserContent {
    /// Plain text.
    Text(String),
    /// Blocks.
    Blocks(Vec<UserBlock>),
}

impl Default for UserContent {
    fn default() -> Self {
        UserContent::Blocks(Vec::new())
    }
}

/// A block of a user message.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UserBlock {
    /// A tool's answer.
    ToolResult {
        /// The call it answers.
        #[serde(default)]
        tool_use_id: String,
        /// Text, or blocks with text.
        #[serde(default)]
        content: Value,
        /// Whether the tool failed (or was refused).
        #[serde(default)]
        is_error: bool,
    },
    /// Anything else.
    #[serde(other)]
    Other,
}

/// Text of a tool result's `content` (a string, or blocks with `text`).
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The final `result` line.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ResultLine {
    /// `success`, `error_max_turns`, `error_during_execution`, ...
    pub subtype: String,
    /// Whether the run failed (also set with subtype `success` when the
    /// API refused it).
    pub is_error: bool,
    /// The HTTP status of the API error that ended the run, if one did.
    pub api_error_status: Option<u16>,
    /// Wall time of the run, milliseconds.
    pub duration_ms: Option<u64>,
    /// claude's own count of turns.
    pub num_turns: Option<u32>,
    /// The final text (the answer, or the error).
    pub result: Option<String>,
    /// claude's session id.
    pub session_id: Option<String>,
    /// Cost of the run, US dollars.
    pub total_cost_usd: Option<f64>,
    /// Older CLIs' name for the cost.
    pub cost_usd: Option<f64>,
    /// Token counts of the run.
    pub usage: Option<TokenUsage>,
    /// Tool calls the permission mode refused.
    pub permission_denials: Vec<Denial>,
}

impl ResultLine {
    /// The run's cost, under either name.
    pub fn cost(&self) -> Option<f64> {
        self.total_cost_usd.or(self.cost_usd)
    }
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub struct TokenUsage {
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
}

/// A tool call that was refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Denial {
    /// The tool.
    pub tool_name: String,
    /// Its input (`file_path`, `command`, ...).
    pub tool_input: Value,
}

/// A `rate_limit_event` line.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RateLimitLine {
    /// The state.
    pub rate_limit_info: RateLimitInfo,
}

/// The account's rate-limit state.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RateLimitInfo {
    /// `allowed`, `allowed_warning` or `rejected`.
    pub status: String,
    /// When the limit resets, Unix seconds.
    #[serde(rename = "resetsAt")]
    pub resets_at: Option<i64>,
    /// Which limit: `five_hour`, `seven_day`, ...
    #[serde(rename = "rateLimitType")]
    pub rate_limit_type: Option<String>,
    /// How much of it is used, 0 to 1.
    pub utilization: Option<f64>,
}

/// The most telling piece of a tool call's input: the file it touches,
/// the command it runs, the pattern it looks for.
pub fn tool_target(name: &str, input: &Value) -> Option<String> {
    let field = |k: &str| input.get(k).and_then(Value::as_str).map(str::to_owned);
    match name {
        "Bash" => field("command"),
        "Write" | "Edit" | "MultiEdit" | "Read" | "NotebookEdit" => {
            field("file_path").or_else(|| field("notebook_path"))
        }
        "Grep" | "Glob" => field("pattern"),
        "WebFetch" => field("url"),
        "WebSearch" => field("query"),
        "Task" | "Agent" => field("description"),
        _ => input
            .as_object()
            .and_then(|o| o.values().find_map(Value::as_str))
            .map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_shapes_parse() {
        let init = r#"{"type":"system","subtype":"init","cwd":"/w","session_id":"s1","tools":["Bash"],"model":"claude-opus-4-8[1m]","permissionMode":"acceptEdits","claude_code_version":"2.1.197"}"#;
        match Line::parse(init) {
            Some(Line::System(s)) => {
                assert_eq!(s.subtype, "init");
                assert_eq!(s.permission_mode.as_deref(), Some("acceptEdits"));
                assert_eq!(s.session_id.as_deref(), Some("s1"));
            }
            other => panic!("{other:?}"),
        }
        let tool = r#"{"type":"assistant","message":{"id":"msg_0","model":"m","content":[{"type":"tool_use","id":"toolu_1","name":"Write","input":{"file_path":"a.txt","content":"x"}}]},"parent_tool_use_id":null,"session_id":"s1"}"#;
        match Line::parse(tool) {
            Some(Line::Assistant(a)) => match &a.message.content[..] {
                [Block::ToolUse { name, input, .. }] => {
                    assert_eq!(name, "Write");
                    assert_eq!(tool_target(name, input).as_deref(), Some("a.txt"));
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        let result = r#"{"type":"user","message":{"role":"user","content":[{"type":"tool_result","content":"Exit code 3\nout","is_error":true,"tool_use_id":"toolu_0"}]},"tool_use_result":"Error: Exit code 3"}"#;
        match Line::parse(result) {
            Some(Line::User(u)) => match &u.message.content {
                UserContent::Blocks(b) => match &b[..] {
                    [UserBlock::ToolResult {
                        content, is_error, ..
                    }] => {
                        assert!(*is_error);
                        assert_eq!(content_text(content), "Exit code 3\nout");
                    }
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        let end = r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"num_turns":1,"result":"API Error: Request rejected (429)","session_id":"s1","total_cost_usd":0,"usage":{"input_tokens":0,"output_tokens":0},"permission_denials":[{"tool_name":"Bash","tool_use_id":"t","tool_input":{"command":"curl x"}}]}"#;
        match Line::parse(end) {
            Some(Line::Result(r)) => {
                assert_eq!(r.api_error_status, Some(429));
                assert_eq!(r.permission_denials[0].tool_name, "Bash");
                assert_eq!(r.cost(), Some(0.0));
            }
            other => panic!("{other:?}"),
        }
        let rl = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1796290911,"rateLimitType":"five_hour","isUsingOverage":false}}"#;
        match Line::parse(rl) {
            Some(Line::RateLimitEvent(e)) => {
                assert_eq!(e.rate_limit_info.resets_at, Some(1_796_290_911));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Line::parse(r#"{"type":"stream_event","event":{}}"#),
            Some(Line::Other)
        ));
        assert!(Line::parse("warning: not json").is_none());
        assert!(Line::parse(r#"{"no_type":1}"#).is_none());
    }
}
