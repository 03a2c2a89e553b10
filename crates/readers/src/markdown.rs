//! The bits of Markdown that ROADMAP.md files and prompt files are read
//! with: lines with their kind (fenced code, HTML comments), headings, list
//! items, labelled lines (`**Status:** DONE`), status markers, and file paths
//! in backticks.
//!
//! This is not a Markdown parser: it knows just enough of the line structure
//! to never take an ASCII diagram in a code block for a heading, and it says
//! so (with the line) when a code block or comment is never closed, rather
//! than silently swallowing the rest of the file.

use std::path::Path;

use orch_session::error::Diagnostic;

/// What a line is, as far as structure goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Ordinary text (headings, list items, tables, paragraphs, blank).
    Text,
    /// The opening fence of a code block.
    FenceOpen,
    /// Inside a code block, or its closing fence.
    Code,
    /// Inside an HTML comment.
    Comment,
}

/// One line of the file, without its line ending.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Line<'a> {
    /// 1-based line number.
    pub no: usize,
    /// The text, without `\n` or `\r\n`.
    pub text: &'a str,
    /// Its kind.
    pub kind: Kind,
}

impl Line<'_> {
    /// Whether the line has only whitespace.
    pub fn is_blank(&self) -> bool {
        self.text.trim().is_empty()
    }
}

/// A file's text, repaired where it was saved through the wrong encoding.
#[derive(Debug)]
pub(crate) struct Source<'a> {
    text: std::borrow::Cow<'a, str>,
    /// The first line that had status symbols mangled by Windows-1252.
    mojibake: Option<usize>,
}

/// Status symbols as they read when UTF-8 was decoded as Windows-1252 and
/// saved again (`✅` becomes `âœ…`), and what they were.
const MOJIBAKE: &[(&str, &str)] = &[
    ("\u{e2}\u{153}\u{2026}", "\u{2705}"),
    ("\u{e2}\u{153}\u{201d}", "\u{2714}"),
    ("\u{e2}\u{153}\u{201c}", "\u{2713}"),
    ("\u{e2}\u{2dc}\u{2018}", "\u{2611}"),
    ("\u{f0}\u{178}\u{201d}\u{201e}", "\u{1f504}"),
];

impl<'a> Source<'a> {
    /// `text`, with mangled status symbols put right.
    pub fn new(text: &'a str) -> Source<'a> {
        if !MOJIBAKE.iter().any(|(bad, _)| text.contains(bad)) {
            return Source {
                text: std::borrow::Cow::Borrowed(text),
                mojibake: None,
            };
        }
        let first = text
            .split('\n')
            .position(|l| MOJIBAKE.iter().any(|(bad, _)| l.contains(bad)))
            .map(|i| i + 1);
        let mut fixed = text.to_owned();
        for (bad, good) in MOJIBAKE {
            fixed = fixed.replace(bad, good);
        }
        Source {
            text: std::borrow::Cow::Owned(fixed),
            mojibake: first,
        }
    }
}

/// A file's lines, with the warnings reading them gave.
#[derive(Debug)]
pub(crate) struct Text<'a> {
    /// The lines.
    pub lines: Vec<Line<'a>>,
    /// What is worth saying but does not stop the reading.
    pub warnings: Vec<Diagnostic>,
}

/// Splits the text into classified lines (LF or CRLF, a leading BOM is
/// ignored). A code block that is never closed runs to the end of the file,
/// as a Markdown renderer shows it, with a warning; an HTML comment that is
/// never closed would hide the rest of the file, and is an error at the
/// line that opened it.
pub(crate) fn lines<'a>(path: &Path, src: &'a Source<'_>) -> Result<Text<'a>, Diagnostic> {
    let text: &str = &src.text;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    if let Some(l) = src.mojibake {
        warnings.push(
            Diagnostic::new(
                path,
                "status symbols were saved through Windows-1252 (`\u{e2}\u{153}\u{2026}` for \u{2705}); read as the symbols they were",
            )
            .line(Some(l))
            .help("save the file as UTF-8"),
        );
    }
    let mut fence: Option<(char, usize, usize)> = None;
    let mut comment: Option<usize> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let no = i + 1;
        let t = line.trim_start();
        let kind = if let Some((ch, n, _)) = fence {
            if is_fence_close(t, ch, n) {
                fence = None;
            }
            Kind::Code
        } else if comment.is_some() {
            if line.contains("-->") {
                comment = None;
            }
            Kind::Comment
        } else if let Some((ch, n)) = fence_open(t) {
            fence = Some((ch, n, no));
            Kind::FenceOpen
        } else if let Some(rest) = t.strip_prefix("<!--") {
            if !rest.contains("-->") {
                comment = Some(no);
            }
            Kind::Comment
        } else {
            Kind::Text
        };
        out.push(Line {
            no,
            text: line,
            kind,
        });
    }
    if let Some((ch, n, open)) = fence {
        let close: String = std::iter::repeat_n(ch, n).collect();
        warnings.push(
            Diagnostic::new(
                path,
                "code block opened here is never closed; it runs to the end of the file",
            )
            .line(Some(open))
            .help(format!("end it with a line `{close}`")),
        );
    }
    if let Some(open) = comment {
        return Err(Diagnostic::new(
            path,
            "HTML comment is never closed, so it hides the rest of the file",
        )
        .line(Some(open))
        .help("end it with `-->`"));
    }
    Ok(Text {
        lines: out,
        warnings,
    })
}

fn fence_open(t: &str) -> Option<(char, usize)> {
    let ch = t.chars().next().filter(|&c| c == '`' || c == '~')?;
    let n = t.chars().take_while(|&c| c == ch).count();
    if n < 3 || (ch == '`' && t[n..].contains('`')) {
        return None;
    }
    Some((ch, n))
}

fn is_fence_close(t: &str, ch: char, n: usize) -> bool {
    let run = t.chars().take_while(|&c| c == ch).count();
    run >= n && t[run * ch.len_utf8()..].trim().is_empty()
}

/// Columns of leading whitespace (a tab counts 4).
pub(crate) fn indent(s: &str) -> usize {
    let mut n = 0;
    for c in s.chars() {
        match c {
            ' ' => n += 1,
            '\t' => n += 4,
            _ => break,
        }
    }
    n
}

/// An ATX heading: its level (1-6) and its text.
pub(crate) fn heading(s: &str) -> Option<(usize, &str)> {
    if indent(s) > 3 {
        return None;
    }
    let t = s.trim_start();
    let level = t.chars().take_while(|&c| c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &t[level..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let text = rest.trim().trim_end_matches('#').trim_end();
    Some((level, text))
}

/// A list item: the column of its marker, whether it is numbered, and its
/// text after the marker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Item<'a> {
    pub indent: usize,
    pub numbered: bool,
    pub text: &'a str,
}

/// A list item (`- x`, `* x`, `+ x`, `1. x`, `1) x`).
pub(crate) fn list_item(s: &str) -> Option<Item<'_>> {
    let ind = indent(s);
    let t = s.trim_start();
    let (numbered, rest) = if let Some(r) = t
        .strip_prefix('-')
        .or_else(|| t.strip_prefix('*'))
        .or_else(|| t.strip_prefix('+'))
    {
        (false, r)
    } else {
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let r = t[digits..]
            .strip_prefix('.')
            .or_else(|| t[digits..].strip_prefix(')'))?;
        (true, r)
    };
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    Some(Item {
        indent: ind,
        numbered,
        text: rest.trim(),
    })
}

/// The value of a labelled line, `Label: value`, written plainly, in bold
/// (`**Label:** value`, `**Label**: value`), as a list item or quoted.
/// Returns the index of the label in `names` (matched case-insensitively)
/// and the value.
pub(crate) fn label<'a>(s: &'a str, names: &[&str]) -> Option<(usize, &'a str)> {
    let mut t = s.trim_start();
    if let Some(item) = list_item(t) {
        t = item.text;
    }
    t = t.trim_start_matches(['>', ' ']);
    let t = t.trim_start_matches(['*', '_']);
    for (i, name) in names.iter().enumerate() {
        let Some(head) = t.get(..name.len()) else {
            continue;
        };
        if !head.eq_ignore_ascii_case(name) {
            continue;
        }
        let rest = t[name.len()..].trim_start_matches(['*', '_']);
        if let Some(value) = rest.strip_prefix(':') {
            let value =
                value.trim_start_matches(|c: char| c == '*' || c == '_' || c.is_whitespace());
            return Some((i, value.trim_end()));
        }
    }
    None
}

/// Whether the line is a bold label of any name (`**Parallel Tracks:**`).
pub(crate) fn is_bold_label(s: &str) -> bool {
    let Some(rest) = s.trim_start().strip_prefix("**") else {
        return false;
    };
    match rest.find("**") {
        Some(end) if end > 0 => {
            rest[..end].trim_end().ends_with(':') || rest[end + 2..].starts_with(':')
        }
        _ => false,
    }
}

/// Words of a heading, label or tag that make its section a list of things
/// to read (references, context), not of files to edit: `## 1. Read
/// first`, `**Spec resources:**`, `<context>`, `See also`.
const READING_WORDS: &[&str] = &[
    "read",
    "reading",
    "reference",
    "references",
    "resource",
    "resources",
    "context",
    "background",
    "see",
    "docs",
    "documentation",
    "input",
    "inputs",
];

/// Whether a heading, label or tag names a list of things to read.
pub(crate) fn is_reading_list(name: &str) -> bool {
    name.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .any(|w| READING_WORDS.contains(&w))
}

/// Whether a list item's text starts with a checkbox (`[ ]`, `[x]`).
pub(crate) fn is_checkbox(item: &str) -> bool {
    ["[ ]", "[x]", "[X]"].iter().any(|b| item.starts_with(b))
}

/// A status marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// Done (`[DONE]`, ✅, `COMPLETED`, `[x]`, ...).
    Done,
    /// In progress (`[IN PROGRESS]`, 🔄).
    InProgress,
}

const DONE_SYMBOLS: &[char] = &['\u{2705}', '\u{2714}', '\u{2611}', '\u{2713}'];
const PROGRESS_SYMBOLS: &[char] = &['\u{1f504}'];

/// Emoji, pictographs, dingbats, arrows, box drawing, and the joiners and
/// variation selectors that go with them: decoration, never text.
fn is_decoration(c: char) -> bool {
    !c.is_alphanumeric() && (u32::from(c) >= 0x2190 || c == '\u{200d}')
}

/// Words that undo a status word before them: `not done`, `partially
/// implemented`.
const NEGATIONS: &[&str] = &[
    "not",
    "partially",
    "partly",
    "mostly",
    "half",
    "almost",
    "nearly",
];

/// Words that say "pending" on a `Status:` line.
const PENDING_WORDS: &[&str] = &[
    "pending",
    "todo",
    "to do",
    "not started",
    "planned",
    "open",
    "blocked",
    "next",
    "waiting",
    "queued",
    "later",
    "not done",
];

/// The result of [`scan_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// The markers found, in order.
    pub marks: Vec<Mark>,
    /// The text without markers, emoji and `*`, whitespace collapsed.
    pub clean: String,
    /// Whether a marker was negated (`not done`).
    pub negated: bool,
}

impl Scanned {
    /// The one status the markers agree on, `Ok(None)` when there is none,
    /// or `Err(())` when they disagree.
    pub fn status(&self) -> Result<Option<Mark>, ()> {
        match self.marks.split_first() {
            None => Ok(None),
            Some((first, rest)) if rest.iter().all(|m| m == first) => Ok(Some(*first)),
            Some(_) => Err(()),
        }
    }
}

/// What a bracketed or bare phrase says, if it is a status: `Some(None)`
/// for an explicit "pending".
fn phrase_status(inner: &str, done_words: &[&str]) -> Option<Option<Mark>> {
    let norm: String = inner
        .chars()
        .filter(|&c| c != '*' && !is_decoration(c))
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    if norm == "x" || done_words.contains(&norm.as_str()) {
        Some(Some(Mark::Done))
    } else if matches!(norm.as_str(), "in progress" | "in-progress" | "wip" | "~") {
        Some(Some(Mark::InProgress))
    } else if norm.is_empty() || matches!(norm.as_str(), "pending" | "todo" | "to do") {
        Some(None)
    } else {
        None
    }
}

/// Finds status markers in a heading, list item or `Status:` value.
///
/// Symbols (✅ ✔ ☑ ✓ done, 🔄 in progress) count anywhere; so does a
/// bracketed status, `[DONE]`, `(complete)`, `[x]`, `[IN PROGRESS]`. A bare
/// word from `done_words` (or `in progress`) counts when it is written in
/// capitals next to a word that is not, when it ends the text (`Ledger -
/// done`), or anywhere when `every_word` (a `Status:` value); never inside
/// other parentheses, and `not done` or `partially done` is not done.
/// Matching is case-insensitive otherwise, so a title like "Complete the
/// checkout" is a title, not a status.
pub(crate) fn scan_status(text: &str, done_words: &[&str], every_word: bool) -> Scanned {
    let mut marks = Vec::new();
    // Symbols.
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        if DONE_SYMBOLS.contains(&c) {
            marks.push(Mark::Done);
        } else if PROGRESS_SYMBOLS.contains(&c) {
            marks.push(Mark::InProgress);
        }
        if is_decoration(c) {
            s.push(' ');
        } else {
            s.push(c);
        }
    }
    // Bracketed statuses; other brackets stay, and their words never count.
    let mut kept = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(open) = rest.find(['[', '(']) {
        let close_ch = if rest.as_bytes()[open] == b'[' {
            ']'
        } else {
            ')'
        };
        let Some(len) = rest[open + 1..].find(close_ch) else {
            break;
        };
        let inner = &rest[open + 1..open + 1 + len];
        kept.push_str(&rest[..open]);
        match phrase_status(inner, done_words) {
            Some(m) => {
                marks.extend(m);
                kept.push(' ');
            }
            None => kept.push_str(&rest[open..open + len + 2]),
        }
        rest = &rest[open + len + 2..];
    }
    kept.push_str(rest);
    let s: String = kept.chars().filter(|&c| c != '*').collect();

    // Bare words.
    let words = word_spans(&s);
    let in_parens = paren_spans(&s);
    let inside = |pos: usize| in_parens.iter().any(|&(a, b)| a < pos && pos < b);
    let trailing = |end: usize| {
        let mut after = String::new();
        let mut pos = end;
        for &(a, b) in &in_parens {
            if a >= end {
                after.push_str(&s[pos..a]);
                pos = b;
            }
        }
        after.push_str(&s[pos.min(s.len())..]);
        !after.chars().any(char::is_alphanumeric)
    };
    let mut remove: Vec<(usize, usize)> = Vec::new();
    let mut any_negated = false;
    let mut i = 0;
    while i < words.len() {
        let (a, b) = words[i];
        let w = s[a..b].to_lowercase();
        let between = |j: usize| {
            words.get(j + 1).is_some_and(|&(_, _)| {
                s[words[j].1..words[j + 1].0]
                    .trim_matches([' ', '-'])
                    .is_empty()
            })
        };
        let found = if done_words.contains(&w.as_str()) {
            Some((Mark::Done, i))
        } else if w == "wip" {
            Some((Mark::InProgress, i))
        } else if w == "in"
            && between(i)
            && s[words[i + 1].0..words[i + 1].1].eq_ignore_ascii_case("progress")
        {
            Some((Mark::InProgress, i + 1))
        } else {
            None
        };
        let Some((mark, last)) = found else {
            i += 1;
            continue;
        };
        let end = words[last].1;
        let lower_word = |j: usize| {
            words
                .get(j)
                .is_some_and(|&(x, y)| s[x..y].chars().any(char::is_lowercase))
        };
        let shouting = !s[a..end].chars().any(char::is_lowercase)
            && end - a > 1
            && ((i > 0 && lower_word(i - 1)) || lower_word(last + 1));
        let counts = !inside(a) && (every_word || shouting || trailing(end));
        if counts {
            let negated = i > 0
                && NEGATIONS
                    .iter()
                    .any(|n| s[words[i - 1].0..words[i - 1].1].eq_ignore_ascii_case(n))
                && s[words[i - 1].1..a].trim_matches([' ', '-']).is_empty();
            if negated {
                any_negated = true;
                remove.push((words[i - 1].0, end));
            } else {
                remove.push((a, end));
                marks.push(mark);
            }
        }
        i = last + 1;
    }
    let mut clean = String::with_capacity(s.len());
    let mut pos = 0;
    for (a, b) in remove {
        clean.push_str(&s[pos..a]);
        clean.push(' ');
        pos = b;
    }
    clean.push_str(&s[pos..]);
    let clean = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    let clean = clean
        .trim_end_matches(|c: char| c.is_whitespace() || "-|:,;\u{2013}\u{2014}".contains(c))
        .to_owned();
    Scanned {
        marks,
        clean,
        negated: any_negated,
    }
}

/// Byte ranges of alphanumeric runs.
fn word_spans(s: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices() {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(a)) => {
                out.push((a, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(a) = start {
        out.push((a, s.len()));
    }
    out
}

/// Byte ranges `(open, close)` of parenthesised groups (not nested).
fn paren_spans(s: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut open = None;
    for (i, c) in s.char_indices() {
        match c {
            '(' if open.is_none() => open = Some(i),
            ')' => {
                if let Some(a) = open.take() {
                    out.push((a, i + 1));
                }
            }
            _ => {}
        }
    }
    out
}

/// The status a `Status:` value gives: `Ok(None)` for pending (or empty),
/// `Err(message)` for conflicting markers or a word it does not know.
pub(crate) fn status_value(value: &str, done_words: &[&str]) -> Result<Option<Mark>, String> {
    let scanned = scan_status(value, done_words, true);
    match scanned.status() {
        Err(()) => Err(format!(
            "status `{}` says both done and in progress",
            value.trim()
        )),
        Ok(Some(m)) => Ok(Some(m)),
        Ok(None) => {
            let rest = scanned.clean.to_lowercase();
            let rest = rest.trim_matches(|c: char| !c.is_alphanumeric());
            if rest.is_empty()
                || scanned.negated
                || PENDING_WORDS
                    .iter()
                    .any(|w| rest == *w || rest.starts_with(&format!("{w} ")))
            {
                Ok(None)
            } else {
                Err(format!("unknown status `{}`", value.trim()))
            }
        }
    }
}

/// File paths written in backticks: `` `services/payments/ledger.py` ``.
/// A span counts when it has no spaces and either a `/` or a file
/// extension; `./` is dropped and a trailing `/` becomes `dir/**`.
pub(crate) fn backtick_paths(s: &str, out: &mut Vec<String>) {
    let parts: Vec<&str> = s.split('`').collect();
    // Spans are the odd parts; the last one is unclosed when the number of
    // backticks is odd.
    for i in (1..parts.len().saturating_sub(1)).step_by(2) {
        if let Some(p) = as_path(parts[i]) {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
}

fn as_path(span: &str) -> Option<String> {
    let span = span.trim();
    if span.is_empty()
        || span.len() > 200
        || span.starts_with('-')
        || span.contains("://")
        || span
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "()=<>{}[]$;,'\"|&!?@#%^\\".contains(c))
    {
        return None;
    }
    let span = span.strip_prefix("./").unwrap_or(span);
    let has_dir = span.trim_end_matches('/').contains('/') || span.ends_with('/');
    let name = span.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let has_ext = match name.rfind('.') {
        Some(dot) => {
            let ext = &name[dot + 1..];
            (1..=8).contains(&ext.len())
                && ext.chars().all(|c| c.is_ascii_alphanumeric())
                && ext.chars().any(|c| c.is_ascii_alphabetic())
        }
        None => false,
    };
    if !(has_ext || has_dir && span.chars().any(char::is_alphanumeric)) {
        return None;
    }
    Some(match span.strip_suffix('/') {
        Some(dir) => format!("{dir}/**"),
        None => span.to_owned(),
    })
}

/// Removes parenthesised remarks: `Group F complete (needs accounts)`.
pub(crate) fn strip_parens(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pos = 0;
    for (a, b) in paren_spans(s) {
        out.push_str(&s[pos..a]);
        out.push(' ');
        pos = b;
    }
    out.push_str(&s[pos..]);
    out
}

/// Removes common leading indentation and blank lines at both ends.
pub(crate) fn dedent(lines: &[&str]) -> String {
    let mut lines = lines;
    while lines.first().is_some_and(|l| l.trim().is_empty()) {
        lines = &lines[1..];
    }
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines = &lines[..lines.len() - 1];
    }
    let cut = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start_matches(' ').len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| l.get(cut..).unwrap_or_else(|| l.trim_start()).trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DONE: &[&str] = &["done", "complete", "completed"];

    fn marks(s: &str) -> (Vec<Mark>, String) {
        let r = scan_status(s, DONE, false);
        (r.marks, r.clean)
    }

    #[test]
    fn markers_in_every_spelling() {
        use Mark::*;
        let cases: &[(&str, &[Mark], &str)] = &[
            (
                "**Track 1: Ledger Core** ✅ **[DONE]**",
                &[Done, Done],
                "Track 1: Ledger Core",
            ),
            (
                "**Group G: Payment Service** 💳 **[IN PROGRESS]**",
                &[InProgress],
                "Group G: Payment Service",
            ),
            (
                "Track 2: Card Gateway Adapter (all parallel)",
                &[],
                "Track 2: Card Gateway Adapter (all parallel)",
            ),
            ("Track 3: Ledger - done", &[Done], "Track 3: Ledger"),
            ("Track 3: Ledger (Completed)", &[Done], "Track 3: Ledger"),
            ("[x] Track 4: Refunds", &[Done], "Track 4: Refunds"),
            ("[ ] Track 4: Refunds", &[], "Track 4: Refunds"),
            (
                "Track 5: Complete the checkout flow",
                &[],
                "Track 5: Complete the checkout flow",
            ),
            (
                "Track 5: Mark orders DONE in the UI",
                &[Done],
                "Track 5: Mark orders in the UI",
            ),
            (
                "Group B: COMPLETE REWRITE",
                &[],
                "Group B: COMPLETE REWRITE",
            ),
            ("Track 6: Search 🔄", &[InProgress], "Track 6: Search"),
            (
                "Track 6: Search IN PROGRESS",
                &[InProgress],
                "Track 6: Search",
            ),
            ("Track 7: Audit — not done", &[], "Track 7: Audit"),
            (
                "Track 8: Reports (done by ops, see notes) next",
                &[],
                "Track 8: Reports (done by ops, see notes) next",
            ),
            ("Track 9: Reports ✔️", &[Done], "Track 9: Reports"),
            (
                "Track 9: Done-state screens",
                &[],
                "Track 9: Done-state screens",
            ),
        ];
        for (text, want, clean) in cases {
            let (m, c) = marks(text);
            assert_eq!(&m, want, "{text}");
            assert_eq!(&c, clean, "{text}");
        }
    }

    #[test]
    fn status_values() {
        assert_eq!(status_value("✅ Complete", DONE), Ok(Some(Mark::Done)));
        assert_eq!(status_value("done", DONE), Ok(Some(Mark::Done)));
        assert_eq!(
            status_value("In progress", DONE),
            Ok(Some(Mark::InProgress))
        );
        assert_eq!(status_value("Not started", DONE), Ok(None));
        assert_eq!(status_value("not done yet", DONE), Ok(None));
        assert_eq!(status_value("Partially complete", DONE), Ok(None));
        assert_eq!(status_value("Pending (waiting on F)", DONE), Ok(None));
        assert_eq!(status_value("", DONE), Ok(None));
        assert_eq!(
            status_value("🔄 In progress (Track 1 done)", DONE),
            Ok(Some(Mark::InProgress))
        );
        assert!(status_value("Shipped", DONE)
            .unwrap_err()
            .contains("unknown status"));
        assert!(status_value("done, in progress", DONE)
            .unwrap_err()
            .contains("both"));
    }

    #[test]
    fn fences_comments_and_line_endings() {
        let text =
            "a\r\n```\n## Group A: x\n```\n<!-- \n## Group B: y\n-->\n~~~~text\n~~~\n~~~~\nz";
        let src = Source::new(text);
        let ls = lines(Path::new("R.md"), &src).unwrap().lines;
        let kinds: Vec<Kind> = ls.iter().map(|l| l.kind).collect();
        use Kind::*;
        assert_eq!(
            kinds,
            [Text, FenceOpen, Code, Code, Comment, Comment, Comment, FenceOpen, Code, Code, Text]
        );
        assert_eq!(ls[0].text, "a");
        assert_eq!(ls[10].no, 11);
        // An unclosed code block runs to the end, with a warning.
        let src = Source::new("a\n\n```\nb\n");
        let t = lines(Path::new("R.md"), &src).unwrap();
        assert_eq!(t.lines[3].kind, Code);
        assert_eq!(t.warnings[0].line, Some(3));
        assert!(t.warnings[0].message.contains("never closed"));
        let src = Source::new("<!-- a\nb\n");
        let err = lines(Path::new("R.md"), &src).unwrap_err();
        assert_eq!(err.line, Some(1));
        // Inline code with three backticks is not a fence.
        let src = Source::new("```x``` y");
        assert_eq!(lines(Path::new("R.md"), &src).unwrap().lines[0].kind, Text);
        // Symbols saved through Windows-1252 are read as they were.
        let src = Source::new("# a\n## Track 1: x \u{e2}\u{153}\u{2026}\n");
        let t = lines(Path::new("R.md"), &src).unwrap();
        assert_eq!(t.lines[1].text, "## Track 1: x \u{2705}");
        assert_eq!(t.warnings[0].line, Some(2));
    }

    #[test]
    fn headings_items_labels() {
        assert_eq!(
            heading("### **Group G: X** ##"),
            Some((3, "**Group G: X**"))
        );
        assert_eq!(heading("#hashtag"), None);
        assert_eq!(heading("    # code"), None);
        let it = list_item("   2. **Track 2: Card**").unwrap();
        assert!(it.numbered);
        assert_eq!((it.indent, it.text), (3, "**Track 2: Card**"));
        assert!(list_item("**Deliverables:**").is_none());
        assert!(list_item("12345678901. x").is_none());
        let names = &["Prerequisites", "Status"];
        assert_eq!(
            label("**Prerequisites:** Group F", names),
            Some((0, "Group F"))
        );
        assert_eq!(label("**Status**: Done", names), Some((1, "Done")));
        assert_eq!(label("  - Status: DONE", names), Some((1, "DONE")));
        assert_eq!(label("Statuses: x", names), None);
        assert!(is_bold_label("**Parallel Tracks:**"));
        assert!(is_bold_label("**Notes**: x"));
        assert!(!is_bold_label("**Track 1: X** done"));
        assert!(!is_bold_label("*\"Money moves\"*"));
    }

    #[test]
    fn paths_in_backticks() {
        let mut v = Vec::new();
        backtick_paths(
            "- `services/payments/ledger.py` - ledger, `Idempotency-Key` header, `config.yaml`, `v1.2`, `foo()`, `./a/b.rs`, `docs/`, `https://x.io/a.py`",
            &mut v,
        );
        assert_eq!(
            v,
            [
                "services/payments/ledger.py",
                "config.yaml",
                "a/b.rs",
                "docs/**"
            ]
        );
        let mut v = Vec::new();
        backtick_paths("an unclosed `a/b.py", &mut v);
        assert!(v.is_empty());
    }

    #[test]
    fn dedent_keeps_relative_indentation() {
        assert_eq!(
            dedent(&["", "   - a", "     - b", "", "   c", ""]),
            "- a\n  - b\n\nc"
        );
    }
}
