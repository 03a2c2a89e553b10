//! The agents orch knows: one table of presets, and how a plan's `agent`,
//! `format`, `permission_mode` and `allowed_tools` become the argv a
//! worker runs.
//!
//! The argv is resolved once, by `orch-plan`, and stored whole in
//! `session.json`, so what runs is what the session says. How the agent's
//! output is read is chosen by the preset or by `format`, never by the
//! program's name: a wrapper script around claude reads like claude.

use serde::{Deserialize, Serialize};

/// How an agent's output is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentFormat {
    /// Lines of text: logged as they come.
    #[default]
    #[serde(rename = "text")]
    Text,
    /// claude's `--output-format stream-json`: typed lines giving turns,
    /// tool calls, cost, limits and a session id to resume.
    #[serde(rename = "claude-stream-json")]
    ClaudeStreamJson,
}

impl AgentFormat {
    /// The name used in plans.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentFormat::Text => "text",
            AgentFormat::ClaudeStreamJson => "claude-stream-json",
        }
    }

    /// Parses a plan's `format`.
    pub fn parse(s: &str) -> Option<AgentFormat> {
        match s {
            "text" => Some(AgentFormat::Text),
            "claude-stream-json" | "stream-json" => Some(AgentFormat::ClaudeStreamJson),
            _ => None,
        }
    }

    /// The format an argv asks for: claude's `--output-format stream-json`
    /// (either spelling) means stream-json, anything else text.
    pub fn of_argv(argv: &[String]) -> AgentFormat {
        let flag = argv
            .windows(2)
            .any(|w| w[0] == "--output-format" && w[1] == "stream-json")
            || argv.iter().any(|a| a == "--output-format=stream-json");
        if flag {
            AgentFormat::ClaudeStreamJson
        } else {
            AgentFormat::Text
        }
    }
}

/// A known agent.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    /// Its name in plans (`agent = "claude"`).
    pub name: &'static str,
    /// Its argv template.
    pub argv: &'static [&'static str],
    /// How its output is read.
    pub format: AgentFormat,
    /// How to install it, for the error when it is missing.
    pub install: &'static str,
}

/// Every preset; the first is the default.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "claude",
        argv: &[
            "claude",
            "-p",
            "{prompt}",
            "--output-format",
            "stream-json",
            "--verbose",
        ],
        format: AgentFormat::ClaudeStreamJson,
        install: "npm install -g @anthropic-ai/claude-code",
    },
    Preset {
        name: "codex",
        argv: &["codex", "exec", "{prompt}"],
        format: AgentFormat::Text,
        install: "npm install -g @openai/codex",
    },
    Preset {
        name: "aider",
        argv: &["aider", "--yes-always", "--message", "{prompt}"],
        format: AgentFormat::Text,
        install: "python3 -m pip install aider-install && aider-install",
    },
    Preset {
        name: "gemini",
        argv: &["gemini", "-p", "{prompt}"],
        format: AgentFormat::Text,
        install: "npm install -g @google/gemini-cli",
    },
];

/// The preset called `name`.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The preset whose program `argv` runs, if any (for the install hint).
pub fn preset_of(argv: &[String]) -> Option<&'static Preset> {
    let prog = argv.first()?;
    let base = std::path::Path::new(prog).file_name()?.to_str()?;
    PRESETS.iter().find(|p| p.argv[0] == base)
}

/// claude's permission modes (`claude --help`).
pub const PERMISSION_MODES: &[&str] = &[
    "acceptEdits",
    "auto",
    "bypassPermissions",
    "default",
    "dontAsk",
    "plan",
];

/// The permission mode a headless claude gets unless the plan says
/// otherwise: edits are allowed (`-p` cannot ask), other tools follow
/// claude's own rules.
pub const DEFAULT_PERMISSION_MODE: &str = "acceptEdits";

/// What a plan says about its agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentSpec {
    /// A preset name or an argv template (`None`: the default preset).
    pub agent: Option<Vec<String>>,
    /// `format`.
    pub format: Option<AgentFormat>,
    /// `permission_mode`.
    pub permission_mode: Option<String>,
    /// `allowed_tools`.
    pub allowed_tools: Vec<String>,
}

/// The agent a session runs, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedAgent {
    /// The argv template, with claude's permission flags in place.
    pub argv: Vec<String>,
    /// How its output is read.
    pub format: AgentFormat,
    /// The permission mode given to claude (claude-stream-json agents).
    pub permission_mode: Option<String>,
}

/// Resolves a plan's agent settings. Errors are messages for the plan's
/// author, naming the setting.
pub fn resolve(spec: &AgentSpec) -> Result<ResolvedAgent, String> {
    let (mut argv, preset_format) = match spec.agent.as_deref() {
        None => (owned(PRESETS[0].argv), Some(PRESETS[0].format)),
        Some([]) => return Err("`agent` is empty".to_owned()),
        Some([one]) if preset(one).is_some() => {
            let p = preset(one).map_or(&PRESETS[0], |p| p);
            (owned(p.argv), Some(p.format))
        }
        Some(argv) => (argv.to_vec(), None),
    };
    if argv[0].is_empty() {
        return Err("`agent` starts with an empty program name".to_owned());
    }
    let format = spec
        .format
        .or(preset_format)
        .unwrap_or_else(|| AgentFormat::of_argv(&argv));
    if let Some(m) = &spec.permission_mode {
        if !PERMISSION_MODES.contains(&m.as_str()) {
            return Err(format!(
                "permission_mode = \"{m}\" is not one of claude's modes: {}",
                PERMISSION_MODES.join(", ")
            ));
        }
    }
    if format != AgentFormat::ClaudeStreamJson {
        if spec.permission_mode.is_some() || !spec.allowed_tools.is_empty() {
            return Err(format!(
                "permission_mode and allowed_tools are claude settings, but the agent `{}` is read as {} (set format = \"claude-stream-json\" if it runs claude)",
                argv[0],
                format.as_str()
            ));
        }
        return Ok(ResolvedAgent {
            argv,
            format,
            permission_mode: None,
        });
    }
    // claude -p cannot ask for a permission: without a mode every edit is
    // refused. A template that sets its own mode keeps it.
    let own_mode = argv.iter().any(|a| {
        a == "--permission-mode"
            || a.starts_with("--permission-mode=")
            || a == "--dangerously-skip-permissions"
    });
    let permission_mode = if own_mode {
        if spec.permission_mode.is_some() {
            return Err(
                "permission_mode is set twice: in the plan and in the agent's argv".to_owned(),
            );
        }
        argv.iter()
            .position(|a| a == "--permission-mode")
            .and_then(|i| argv.get(i + 1).cloned())
            .or_else(|| {
                argv.iter()
                    .find_map(|a| a.strip_prefix("--permission-mode=").map(str::to_owned))
            })
            .or_else(|| {
                argv.iter()
                    .any(|a| a == "--dangerously-skip-permissions")
                    .then(|| "bypassPermissions".to_owned())
            })
    } else {
        let m = spec
            .permission_mode
            .clone()
            .unwrap_or_else(|| DEFAULT_PERMISSION_MODE.to_owned());
        argv.push("--permission-mode".to_owned());
        argv.push(m.clone());
        Some(m)
    };
    if !spec.allowed_tools.is_empty() {
        // One argument: claude's list option would take a prompt placed
        // after it for one more tool.
        argv.push(format!("--allowedTools={}", spec.allowed_tools.join(",")));
    }
    Ok(ResolvedAgent {
        argv,
        format,
        permission_mode,
    })
}

/// The default agent: the first preset, headless.
pub fn default_agent() -> ResolvedAgent {
    let p = &PRESETS[0];
    let mut argv = owned(p.argv);
    argv.extend(owned(&["--permission-mode", DEFAULT_PERMISSION_MODE]));
    ResolvedAgent {
        argv,
        format: p.format,
        permission_mode: Some(DEFAULT_PERMISSION_MODE.to_owned()),
    }
}

fn owned(argv: &[&str]) -> Vec<String> {
    argv.iter().map(|s| (*s).to_owned()).collect()
}

/// Where `program` would be run from: itself if it has a slash, else the
/// first executable of that name on `path`.
pub fn find_program(program: &str, path: Option<&std::ffi::OsStr>) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = std::path::PathBuf::from(program);
        return runnable(&p).then_some(p);
    }
    std::env::split_paths(path?)
        .map(|d| d.join(program))
        .find(|p| runnable(p))
}

/// Why `argv`'s program cannot be run here, with what to do about it;
/// `None` when it is on the PATH (`path`).
pub fn missing_program(argv: &[String], path: Option<&std::ffi::OsStr>) -> Option<String> {
    let prog = argv.first()?;
    if find_program(prog, path).is_some() {
        return None;
    }
    let fix = match preset_of(argv) {
        Some(p) => format!(
            "install it ({}) or give its full path in `agent`",
            p.install
        ),
        None => "install it or give its full path in `agent`".to_owned(),
    };
    Some(if prog.contains('/') {
        format!("the agent program `{prog}` does not exist or is not executable; {fix}")
    } else {
        format!("the agent program `{prog}` is not on the PATH; {fix}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        owned(s)
    }

    #[test]
    fn the_default_preset_runs_headless() {
        let r = resolve(&AgentSpec::default()).expect("default");
        assert_eq!(r, default_agent());
        assert_eq!(r.format, AgentFormat::ClaudeStreamJson);
        assert_eq!(
            &r.argv[r.argv.len() - 2..],
            ["--permission-mode", "acceptEdits"]
        );
        assert_eq!(r.permission_mode.as_deref(), Some("acceptEdits"));
    }

    #[test]
    fn format_comes_from_the_preset_or_the_setting_not_the_name() {
        let codex = resolve(&AgentSpec {
            agent: Some(argv(&["codex"])),
            ..AgentSpec::default()
        })
        .expect("codex");
        assert_eq!(codex.format, AgentFormat::Text);
        // A wrapper around claude: told by `format`.
        let wrapper = resolve(&AgentSpec {
            agent: Some(argv(&["my-claude", "{prompt}"])),
            format: Some(AgentFormat::ClaudeStreamJson),
            allowed_tools: vec!["Bash(npm test:*)".to_owned(), "Edit".to_owned()],
            ..AgentSpec::default()
        })
        .expect("wrapper");
        assert_eq!(
            wrapper.argv,
            argv(&[
                "my-claude",
                "{prompt}",
                "--permission-mode",
                "acceptEdits",
                "--allowedTools=Bash(npm test:*),Edit"
            ])
        );
        // ... or by its own --output-format flag.
        let own = resolve(&AgentSpec {
            agent: Some(argv(&[
                "/opt/claude",
                "-p",
                "{prompt}",
                "--output-format=stream-json",
                "--dangerously-skip-permissions",
            ])),
            ..AgentSpec::default()
        })
        .expect("own");
        assert_eq!(own.format, AgentFormat::ClaudeStreamJson);
        assert_eq!(own.permission_mode.as_deref(), Some("bypassPermissions"));
        assert_eq!(own.argv.len(), 5, "its own mode is kept as it is");
        // A program merely named claude, printing text, stays text.
        let plain = resolve(&AgentSpec {
            agent: Some(argv(&["claude", "-p", "{prompt}"])),
            ..AgentSpec::default()
        })
        .expect("plain");
        assert_eq!(plain.format, AgentFormat::Text);
    }

    #[test]
    fn mistakes_are_named() {
        let bad_mode = resolve(&AgentSpec {
            permission_mode: Some("yolo".to_owned()),
            ..AgentSpec::default()
        });
        assert!(bad_mode.is_err_and(|e| e.contains("acceptEdits")));
        let not_claude = resolve(&AgentSpec {
            agent: Some(argv(&["aider"])),
            permission_mode: Some("plan".to_owned()),
            ..AgentSpec::default()
        });
        assert!(not_claude.is_err_and(|e| e.contains("claude settings")));
    }

    #[test]
    fn missing_programs_are_found_with_their_install_hint() {
        let dir = std::env::temp_dir();
        let path = Some(dir.as_os_str());
        let m = missing_program(&argv(&["claude"]), path).expect("missing");
        assert!(
            m.contains("npm install -g @anthropic-ai/claude-code"),
            "{m}"
        );
        assert!(missing_program(&argv(&["sh"]), Some("/bin:/usr/bin".as_ref())).is_none());
        assert!(missing_program(&argv(&["/no/such/agent"]), path).is_some());
    }
}
