//! Prompt files: each file given is one task whose prompt is the file's
//! content (seed 001's rule: only the files named, never a whole directory
//! unless asked).
//!
//! - A file whose first heading, a `Status:` line (at the margin or as a
//!   bold label) or `status:` in its YAML front matter says IMPLEMENTED,
//!   COMPLETED or done is skipped, and said so. Saying it twice is fine
//!   when both agree, an error naming both lines when they do not.
//! - A `README.md` (or `index.md`) that only links to the other files given
//!   is an index, not a task: skipped, with a warning.
//! - Its id comes from its file name (`prompts/01-Add Auth.md` becomes
//!   `01-add-auth`; `20250301-0002/README.md` takes its folder's name),
//!   the same on every run; names that collide get `-2`, `-3`... in the
//!   order of their paths, so the ids do not depend on the order the
//!   files were given in.
//! - A `Depends on:` line (or `depends_on:` in front matter) names other
//!   prompt files: by file name, path, name without the extension, id, or
//!   the words their first heading starts with (`Task 3`, `Ticket 008`);
//!   they become dependencies. One that is not given but moved to a
//!   `completed/` folder next to the file is done.
//! - File paths in backticks (`` `src/auth.rs` ``) become the task's
//!   `files`, for conflict analysis; not those in code blocks, on
//!   dependency lines, in reading lists (`## Read first`,
//!   `**References:**`, `<context>`) or in a copied roadmap group's
//!   Deliverables and Success Criteria.

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use crate::markdown::{self, Kind, Line, Mark};
use orch_session::error::Diagnostic;
use orch_session::plan::{Action, After, Settings, Task};

use crate::SourcedTask;

/// Words that mark a prompt file done in its title heading.
const HEADING_DONE_WORDS: &[&str] = &["implemented", "completed"];
/// Words that mark it done on a `Status:` line.
const STATUS_DONE_WORDS: &[&str] = &["implemented", "completed", "complete", "done", "finished"];
/// Longest id made from a file name.
const MAX_ID_LEN: usize = 100;
/// File names (without extension, lowercased) that name their folder: the
/// id is the folder's name, and the file may be an index of the others.
const FOLDER_FILES: &[&str] = &["readme", "index"];
/// The folder next to prompt files where finished ones are moved.
const COMPLETED_DIR: &str = "completed";
/// Words that name parts of a roadmap, never a prompt file.
const ROADMAP_WORDS: &[&str] = &["track", "tracks", "group", "groups"];
/// The labels read on a line at the margin, in this order.
const LABELS: &[&str] = &["Status", "Depends on", "Prerequisites", "Prerequisite"];
/// Indexes into [`LABELS`].
const STATUS: usize = 0;
const DEPENDS_ON: usize = 1;

/// One prompt file as given.
#[derive(Debug, Clone, Copy)]
pub struct PromptInput<'a> {
    /// The path as given (shown in messages; its directory is where other
    /// prompt files named in `Depends on:` are looked for).
    pub path: &'a Path,
    /// Its content.
    pub text: &'a str,
}

/// A prompt file left out because it is done (or an index of the others).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// The id it would have had.
    pub id: String,
    /// Why: "its heading says it is done (line 1)".
    pub reason: String,
}

/// The tasks made from prompt files, and the files left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompts {
    /// One task per open file, in the order given.
    pub tasks: Vec<SourcedTask>,
    /// Files marked done, and index files.
    pub skipped: Vec<SkippedFile>,
    /// What is worth saying but did not stop the reading, each with its
    /// file and line (print them with [`Diagnostic::as_warning`]).
    pub warnings: Vec<Diagnostic>,
}

/// The id a file name gives before collisions are resolved: the file
/// name without its extension (for a `README.md` or `index.md`, its
/// folder's name), lowercased, every run of other characters than
/// letters, digits, `.`, `_` and `-` made one `-`.
pub fn base_id(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = if FOLDER_FILES.contains(&stem.to_ascii_lowercase().as_str()) {
        path.parent()
            .and_then(Path::file_name)
            .map_or(stem, |d| d.to_string_lossy().into_owned())
    } else {
        stem
    };
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

/// One place where the file says what its status is.
struct Said {
    /// Whether it says done.
    done: bool,
    /// The status as written (`✅ Completed`).
    value: String,
    /// The whole line as written, for messages.
    raw: String,
    /// Its line.
    line: usize,
    /// Whether it is the title heading's marker.
    heading: bool,
}

/// What one file says about itself.
struct Read {
    /// The title: front matter `title:`, else the first heading.
    title: Option<String>,
    /// The first heading at the margin, without markers.
    heading: Option<String>,
    /// Why it is done, when it is.
    done: Option<String>,
    /// The names it depends on, each with its line.
    depends: Vec<(String, usize)>,
    /// `Prerequisites:` values (not read, warned about), with their lines.
    prerequisites: Vec<(String, usize)>,
    /// Paths in backticks it edits.
    files: Vec<String>,
    /// The links and backticked spans of each paragraph or list item
    /// (to tell an index of the other files).
    units: Vec<Vec<String>>,
    /// Whether it has words only a task has: a status, dependencies,
    /// checkboxes.
    task_words: bool,
    /// Lines at the margin starting `Track 1:` or `Group C:`, lowercased
    /// and without the colon (to say which file a roadmap word meant).
    roadmap_keys: Vec<String>,
    /// Warnings of the Markdown reading.
    warnings: Vec<Diagnostic>,
}

/// What the YAML front matter (`---` ... `---` at the top) says.
#[derive(Default)]
struct FrontMatter {
    /// Index of the closing `---` line.
    end: usize,
    /// `title:`.
    title: Option<String>,
    /// `status:` values: the value, the line as written, its line.
    status: Vec<(String, String, usize)>,
    /// `depends_on:` names with their lines.
    depends: Vec<(String, usize)>,
}

/// Where the file's text is not read for files to edit.
#[derive(Default)]
struct Skips {
    /// Level of the heading whose section is a reading list (or a copied
    /// group's Deliverables).
    heading: Option<usize>,
    /// In a block under a bold label that is a reading list, or under
    /// `Deliverables of Group X:`; it ends at the next paragraph.
    block: bool,
    /// A blank line was seen since the last text.
    gap: bool,
    /// The tag (`context`) whose content is a reading list.
    tag: Option<String>,
}

fn read(path: &Path, text: &str) -> Result<Read, Diagnostic> {
    let src = markdown::Source::new(text);
    let read = markdown::lines(path, &src)?;
    let lines = read.lines;
    hidden_labels(path, &lines, &read.warnings)?;
    let mut r = Read {
        title: None,
        heading: None,
        done: None,
        depends: Vec::new(),
        prerequisites: Vec::new(),
        files: Vec::new(),
        units: Vec::new(),
        task_words: false,
        roadmap_keys: Vec::new(),
        warnings: read.warnings,
    };
    let mut said: Vec<Said> = Vec::new();
    let mut body = 0;
    if let Some(fm) = front_matter(&lines) {
        body = fm.end + 1;
        for (value, raw, line) in fm.status {
            let mark = status_mark(&value).map_err(|()| both_statuses(path, &value, line))?;
            said.push(Said {
                done: mark == Some(Mark::Done),
                value,
                raw,
                line,
                heading: false,
            });
        }
        r.depends = fm.depends;
        r.title = fm.title;
    }
    let mut depends_line = None;
    let mut skips = Skips::default();
    let mut new_unit = true;
    for line in lines.iter().skip(body) {
        match line.kind {
            Kind::Text => {}
            Kind::FenceOpen => {
                r.units.push(Vec::new());
                new_unit = true;
                continue;
            }
            Kind::Code | Kind::Comment => continue,
        }
        let text = line.text;
        if line.is_blank() {
            skips.gap = true;
            new_unit = true;
            continue;
        }
        let margin = markdown::indent(text) == 0;
        let item = markdown::list_item(text);
        let mut take = true;
        if let Some(tag) = &skips.tag {
            take = false;
            if text.contains(&format!("</{tag}>")) {
                skips.tag = None;
            }
        } else if let Some(tag) = tag_open(text) {
            if markdown::is_reading_list(tag) {
                take = false;
                if !text.contains(&format!("</{tag}>")) {
                    skips.tag = Some(tag.to_owned());
                }
            }
        }
        if let Some((level, heading)) = markdown::heading(text) {
            skips.block = false;
            if skips.heading.is_some_and(|l| level <= l) {
                skips.heading = None;
            }
            new_unit = true;
            // The title never makes the file a reading list
            // (`# Read receipts`).
            let title = r.heading.is_none() && margin;
            if !title
                && skips.heading.is_none()
                && (markdown::is_reading_list(heading) || is_group_summary(heading))
            {
                skips.heading = Some(level);
            }
            if title {
                let sc = markdown::scan_status(heading, HEADING_DONE_WORDS, false);
                if let Ok(Some(mark)) = sc.status() {
                    said.push(Said {
                        done: mark == Mark::Done,
                        value: heading.to_owned(),
                        raw: text.trim().to_owned(),
                        line: line.no,
                        heading: true,
                    });
                }
                r.heading = Some(sc.clean);
                continue;
            }
        } else {
            if skips.block && skips.gap && margin && item.is_none() {
                skips.block = false;
            }
            if markdown::is_bold_label(text) {
                skips.block = bold_name(text)
                    .is_some_and(|name| markdown::is_reading_list(name) || is_group_summary(name));
            } else if is_group_summary(text) {
                skips.block = true;
            }
            if item.is_some() || new_unit {
                r.units.push(Vec::new());
            }
            new_unit = false;
            if let Some(unit) = r.units.last_mut() {
                link_targets(text, unit);
            }
            if item.is_some_and(|i| markdown::is_checkbox(i.text)) {
                r.task_words = true;
            }
        }
        skips.gap = false;
        if skips.heading.is_some() || skips.block || is_from_roadmap(text) {
            take = false;
        }
        if margin {
            if let Some(key) = roadmap_key(text) {
                r.roadmap_keys.push(key);
            }
        }
        match markdown::label(text, LABELS) {
            Some((STATUS, value)) if margin => {
                let mark = status_mark(value).map_err(|()| both_statuses(path, value, line.no))?;
                said.push(Said {
                    done: mark == Some(Mark::Done),
                    value: value.to_owned(),
                    raw: text.trim().to_owned(),
                    line: line.no,
                    heading: false,
                });
            }
            Some((DEPENDS_ON, value)) => {
                take = false;
                if !margin {
                    // A nested list item: not read, as today.
                } else if let Some(first) = depends_line {
                    return Err(Diagnostic::new(
                        path,
                        format!("a second `Depends on:` line (the first is on line {first})"),
                    )
                    .line(Some(line.no))
                    .help("list every dependency on one line"));
                } else {
                    depends_line = Some(line.no);
                    for name in dependency_names(value) {
                        r.depends.push((name, line.no));
                    }
                }
            }
            Some((STATUS, _)) | None => {}
            Some((_, value)) => {
                take = false;
                if margin {
                    r.prerequisites.push((value.to_owned(), line.no));
                }
            }
        }
        if take {
            let mut found = Vec::new();
            markdown::backtick_paths(text, &mut found);
            for p in found {
                // `/api/v1`, `~/.config`: a URL path or outside the project.
                if !p.starts_with(['/', '~']) && !r.files.contains(&p) {
                    r.files.push(p);
                }
            }
        }
    }
    said.sort_by_key(|s| s.line);
    if let Some((first, rest)) = said.split_first() {
        if let Some(other) = rest.iter().find(|s| s.done != first.done) {
            return Err(Diagnostic::new(
                path,
                format!(
                    "`{}` contradicts `{}` on line {}",
                    other.raw, first.raw, first.line
                ),
            )
            .line(Some(other.line))
            .help("keep one"));
        }
    }
    r.done = said.iter().find(|s| s.done).map(|s| {
        if s.heading {
            format!("its heading says it is done (line {})", s.line)
        } else {
            format!("its status says `{}` (line {})", s.value, s.line)
        }
    });
    r.task_words |= !said.is_empty() || !r.depends.is_empty();
    if r.title.is_none() {
        r.title.clone_from(&r.heading);
    }
    Ok(r)
}

fn both_statuses(path: &Path, value: &str, line: usize) -> Diagnostic {
    Diagnostic::new(
        path,
        format!("status `{value}` says both done and in progress"),
    )
    .line(Some(line))
    .help("write IMPLEMENTED when it is done, or remove the word")
}

/// What a status value says: its first clause decides (`✅ Done on
/// 2024-05-01; shipped`), the rest is prose. `Err` when the words
/// disagree.
fn status_mark(value: &str) -> Result<Option<Mark>, ()> {
    let first = value
        .split([';', '\u{2013}', '\u{2014}'])
        .next()
        .unwrap_or(value);
    let sc = markdown::scan_status(first, STATUS_DONE_WORDS, true);
    if !sc.marks.is_empty() || sc.clean.chars().any(char::is_alphanumeric) {
        sc.status()
    } else {
        markdown::scan_status(value, STATUS_DONE_WORDS, true).status()
    }
}

/// A code block that is never closed runs to the end of the file; refuse
/// it when it hides a `Status:` or `Depends on:` line, since what the
/// author meant is then a guess.
fn hidden_labels(
    path: &Path,
    lines: &[Line<'_>],
    warnings: &[Diagnostic],
) -> Result<(), Diagnostic> {
    let Some(open) = lines.iter().rev().find(|l| l.kind == Kind::FenceOpen) else {
        return Ok(());
    };
    let after = lines.get(open.no..).unwrap_or_default();
    if !warnings.iter().any(|w| w.line == Some(open.no))
        || !after.iter().all(|l| l.kind == Kind::Code)
    {
        return Ok(());
    }
    for l in after {
        if markdown::indent(l.text) > 0 {
            continue;
        }
        if let Some((k, _)) = markdown::label(l.text, &LABELS[..2]) {
            return Err(Diagnostic::new(
                path,
                format!(
                    "the code block opened here is never closed, so it hides the `{}:` line {}",
                    LABELS[k], l.no
                ),
            )
            .line(Some(open.no))
            .help(format!("close the code block before line {}", l.no)));
        }
    }
    Ok(())
}

/// The YAML front matter, when the file starts with `---` and a line
/// `---` (or `...`) closes it.
fn front_matter(lines: &[Line<'_>]) -> Option<FrontMatter> {
    if lines.first()?.text.trim_end() != "---" {
        return None;
    }
    let end = lines
        .iter()
        .skip(1)
        .position(|l| matches!(l.text.trim_end(), "---" | "..."))?
        + 1;
    let mut fm = FrontMatter {
        end,
        ..FrontMatter::default()
    };
    // Whether the block list that follows is `depends_on:`'s.
    let mut in_depends = false;
    for l in &lines[1..end] {
        let t = l.text.trim_end();
        let trimmed = t.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(item) = trimmed.strip_prefix('-') {
            if in_depends && (item.is_empty() || item.starts_with(' ')) {
                for name in dependency_names(&yaml_scalar(item)) {
                    fm.depends.push((name, l.no));
                }
            }
            continue;
        }
        if markdown::indent(t) > 0 {
            continue;
        }
        in_depends = false;
        let Some((key, value)) = t.split_once(':') else {
            continue;
        };
        let key: String = key
            .trim()
            .chars()
            .filter(|c| !matches!(c, '_' | '-' | ' '))
            .collect::<String>()
            .to_ascii_lowercase();
        let value = value.trim();
        match key.as_str() {
            "title" => {
                let v = yaml_scalar(value);
                if !v.is_empty() {
                    fm.title = Some(v);
                }
            }
            "status" => fm.status.push((yaml_scalar(value), t.to_owned(), l.no)),
            "dependson" => {
                if value.is_empty() {
                    in_depends = true;
                } else if let Some(list) = value.strip_prefix('[') {
                    let list = list.split(']').next().unwrap_or(list);
                    for part in list.split(',') {
                        for name in dependency_names(&yaml_scalar(part)) {
                            fm.depends.push((name, l.no));
                        }
                    }
                } else {
                    for name in dependency_names(&yaml_scalar(value)) {
                        fm.depends.push((name, l.no));
                    }
                }
            }
            _ => {}
        }
    }
    Some(fm)
}

/// A YAML scalar without its quotes (or its trailing `# comment` when
/// not quoted); `null` and `~` are empty.
fn yaml_scalar(value: &str) -> String {
    let v = value.trim();
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner.to_owned();
        }
    }
    let v = v.split(" #").next().unwrap_or(v).trim();
    if matches!(v, "null" | "~") {
        String::new()
    } else {
        v.to_owned()
    }
}

/// Whether the text is `Deliverables of Group C:` or `Success Criteria of
/// Group C:`, as orch's roadmap prompts end.
fn is_group_summary(text: &str) -> bool {
    let t: String = text.chars().filter(|&c| c != '*').collect();
    let t = t
        .trim()
        .trim_start_matches(['#', ' '])
        .trim_end_matches([':', ' '])
        .to_lowercase();
    ["deliverables of group ", "success criteria of group "]
        .iter()
        .any(|p| {
            t.strip_prefix(p)
                .is_some_and(|g| g.split_whitespace().count() == 1)
        })
}

/// Whether the line is `Group C: Billing Service (from ROADMAP.md)`, the
/// first line of orch's roadmap prompts.
fn is_from_roadmap(text: &str) -> bool {
    let t = text.trim().trim_matches('*').to_lowercase();
    t.starts_with("group ") && t.contains("(from ") && t.ends_with(')')
}

/// `Track 1` from a line at the margin `Track 1: Ledger` (or `## Group
/// C: ...`): lowercased, without the colon.
fn roadmap_key(text: &str) -> Option<String> {
    let t = text.trim_start_matches(['#', '*', '_', ' ', '\t']);
    let (head, _) = t.split_once(':')?;
    let words: Vec<&str> = head
        .trim_end_matches(['*', '_'])
        .split_whitespace()
        .collect();
    let first = words.first()?.to_lowercase();
    (words.len() == 2 && ROADMAP_WORDS.contains(&first.as_str()))
        .then(|| words.join(" ").to_lowercase())
}

/// The name of a line's bold label: `References` of `**References:**`.
fn bold_name(text: &str) -> Option<&str> {
    let t = text.trim_start().strip_prefix("**")?;
    let end = t.find("**")?;
    Some(t[..end].trim_end_matches([':', ' ']))
}

/// The tag a line opens, `context` of `<context>`.
fn tag_open(text: &str) -> Option<&str> {
    let t = text.trim().strip_prefix('<')?;
    let end = t.find('>')?;
    let name = &t[..end];
    (name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    .then_some(name)
}

/// The targets of markdown links and the backticked spans of a line.
fn link_targets(text: &str, out: &mut Vec<String>) {
    let mut rest = text;
    while let Some(mid) = rest.find("](") {
        let after = &rest[mid + 2..];
        let Some(close) = after.find(')') else {
            break;
        };
        let target = after[..close].split_whitespace().next().unwrap_or("");
        if !target.is_empty() {
            out.push(target.to_owned());
        }
        rest = &after[close..];
    }
    let parts: Vec<&str> = text.split('`').collect();
    for i in (1..parts.len().saturating_sub(1)).step_by(2) {
        if !parts[i].trim().is_empty() {
            out.push(parts[i].trim().to_owned());
        }
    }
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
    if matches!(
        trimmed.as_str(),
        "" | "none" | "-" | "n/a" | "nothing" | "[]" | "null" | "~"
    ) {
        return Vec::new();
    }
    v.split([',', ';'])
        .flat_map(|part| part.split(" and "))
        .map(|s| s.trim().trim_end_matches('.').trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A path with `.` and `..` worked out, without looking at the disk.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `Task 3`, `Ticket #008`, `Phase 17.1`: a word and a number, as the
/// first heading of a file may start. The word lowercased, the number's
/// parts.
fn heading_ref(name: &str) -> Option<(String, Vec<u64>)> {
    let mut words = name.split_whitespace();
    let (word, number) = (words.next()?, words.next()?);
    if words.next().is_some() || !word.chars().all(char::is_alphabetic) {
        return None;
    }
    let number = number.strip_prefix('#').unwrap_or(number);
    Some((word.to_lowercase(), number_parts(number)?))
}

/// `17.1` as `[17, 1]`, `008` as `[8]`.
fn number_parts(s: &str) -> Option<Vec<u64>> {
    s.split('.')
        .map(|p| {
            if p.is_empty() || p.len() > 18 || !p.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                p.parse().ok()
            }
        })
        .collect()
}

/// The number at the start of `s` (`17.1` of `17.1-home`) and what
/// follows it.
fn leading_number(s: &str) -> Option<(Vec<u64>, &str)> {
    let len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let n = s[..len].trim_end_matches('.');
    Some((number_parts(n)?, &s[n.len()..]))
}

/// Whether a first heading starts with `word number` followed by `:`, a
/// dash, or nothing: `Task 3: List service` for `Task 3`.
fn heading_starts(heading: &str, word: &str, number: &[u64]) -> bool {
    let h = heading.trim_start_matches(['*', '_', ' ']);
    let Some(head) = h.get(..word.len()) else {
        return false;
    };
    if head.to_lowercase() != word {
        return false;
    }
    let rest = &h[word.len()..];
    if !rest.starts_with([' ', '\t']) {
        return false;
    }
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('#').unwrap_or(rest);
    let Some((n, after)) = leading_number(rest) else {
        return false;
    };
    n == number
        && (after.is_empty()
            || after.starts_with([':', '\u{2013}', '\u{2014}'])
            || [" -", " \u{2013}", " \u{2014}"]
                .iter()
                .any(|d| after.starts_with(d)))
}

/// Whether a file name starts with `task-3`, `ticket_008` or `008` for
/// `Task 3` / `Ticket 8`.
fn file_starts(path: &Path, word: &str, number: &[u64]) -> bool {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut tries = vec![stem.as_str()];
    if let Some(rest) = stem.strip_prefix(word) {
        tries.push(rest.trim_start_matches(['-', '_', ' ']));
    }
    tries.into_iter().any(|s| {
        leading_number(s).is_some_and(|(n, after)| {
            n == number && (after.is_empty() || after.starts_with(['-', '_', ' ']))
        })
    })
}

/// The given file a path names, from `dir` (`../x/README.md`, `a.md#b`).
fn given_path(dir: &Path, target: &str, given: &[PathBuf]) -> Option<usize> {
    let target = target.split(['#', '?']).next().unwrap_or(target);
    if target.is_empty() || target.contains("://") {
        return None;
    }
    let target = target.replace("%20", " ");
    let p = normalize(&dir.join(target));
    given.iter().position(|g| *g == p)
}

/// The given files and what was read of them, to resolve names.
struct Given<'a, 'b> {
    inputs: &'a [PromptInput<'b>],
    ids: &'a [String],
    reads: &'a [Read],
    /// The given paths, normalized.
    paths: Vec<PathBuf>,
    /// Which files are indexes of the others.
    index: Vec<bool>,
    /// Names another file may use for each given file.
    names: HashMap<String, Vec<usize>>,
}

impl Given<'_, '_> {
    /// The file's folder.
    fn dir(&self, i: usize) -> &Path {
        self.inputs[i].path.parent().unwrap_or(Path::new(""))
    }

    /// Whether file `i` is a `README.md` or `index.md` that mostly links
    /// to the other files given and says nothing a task says.
    fn is_index(&self, i: usize) -> bool {
        let stem = self.inputs[i]
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let r = &self.reads[i];
        if !FOLDER_FILES.contains(&stem.as_str()) || self.inputs.len() < 2 || r.task_words {
            return false;
        }
        let other = |target: &str| given_path(self.dir(i), target, &self.paths).filter(|&j| j != i);
        // Paths that are not prompt files are files it would edit.
        if r.files.iter().any(|f| other(f).is_none()) {
            return false;
        }
        let mut linked = HashSet::new();
        let mut linking = 0;
        for unit in &r.units {
            let hits: Vec<usize> = unit.iter().filter_map(|t| other(t)).collect();
            if !hits.is_empty() {
                linking += 1;
                linked.extend(hits);
            }
        }
        linking * 2 > r.units.len() && linked.len() >= (self.inputs.len() - 1).min(2)
    }

    /// The given files (not indexes) whose first heading or file name
    /// starts with `Task 3`.
    fn by_heading(&self, word: &str, number: &[u64]) -> Vec<usize> {
        (0..self.inputs.len())
            .filter(|&j| !self.index[j])
            .filter(|&j| {
                self.reads[j]
                    .heading
                    .as_deref()
                    .is_some_and(|h| heading_starts(h, word, number))
                    || file_starts(self.inputs[j].path, word, number)
            })
            .collect()
    }

    /// `` `a.md`, `b.md` `` for messages.
    fn list(&self, which: &[usize]) -> String {
        which
            .iter()
            .map(|&j| format!("`{}`", self.inputs[j].path.display()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The file name of file `j`, as a `Depends on:` would name it.
    fn file_name(&self, j: usize) -> String {
        let p = self.inputs[j].path;
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        // Every `README.md` has the same name; its id is its folder's.
        if FOLDER_FILES.contains(&stem.as_str()) {
            return self.ids[j].clone();
        }
        p.file_name()
            .map_or_else(|| self.ids[j].clone(), |f| f.to_string_lossy().into_owned())
    }

    /// Which given file a dependency of file `i` names: `Some(j)`, or
    /// `None` when it names a file not given that is done.
    fn resolve(
        &self,
        i: usize,
        name: &str,
        line: usize,
        lookup: &dyn Fn(&Path) -> Option<String>,
    ) -> Result<Option<usize>, Diagnostic> {
        let path = self.inputs[i].path;
        let diag = |m: String| Diagnostic::new(path, m).line(Some(line));
        if name.contains('/') {
            let with_md = format!("{name}.md");
            if let Some(j) = given_path(self.dir(i), name, &self.paths)
                .or_else(|| given_path(self.dir(i), &with_md, &self.paths))
            {
                return Ok(Some(j));
            }
        }
        let key = Path::new(name)
            .file_name()
            .map_or_else(|| name.to_owned(), |f| f.to_string_lossy().into_owned());
        match self.names.get(&key).map(Vec::as_slice) {
            Some([j]) => return Ok(Some(*j)),
            Some(many) if !many.is_empty() => {
                return Err(
                    diag(format!("`{name}` could be any of {}", self.list(many)))
                        .help("name the file by its id"),
                );
            }
            _ => {}
        }
        let first = name.split_whitespace().next().unwrap_or("").to_lowercase();
        if ROADMAP_WORDS.contains(&first.as_str()) && name.split_whitespace().count() > 1 {
            let key = name
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase();
            let meant: Vec<usize> = (0..self.inputs.len())
                .filter(|&j| j != i && self.reads[j].roadmap_keys.contains(&key))
                .collect();
            let help = match meant.as_slice() {
                [j] => format!("write `Depends on: {}`", self.file_name(*j)),
                _ => "name the prompt file: `Depends on: <file>`".to_owned(),
            };
            return Err(diag(format!("`{name}` names no prompt file")).help(help));
        }
        let by_heading = heading_ref(name).map(|(word, number)| self.by_heading(&word, &number));
        match by_heading.as_deref() {
            Some([j]) => return Ok(Some(*j)),
            Some([]) | None => {}
            Some(many) => {
                return Err(
                    diag(format!("`{name}` could be any of {}", self.list(many)))
                        .help("name the file instead"),
                );
            }
        }
        match not_given(path, name, lookup) {
            NotGiven::Done => Ok(None),
            NotGiven::Open(p) => Err(diag(format!(
                "depends on `{}`, which is neither given nor marked IMPLEMENTED",
                p.display()
            ))
            .help("give that file too, or mark it IMPLEMENTED when it is done")),
            NotGiven::Missing if by_heading.is_some() => Err(diag(format!(
                "`{name}` matches no prompt file given: no first heading starts `{name}:` and no file name starts with its number"
            ))
            .help("name the prompt file: `Depends on: <file>`")),
            NotGiven::Missing => Err(diag(format!(
                "depends on `{name}`, which is not a prompt file given"
            ))
            .help("name a file given on the command line (or its id), or `None`")),
        }
    }

    /// The one other file a `Prerequisites:` value seems to mean, to
    /// suggest it.
    fn meant_by(&self, i: usize, value: &str) -> Option<usize> {
        for name in dependency_names(value) {
            if let Some([j]) = self.names.get(&name).map(Vec::as_slice) {
                if *j != i {
                    return Some(*j);
                }
            }
            let two: Vec<&str> = name.split_whitespace().take(2).collect();
            if let Some((word, number)) = heading_ref(&two.join(" ")) {
                if ROADMAP_WORDS.contains(&word.as_str()) {
                    continue;
                }
                if let [j] = self.by_heading(&word, &number).as_slice() {
                    if *j != i {
                        return Some(*j);
                    }
                }
            }
        }
        None
    }
}

/// Makes tasks of prompt files. `lookup` reads a prompt file that was not
/// given but is named in a dependency, next to the file naming it or in
/// the `completed/` folder there, to learn whether it is done.
pub fn plan_prompts(
    inputs: &[PromptInput<'_>],
    settings: &Settings,
    lookup: &dyn Fn(&Path) -> Option<String>,
) -> Result<Prompts, Diagnostic> {
    let paths: Vec<&Path> = inputs.iter().map(|i| i.path).collect();
    let ids = assign_ids(&paths);
    let mut reads = Vec::with_capacity(inputs.len());
    let mut read_warnings = Vec::with_capacity(inputs.len());
    for input in inputs {
        let mut r = read(input.path, input.text)?;
        read_warnings.push(std::mem::take(&mut r.warnings));
        reads.push(r);
    }
    let mut names: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, input) in inputs.iter().enumerate() {
        let mut own = vec![ids[i].clone()];
        if let Some(f) = input.path.file_name() {
            own.push(f.to_string_lossy().into_owned());
        }
        if let Some(s) = input.path.file_stem() {
            own.push(s.to_string_lossy().into_owned());
        }
        for n in own {
            let v = names.entry(n).or_default();
            if !v.contains(&i) {
                v.push(i);
            }
        }
    }
    let mut given = Given {
        inputs,
        ids: &ids,
        reads: &reads,
        paths: paths.iter().map(|p| normalize(p)).collect(),
        index: Vec::new(),
        names,
    };
    given.index = (0..inputs.len()).map(|i| given.is_index(i)).collect();
    let mut tasks = Vec::new();
    let mut skipped = Vec::new();
    let mut warnings = Vec::new();
    for (i, (input, mut read_warnings)) in inputs.iter().zip(read_warnings).enumerate() {
        warnings.append(&mut read_warnings);
        let r = &reads[i];
        if given.index[i] {
            warnings.push(
                Diagnostic::new(
                    input.path,
                    "skipped: an index of the other prompt files, not a task",
                )
                .line(Some(1)),
            );
            skipped.push(SkippedFile {
                path: input.path.to_path_buf(),
                id: ids[i].clone(),
                reason: "an index of the other prompt files".to_owned(),
            });
            continue;
        }
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
        for (value, line) in &r.prerequisites {
            let help = match given.meant_by(i, value) {
                Some(j) => format!("write `Depends on: {}`", given.file_name(j)),
                None => "write `Depends on: <file>`".to_owned(),
            };
            warnings.push(
                Diagnostic::new(input.path, "`Prerequisites:` is not read in prompt files")
                    .line(Some(*line))
                    .help(help),
            );
        }
        let mut after = Vec::new();
        let mut after_lines = Vec::new();
        for (name, line) in &r.depends {
            let Some(j) = given.resolve(i, name, *line, lookup)? else {
                continue;
            };
            if j == i {
                return Err(
                    Diagnostic::new(input.path, format!("`{name}` is this file"))
                        .line(Some(*line))
                        .help("remove it from the `Depends on:` line"),
                );
            }
            let dep = After::Task(ids[j].clone());
            if reads[j].done.is_none() && !given.index[j] && !after.contains(&dep) {
                after.push(dep);
                after_lines.push(Some(*line));
            }
        }
        let files = r
            .files
            .iter()
            .filter(|f| given_path(given.dir(i), f, &given.paths).is_none_or(|j| j != i))
            .cloned()
            .collect();
        tasks.push(SourcedTask {
            task: Task {
                id: ids[i].clone(),
                title: r.title.clone().filter(|t| !t.is_empty()),
                action: Action::Prompt(input.text.trim_end().to_owned()),
                after,
                files,
                // Read from the file's own text: the whole truth, so the
                // plan does not scan the prompt again (it would take bare
                // words and names in code blocks).
                scan_prompt: false,
                conflicts: true,
                resources: Vec::new(),
                estimate_ms: None,
                timeout_ms: settings.timeout_ms,
                retries: settings.retries,
                keys: settings.task_keys.clone(),
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
    Ok(Prompts {
        tasks,
        skipped,
        warnings,
    })
}

enum NotGiven {
    Done,
    Open(PathBuf),
    Missing,
}

/// A file named in a dependency but not given: done (marked so, or moved
/// to `completed/` next to the file naming it), open, or absent.
fn not_given(from: &Path, name: &str, lookup: &dyn Fn(&Path) -> Option<String>) -> NotGiven {
    let dir = from.parent().unwrap_or(Path::new(""));
    let mut tries = vec![name.to_owned()];
    let is_md = Path::new(name)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("md"));
    if !is_md {
        tries.push(format!("{name}.md"));
    }
    for n in &tries {
        let p = dir.join(n);
        if let Some(text) = lookup(&p) {
            return match read(&p, &text) {
                Ok(r) if r.done.is_some() => NotGiven::Done,
                _ => NotGiven::Open(p),
            };
        }
    }
    for n in &tries {
        if lookup(&dir.join(COMPLETED_DIR).join(n)).is_some() {
            return NotGiven::Done;
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
            ("tasks/20250301-0002/README.md", "20250301-0002"),
            ("docs/Sprint 4/index.md", "sprint-4"),
            ("README.md", "readme"),
        ] {
            let id_ = base_id(Path::new(path));
            assert_eq!(id_, id, "{path}");
            orch_session::layout::check_name("task id", &id_).unwrap();
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
                "`Status: open` contradicts `Status: done` on line 2",
            ),
            (
                &[("p/a.md", "# A\nStatus: done, in progress\n")],
                "p/a.md",
                Some(2),
                "both done and in progress",
            ),
            (
                &[("p/a.md", "# A\n```\nnever closed\nDepends on: b.md\n")],
                "p/a.md",
                Some(2),
                "never closed, so it hides the `Depends on:` line 4",
            ),
            (
                &[("p/a.md", "# A\nStatus: done\n**Status:** in progress\n")],
                "p/a.md",
                Some(3),
                "contradicts `Status: done` on line 2",
            ),
            (
                &[("p/a.md", "# A (IMPLEMENTED)\nStatus: not done\n")],
                "p/a.md",
                Some(2),
                "contradicts `# A (IMPLEMENTED)` on line 1",
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
        let err = crate::plan_from_tasks(Path::new("p/a.md"), "p", Settings::default(), p.tasks)
            .unwrap_err();
        assert!(err.message.contains("dependency cycle"), "{err}");
        assert_eq!(err.file, Path::new("p/a.md"));
        assert_eq!(err.line, Some(2));
    }

    #[test]
    fn an_unclosed_code_block_is_a_warning() {
        let p = plan(&[("p/a.md", "# A\nEdit `a.rs`.\n```\nnever closed `b.rs`\n")]).unwrap();
        assert_eq!(p.tasks[0].task.files, ["a.rs"]);
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.warnings[0].line, Some(3));
        assert!(
            p.warnings[0].message.contains("never closed"),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn statuses_said_twice_and_with_prose() {
        let p = plan(&[
            (
                "p/a.md",
                "---\nstatus: 'Done'\n---\n# A\n\n**Status:** ✅ Done\n",
            ),
            ("p/b.md", "# B\nStatus: ✅ Done on 2024-05-01; shipped\n"),
            ("p/c.md", "# C ✅\nStatus: Complete\nStatus: done\n"),
            ("p/d.md", "---\nstatus: DOING\n---\n# D\n"),
            ("p/e.md", "# E\n**Status:** 🚧 IN PROGRESS\n"),
            ("p/f.md", "# F\n- **Status:** Ready for development\n"),
            ("p/g.md", "# G\n**Status:** 📋 PLANNED\nStatus: todo\n"),
            ("p/h.md", "# H\nStatus: In progress; step 1 done\n"),
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
                ("a", "its status says `Done` (line 2)"),
                (
                    "b",
                    "its status says `✅ Done on 2024-05-01; shipped` (line 2)"
                ),
                ("c", "its heading says it is done (line 1)"),
            ]
        );
        let ids: Vec<&str> = p.tasks.iter().map(|t| t.task.id.as_str()).collect();
        assert_eq!(ids, ["d", "e", "f", "g", "h"]);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let err = plan(&[(
            "p/a.md",
            "---\nstatus: todo\n---\n# A\nStatus: implemented\n",
        )])
        .unwrap_err();
        assert_eq!(err.line, Some(5));
        assert_eq!(
            err.to_string(),
            "p/a.md:5: `Status: implemented` contradicts `status: todo` on line 2 (fix: keep one)"
        );
    }

    #[test]
    fn front_matter_dependencies_in_every_yaml_shape() {
        let p = plan(&[
            ("p/a.md", "# A\n"),
            ("p/b.md", "# B\n"),
            ("p/c.md", "---\ndepends_on: [a, 'b.md']\n---\n# C\n"),
            (
                "p/d.md",
                "---\ndepends_on:\n  - a\n  - \"c\"\ntitle: Dee\n---\n# D\n",
            ),
            (
                "p/e.md",
                "---\ndepends-on: b # the API\n---\n# E\nDepends on: d\n",
            ),
            ("p/f.md", "---\ndepends_on: []\n---\n# F\n"),
        ])
        .unwrap();
        let t = |i: usize| &p.tasks[i];
        assert_eq!(t(2).task.after, ["a", "b"]);
        assert_eq!(t(2).after_lines, [Some(2), Some(2)]);
        assert_eq!(t(3).task.after, ["a", "c"]);
        assert_eq!(t(3).after_lines, [Some(3), Some(4)]);
        assert_eq!(t(3).task.title.as_deref(), Some("Dee"));
        assert_eq!(t(4).task.after, ["b", "d"]);
        assert_eq!(t(4).after_lines, [Some(2), Some(5)]);
        assert!(t(5).task.after.is_empty());
    }

    #[test]
    fn dependencies_by_first_heading_words() {
        let files: &[(&str, &str)] = &[
            ("p/one.md", "# Task 1: Setup\n"),
            ("p/two.md", "# Task 2 – Models\n"),
            ("p/step-07-x.md", "# Seven\n"),
            ("p/z.md", "# Z\nDepends on: Task 1, task 2 and Step 7\n"),
        ];
        let p = plan(files).unwrap();
        assert_eq!(p.tasks[3].task.after, ["one", "two", "step-07-x"]);
        // No file, or two, is an error naming them.
        let err = plan(&[
            ("p/one.md", "# Task 1: Setup\n"),
            ("p/z.md", "# Z\nDepends on: Task 9\n"),
        ])
        .unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(
            err.message
                .contains("`Task 9` matches no prompt file given"),
            "{err}"
        );
        let err = plan(&[
            ("p/one.md", "# Task 1: Setup\n"),
            ("p/1-other.md", "# Other\n"),
            ("p/z.md", "\n\nDepends on: Task 1\n"),
        ])
        .unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(
            err.message
                .contains("`Task 1` could be any of `p/one.md`, `p/1-other.md`"),
            "{err}"
        );
        // "Task 1" is not "Task 10", and a heading without a separator
        // after the number is not a match.
        let err = plan(&[
            ("p/ten.md", "# Task 10: Ten\n"),
            ("p/eleven.md", "# Task 1 and more\n"),
            ("p/z.md", "Depends on: Task 1\n"),
        ])
        .unwrap_err();
        assert!(err.message.contains("matches no prompt file"), "{err}");
    }

    #[test]
    fn files_leave_out_reading_lists_and_code() {
        let text = "# A\n\
            Edit `src/a.rs`, not `/api/v1` or `CATALOG=x`.\n\
            \n\
            ## Background\n\
            `docs/why.md`\n\
            ### Deeper\n\
            `docs/deeper.md`\n\
            ## Build\n\
            - `src/b.rs`\n\
            \n\
            **References:**\n\
            - `docs/ref.md`\n\
            \n\
            - `docs/ref2.md`\n\
            \n\
            Then `src/c.rs`.\n\
            **See also:** `docs/see.md`\n\
            **Files:**\n\
            - `src/d.rs`\n\
            <context>\n\
            `docs/context.md`\n\
            </context>\n\
            <output>\n\
            `src/e.rs`\n\
            </output>\n\
            ```text\n\
            `src/in_code.rs` src/bare.rs\n\
            ```\n\
            Depends on: None (`src/dep.rs`)\n\
            - Prerequisites: `src/pre.rs`\n\
            Bare src/bare2.rs is never a file.\n";
        let p = plan(&[("p/a.md", text)]).unwrap();
        let t = &p.tasks[0].task;
        assert_eq!(
            t.files,
            ["src/a.rs", "src/b.rs", "src/c.rs", "src/d.rs", "src/e.rs"]
        );
        assert!(!t.scan_prompt);
        // A title with a reading word is still a task's title.
        let p = plan(&[("p/a.md", "# Read receipts\nEdit `chat/receipts.py`.\n")]).unwrap();
        assert_eq!(p.tasks[0].task.files, ["chat/receipts.py"]);
    }

    const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/corpus");

    fn disk(path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    /// Plans files of a corpus folder, read from disk, with `edits`
    /// (file, from, to) made to their text first.
    fn corpus_edited(
        folder: &str,
        names: &[&str],
        edits: &[(&str, &str, &str)],
    ) -> Result<Prompts, Diagnostic> {
        let dir = Path::new(CORPUS).join(folder);
        let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        let texts: Vec<String> = names
            .iter()
            .zip(&paths)
            .map(|(name, p)| {
                let mut text =
                    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                for (file, from, to) in edits {
                    if file == name {
                        assert!(text.contains(from), "{from:?} not in {file}");
                        text = text.replace(from, to);
                    }
                }
                text
            })
            .collect();
        let inputs: Vec<PromptInput<'_>> = paths
            .iter()
            .zip(&texts)
            .map(|(path, text)| PromptInput { path, text })
            .collect();
        plan_prompts(&inputs, &Settings::default(), &disk)
    }

    fn corpus(folder: &str, names: &[&str]) -> Result<Prompts, Diagnostic> {
        corpus_edited(folder, names, &[])
    }

    fn ids(p: &Prompts) -> Vec<&str> {
        p.tasks.iter().map(|t| t.task.id.as_str()).collect()
    }

    fn skipped(p: &Prompts) -> Vec<(&str, &str)> {
        p.skipped
            .iter()
            .map(|s| (s.id.as_str(), s.reason.as_str()))
            .collect()
    }

    fn task<'a>(p: &'a Prompts, id: &str) -> &'a SourcedTask {
        p.tasks
            .iter()
            .find(|t| t.task.id == id)
            .unwrap_or_else(|| panic!("no task {id}"))
    }

    /// Warnings as `name:line: warning: ...`, without the folder.
    fn warnings(p: &Prompts) -> Vec<String> {
        p.warnings
            .iter()
            .map(|w| {
                let full = w.as_warning();
                let dir = w.file.parent().map(|d| format!("{}/", d.display()));
                dir.map_or(full.clone(), |d| full.replace(&d, ""))
            })
            .collect()
    }

    /// The error as `name:line: message (fix: help)`, without the folder.
    fn error(e: &Diagnostic) -> String {
        let full = e.to_string();
        e.file.parent().map_or(full.clone(), |d| {
            full.replace(&format!("{}/", d.display()), "")
        })
    }

    #[test]
    fn corpus_prompts_01_numbered_with_index() {
        let p = corpus(
            "prompts-01-numbered-with-index",
            &[
                "001-dev-container.md",
                "002-sqlite-models.md",
                "003-list-service.md",
                "004-today-view.md",
                "005-polish.md",
                "README.md",
            ],
        )
        .unwrap();
        assert_eq!(
            skipped(&p),
            [
                ("001-dev-container", "its heading says it is done (line 1)"),
                ("002-sqlite-models", "its status says `✅ Done` (line 3)"),
                (
                    "prompts-01-numbered-with-index",
                    "an index of the other prompt files"
                ),
            ]
        );
        assert_eq!(
            ids(&p),
            ["003-list-service", "004-today-view", "005-polish"]
        );
        let t = |id| task(&p, id);
        assert_eq!(
            t("003-list-service").task.title.as_deref(),
            Some("Task 3: List service")
        );
        assert!(t("003-list-service").task.after.is_empty());
        assert_eq!(t("004-today-view").task.after, ["003-list-service"]);
        assert_eq!(
            t("005-polish").task.after,
            ["003-list-service", "004-today-view"]
        );
        assert_eq!(t("005-polish").after_lines, [Some(3), Some(3)]);
        assert_eq!(
            t("003-list-service").task.files,
            ["src/services/lists.py", "tests/test_lists.py"]
        );
        assert_eq!(
            t("004-today-view").task.files,
            ["src/views/today.py", "tests/test_today.py"]
        );
        assert_eq!(
            t("005-polish").task.files,
            ["src/views/empty.py", "src/views/toasts.py"]
        );
        assert_eq!(
            warnings(&p),
            ["README.md:1: warning: skipped: an index of the other prompt files, not a task"]
        );
        // Without most of the files it links to, the README is not an
        // index but a task; 002, not given, is read next to 003: done.
        let p = corpus(
            "prompts-01-numbered-with-index",
            &["003-list-service.md", "README.md"],
        )
        .unwrap();
        assert_eq!(
            ids(&p),
            ["003-list-service", "prompts-01-numbered-with-index"]
        );
        assert!(p.tasks[0].task.after.is_empty());
        assert!(p.skipped.is_empty() && p.warnings.is_empty());
        // 003, not given, is next to 004 but open.
        let p = corpus(
            "prompts-01-numbered-with-index",
            &["README.md", "004-today-view.md"],
        );
        let err = p.unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(err.message.contains("003-list-service"), "{err}");
    }

    #[test]
    fn corpus_prompts_02_front_matter_status() {
        let all = [
            "01-export-csv.md",
            "02-import-csv.md",
            "03-dedupe.md",
            "04-merge-ui.md",
            "05-undo-merge.md",
        ];
        let err = corpus("prompts-02-front-matter-status", &all).unwrap_err();
        assert_eq!(
            error(&err),
            "05-undo-merge.md:9: `Status: In progress` contradicts `status: \"done\"` on line 4 (fix: keep one)"
        );
        let p = corpus("prompts-02-front-matter-status", &all[..4]).unwrap();
        assert_eq!(
            skipped(&p),
            [
                ("01-export-csv", "its status says `DONE` (line 4)"),
                ("02-import-csv", "its status says `implemented` (line 3)"),
            ]
        );
        assert_eq!(ids(&p), ["03-dedupe", "04-merge-ui"]);
        let t = |id| task(&p, id);
        assert_eq!(t("03-dedupe").task.after, ["04-merge-ui"]);
        assert_eq!(t("03-dedupe").after_lines, [Some(5)]);
        assert!(t("04-merge-ui").task.after.is_empty());
        assert_eq!(
            t("03-dedupe").task.files,
            ["crm/dedupe/finder.py", "crm/dedupe/merge.py"]
        );
        assert_eq!(t("04-merge-ui").task.files, ["crm/web/merge_review.py"]);
        assert_eq!(
            t("03-dedupe").task.title.as_deref(),
            Some("Merge duplicate contacts")
        );
        assert!(p.warnings.is_empty(), "{:?}", warnings(&p));
    }

    #[test]
    fn corpus_prompts_03_readme_per_dir() {
        let p = corpus(
            "prompts-03-readme-per-dir",
            &[
                "20250301-0001/README.md",
                "20250301-0002/README.md",
                "20250301-0003/README.md",
            ],
        )
        .unwrap();
        assert_eq!(
            skipped(&p),
            [("20250301-0001", "its status says `DONE` (line 4)")]
        );
        assert_eq!(ids(&p), ["20250301-0002", "20250301-0003"]);
        let t = |id| task(&p, id);
        assert!(t("20250301-0002").task.after.is_empty());
        assert_eq!(t("20250301-0003").task.after, ["20250301-0002"]);
        assert_eq!(t("20250301-0003").after_lines, [Some(6)]);
        assert_eq!(
            t("20250301-0002").task.files,
            ["board/filters.py", "board/templates/filter_bar.html"]
        );
        assert_eq!(t("20250301-0003").task.files, ["board/presets.py"]);
        assert_eq!(
            t("20250301-0002").task.title.as_deref(),
            Some("Filter the board by tag")
        );
        assert!(p.warnings.is_empty(), "{:?}", warnings(&p));
    }

    #[test]
    fn corpus_prompts_04_ticket_bold_status() {
        let p = corpus(
            "prompts-04-ticket-bold-status",
            &[
                "ticket-007-csv-export.md",
                "ticket-008-filters.md",
                "ticket-009-saved-views.md",
                "ticket-010-polish.md",
            ],
        )
        .unwrap();
        assert_eq!(
            skipped(&p),
            [(
                "ticket-007-csv-export",
                "its status says `✅ IMPLEMENTED` (line 5)"
            )]
        );
        assert_eq!(
            ids(&p),
            [
                "ticket-008-filters",
                "ticket-009-saved-views",
                "ticket-010-polish"
            ]
        );
        let t = |id| task(&p, id);
        assert!(t("ticket-008-filters").task.after.is_empty());
        assert_eq!(
            t("ticket-009-saved-views").task.after,
            ["ticket-008-filters"]
        );
        assert_eq!(t("ticket-009-saved-views").after_lines, [Some(5)]);
        assert!(t("ticket-010-polish").task.after.is_empty());
        assert_eq!(
            t("ticket-008-filters").task.files,
            ["billpal/filters.py", "billpal/templates/filter_bar.html"]
        );
        assert_eq!(t("ticket-009-saved-views").task.files, ["billpal/views.py"]);
        assert_eq!(
            t("ticket-010-polish").task.files,
            ["billpal/templates/empty.html", "billpal/format.py"]
        );
        assert!(p.warnings.is_empty(), "{:?}", warnings(&p));
    }

    #[test]
    fn corpus_prompts_05_read_list_paths() {
        let p = corpus(
            "prompts-05-read-list-paths",
            &["17.1-home-and-catalog.md", "17.2-category-browsing.md"],
        )
        .unwrap();
        assert!(p.skipped.is_empty());
        assert_eq!(ids(&p), ["17.1-home-and-catalog", "17.2-category-browsing"]);
        let t = |id| task(&p, id);
        assert_eq!(
            t("17.1-home-and-catalog").task.title.as_deref(),
            Some("Phase 17.1 — Home & Catalog")
        );
        assert!(p.tasks.iter().all(|t| t.task.after.is_empty()));
        assert_eq!(
            t("17.1-home-and-catalog").task.files,
            [
                "app/lib/features/catalog/catalog_repository.dart",
                "app/lib/features/catalog/product_summary.dart",
                "app/lib/features/home/home_screen.dart",
                "app/test/features/catalog/catalog_repository_test.dart",
            ]
        );
        assert_eq!(
            t("17.2-category-browsing").task.files,
            [
                "app/lib/features/categories/category_list.dart",
                "app/lib/features/categories/category_screen.dart",
                "app/test/features/categories/category_list_test.dart",
            ]
        );
        assert_eq!(
            warnings(&p),
            [
                "17.1-home-and-catalog.md:9: warning: `Prerequisites:` is not read in prompt files (fix: write `Depends on: <file>`)",
                "17.2-category-browsing.md:4: warning: `Prerequisites:` is not read in prompt files (fix: write `Depends on: 17.1-home-and-catalog.md`)",
            ]
        );
        // Why the names in the ```text block used to be taken: the plan
        // scanned the whole prompt for paths (bare words, code blocks
        // included). The tasks say `files` is the whole truth.
        let Action::Prompt(text) = &t("17.1-home-and-catalog").task.action else {
            panic!("a command");
        };
        let scanned = crate::conflicts::paths_in_prompt(text, Path::new("/nonexistent"));
        assert!(
            scanned.iter().any(|f| f == "catalog_repository.dart"),
            "{scanned:?}"
        );
        assert!(p.tasks.iter().all(|t| !t.task.scan_prompt));
    }

    #[test]
    fn corpus_prompts_06_completed_subfolder() {
        let folder = "prompts-06-completed-subfolder";
        let p = corpus(folder, &["002-add-auth.md", "003-api-routes.md"]).unwrap();
        assert!(p.skipped.is_empty());
        assert_eq!(ids(&p), ["002-add-auth", "003-api-routes"]);
        let t = |id| task(&p, id);
        assert!(p.tasks.iter().all(|t| t.task.title.is_none()));
        assert!(t("002-add-auth").task.after.is_empty());
        assert_eq!(t("003-api-routes").task.after, ["002-add-auth"]);
        assert_eq!(
            t("002-add-auth").task.files,
            ["app/auth.py", "db/migrations/002_users.sql"]
        );
        assert_eq!(
            t("003-api-routes").task.files,
            [
                "app/routes/shelves.py",
                "app/routes/books.py",
                "tests/test_routes.py"
            ]
        );
        assert!(p.warnings.is_empty(), "{:?}", warnings(&p));
        // It is `completed/` that makes 001 done.
        let path = Path::new(CORPUS).join(folder).join("002-add-auth.md");
        let text = disk(&path).unwrap_or_default();
        let input = PromptInput {
            path: &path,
            text: &text,
        };
        let err = plan_prompts(&[input], &Settings::default(), &none).unwrap_err();
        assert_eq!(err.line, Some(5));
        assert!(err.message.contains("not a prompt file given"), "{err}");
    }

    #[test]
    fn corpus_prompts_07_copied_from_roadmap() {
        let folder = "prompts-07-copied-from-roadmap";
        let err = corpus(folder, &["01-ledger-postings.md", "02-invoice-render.md"]).unwrap_err();
        assert_eq!(
            error(&err),
            "02-invoice-render.md:6: `Track 1` names no prompt file (fix: write `Depends on: 01-ledger-postings.md`)"
        );
        let p = corpus(folder, &["01-ledger-postings.md"]).unwrap();
        assert_eq!(ids(&p), ["01-ledger-postings"]);
        assert_eq!(p.tasks[0].task.files, ["billing/ledger/postings.py"]);
        assert!(p.tasks[0].task.title.is_none());
        // Line 6 naming the file.
        let p = corpus_edited(
            folder,
            &["01-ledger-postings.md", "02-invoice-render.md"],
            &[(
                "02-invoice-render.md",
                "Depends on: Track 1",
                "Depends on: 01-ledger-postings.md",
            )],
        )
        .unwrap();
        assert_eq!(ids(&p), ["01-ledger-postings", "02-invoice-render"]);
        let t = |id| task(&p, id);
        assert!(t("01-ledger-postings").task.after.is_empty());
        assert_eq!(t("02-invoice-render").task.after, ["01-ledger-postings"]);
        assert_eq!(t("02-invoice-render").after_lines, [Some(6)]);
        assert_eq!(
            t("02-invoice-render").task.files,
            [
                "billing/invoice/render.py",
                "billing/invoice/templates/invoice.html"
            ]
        );
        assert!(p.tasks.iter().all(|t| t.task.title.is_none()));
        assert!(p.warnings.is_empty(), "{:?}", warnings(&p));
    }
}
