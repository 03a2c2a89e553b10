//! Prompt files: each file given is one task whose prompt is the file's
//! content (seed 001's rule: only the files named, never a whole directory
//! unless asked).
//!
//! - A file whose first heading or a `Status:` line says IMPLEMENTED or
//!   COMPLETED is skipped, and said so.
//! - Its id comes from its file name (`prompts/01-Add Auth.md` becomes
//!   `01-add-auth`), the same on every run; names that collide get `-2`,
//!   `-3`... in the order of their paths, so the ids do not depend on the
//!   order the files were given in.
//! - A `Depends on:` line names other prompt files (by file name, with or
//!   without the extension) or task ids; they become dependencies.
//! - File paths in backticks (`` `src/auth.rs` ``) become the task's
//!   `files`, for conflict analysis.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::error::Diagnostic;
use crate::markdown::{self, Kind, Mark};
use crate::plan::{Action, Settings, SourcedTask, Task};

/// Words that mark a prompt file done in its title heading.
const HEADING_DONE_WORDS: &[&str] = &["implemented", "completed"];
/// Words that mark it done on a `Status:` line.
const STATUS_DONE_WORDS: &[&str] = &["implemented", "completed", "complete", "done", "finished"];
/// Longest id made from a file name.
const MAX_ID_LEN: usize = 100;

/// One prompt file as given.
#[derive(Debug, Clone, Copy)]
pub struct PromptInput<'a> {
    /// The path as given (shown in messages; its directory is where other
    /// prompt files named in `Depends on:` are looked for).
    pub path: &'a Path,
    /// Its content.
    pub text: &'a str,
}

/// A prompt file left out because it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// The id it would have had.
    pub id: String,
    /// Why: "its heading says IMPLEMENTED (line 1)".
    pub reason: String,
}

/// The tasks made from prompt files, and the files left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompts {
    /// One task per open file, in the order given.
    pub tasks: Vec<SourcedTask>,
    /// Files marked done.
    pub skipped: Vec<SkippedFile>,
}

/// The id a file name gives before collisions are resolved: the file
/// name without its extension, lowercased, every run of other characters
/// than letters, digits, `.`, `_` and `-` made one `-`.
pub fn base_id(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut id = String::with_capacity(stem.len());
    for c in stem.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            if !(c == '-' && id.ends_with('-')) {
                id.push(c);
            }
        } else if !id.ends_with('-') {
            id.push('-');
        }
    }
    let mut id = id.trim_matches(['-', '.']).to_owned();
    if id.len() > MAX_ID_LEN {
        id.truncate(MAX_ID_LEN);
        id = id.trim_end_matches(['-', '.']).to_owned();
    }
    if id.is_empty() {
        "prompt".to_owned()
    } else {
        id
    }
}

/// Ids for `paths`, unique and independent of their order: a file whose
/// base id is shared keeps it if its path sorts first, and the others get
/// the first free `-2`, `-3`...
pub fn assign_ids(paths: &[&Path]) -> Vec<String> {
    let bases: Vec<String> = paths.iter().map(|p| base_id(p)).collect();
    let mut order: Vec<usize> = (0..paths.len()).collect();
    order.sort_by(|&a, &b| paths[a].cmp(paths[b]).then(a.cmp(&b)));
    let mut taken: HashSet<String> = HashSet::new();
    let mut ids = vec![String::new(); paths.len()];
    // First every base id's first holder, so that a file really named
    // `x-2.md` keeps its name even when two `x.md` files collide.
    for &i in &order {
        if taken.insert(bases[i].clone()) {
            ids[i] = bases[i].clone();
        }
    }
    for &i in &order {
        if !ids[i].is_empty() {
            continue;
        }
        let mut n = 2;
        let id = loop {
            let candidate = format!("{}-{n}", bases[i]);
            if !taken.contains(&candidate) {
                break candidate;
            }
            n += 1;
        };
        taken.insert(id.clone());
        ids[i] = id;
    }
    ids
}

/// What one file says about itself.
struct Read {
    title: Option<String>,
    done: Option<String>,
    depends: Option<(String, usize)>,
    files: Vec<String>,
}

fn read(path: &Path, text: &str) -> Result<Read, Diagnostic> {
    let lines = markdown::lines(path, text)?;
    let mut r = Read {
        title: None,
        done: None,
        depends: None,
        files: Vec::new(),
    };
    let mut status_seen = None;
    for line in lines.iter().filter(|l| l.kind == Kind::Text) {
        if r.title.is_none() {
            if let Some((_, heading)) = markdown::heading(line.text) {
                let sc = markdown::scan_status(heading, HEADING_DONE_WORDS, false);
                if sc.marks.contains(&Mark::Done) {
                    r.done = Some(format!("its heading says it is done (line {})", line.no));
                }
                r.title = Some(sc.clean);
                continue;
            }
        }
        markdown::backtick_paths(line.text, &mut r.files);
        if markdown::indent(line.text) > 0 {
            continue;
        }
        match markdown::label(line.text, &["Status", "Depends on"]) {
            Some((0, value)) => {
                if let Some(first) = status_seen {
                    return Err(Diagnostic::new(
                        path,
                        format!("a second `Status:` line (the first is on line {first})"),
                    )
                    .line(Some(line.no))
                    .help("keep one"));
                }
                status_seen = Some(line.no);
                let scanned = markdown::scan_status(value, STATUS_DONE_WORDS, true);
                match scanned.status() {
                    Err(()) => {
                        return Err(Diagnostic::new(
                            path,
                            format!("status `{value}` says both done and in progress"),
                        )
                        .line(Some(line.no))
                        .help("write IMPLEMENTED when it is done, or remove the word"))
                    }
                    Ok(Some(Mark::Done)) => {
                        r.done = Some(format!("its status says `{value}` (line {})", line.no));
                    }
                    Ok(_) => {}
                }
            }
            Some((_, value)) => {
                if let Some((_, first)) = r.depends {
                    return Err(Diagnostic::new(
                        path,
                        format!("a second `Depends on:` line (the first is on line {first})"),
                    )
                    .line(Some(line.no))
                    .help("list every dependency on one line"));
                }
                r.depends = Some((value.to_owned(), line.no));
            }
            None => {}
        }
    }
    Ok(r)
}

/// The names a `Depends on:` value lists: `a.md, b.md and c`, markdown
/// links (their targets), backticks and quotes removed; `None` is empty.
fn dependency_names(value: &str) -> Vec<String> {
    // `[text](target)` -> `target`.
    let mut v = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](") else {
            break;
        };
        let Some(close) = rest[open + mid..].find(')') else {
            break;
        };
        v.push_str(&rest[..open]);
        v.push_str(&rest[open + mid + 2..open + mid + close]);
        rest = &rest[open + mid + close + 1..];
    }
    v.push_str(rest);
    let v = markdown::strip_parens(&v).replace(['`', '"', '*'], "");
    let trimmed = v.trim().trim_end_matches('.').to_ascii_lowercase();
    if matches!(trimmed.as_str(), "" | "none" | "-" | "n/a" | "nothing") {
        return Vec::new();
    }
    v.split([',', ';'])
        .flat_map(|part| part.split(" and "))
        .map(|s| s.trim().trim_end_matches('.').trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Makes tasks of prompt files. `lookup` reads a prompt file that was not
/// given but is named in a `Depends on:` line (next to the file naming
/// it), to learn whether it is done.
pub fn plan_prompts(
    inputs: &[PromptInput<'_>],
    settings: &Settings,
    lookup: &dyn Fn(&Path) -> Option<String>,
) -> Result<Prompts, Diagnostic> {
    let paths: Vec<&Path> = inputs.iter().map(|i| i.path).collect();
    let ids = assign_ids(&paths);
    let mut reads = Vec::with_capacity(inputs.len());
    for input in inputs {
        reads.push(read(input.path, input.text)?);
    }
    // Names another file may use for each given file.
    let mut names: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, input) in inputs.iter().enumerate() {
        let mut own = vec![ids[i].clone()];
        if let Some(f) = input.path.file_name() {
            own.push(f.to_string_lossy().into_owned());
        }
        if let Some(s) = input.path.file_stem() {
            own.push(s.to_string_lossy().into_owned());
        }
        own.dedup();
        for n in own {
            let v = names.entry(n).or_default();
            if !v.contains(&i) {
                v.push(i);
            }
        }
    }
    let mut tasks = Vec::new();
    let mut skipped = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let r = &reads[i];
        if let Some(reason) = &r.done {
            skipped.push(SkippedFile {
                path: input.path.to_path_buf(),
                id: ids[i].clone(),
                reason: reason.clone(),
            });
            continue;
        }
        if input.text.trim().is_empty() {
            return Err(Diagnostic::new(input.path, "the prompt file is empty")
                .help("write the prompt in it, or leave the file out"));
        }
        let mut after = Vec::new();
        let mut after_lines = Vec::new();
        if let Some((value, line)) = &r.depends {
            for name in dependency_names(value) {
                let diag = |m: String| Diagnostic::new(input.path, m).line(Some(*line));
                let key = Path::new(&name)
                    .file_name()
                    .map_or_else(|| name.clone(), |f| f.to_string_lossy().into_owned());
                match names.get(&key).map(Vec::as_slice) {
                    Some([j]) => {
                        if *j == i {
                            return Err(diag(format!("`{name}` is this file"))
                                .help("remove it from the `Depends on:` line"));
                        }
                        if reads[*j].done.is_none() && !after.contains(&ids[*j]) {
                            after.push(ids[*j].clone());
                            after_lines.push(Some(*line));
                        }
                    }
                    Some(many) => {
                        let which: Vec<String> = many
                            .iter()
                            .map(|&j| format!("`{}`", inputs[j].path.display()))
                            .collect();
                        return Err(
                            diag(format!("`{name}` could be any of {}", which.join(", ")))
                                .help("name the file by its id"),
                        );
                    }
                    None => {
                        let not_given = not_given(input.path, &name, lookup);
                        match not_given {
                            NotGiven::Done => {}
                            NotGiven::Open(p) => {
                                return Err(diag(format!(
                                    "depends on `{}`, which is neither given nor marked IMPLEMENTED",
                                    p.display()
                                ))
                                .help("give that file too, or mark it IMPLEMENTED when it is done"));
                            }
                            NotGiven::Missing => {
                                return Err(diag(format!(
                                    "depends on `{name}`, which is not a prompt file given"
                                ))
                                .help(
                                    "name a file given on the command line (or its id), or `None`",
                                ));
                            }
                        }
                    }
                }
            }
        }
        tasks.push(SourcedTask {
            task: Task {
                id: ids[i].clone(),
                title: r.title.clone().filter(|t| !t.is_empty()),
                action: Action::Prompt(input.text.trim_end().to_owned()),
                after,
                files: r.files.clone(),
                resources: Vec::new(),
                estimate_ms: None,
                timeout_ms: settings.timeout_ms,
                retries: settings.retries,
                env: Default::default(),
                cwd: None,
                compete: None,
                phases: true,
                worktree: None,
                group: None,
                line: None,
                wave: 0,
                priority: 0,
            },
            file: input.path.to_path_buf(),
            after_lines,
        });
    }
    Ok(Prompts { tasks, skipped })
}

enum NotGiven {
    Done,
    Open(PathBuf),
    Missing,
}

/// A file named in `Depends on:` but not given: done, open, or absent.
fn not_given(from: &Path, name: &str, lookup: &dyn Fn(&Path) -> Option<String>) -> NotGiven {
    let dir = from.parent().unwrap_or(Path::new(""));
    let mut candidates = vec![dir.join(name)];
    if Path::new(name).extension().is_none() {
        candidates.push(dir.join(format!("{name}.md")));
    }
    for p in candidates {
        if let Some(text) = lookup(&p) {
            return match read(&p, &text) {
                Ok(r) if r.done.is_some() => NotGiven::Done,
                _ => NotGiven::Open(p),
            };
        }
    }
    NotGiven::Missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &Path) -> Option<String> {
        None
    }

    fn plan(files: &[(&str, &str)]) -> Result<Prompts, Diagnostic> {
        let paths: Vec<PathBuf> = files.iter().map(|(p, _)| PathBuf::from(p)).collect();
        let inputs: Vec<PromptInput<'_>> = files
            .iter()
            .zip(&paths)
            .map(|((_, text), path)| PromptInput { path, text })
            .collect();
        plan_prompts(&inputs, &Settings::default(), &none)
    }

    #[test]
    fn ids_come_from_file_names() {
        for (path, id) in [
            ("prompts/01-Add Auth.md", "01-add-auth"),
            ("fix_import--bug.md", "fix_import-bug"),
            ("Über Café!.md", "ber-caf"),
            ("-rf.md", "rf"),
            ("...md", "prompt"),
            ("a.b.c.md", "a.b.c"),
        ] {
            let id_ = base_id(Path::new(path));
            assert_eq!(id_, id, "{path}");
            crate::layout::check_name("task id", &id_).unwrap();
        }
        let long = format!("{}.md", "x".repeat(300));
        assert_eq!(base_id(Path::new(&long)).len(), MAX_ID_LEN);
    }

    #[test]
    fn colliding_ids_are_unique_whatever_the_order() {
        let a = Path::new("p/Add Auth.md");
        let b = Path::new("p/add-auth.md");
        let c = Path::new("q/add auth.md");
        let d = Path::new("p/add-auth-2.md");
        let one = assign_ids(&[a, b, c, d]);
        let two = assign_ids(&[d, c, b, a]);
        assert_eq!(one, ["add-auth", "add-auth-3", "add-auth-4", "add-auth-2"]);
        assert_eq!(two, ["add-auth-2", "add-auth-4", "add-auth-3", "add-auth"]);
    }

    #[test]
    fn implemented_files_are_skipped() {
        let p = plan(&[
            ("p/a.md", "# Add auth (IMPLEMENTED)\nDo it.\n"),
            ("p/b.md", "# Add search\n\n**Status**: ✅ Completed\n"),
            ("p/c.md", "---\nstatus: implemented\n---\n# Add billing\n"),
            ("p/d.md", "# Fix the not-implemented error\nStatus: not implemented yet\n"),
            ("p/e.md", "# Completed-orders view\nStatus: Partially implemented\n"),
            ("p/f.md", "# Export\n## Phase 1 (COMPLETED)\n```\nStatus: IMPLEMENTED\n```\n  - Status: done\n"),
        ])
        .unwrap();
        let skipped: Vec<(&str, &str)> = p
            .skipped
            .iter()
            .map(|s| (s.id.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(
            skipped,
            [
                ("a", "its heading says it is done (line 1)"),
                ("b", "its status says `✅ Completed` (line 3)"),
                ("c", "its status says `implemented` (line 2)"),
            ]
        );
        let ids: Vec<&str> = p.tasks.iter().map(|t| t.task.id.as_str()).collect();
        assert_eq!(ids, ["d", "e", "f"]);
        assert_eq!(
            p.tasks[0].task.title.as_deref(),
            Some("Fix the not-implemented error")
        );
    }

    #[test]
    fn dependencies_and_files() {
        let p = plan(&[
            (
                "prompts/01-schema.md",
                "# Schema\nTouch `db/schema.sql` and `src/db/`.\n",
            ),
            (
                "prompts/02-api.md",
                "# API\nDepends on: 01-schema.md\n- edit `src/api.rs`\n",
            ),
            (
                "prompts/03-Docs.md",
                "# Docs\n**Depends on:** [the API](02-api.md), `01-schema` and 03-docs-x\n",
            ),
            ("prompts/03-docs-x.md", "# X\nDepends on: None\n"),
        ])
        .unwrap();
        let t = |i: usize| &p.tasks[i].task;
        assert_eq!(t(0).files, ["db/schema.sql", "src/db/**"]);
        assert_eq!(t(1).after, ["01-schema"]);
        assert_eq!(t(1).files, ["src/api.rs"]);
        assert_eq!(t(2).after, ["02-api", "01-schema", "03-docs-x"]);
        assert_eq!(p.tasks[2].after_lines, [Some(2), Some(2), Some(2)]);
        assert!(t(3).after.is_empty());
        match &t(1).action {
            Action::Prompt(text) => assert!(text.starts_with("# API\nDepends on")),
            Action::Command(_) => panic!("a command"),
        }
    }

    #[test]
    fn a_dependency_on_a_done_file_adds_no_edge() {
        let p = plan(&[
            ("p/a.md", "# A [IMPLEMENTED]\n"),
            ("p/b.md", "# B\nDepends on: a.md\n"),
        ])
        .unwrap();
        assert!(p.tasks[0].task.after.is_empty());
        // Not given, but next to it and implemented.
        let lookup = |path: &Path| {
            (path == Path::new("p/setup.md")).then(|| "# Setup\nStatus: COMPLETED\n".to_owned())
        };
        let b = PromptInput {
            path: Path::new("p/b.md"),
            text: "# B\nDepends on: setup\n",
        };
        let p = plan_prompts(&[b], &Settings::default(), &lookup).unwrap();
        assert!(p.tasks[0].task.after.is_empty());
        let lookup =
            |path: &Path| (path == Path::new("p/setup.md")).then(|| "# Setup\n".to_owned());
        let err = plan_prompts(&[b], &Settings::default(), &lookup).unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(
            err.message.contains("neither given nor marked IMPLEMENTED"),
            "{err}"
        );
    }

    #[test]
    fn bad_prompt_files_name_file_and_line() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, Option<usize>, &'a str);
        let cases: &[Case<'_>] = &[
            (
                &[("p/a.md", "# A\nDepends on: b.md\n")],
                "p/a.md",
                Some(2),
                "not a prompt file given",
            ),
            (
                &[("p/a.md", "# A\nDepends on: a\n")],
                "p/a.md",
                Some(2),
                "is this file",
            ),
            (
                &[
                    ("p/a.md", "# A\n"),
                    ("q/a.md", "# A2\n"),
                    ("p/c.md", "Depends on: a.md\n"),
                ],
                "p/c.md",
                Some(1),
                "could be any of",
            ),
            (
                &[("p/a.md", "# A\nStatus: done\nStatus: open\n")],
                "p/a.md",
                Some(3),
                "second `Status:`",
            ),
            (
                &[("p/a.md", "# A\nStatus: done, in progress\n")],
                "p/a.md",
                Some(2),
                "both done and in progress",
            ),
            (
                &[("p/a.md", "# A\n```\nnever closed\n")],
                "p/a.md",
                Some(2),
                "never closed",
            ),
            (&[("p/a.md", "  \n\n")], "p/a.md", None, "empty"),
        ];
        for (files, file, line, words) in cases {
            let err = plan(files).unwrap_err();
            assert_eq!(err.file, Path::new(file), "{err}");
            assert_eq!(err.line, *line, "{err}");
            assert!(err.to_string().contains(words), "want {words:?} in {err}");
        }
    }

    #[test]
    fn a_cycle_between_files_is_caught_by_the_plan_check() {
        let p = plan(&[
            ("p/a.md", "# A\nDepends on: b.md\n"),
            ("p/b.md", "# B\n\nDepends on: a.md\n"),
        ])
        .unwrap();
        let err =
            crate::plan::plan_from_tasks(Path::new("p/a.md"), "p", Settings::default(), p.tasks)
                .unwrap_err();
        assert!(err.message.contains("dependency cycle"), "{err}");
        assert_eq!(err.file, Path::new("p/a.md"));
        assert_eq!(err.line, Some(2));
    }
}
