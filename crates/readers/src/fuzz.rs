//! Fuzzing every reader of input people write (plan files, ROADMAPs, prompt
//! files): no input may panic, and every error must name its file (and a
//! line within it). The session files' own parsers are fuzzed in
//! `orch-session`.
//!
//! Cases per property: `PROPTEST_CASES` (default 256; `scripts/torture.sh`
//! runs 20,000). Each property also mutates a valid document byte by byte,
//! so most inputs are near-misses, the inputs parsers get wrong.

use std::path::Path;

use proptest::prelude::*;

use orch_session::plan::Settings;

use crate::{parse_plan, PlanSource};

const PLAN: &str = r#"name = "demo"
agents = 4
timeout = "30m"
[checkpoint.c]
expect = ["a"]
[resource.gpu]
capacity = 2
rate_limit = "5/s"
[template]
max_rounds = 2
[[template.phase]]
name = "work"
[[template.phase]]
name = "gate"
gate = true
command = "true"
threshold = ">= 85"
[[task]]
id = "a"
command = "echo a"
[[task]]
id = "b"
prompt = "do b"
after = ["a", "checkpoint:c"]
resources = ["gpu"]
estimate = "1m"
"#;

const ROADMAP: &str = "# Roadmap\n\n### **Group A: Core** **[DONE]**\n\n1. **Track 1: Base** ✅\n   - `src/a.rs` - x\n\n### **Group B: Next** **[IN PROGRESS]**\n**Prerequisites:** Group A complete\n\n1. **Track 1: One**\n   - `src/b.rs` - y\n2. **Track 2: Two**\n   - Depends on: Track 1\n\n## Group C: Later\nStatus: pending\n### Track 1: Three\n- z\n";

/// A valid document with a few bytes changed, inserted or removed.
fn mutated(doc: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec((0usize..doc.len().max(1), any::<u8>(), 0u8..3), 1..8).prop_map(
        move |edits| {
            let mut bytes = doc.as_bytes().to_vec();
            for (pos, b, kind) in edits {
                let at = pos.min(bytes.len());
                match kind {
                    0 if at < bytes.len() => bytes[at] = b,
                    1 => bytes.insert(at, b),
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        },
    )
}

fn check_plan(text: &str, file: &str) {
    let path = Path::new(file);
    if let Err(d) = parse_plan(PlanSource { path, text }, None) {
        assert_eq!(d.file, path);
        if let Some(l) = d.line {
            assert!(
                l >= 1 && l <= text.lines().count().max(1) + 1,
                "line {l} outside the file"
            );
        }
        assert!(!d.message.is_empty());
    }
}

proptest! {
    #[test]
    fn toml_plans_never_panic(text in "\\PC*") {
        check_plan(&text, "plan.toml");
    }

    #[test]
    fn mutated_toml_plans_never_panic(text in mutated(PLAN)) {
        check_plan(&text, "plan.toml");
    }

    #[test]
    fn json_plans_never_panic(text in "\\PC*") {
        check_plan(&text, "plan.json");
    }

    #[test]
    fn mutated_json_plans_never_panic(text in mutated(r#"{"name": "x", "tasks": [{"id": "a", "command": "true"}, {"id": "b", "prompt": "p", "after": ["a"], "timeout": "5m"}]}"#)) {
        check_plan(&text, "plan.json");
    }

    #[test]
    fn roadmaps_never_panic(text in mutated(ROADMAP)) {
        let path = Path::new("ROADMAP.md");
        match crate::roadmap::parse_roadmap(path, &text) {
            Ok(r) => {
                let _ = r.select(crate::roadmap::Selection::All, &Settings::default());
                let _ = r.select(crate::roadmap::Selection::Current, &Settings::default());
            }
            Err(d) => prop_assert_eq!(d.file.as_path(), path),
        }
    }

    #[test]
    fn arbitrary_roadmaps_never_panic(text in "\\PC*") {
        let _ = crate::roadmap::parse_roadmap(Path::new("R.md"), &text);
    }

    #[test]
    fn prompt_files_never_panic(text in "\\PC*") {
        let input = crate::prompts::PromptInput { path: Path::new("prompts/a.md"), text: &text };
        let _ = crate::prompts::plan_prompts(&[input], &Settings::default(), &|_| None);
    }
}
