//! Every session file is named and read by the contract crate
//! (`orch-session`): the commands (`orch-cli`), the readers
//! (`orch-readers`) and the binaries call `SessionDir`'s methods and the
//! contract's readers, and never join a path into a session or spell a
//! session file's name themselves. This test reads their sources and fails
//! naming `file:line` for each raw session path it finds.
//!
//! What it looks for, outside comments and test modules (tests may and
//! should read the raw files, to check the format on disk):
//!
//! - `name constant`: a name constant of `crates/session/src/layout.rs`
//!   (`LOGS_DIR`, `RESULTS_JOURNAL`...), which only makes sense to join;
//! - `session dir in a string`: a string with `<dir>/` for a session
//!   directory (`"results/"`, `"logs/{task}.log"`);
//! - `session file in a string`: a string with the name of a session file
//!   (`"aggregate.json"`, `"results.jsonl"`...) or a session file suffix
//!   (`.jsonl`, `.active`, `.prompt`, `.progress`, `.feedback`);
//! - `join of a session name`: `.join("results")` and the like;
//! - `join on .path()`: `x.path().join(..)`, how a `SessionDir` is escaped;
//! - `join below a session dir`: `dir.status_dir().join(..)` and the like;
//! - `lock named outside the contract`: `dir.named_lock("tick")`, a lock
//!   file's name spelled where it is used;
//! - `result written outside a Claim`: a call of the result store's
//!   writers (`store::write_result`, `archive_attempt`, ...): a command
//!   records a result only through the `Claim` that holds the task
//!   (`finish`, `retry`), and resets one only through `retry::run`.
//!
//! The names come from `layout.rs` itself, so a directory or file added
//! there is checked from then on. [`ALLOWED`] lists the few lines that
//! match but are not session paths, each with why.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Lines that match a rule but build no session path: (file, text the
/// line holds, why). An entry that no longer matches anything fails the
/// test too, so the list cannot go stale.
const ALLOWED: &[(&str, &str, &str)] = &[
    (
        "crates/cli/src/aggregate.rs",
        "const AFTER_HELP: &str",
        "help text: says where the report is kept",
    ),
    (
        "crates/cli/src/monitor.rs",
        "const AFTER_HELP: &str",
        "help text: says which files the report reads",
    ),
    (
        "crates/cli/src/sync.rs",
        "const CLEANUP_HELP: &str",
        "help text: names the lock that keeps a worktree",
    ),
    (
        "crates/cli/src/worker.rs",
        "const AFTER_HELP: &str",
        "help text: `tail -f .../logs/run.log`, where output goes",
    ),
    (
        "crates/cli/src/aggregate/render.rs",
        "(see --json or aggregate.json)",
        "a line of the report shown to people",
    ),
    (
        "crates/cli/src/monitor/text.rs",
        "Recent events (logs/run.log)",
        "a heading of the report shown to people",
    ),
    (
        "crates/cli/src/worker/slurm.rs",
        "The job id is recorded in slurm/jobs.json",
        "a comment of the sbatch script, for people",
    ),
    (
        "crates/cli/src/git/backup.rs",
        "recorded in session.json",
        "a warning shown to people",
    ),
    (
        "crates/cli/src/git.rs",
        r#"e.contains("worktrees/")"#,
        "git's own `.git/worktrees/`, in a git error message",
    ),
    (
        "crates/cli/src/plan.rs",
        r#".filter(|e| e.path().join("README.md").is_file())"#,
        "an entry of a prompts folder, not a session",
    ),
];

/// Session file suffixes that are not spelled by a layout constant.
const SUFFIXES: &[&str] = &[".jsonl", ".active", ".prompt", ".progress", ".feedback"];

/// The result store's writers (`crates/session/src/store.rs`).
const RESULT_WRITERS: &[&str] = &[
    "write_result",
    "archive_attempt",
    "archive_result",
    "archive_result_to",
    "archive_unreadable_result",
];

/// Where raw session paths must not be.
const SCANNED: &[&str] = &["crates/cli/src", "crates/readers/src", "bin"];

/// The names the contract owns, read from `layout.rs`.
struct Names {
    /// `pub const NAME: &str` constants.
    constants: Vec<String>,
    /// Values of the `*_DIR` constants: session directories.
    dirs: Vec<String>,
    /// Values with a dot, not leading: session files.
    files: Vec<String>,
    /// `SessionDir` methods named `*_dir`.
    dir_methods: Vec<String>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn layout_names() -> Names {
    let text = fs::read_to_string(repo().join("crates/session/src/layout.rs")).unwrap();
    let mut names = Names {
        constants: Vec::new(),
        dirs: Vec::new(),
        files: Vec::new(),
        dir_methods: Vec::new(),
    };
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("pub const ") {
            let Some((name, rest)) = rest.split_once(": &str = \"") else {
                continue;
            };
            let Some(value) = rest.strip_suffix("\";") else {
                continue;
            };
            names.constants.push(name.to_owned());
            if name.ends_with("_DIR") {
                names.dirs.push(value.to_owned());
            } else if value.contains('.') && !value.starts_with('.') {
                names.files.push(value.to_owned());
            }
        } else if let Some(rest) = line.strip_prefix("pub fn ") {
            if let Some((name, _)) = rest.split_once("(&self") {
                if name.ends_with("_dir") {
                    names.dir_methods.push(name.to_owned());
                }
            }
        }
    }
    assert!(
        names.constants.len() > 20 && names.dirs.len() > 10 && names.dir_methods.len() > 5,
        "layout.rs no longer reads as expected; update this test"
    );
    names
}

/// A source file split into code (strings and comments blanked, newlines
/// kept, so offsets and lines stay) and its string literals.
struct Lexed {
    code: Vec<char>,
    /// (offset of the opening quote, contents).
    strings: Vec<(usize, String)>,
}

fn lex(src: &str) -> Lexed {
    let s: Vec<char> = src.chars().collect();
    let mut code = s.clone();
    let mut strings = Vec::new();
    let blank = |code: &mut Vec<char>, from: usize, to: usize| {
        for c in &mut code[from..to] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let next = s.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            let end = s[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(s.len(), |k| i + k);
            blank(&mut code, i, end);
            i = end;
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            let mut j = i;
            while j < s.len() {
                if s[j] == '/' && s.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if s[j] == '*' && s.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut code, i, j.min(s.len()));
            i = j;
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && starts_token(&s, i) {
            // A raw string: r"..." or r#"..."#.
            let hashes = s[i + 1..].iter().take_while(|&&c| c == '#').count();
            let open = i + 1 + hashes;
            if s.get(open) != Some(&'"') {
                i += 1;
                continue;
            }
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let rest: String = s[open + 1..].iter().collect();
            let len = rest
                .find(&close)
                .map_or(rest.len(), |k| rest[..k].chars().count());
            strings.push((i, s[open + 1..open + 1 + len].iter().collect()));
            let end = (open + 1 + len + 1 + hashes).min(s.len());
            blank(&mut code, i, end);
            i = end;
        } else if c == '"' {
            let mut j = i + 1;
            let mut text = String::new();
            while j < s.len() && s[j] != '"' {
                if s[j] == '\\' && j + 1 < s.len() {
                    text.push(s[j]);
                    j += 1;
                }
                text.push(s[j]);
                j += 1;
            }
            strings.push((i, text));
            blank(&mut code, i, (j + 1).min(s.len()));
            i = j + 1;
        } else if c == '\'' {
            // A char literal ('a', '\n', '"'), or a lifetime ('a).
            if next == Some('\\') {
                let end = s[(i + 3).min(s.len())..]
                    .iter()
                    .position(|&c| c == '\'')
                    .map_or(s.len(), |k| i + 3 + k + 1);
                blank(&mut code, i, end);
                i = end;
            } else if s.get(i + 2) == Some(&'\'') {
                blank(&mut code, i, i + 3);
                i += 3;
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    Lexed { code, strings }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether the `r` at `i` starts a raw string (`r"`, `br"`), not ends a
/// word.
fn starts_token(s: &[char], i: usize) -> bool {
    match i.checked_sub(1).map(|k| s[k]) {
        None => true,
        Some('b') => i < 2 || !is_word(s[i - 2]),
        Some(c) => !is_word(c),
    }
}

/// Offsets of the test modules' bodies (`#[cfg(test)] mod x { ... }`),
/// and the files of test modules declared out of line (`mod x;`).
fn test_parts(code: &[char]) -> (Vec<(usize, usize)>, Vec<String>) {
    let text: String = code.iter().collect();
    let mut spans = Vec::new();
    let mut files = Vec::new();
    let mut from = 0;
    while let Some(k) = text[from..].find("#[cfg(test)]") {
        let at = from + k;
        let after = text[at + "#[cfg(test)]".len()..].trim_start();
        from = at + 1;
        let Some(rest) = after
            .strip_prefix("mod ")
            .or_else(|| after.strip_prefix("pub mod "))
        else {
            continue;
        };
        let name: String = rest.chars().take_while(|&c| is_word(c)).collect();
        let rest = rest[name.len()..].trim_start();
        if rest.starts_with(';') {
            files.push(name);
            continue;
        }
        // Byte offsets in `text` to char offsets in `code`.
        let Some(open_byte) = text[at..].find('{').map(|k| at + k) else {
            continue;
        };
        let open = text[..open_byte].chars().count();
        let mut depth = 0;
        let mut end = code.len();
        for (j, &c) in code.iter().enumerate().skip(open) {
            if c == '{' {
                depth += 1;
            } else if c == '}' {
                depth -= 1;
                if depth == 0 {
                    end = j;
                    break;
                }
            }
        }
        spans.push((text[..at].chars().count(), end));
    }
    (spans, files)
}

/// One raw session path: line (from 1), rule.
type Finding = (usize, &'static str);

fn scan(file: &str, src: &str, names: &Names) -> (Vec<Finding>, Vec<String>) {
    let lexed = lex(src);
    // A file this small lexer misreads (a string taken for code or the
    // other way round) shows as unbalanced braces: better to fail than to
    // miss what the misread part holds.
    let depth = lexed.code.iter().fold(0i64, |d, &c| match c {
        '{' => d + 1,
        '}' => d - 1,
        _ => d,
    });
    assert_eq!(depth, 0, "tests/e2e/contract.rs misreads {file}");
    let (tests, test_files) = test_parts(&lexed.code);
    let in_test = |at: usize| tests.iter().any(|&(a, b)| a <= at && at <= b);
    let line_of = |at: usize| lexed.code[..at].iter().filter(|&&c| c == '\n').count() + 1;
    let code = &lexed.code;
    let mut found = Vec::new();

    // Words of the code.
    let mut i = 0;
    while i < code.len() {
        if is_word(code[i]) && (i == 0 || !is_word(code[i - 1])) {
            let word: String = code[i..].iter().take_while(|&&c| is_word(c)).collect();
            if names.constants.contains(&word) && !in_test(i) {
                found.push((line_of(i), "name constant"));
            }
            if RESULT_WRITERS.contains(&word.as_str()) && !in_test(i) {
                found.push((line_of(i), "result written outside a Claim"));
            }
            i += word.chars().count();
        } else {
            i += 1;
        }
    }

    // The strings.
    let bounded = |text: &str, name: &str| {
        let mut from = 0;
        while let Some(k) = text[from..].find(name) {
            let at = from + k;
            let before = text[..at].chars().next_back();
            if before.is_none_or(|c| !(is_word(c) || c == '-' || c == '.')) {
                return true;
            }
            from = at + 1;
        }
        false
    };
    for (at, text) in &lexed.strings {
        if in_test(*at) {
            continue;
        }
        if names.dirs.iter().any(|d| bounded(text, &format!("{d}/"))) {
            found.push((line_of(*at), "session dir in a string"));
        }
        if names.files.iter().any(|f| bounded(text, f)) || SUFFIXES.iter().any(|x| text.contains(x))
        {
            found.push((line_of(*at), "session file in a string"));
        }
        let whole_name = names.dirs.iter().chain(&names.files).any(|n| n == text);
        let before: String = code[..*at]
            .iter()
            .rev()
            .filter(|c| !c.is_whitespace())
            .take(".join(".len())
            .collect();
        if whole_name && before == "(nioj." {
            found.push((line_of(*at), "join of a session name"));
        }
    }

    // Joins: on `.path()`, and below a session directory.
    let squeezed: Vec<(usize, char)> = code
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, c)| !c.is_whitespace())
        .collect();
    let flat: String = squeezed.iter().map(|&(_, c)| c).collect();
    let offset = |byte: usize| squeezed[flat[..byte].chars().count()].0;
    for (call, rule) in [
        (".path().join(", "join on .path()"),
        (".named_lock(", "lock named outside the contract"),
    ] {
        let mut from = 0;
        while let Some(k) = flat[from..].find(call) {
            let at = offset(from + k);
            if !in_test(at) {
                found.push((line_of(at), rule));
            }
            from += k + 1;
        }
    }
    for m in &names.dir_methods {
        let call = format!(".{m}(");
        let mut from = 0;
        while let Some(k) = flat[from..].find(&call) {
            let open = from + k + call.len() - 1;
            let mut depth = 0;
            let mut close = None;
            for (j, c) in flat[open..].char_indices() {
                if c == '(' {
                    depth += 1;
                } else if c == ')' {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(open + j);
                        break;
                    }
                }
            }
            if let Some(close) = close {
                let at = offset(from + k);
                if flat[close + 1..].starts_with(".join(") && !in_test(at) {
                    found.push((line_of(at), "join below a session dir"));
                }
            }
            from += k + 1;
        }
    }
    found.sort_unstable();
    found.dedup();
    (found, test_files)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Raw session paths in the files under `SCANNED`, as `file:line: rule:
/// text`, with the allow-list entries that were not needed.
fn raw_session_paths() -> (Vec<String>, Vec<String>) {
    let names = layout_names();
    let root = repo();
    let mut files = Vec::new();
    for d in SCANNED {
        rust_files(&root.join(d), &mut files);
    }
    let mut results = Vec::new();
    let mut test_only = BTreeSet::new();
    for f in &files {
        let src = fs::read_to_string(f).unwrap();
        let (found, test_files) = scan(&f.to_string_lossy(), &src, &names);
        let dir = f.parent().unwrap();
        for name in test_files {
            test_only.insert(dir.join(format!("{name}.rs")));
            let stem = f.file_stem().unwrap();
            test_only.insert(dir.join(stem).join(format!("{name}.rs")));
        }
        results.push((f.clone(), src, found));
    }
    let mut used = vec![false; ALLOWED.len()];
    let mut bad = Vec::new();
    for (f, src, found) in results {
        if test_only.contains(&f) {
            continue;
        }
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let lines: Vec<&str> = src.lines().collect();
        for (line, rule) in found {
            let text = lines.get(line - 1).copied().unwrap_or("").trim();
            let allowed = ALLOWED
                .iter()
                .position(|(file, fragment, _)| *file == rel && text.contains(fragment));
            match allowed {
                Some(k) => used[k] = true,
                None => bad.push(format!("{rel}:{line}: {rule}: {text}")),
            }
        }
    }
    let stale = ALLOWED
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|((file, fragment, _), _)| format!("{file}: {fragment}"))
        .collect();
    (bad, stale)
}

#[test]
fn no_session_path_is_built_outside_the_contract() {
    let (bad, stale) = raw_session_paths();
    assert!(
        bad.is_empty(),
        "raw session paths outside orch-session (name the file with a \
         `SessionDir` method, read it with the contract's reader, or add \
         a line to ALLOWED in tests/e2e/contract.rs if it is no session \
         path):\n{}",
        bad.join("\n")
    );
    assert!(
        stale.is_empty(),
        "entries of ALLOWED in tests/e2e/contract.rs match nothing any more; remove them:\n{}",
        stale.join("\n")
    );
}

#[test]
fn the_check_finds_what_it_is_meant_to() {
    let names = layout_names();
    let planted = r#"
fn f(dir: &SessionDir, task: &str) {
    let a = dir.path().join("results");
    let b = dir.status_dir()
        .join("mark-done.tmp");
    let c = dir.path().join(layout::RESULTS_DIR);
    let d = format!("logs/{task}.log");
    let e = format!("{task}.progress");
    let f = "aggregate.json";
    // a comment may say logs/run.log and dir.path().join("results")
    let g = "catalogs/ and a `status` word are fine";
    let h = 'x';
    let i = dir.named_lock("tick");
    store::write_result(dir, &r);
}

#[cfg(test)]
mod tests {
    fn t(dir: &Path) {
        let raw = dir.join("results/a.json");
    }
}
"#;
    let (found, _) = scan("planted", planted, &names);
    assert_eq!(
        found,
        [
            (3, "join of a session name"),
            (3, "join on .path()"),
            (4, "join below a session dir"),
            (5, "join of a session name"),
            (5, "session file in a string"),
            (6, "join on .path()"),
            (6, "name constant"),
            (7, "session dir in a string"),
            (8, "session file in a string"),
            (9, "session file in a string"),
            (13, "lock named outside the contract"),
            (14, "result written outside a Claim"),
        ]
    );
}
