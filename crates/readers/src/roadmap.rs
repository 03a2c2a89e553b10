//! ROADMAP.md: groups of tracks, their status and prerequisites, read into
//! [`Roadmap`] and turned into tasks by [`Roadmap::select`].
//!
//! Two styles are read (see `docs/roadmap.md`):
//!
//! ```text
//! ### **Group G: Payment Service** 💳 **[IN PROGRESS]**
//! **Prerequisites:** Group F complete
//! 1. **Track 1: Ledger Core** ✅ **[DONE]**
//!    - `services/payments/ledger.py` - double-entry ledger
//! 2. **Track 2: Card Gateway Adapter**
//! **Deliverables:** ...
//! ```
//!
//! and `## Group E: Title` / `### Track 2: Title` headings with `Status:`
//! lines. A group is a heading whose text starts `Group X:`; a track is a
//! heading or list item whose text starts `Track N:`. Code blocks, HTML
//! comments, tables and emoji never make a group or a track. Whatever is
//! ambiguous is an error with its line, never a guess.
//!
//! Tracks become tasks named `group_E_track_2`, the names the original
//! scripts gave their locks and logs.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::markdown::{self, Kind, Line, Mark};
use orch_session::error::Diagnostic;
use orch_session::plan::{Action, After, Settings, Task};

use crate::SourcedTask;

/// Words that mark a group or track done.
const DONE_WORDS: &[&str] = &["done", "complete", "completed"];
/// On a `Status:` line, a few more.
const STATUS_DONE_WORDS: &[&str] = &["done", "complete", "completed", "finished", "implemented"];

/// Where a group or track stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No marker.
    Pending,
    /// `[IN PROGRESS]`, 🔄.
    InProgress,
    /// `[DONE]`, ✅, DONE, COMPLETE(D), `[x]`.
    Done,
}

impl From<Option<Mark>> for Status {
    fn from(m: Option<Mark>) -> Self {
        match m {
            None => Status::Pending,
            Some(Mark::InProgress) => Status::InProgress,
            Some(Mark::Done) => Status::Done,
        }
    }
}

/// A parsed ROADMAP.md.
#[derive(Debug, Clone, PartialEq)]
pub struct Roadmap {
    /// The file it was read from.
    pub path: PathBuf,
    /// Groups in file order.
    pub groups: Vec<Group>,
    /// What reading it noticed that does not stop the plan.
    pub warnings: Vec<Diagnostic>,
    /// Tracks counted done though the file does not say so, with why
    /// ([`Roadmap::count_done`]).
    pub done_elsewhere: HashMap<String, String>,
    /// Group names (exact, and lowercased) and track ids to positions: a
    /// roadmap of 10,000 groups is looked up a million times.
    lookup: Lookup,
}

/// Indexes of a [`Roadmap`]'s groups and tracks.
#[derive(Debug, Clone, Default, PartialEq)]
struct Lookup {
    groups: HashMap<String, usize>,
    lowercase: HashMap<String, Vec<usize>>,
    tracks: HashMap<String, (usize, usize)>,
}

impl Lookup {
    fn of(groups: &[Group]) -> Lookup {
        let mut l = Lookup::default();
        for (i, g) in groups.iter().enumerate() {
            l.groups.entry(g.name.clone()).or_insert(i);
            l.lowercase
                .entry(g.name.to_lowercase())
                .or_default()
                .push(i);
            for (k, t) in g.tracks.iter().enumerate() {
                l.tracks.entry(t.id.clone()).or_insert((i, k));
            }
        }
        l
    }
}

/// A group of tracks: `Group G: Payment Service`.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The letter (or name) after `Group`: `G`.
    pub name: String,
    /// The title after the colon, without markers.
    pub title: String,
    /// Line of the heading.
    pub line: usize,
    /// The status its heading or `Status:` line gives.
    pub status: Status,
    /// Line of the marker that says it is done, when it is.
    pub done_line: Option<usize>,
    /// Groups named on its `Prerequisites:` line.
    pub prerequisites: Vec<String>,
    /// Line of the `Prerequisites:` line.
    pub prerequisites_line: Option<usize>,
    /// Its `Deliverables:` text.
    pub deliverables: String,
    /// Its `Success Criteria:` text.
    pub success_criteria: String,
    /// Tracks in file order.
    pub tracks: Vec<Track>,
    /// The first checklist item (`- [ ] ...`) outside its tracks, which is
    /// not a track: said when the group has none.
    pub checklist_line: Option<usize>,
    /// The first table row outside its tracks, likewise.
    pub table_line: Option<usize>,
}

/// A track of a group: `Track 2: Card Gateway Adapter`.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// The number (or name) after `Track`: `2`.
    pub number: String,
    /// Task id: `group_G_track_2`.
    pub id: String,
    /// The title after the colon, without markers.
    pub title: String,
    /// Line of the heading or list item.
    pub line: usize,
    /// Its status; `Done` also when its group is marked done.
    pub status: Status,
    /// Line of the marker that says it is done, when it is.
    pub done_line: Option<usize>,
    /// Ids of the tracks its `Depends on:` line names.
    pub depends_on: Vec<String>,
    /// Line of the `Depends on:` line.
    pub depends_line: Option<usize>,
    /// Its nested content, dedented.
    pub content: String,
    /// File paths written in backticks in its content.
    pub files: Vec<String>,
}

impl Group {
    /// Done when marked done, or when it has tracks and all are done.
    pub fn is_done(&self) -> bool {
        self.status == Status::Done
            || (!self.tracks.is_empty() && self.tracks.iter().all(|t| t.status == Status::Done))
    }
}

/// The task id of track `number` of group `group`.
pub fn track_id(group: &str, number: &str) -> String {
    format!("group_{group}_track_{number}")
}

/// Which groups to plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection<'a> {
    /// The first group not done whose prerequisites are all done.
    Current,
    /// This group's open tracks.
    Group(&'a str),
    /// Every group not done, as one dependency graph.
    All,
}

/// A track left out because it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its task id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Why it is left out.
    pub reason: String,
}

/// What [`Roadmap::select`] chose.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    /// The groups planned, in file order.
    pub groups: Vec<String>,
    /// Their open tracks as tasks, ready for [`crate::plan_from_tasks`].
    pub tasks: Vec<SourcedTask>,
    /// Done tracks of the planned groups.
    pub skipped: Vec<Skipped>,
    /// Groups that are done.
    pub done_groups: Vec<String>,
    /// Things worth saying that do not stop the plan.
    pub warnings: Vec<String>,
}

/// Why a selection cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// `--group` names a group the roadmap does not have.
    #[error("no group `{name}` in `{}` (its groups: {known})", file.display())]
    UnknownGroup {
        /// The roadmap.
        file: PathBuf,
        /// The name asked for.
        name: String,
        /// The groups it has, comma separated.
        known: String,
    },
    /// Everything selected is done.
    #[error("nothing to plan: {0}")]
    NothingToPlan(String),
    /// The roadmap cannot be planned as written.
    #[error("{0}")]
    Invalid(Box<Diagnostic>),
}

impl From<Diagnostic> for SelectError {
    fn from(d: Diagnostic) -> Self {
        SelectError::Invalid(Box::new(d))
    }
}

/// Labels read at group level.
const GROUP_LABELS: &[&str] = &[
    "Prerequisites",
    "Prerequisite",
    "Status",
    "Deliverables",
    "Success Criteria",
    "Depends on",
];
/// Labels read inside a track: its status, and the tracks it needs under
/// the names people give them.
const TRACK_LABELS: &[&str] = &[
    "Status",
    "Depends on",
    "Dependencies",
    "Dependency",
    "Blocked by",
    "Requires",
    "Needs",
];

/// Where group-level lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Other,
    Deliverables,
    Criteria,
}

/// How a track was written, which decides where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrackKind {
    /// A heading of this level: ends at the next heading of this level or
    /// above.
    Heading(usize),
    /// A list item whose marker is at this column: ends at the next line
    /// that is not indented past it.
    Item(usize),
    /// A bold line of its own (`**Track 1 — Title** ✓`): ends at the next
    /// such line or any heading.
    Bold,
}

/// A status read from a heading or item, and from a `Status:` line.
#[derive(Debug, Clone, Copy, Default)]
struct Marks {
    heading: Option<Mark>,
    line: Option<(Option<Mark>, usize)>,
}

impl Marks {
    /// The agreed status and the line that says "done", or the conflict.
    fn combine(
        self,
        path: &Path,
        what: &str,
        heading_line: usize,
    ) -> Result<(Status, Option<usize>), Diagnostic> {
        match (self.heading, self.line) {
            (Some(h), Some((s, sl))) if Some(h) != s => Err(Diagnostic::new(
                path,
                format!(
                    "{what} is marked {} on line {heading_line} but {} here",
                    word(Some(h)),
                    word(s)
                ),
            )
            .line(Some(sl))
            .help("keep one status marker")),
            (Some(h), _) => Ok((Some(h).into(), (h == Mark::Done).then_some(heading_line))),
            (None, Some((s, sl))) => Ok((s.into(), (s == Some(Mark::Done)).then_some(sl))),
            (None, None) => Ok((Status::Pending, None)),
        }
    }
}

struct GroupB {
    group: Group,
    level: usize,
    marks: Marks,
    prereq: Option<(String, usize)>,
    /// Prerequisites written in the heading: `(Requires Group D)`.
    heading_prereq: Option<(String, usize)>,
    /// The `# Phase N` section it is in.
    phase: Option<String>,
    section: Section,
    deliverables: Vec<String>,
    criteria: Vec<String>,
}

struct TrackB<'a> {
    track: Track,
    kind: TrackKind,
    marks: Marks,
    depends: Option<(String, usize)>,
    /// Its lines, and whether each is code.
    lines: Vec<(Line<'a>, bool)>,
    /// Where `Deliverables:` or `Success Criteria:` at the margin starts in
    /// a heading track: the group's, if the track is the group's last.
    tail: Option<usize>,
}

struct Parser<'a> {
    path: &'a Path,
    groups: Vec<GroupB>,
    /// Whether the last group is still open.
    open: bool,
    track: Option<TrackB<'a>>,
    /// The heading that closed the last group, for a better message about
    /// a track that follows it.
    closed_by: Option<usize>,
    /// `Depends on:` values: (group, track, text, line), resolved at the end.
    depends: Vec<(usize, usize, String, usize)>,
    /// What is worth saying but does not stop the plan.
    warnings: Vec<Diagnostic>,
    /// The `# Phase N` heading groups are under, if any.
    phase: Option<(String, usize)>,
    /// The line of the code block being read, if any.
    fence: Option<usize>,
    /// Group headings inside code blocks: (the block's line, the
    /// heading's line, the group's name), to explain a group that seems
    /// missing.
    hidden: Vec<(usize, usize, String)>,
}

impl<'a> Parser<'a> {
    fn diag(&self, line: usize, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(self.path, message).line(Some(line))
    }

    fn group(&mut self) -> Option<&mut GroupB> {
        if self.open {
            self.groups.last_mut()
        } else {
            None
        }
    }

    fn finish_track(&mut self) -> Result<(), Diagnostic> {
        let Some(tb) = self.track.take() else {
            return Ok(());
        };
        let path = self.path;
        let what = format!("track {}", tb.track.number);
        let (status, done_line) = tb.marks.combine(path, &what, tb.track.line)?;
        let gi = self.groups.len() - 1;
        let Some(gb) = self.group() else {
            return Ok(());
        };
        let mut track = tb.track;
        track.status = status;
        track.done_line = done_line;
        let texts: Vec<&str> = tb.lines.iter().map(|(l, _)| l.text).collect();
        track.content = markdown::dedent(&texts);
        track.files = track_files(&tb.lines);
        let ti = gb.group.tracks.len();
        gb.group.tracks.push(track);
        if let Some((text, line)) = tb.depends {
            self.depends.push((gi, ti, text, line));
        }
        Ok(())
    }

    fn close_group(&mut self) -> Result<(), Diagnostic> {
        // What follows `Deliverables:` at the margin of the group's last
        // heading track is the group's, as it is in seed 002's files.
        let tail = self.track.as_mut().and_then(|tb| {
            let at = tb.tail?;
            Some((tb.track.number.clone(), tb.lines.split_off(at)))
        });
        self.finish_track()?;
        if let Some((number, lines)) = tail {
            if let (Some(gb), Some((first, _))) = (self.group(), lines.first()) {
                let (name, no) = (gb.group.name.clone(), first.no);
                self.warnings.push(
                    self.diag(
                        no,
                        format!("this is read as group {name}'s, though it follows track {number}"),
                    )
                    .help("put a group's Deliverables and Success Criteria before its tracks, or under a `### Deliverables` heading"),
                );
            }
            for (line, code) in lines {
                if code || !self.group_label(&line)? {
                    self.push(&line, code);
                }
            }
        }
        if !self.open {
            return Ok(());
        }
        self.open = false;
        let path = self.path;
        let Some(gb) = self.groups.last_mut() else {
            return Ok(());
        };
        let what = format!("group {}", gb.group.name);
        let (status, done_line) = gb.marks.combine(path, &what, gb.group.line)?;
        gb.group.status = status;
        gb.group.done_line = done_line;
        gb.group.deliverables = markdown::dedent(&refs(&gb.deliverables));
        gb.group.success_criteria = markdown::dedent(&refs(&gb.criteria));
        Ok(())
    }

    /// Adds a line to the open track, or to the open group section.
    fn push(&mut self, line: &Line<'a>, code: bool) {
        if let Some(tb) = &mut self.track {
            tb.lines.push((*line, code));
        } else if let Some(gb) = self.group() {
            match gb.section {
                Section::Deliverables => gb.deliverables.push(line.text.to_owned()),
                Section::Criteria => gb.criteria.push(line.text.to_owned()),
                Section::Other => {}
            }
        }
    }

    fn start_group(
        &mut self,
        line: &Line<'_>,
        level: usize,
        (name, title): (&str, &str),
        mark: Option<Mark>,
    ) -> Result<(), Diagnostic> {
        self.close_group()?;
        if let Some(first) = self.groups.iter().find(|g| g.group.name == name) {
            return Err(self
                .diag(
                    line.no,
                    format!(
                        "a second group {name} (the first is on line {})",
                        first.group.line
                    ),
                )
                .help("give each group its own letter"));
        }
        self.open = true;
        self.closed_by = None;
        let (title, heading_prereq) = heading_prerequisites(title);
        let heading_prereq = heading_prereq.map(|v| (v, line.no));
        self.groups.push(GroupB {
            group: Group {
                name: name.to_owned(),
                title,
                line: line.no,
                status: Status::Pending,
                done_line: None,
                prerequisites: Vec::new(),
                prerequisites_line: None,
                deliverables: String::new(),
                success_criteria: String::new(),
                tracks: Vec::new(),
                checklist_line: None,
                table_line: None,
            },
            level,
            marks: Marks {
                heading: mark,
                line: None,
            },
            prereq: None,
            heading_prereq,
            phase: self.phase.as_ref().map(|(p, _)| p.clone()),
            section: Section::Other,
            deliverables: Vec::new(),
            criteria: Vec::new(),
        });
        Ok(())
    }

    fn start_track(
        &mut self,
        line: &Line<'_>,
        kind: TrackKind,
        (number, title): (&str, &str),
        mark: Option<Mark>,
    ) -> Result<(), Diagnostic> {
        self.finish_track()?;
        let path = self.path;
        let closed_by = self.closed_by;
        let Some(gb) = self.group() else {
            let mut help = "put it under a group heading like `## Group A: Title`".to_owned();
            if let Some(end) = closed_by {
                help += &format!("; the heading on line {end} ended the group before it");
            }
            return Err(Diagnostic::new(
                path,
                format!("track {number} `{title}` is not inside any group"),
            )
            .line(Some(line.no))
            .help(help));
        };
        if let Some(first) = gb.group.tracks.iter().find(|t| t.number == number) {
            return Err(Diagnostic::new(
                path,
                format!(
                    "group {} has a second track {number} (the first is on line {})",
                    gb.group.name, first.line
                ),
            )
            .line(Some(line.no))
            .help("give each track of a group its own number"));
        }
        gb.section = Section::Other;
        let id = track_id(&gb.group.name, number);
        self.track = Some(TrackB {
            track: Track {
                number: number.to_owned(),
                id,
                title: title.to_owned(),
                line: line.no,
                status: Status::Pending,
                done_line: None,
                depends_on: Vec::new(),
                depends_line: None,
                content: String::new(),
                files: Vec::new(),
            },
            kind,
            marks: Marks {
                heading: mark,
                line: None,
            },
            depends: None,
            lines: Vec::new(),
            tail: None,
        });
        Ok(())
    }

    /// A `Status:` or `Depends on:` line inside a track.
    fn track_label(&mut self, line: &Line<'a>) -> Result<(), Diagnostic> {
        let path = self.path;
        let Some(tb) = &mut self.track else {
            return Ok(());
        };
        let number = &tb.track.number;
        match markdown::label(line.text, TRACK_LABELS) {
            Some((0, value)) => {
                let s = status_line(path, line.no, value)?;
                tb.marks.line = repeat_status(
                    path,
                    &format!("track {number}"),
                    tb.marks.line,
                    (s, line.no),
                    value,
                )?;
            }
            Some((_, value)) => {
                if let Some((_, first)) = tb.depends {
                    return Err(once(
                        path,
                        line.no,
                        &format!("track {number}"),
                        "Depends on:",
                        first,
                    ));
                }
                tb.depends = Some((value.to_owned(), line.no));
                tb.track.depends_line = Some(line.no);
            }
            None => {}
        }
        Ok(())
    }

    /// A labelled line at group level; false when the line is not one.
    fn group_label(&mut self, line: &Line<'a>) -> Result<bool, Diagnostic> {
        let path = self.path;
        let Some(gb) = self.group() else {
            return Ok(false);
        };
        let what = format!("group {}", gb.group.name);
        match markdown::label(line.text, GROUP_LABELS) {
            Some((0 | 1, value)) => {
                if let Some((_, first)) = gb.prereq {
                    return Err(once(path, line.no, &what, "Prerequisites:", first));
                }
                gb.prereq = Some((value.to_owned(), line.no));
                gb.group.prerequisites_line = Some(line.no);
                gb.section = Section::Other;
            }
            Some((2, value)) => {
                let s = status_line(path, line.no, value)?;
                gb.marks.line = repeat_status(path, &what, gb.marks.line, (s, line.no), value)?;
                gb.section = Section::Other;
            }
            Some((5, value)) => {
                // The groups it needs, under another name.
                if let Some((_, first)) = gb.prereq {
                    return Err(once(path, line.no, &what, "Prerequisites:", first));
                }
                gb.prereq = Some((value.to_owned(), line.no));
                gb.group.prerequisites_line = Some(line.no);
                gb.section = Section::Other;
                self.warnings.push(
                    Diagnostic::new(
                        path,
                        format!("{what}'s `Depends on:` is read as its prerequisites"),
                    )
                    .line(Some(line.no))
                    .help("write `Prerequisites:` for the groups a group needs"),
                );
            }
            Some((i, value)) => {
                let (section, buf) = if i == 3 {
                    (Section::Deliverables, &mut gb.deliverables)
                } else {
                    (Section::Criteria, &mut gb.criteria)
                };
                if !value.is_empty() {
                    buf.push(value.to_owned());
                }
                gb.section = section;
            }
            None if markdown::is_bold_label(line.text) => gb.section = Section::Other,
            None => return Ok(false),
        }
        Ok(true)
    }

    fn line(&mut self, line: &Line<'a>) -> Result<(), Diagnostic> {
        match line.kind {
            Kind::Comment => return Ok(()),
            Kind::Code => {
                if let (Some(fence), Some((_, text))) = (self.fence, markdown::heading(line.text)) {
                    let sc = markdown::scan_status(text, DONE_WORDS, false);
                    if let Some((name, _)) = head_of("Group", &sc.clean) {
                        self.hidden.push((fence, line.no, name.to_owned()));
                    }
                }
                self.push(line, true);
                return Ok(());
            }
            Kind::FenceOpen => self.fence = Some(line.no),
            Kind::Text => {}
        }
        if line.is_blank() {
            self.push(line, false);
            return Ok(());
        }
        if let Some(TrackB {
            kind: TrackKind::Item(at),
            ..
        }) = &self.track
        {
            if markdown::indent(line.text) <= *at {
                self.finish_track()?;
            }
        }
        if line.kind == Kind::FenceOpen {
            self.push(line, true);
            return Ok(());
        }
        if let Some((level, text)) = markdown::heading(line.text) {
            return self.heading(line, level, text);
        }
        if let Some(head) = self.bold_track(line) {
            let sc = markdown::scan_status(line.text, DONE_WORDS, false);
            let mark = sc.status().map_err(|()| self.conflict(line.no))?;
            let (n, t) = head;
            return self.start_track(line, TrackKind::Bold, (&n, &t), mark);
        }
        if let Some(item) = markdown::list_item(line.text) {
            let sc = markdown::scan_status(item.text, DONE_WORDS, false);
            if let Some(head @ (number, _)) = head_of("Track", &sc.clean) {
                match &self.track {
                    // A list item nested in a track's content is content.
                    Some(tb) if item.indent > 0 || matches!(tb.kind, TrackKind::Item(_)) => {}
                    Some(tb) => {
                        return Err(self
                            .diag(
                                line.no,
                                format!(
                                    "`Track {number}:` is a list item inside the content of track {} (line {}): a track of its own, or part of it?",
                                    tb.track.number, tb.track.line
                                ),
                            )
                            .help(format!(
                                "write it as a heading like the other tracks (`### Track {number}: Title`), or reword it"
                            )));
                    }
                    None => {
                        let mark = sc.status().map_err(|()| self.conflict(line.no))?;
                        return self.start_track(line, TrackKind::Item(item.indent), head, mark);
                    }
                }
            }
            if item.numbered {}
        }
        if let Some(tb) = &mut self.track {
            if tb.tail.is_none()
                && matches!(tb.kind, TrackKind::Heading(_))
                && markdown::indent(line.text) == 0
                && markdown::label(line.text, &["Deliverables", "Success Criteria"]).is_some()
            {
                tb.tail = Some(tb.lines.len());
            }
            self.track_label(line)?;
            self.push(line, false);
        } else if !self.group_label(line)? {
            if let Some(gb) = self.group() {
                let t = line.text.trim_start();
                let item = markdown::list_item(t).map(|i| i.text);
                if item.is_some_and(markdown::is_checkbox) {
                    gb.group.checklist_line.get_or_insert(line.no);
                } else if t.starts_with('|') {
                    gb.group.table_line.get_or_insert(line.no);
                }
            }
            self.push(line, false);
        }
        Ok(())
    }

    /// `**Track 1 — Title** ✓` on a line of its own, at the margin of a
    /// group, outside a heading or item track: a track written as a bold
    /// line. Its number and title.
    fn bold_track(&self, line: &Line<'_>) -> Option<(String, String)> {
        if !line.text.starts_with("**")
            || matches!(
                self.track.as_ref().map(|t| t.kind),
                Some(TrackKind::Heading(_) | TrackKind::Item(_))
            )
        {
            return None;
        }
        self.open.then_some(())?;
        let sc = markdown::scan_status(line.text, DONE_WORDS, false);
        head_of("Track", &sc.clean).map(|(n, t)| (n.to_owned(), t.to_owned()))
    }

    fn heading(&mut self, line: &Line<'a>, level: usize, text: &str) -> Result<(), Diagnostic> {
        if let Some(TrackB {
            kind: TrackKind::Item(_) | TrackKind::Bold,
            ..
        }) = &self.track
        {
            self.finish_track()?;
        }
        let sc = markdown::scan_status(text, DONE_WORDS, false);
        if let Some(head) = head_of("Group", &sc.clean) {
            let mark = sc.status().map_err(|()| self.conflict(line.no))?;
            return self.start_group(line, level, head, mark);
        }
        // `# Phase 1: Intake` above the groups: `Prerequisites: Phase 1`
        // means the groups under it.
        match head_of("Phase", &sc.clean) {
            Some((n, _)) if self.group().is_none_or(|g| level <= g.level) => {
                self.phase = Some((n.to_owned(), level));
            }
            _ => {
                if self.phase.as_ref().is_some_and(|&(_, l)| level <= l) {
                    self.phase = None;
                }
            }
        }
        let lettered = self
            .group()
            .and_then(|g| lettered_head(&g.group.name, &sc.clean));
        if let Some(head) = head_of("Track", &sc.clean).or(lettered) {
            let mark = sc.status().map_err(|()| self.conflict(line.no))?;
            return self.start_track(line, TrackKind::Heading(level), head, mark);
        }
        if let Some(TrackB {
            kind: TrackKind::Heading(tl),
            ..
        }) = &self.track
        {
            if level > *tl {
                self.push(line, false);
                return Ok(());
            }
            self.finish_track()?;
        }
        let Some(gb) = self.group() else {
            return Ok(());
        };
        if level <= gb.level {
            self.close_group()?;
            self.closed_by = Some(line.no);
            return Ok(());
        }
        // A heading inside the group, outside any track.
        let name = sc.clean.trim_end_matches(':').to_ascii_lowercase();
        gb.section = match name.as_str() {
            "deliverables" => Section::Deliverables,
            "success criteria" => Section::Criteria,
            _ => Section::Other,
        };
        Ok(())
    }

    fn conflict(&self, line: usize) -> Diagnostic {
        self.diag(line, "status markers say both done and in progress")
            .help("keep one status marker")
    }
}

fn status_line(path: &Path, line: usize, value: &str) -> Result<Option<Mark>, Diagnostic> {
    markdown::status_value(value, STATUS_DONE_WORDS).map_err(|m| {
        Diagnostic::new(path, m)
            .line(Some(line))
            .help("write DONE, IN PROGRESS or PENDING")
    })
}

/// A `Status:` line after `first`: the same status said again is fine (the
/// first line is kept), another one is an error naming both lines.
fn repeat_status(
    path: &Path,
    what: &str,
    first: Option<(Option<Mark>, usize)>,
    this: (Option<Mark>, usize),
    value: &str,
) -> Result<Option<(Option<Mark>, usize)>, Diagnostic> {
    match first {
        None => Ok(Some(this)),
        Some((f, _)) if f == this.0 => Ok(first),
        Some((f, fl)) => Err(Diagnostic::new(
            path,
            format!(
                "{what} says `{}` here but {} on line {fl}",
                value.trim(),
                word(f)
            ),
        )
        .line(Some(this.1))
        .help("keep one Status line")),
    }
}

/// A label that may appear once, seen twice.
fn once(path: &Path, line: usize, what: &str, label: &str, first: usize) -> Diagnostic {
    Diagnostic::new(
        path,
        format!("{what} has a second `{label}` line (the first is on line {first})"),
    )
    .line(Some(line))
    .help("keep one, listing everything on it")
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn word(m: Option<Mark>) -> &'static str {
    match m {
        None => "pending",
        Some(Mark::Done) => "done",
        Some(Mark::InProgress) => "in progress",
    }
}

/// The length of a group or track name at the start of `s`: letters and
/// digits, and a `.` between digits (`4.5`).
fn name_len(s: &str) -> usize {
    let b = s.as_bytes();
    let mut n = 0;
    while n < b.len() {
        let dotted = b[n] == b'.'
            && n > 0
            && b[n - 1].is_ascii_digit()
            && b.get(n + 1).is_some_and(u8::is_ascii_digit);
        if !(b[n].is_ascii_alphanumeric() || dotted) {
            break;
        }
        n += 1;
    }
    n
}

/// `text` without a leading `kw` (case-insensitive) and the space after it.
fn strip_word<'t>(text: &'t str, kw: &str) -> Option<&'t str> {
    let head = text.get(..kw.len())?;
    if !head.eq_ignore_ascii_case(kw) {
        return None;
    }
    let rest = &text[kw.len()..];
    rest.starts_with([' ', '\t']).then(|| rest.trim_start())
}

/// `Group G: Title` → (`G`, `Title`). Between the name and the title a
/// colon (the title may then be empty), or, before a title, what people
/// write instead: an em or en dash, a hyphen, a period or a `)` (`Group B —
/// Data ingestion`, `Track 2 - Export`, `Group 4.5 — Gating`, `Track 3.
/// Printing`). A heading of the name alone (`## Group E`) has no title.
fn head_of<'t>(kw: &str, clean: &'t str) -> Option<(&'t str, &'t str)> {
    let rest = strip_word(clean, kw)?;
    let n = name_len(rest);
    if n == 0 {
        return None;
    }
    let after = rest[n..].trim_start();
    if let Some(title) = after.strip_prefix(':') {
        return Some((&rest[..n], title.trim()));
    }
    // Alone, the name must look like one (`Group E`, `Track 12`), not a
    // word (`Track notes`).
    let name = &rest[..n];
    if after.is_empty() {
        let like_a_name = name.len() <= 3
            && (name.chars().any(|c| c.is_ascii_digit())
                || name.chars().all(|c| c.is_ascii_uppercase()));
        return like_a_name.then_some((name, ""));
    }
    let title = ["\u{2014}", "\u{2013}", "- ", ". ", ") "]
        .iter()
        .find_map(|sep| after.strip_prefix(sep))?
        .trim();
    (!title.is_empty()).then_some((&rest[..n], title))
}

/// `E1. Title` in group `E`: track 1. The group's name, digits, and a
/// `.`, `:` or `)` (or a dash) before the title.
fn lettered_head<'t>(group: &str, clean: &'t str) -> Option<(&'t str, &'t str)> {
    let rest = clean.strip_prefix(group)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let after = &rest[digits..];
    let title = [".", ":", ")", " \u{2014}", " \u{2013}", " -"]
        .iter()
        .find_map(|sep| after.strip_prefix(sep))?
        .trim();
    (!title.is_empty()).then_some((&rest[..digits], title))
}

/// What a label (or heading) inside a track says about the paths under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathsAre {
    /// Whatever else: the track's files.
    Edited,
    /// `Files:`, `Create:`, `Modify:`: the track's files, and then only
    /// these.
    Listed,
    /// `Read first`, `References:`, `Spec resources:`, `Context:`: read,
    /// not edited.
    Read,
    /// `Folder:`: the directory bare file names under `File:` are in.
    Folder,
}

const LISTED_WORDS: &[&str] = &[
    "files", "file", "create", "creates", "edit", "edits", "modify", "modifies", "change",
    "changes", "touch", "touches", "write", "writes", "outputs",
];
const FOLDER_WORDS: &[&str] = &["folder", "folders", "directory", "dir"];

/// What a label or heading's words make of the paths under it.
fn paths_are(name: &str) -> Option<PathsAre> {
    let lower = name.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    if markdown::is_reading_list(name) {
        Some(PathsAre::Read)
    } else if words.first().is_some_and(|w| FOLDER_WORDS.contains(w)) {
        Some(PathsAre::Folder)
    } else if words.first().is_some_and(|w| LISTED_WORDS.contains(w)) {
        Some(PathsAre::Listed)
    } else {
        None
    }
}

/// A label at the start of a line: its name and value (`**Spec
/// resources:**`, `- Folder: x`), and whether it is bold.
fn any_label(text: &str) -> Option<(&str, &str, bool)> {
    let mut t = text.trim_start();
    if let Some(item) = markdown::list_item(t) {
        t = item.text;
    }
    let bold = t.starts_with("**") || t.starts_with("__");
    let t = t.trim_start_matches(['*', '_']);
    let colon = t.find(':')?;
    let name = t[..colon].trim_end_matches(['*', '_']);
    if name.is_empty() || name.len() > 40 || name.contains('`') {
        return None;
    }
    let value = t[colon + 1..].trim_start_matches(['*', '_', ' ']);
    Some((name, value, bold))
}

/// The files a track edits, from its own lines: paths in backticks
/// outside code, but those under a reading list (`Read first`,
/// `References:`); when it lists its files (`Files:`, `Create:`), just
/// those; a bare file name under `File:` is in the `Folder:` before it.
fn track_files(lines: &[(Line<'_>, bool)]) -> Vec<String> {
    let mut edited = Vec::new();
    let mut listed = Vec::new();
    let mut section = PathsAre::Edited;
    let mut opened_by_plain = true;
    let mut folder: Option<String> = None;
    for (line, code) in lines {
        if *code {
            continue;
        }
        if let Some((_, text)) = markdown::heading(line.text) {
            section = paths_are(text).unwrap_or(PathsAre::Edited);
            opened_by_plain = false;
        } else if let Some((name, _, bold)) = any_label(line.text) {
            // Inside a list a bold label heads, `- Change: x` items are
            // its entries, not new sections.
            if bold || opened_by_plain || section == PathsAre::Edited {
                match paths_are(name) {
                    Some(p) => {
                        section = p;
                        opened_by_plain = !bold;
                    }
                    None if bold => {
                        section = PathsAre::Edited;
                        opened_by_plain = false;
                    }
                    None => {}
                }
            }
        }
        let mut found = Vec::new();
        markdown::backtick_paths(line.text, &mut found);
        match section {
            PathsAre::Read => {}
            PathsAre::Folder => {
                folder = found
                    .first()
                    .map(|f| f.trim_end_matches("/**").trim_end_matches('/').to_owned());
            }
            PathsAre::Listed => {
                for f in found {
                    let f = match &folder {
                        Some(dir) if !f.contains('/') => format!("{dir}/{f}"),
                        _ => f,
                    };
                    if !listed.contains(&f) {
                        listed.push(f);
                    }
                }
            }
            PathsAre::Edited => {
                for f in found {
                    if !edited.contains(&f) {
                        edited.push(f);
                    }
                }
            }
        }
    }
    if listed.is_empty() {
        edited
    } else {
        listed
    }
}

/// Words of a `Prerequisites:` or `Depends on:` value: runs of letters,
/// digits and `_`, and single punctuation marks. Parenthesised remarks,
/// `*` and backticks are dropped.
fn tokens(value: &str) -> Vec<String> {
    let v: String = strip_remarks(value)
        .chars()
        .map(|c| if c == '*' || c == '`' { ' ' } else { c })
        .collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in v.chars() {
        if c.is_alphanumeric() || c == '_' {
            cur.push(c);
            continue;
        }
        if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `value` without its parenthesised remarks, but for those that name
/// groups: `Groups A & B, plus the matcher (Group C)` needs C too.
fn strip_remarks(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(open) = rest.find('(') {
        let Some(len) = rest[open..].find(')') else {
            break;
        };
        out.push_str(&rest[..open]);
        let inner = &rest[open + 1..open + len];
        let lower = inner.trim_start().to_lowercase();
        out.push(' ');
        if lower.starts_with("group ") || lower.starts_with("groups ") {
            out.push_str(inner);
            out.push(' ');
        }
        rest = &rest[open + len + 1..];
    }
    out.push_str(rest);
    out
}

/// Words that open a heading's remark about what the group needs:
/// `(Requires Group D)`, `(Execute after Group A)`.
const NEEDS_WORDS: &[&str] = &[
    "requires",
    "require",
    "execute after",
    "run after",
    "after",
    "depends on",
    "needs",
    "prerequisites",
    "prerequisite",
    "blocked by",
];

/// A group title without the remark that says what the group needs, and
/// that remark: `Frame (Requires Group A)` → (`Frame`, `Group A`).
fn heading_prerequisites(title: &str) -> (String, Option<String>) {
    let mut rest = title;
    let mut kept = String::new();
    let mut found = None;
    while let Some(open) = rest.find('(') {
        let Some(len) = rest[open..].find(')') else {
            break;
        };
        let inner = rest[open + 1..open + len].trim();
        let lower = inner.to_lowercase();
        let lead = NEEDS_WORDS
            .iter()
            .find(|w| lower.starts_with(*w) && lower[w.len()..].starts_with([' ', ':']));
        match (lead, &found) {
            (Some(w), None) => {
                kept.push_str(&rest[..open]);
                found = Some(inner[w.len()..].trim_start_matches([' ', ':']).to_owned());
            }
            _ => kept.push_str(&rest[..open + len + 1]),
        }
        rest = &rest[open + len + 1..];
    }
    kept.push_str(rest);
    (kept.split_whitespace().collect::<Vec<_>>().join(" "), found)
}

/// "None", "-", "n/a", and "None" with a remark after it (`None—this is
/// where it all starts!`, `None (first group)`, `none.`): nothing.
fn says_none(value: &str) -> bool {
    let v = markdown::strip_parens(value).replace(['*', '`'], "");
    let v = v.trim().trim_end_matches('.').to_lowercase();
    if matches!(
        v.as_str(),
        "-" | "n/a" | "nothing" | "no" | "\u{2014}" | "\u{2013}"
    ) {
        return true;
    }
    let Some(rest) = v.strip_prefix("none") else {
        return false;
    };
    // `None`, or `None` and a remark: not `Nonesuch`, not `None of A`.
    rest.is_empty()
        || (!rest.starts_with(char::is_alphanumeric) && !rest.trim_start().starts_with("of "))
}

fn is_sep(t: &str) -> bool {
    matches!(t, "," | ";" | "+" | "&" | "/") || t.eq_ignore_ascii_case("and")
}

fn is_alnum(t: &str) -> bool {
    t.chars().all(|c| c.is_ascii_alphanumeric())
}

impl Parser<'_> {
    /// The groups a `Prerequisites:` value names, and what is worth a
    /// warning about it. Read: `Group F complete`, `Groups E + G`, `Groups
    /// A-C` or `0–4` (every group from the first to the last, in file
    /// order), `Phase 1` (the groups under `# Phase 1`), bare names (`A,
    /// B`), remarks after them; a name that is not a group is an error.
    fn prerequisites(
        &self,
        value: &str,
        line: usize,
        names: &HashMap<String, usize>,
    ) -> Result<(Vec<String>, Vec<Diagnostic>), Diagnostic> {
        if says_none(value) {
            return Ok((Vec::new(), Vec::new()));
        }
        let toks = tokens(value);
        let mut out: Vec<String> = Vec::new();
        let mut warnings = Vec::new();
        let keyword = |t: &str| {
            let l = t.to_ascii_lowercase();
            matches!(l.as_str(), "group" | "groups" | "phase" | "phases")
        };
        let index = |n: &str| {
            names
                .get(n)
                .copied()
                .ok_or_else(|| self.unknown_group(line, n, names))
        };
        if !toks.iter().any(|t| keyword(t)) {
            // Bare names: `Prerequisites: A` or `A, B complete`.
            for t in toks.iter().filter(|t| is_alnum(t)) {
                if names.contains_key(t.as_str()) {
                    out.push(t.clone());
                } else if !PREREQ_FILLER.contains(&t.to_ascii_lowercase().as_str()) {
                    break;
                }
            }
        }
        let mut i = 0;
        while i < toks.len() {
            let t = &toks[i];
            if !keyword(t) {
                i += 1;
                continue;
            }
            let phase = t.to_ascii_lowercase().starts_with("phase");
            i += 1;
            loop {
                let Some(name) = toks.get(i).filter(|n| is_alnum(n)) else {
                    return Err(self
                        .diag(line, format!("`{t}` is not followed by a name"))
                        .help("write e.g. `Prerequisites: Groups E + G complete`"));
                };
                if phase {
                    let under: Vec<String> = self
                        .groups
                        .iter()
                        .filter(|g| g.phase.as_deref() == Some(name.as_str()))
                        .map(|g| g.group.name.clone())
                        .collect();
                    if under.is_empty() {
                        return Err(self
                            .diag(line, format!("no group is under a `Phase {name}` heading"))
                            .help("name the groups: `Prerequisites: Groups A, B complete`"));
                    }
                    warnings.push(self.diag(
                        line,
                        format!("`Phase {name}` read as groups {}", under.join(", ")),
                    ));
                    out.extend(under);
                    i += 1;
                } else {
                    // A range: `A-D`, `0–4`, every group between in file order.
                    let range_end = toks.get(i + 2).filter(|e| {
                        is_alnum(e)
                            && matches!(
                                toks.get(i + 1).map(String::as_str),
                                Some("-" | "\u{2013}" | "\u{2014}")
                            )
                    });
                    match range_end {
                        Some(end) => {
                            let (a, b) = (index(name)?, index(end)?);
                            if a > b {
                                return Err(self.diag(
                                    line,
                                    format!("group range `{name}-{end}` runs backwards"),
                                ));
                            }
                            out.extend(self.groups[a..=b].iter().map(|g| g.group.name.clone()));
                            i += 3;
                        }
                        None => {
                            index(name)?;
                            out.push(name.clone());
                            i += 1;
                        }
                    }
                }
                if !toks.get(i).is_some_and(|s| is_sep(s)) {
                    break;
                }
                match toks.get(i + 1) {
                    Some(n) if is_alnum(n) && !keyword(n) && names.contains_key(n.as_str()) => {
                        i += 1;
                    }
                    Some(n) if is_alnum(n) && !keyword(n) => {
                        // `Group C + offline tiles recommended`: words that
                        // are not a group, to the end.
                        let words: Vec<&str> = toks[i + 1..]
                            .iter()
                            .take_while(|w| !keyword(w))
                            .map(String::as_str)
                            .collect();
                        if i + 1 + words.len() == toks.len() {
                            warnings.push(self.diag(
                                line,
                                format!("`{}` is not a group; ignored", words.join(" ")),
                            ));
                        }
                        break;
                    }
                    _ => break,
                }
            }
        }
        if out.is_empty() {
            return Err(self
                .diag(line, format!("`Prerequisites: {value}` names no group"))
                .help(
                    "write `Prerequisites: Group F complete`, `Groups E + G complete`, or `None`",
                ));
        }
        let mut seen = HashSet::new();
        out.retain(|g| seen.insert(g.clone()));
        Ok((out, warnings))
    }

    /// A group named that is not in the roadmap; when a code block hides a
    /// heading of that name, the error is about the block.
    fn unknown_group(&self, line: usize, n: &str, names: &HashMap<String, usize>) -> Diagnostic {
        if let Some(&(fence, at, _)) = self.hidden.iter().find(|(_, _, h)| h == n) {
            return self
                .diag(
                    fence,
                    format!(
                        "the code block opened here is still open at `Group {n}` (line {at}), which is then not read as a group"
                    ),
                )
                .help(format!("close the block before line {at}"));
        }
        let d = self.diag(
            line,
            format!("prerequisite group `{n}` is not in the roadmap"),
        );
        match names.keys().find(|k| k.eq_ignore_ascii_case(n)) {
            Some(k) => d.help(format!("did you mean group `{k}`?")),
            None => d.help(format!("the groups are {}", self.group_list())),
        }
    }

    /// `E1`, `D2`: track 1 of group E. A name that is no group's, or a
    /// number its group has no track of, is `None`, unless the group is
    /// done (its items may be written as a summary, not as tracks): then
    /// the dependency holds and names nothing to wait for.
    fn lettered(&self, t: &str) -> Option<Vec<String>> {
        let split = t.find(|c: char| c.is_ascii_digit())?;
        let (g, n) = t.split_at(split);
        if g.is_empty() || !n.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let gb = self.groups.iter().find(|gb| gb.group.name == g)?;
        if let Some(tr) = gb.group.tracks.iter().find(|tr| tr.number == n) {
            return Some(vec![tr.id.clone()]);
        }
        gb.group.is_done().then(Vec::new)
    }

    fn group_list(&self) -> String {
        self.groups
            .iter()
            .map(|g| g.group.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The track ids a `Depends on:` value of a track of group `gi` names.
    fn depends_on(&self, gi: usize, value: &str, line: usize) -> Result<Vec<String>, Diagnostic> {
        if says_none(value) {
            return Ok(Vec::new());
        }
        let help =
            "write `Depends on: Track 1`, `Group F Track 2`, or a task id like `group_F_track_2`";
        let toks = tokens(value);
        let group_of = |n: &str| {
            self.groups
                .iter()
                .position(|g| g.group.name == n)
                .ok_or_else(|| {
                    self.diag(
                        line,
                        format!("`Depends on:` names group `{n}`, which is not in the roadmap"),
                    )
                    .help(format!("the groups are {}", self.group_list()))
                })
        };
        let track_of = |g: usize, n: &str| {
            let group = &self.groups[g].group;
            group
                .tracks
                .iter()
                .find(|t| t.number == n)
                .map(|t| t.id.clone())
                .ok_or_else(|| {
                    self.diag(
                        line,
                        format!(
                            "`Depends on:` names track {n} of group {}, which has no such track",
                            group.name
                        ),
                    )
                    .help(format!(
                        "its tracks are {}",
                        group
                            .tracks
                            .iter()
                            .map(|t| t.number.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
        };
        let mut out = Vec::new();
        let mut in_group: Option<usize> = None;
        let mut i = 0;
        while i < toks.len() {
            let t = toks[i].as_str();
            let lower = t.to_ascii_lowercase();
            if lower == "or" {
                return Err(self
                    .diag(
                        line,
                        format!("`Depends on: {value}` offers a choice; orch needs the tracks that must all succeed first"),
                    )
                    .help("name one track, or all of them: `Depends on: Tracks 2 and 3`"));
            }
            if is_sep(t) || matches!(t, "{" | "}" | "\u{2192}" | "-" | ">" | "=") {
                // Lists, braces, and arrows of a chain (`Track 1 → Track 3`).
                i += 1;
            } else if let Some(lettered) = self.lettered(t) {
                // `{E1, D2}`: a group's name and a track's number.
                out.extend(lettered);
                i += 1;
            } else if let Some(id) = self
                .groups
                .iter()
                .flat_map(|g| &g.group.tracks)
                .find(|tr| tr.id.eq_ignore_ascii_case(t))
            {
                out.push(id.id.clone());
                i += 1;
            } else if lower == "group" {
                let Some(name) = toks.get(i + 1) else {
                    return Err(self
                        .diag(line, "`Group` is not followed by a group name")
                        .help(help));
                };
                let g = group_of(name)?;
                i += 2;
                if toks.get(i).is_some_and(|s| s == ",") {
                    i += 1;
                }
                if toks.get(i).is_some_and(|s| {
                    s.eq_ignore_ascii_case("track") || s.eq_ignore_ascii_case("tracks")
                }) {
                    in_group = Some(g);
                } else {
                    out.extend(self.groups[g].group.tracks.iter().map(|t| t.id.clone()));
                }
            } else if lower == "track" || lower == "tracks" {
                i += 1;
                let Some(first) = toks.get(i).filter(|n| is_alnum(n)) else {
                    return Err(self
                        .diag(line, format!("`{t}` is not followed by a track number"))
                        .help(help));
                };
                let mut numbers = vec![first.clone()];
                i += 1;
                // `Tracks 1, 2 and 3`.
                while toks.get(i).is_some_and(|s| is_sep(s))
                    && toks
                        .get(i + 1)
                        .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
                {
                    numbers.push(toks[i + 1].clone());
                    i += 2;
                }
                // `Track 1 of Group D`.
                let of_group = toks
                    .get(i)
                    .is_some_and(|s| s.eq_ignore_ascii_case("of") || s.eq_ignore_ascii_case("in"))
                    && toks
                        .get(i + 1)
                        .is_some_and(|s| s.eq_ignore_ascii_case("group"));
                let g = if of_group {
                    let Some(name) = toks.get(i + 2) else {
                        return Err(self
                            .diag(line, "`Group` is not followed by a group name")
                            .help(help));
                    };
                    i += 3;
                    in_group = None;
                    group_of(name)?
                } else {
                    in_group.take().unwrap_or(gi)
                };
                for n in &numbers {
                    out.push(track_of(g, n)?);
                }
            } else if FILLER.contains(&lower.as_str()) || t == "." || t == ":" {
                i += 1;
            } else {
                return Err(self
                    .diag(line, format!("cannot read `{t}` in `Depends on: {value}`"))
                    .help(help));
            }
        }
        let mut seen = HashSet::new();
        out.retain(|d| seen.insert(d.clone()));
        Ok(out)
    }

    /// Resolves prerequisites and dependencies, checks the groups for
    /// cycles, and applies group status to tracks.
    fn finish(mut self) -> Result<Roadmap, Diagnostic> {
        self.close_group()?;
        if self.groups.is_empty() {
            return Err(Diagnostic::new(self.path, "no groups found").help(
                "write groups as headings like `## Group A: Title`, with tracks like `### Track 1: Title` under them (see docs/roadmap.md)",
            ));
        }
        let names: HashMap<String, usize> = self
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.group.name.clone(), i))
            .collect();
        for gi in 0..self.groups.len() {
            let written = match self.groups[gi].prereq.clone() {
                Some((value, line)) => Some((self.prerequisites(&value, line, &names)?, line)),
                None => None,
            };
            let in_heading = match self.groups[gi].heading_prereq.clone() {
                Some((value, line)) => Some((self.prerequisites(&value, line, &names)?, line)),
                None => None,
            };
            let ((prereqs, warnings), line) = match (written, in_heading) {
                (Some(w), Some(h)) => {
                    let set = |v: &[String]| v.iter().cloned().collect::<HashSet<_>>();
                    if set(&w.0 .0) != set(&h.0 .0) {
                        return Err(self
                            .diag(
                                w.1,
                                format!(
                                    "group {} needs {} here but {} in its heading (line {})",
                                    self.groups[gi].group.name,
                                    w.0 .0.join(", "),
                                    h.0 .0.join(", "),
                                    h.1
                                ),
                            )
                            .help("say it in one place"));
                    }
                    w
                }
                (Some(w), None) => w,
                (None, Some(h)) => h,
                (None, None) => continue,
            };
            self.warnings.extend(warnings);
            self.groups[gi].group.prerequisites = prereqs;
            self.groups[gi].group.prerequisites_line = Some(line);
        }
        self.check_group_cycles(&names)?;
        for (gi, ti, value, line) in std::mem::take(&mut self.depends) {
            let deps = self.depends_on(gi, &value, line)?;
            let track = &self.groups[gi].group.tracks[ti];
            if deps.contains(&track.id) {
                return Err(self
                    .diag(line, format!("track {} depends on itself", track.number))
                    .help("remove it from its `Depends on:` line"));
            }
            self.groups[gi].group.tracks[ti].depends_on = deps;
        }
        for gb in &mut self.groups {
            let g = &mut gb.group;
            if g.status != Status::Done {
                continue;
            }
            for t in &mut g.tracks {
                match t.status {
                    Status::InProgress => {
                        return Err(Diagnostic::new(
                            self.path,
                            format!(
                                "track {} is marked in progress, but its group {} is marked done on line {}",
                                t.number,
                                g.name,
                                g.done_line.unwrap_or(g.line)
                            ),
                        )
                        .line(Some(t.line))
                        .help("mark the track done, or the group in progress"));
                    }
                    Status::Pending => {
                        t.status = Status::Done;
                        t.done_line = g.done_line;
                    }
                    Status::Done => {}
                }
            }
        }
        let groups: Vec<Group> = self.groups.into_iter().map(|g| g.group).collect();
        Ok(Roadmap {
            path: self.path.to_path_buf(),
            lookup: Lookup::of(&groups),
            groups,
            warnings: self.warnings,
            done_elsewhere: HashMap::new(),
        })
    }

    fn check_group_cycles(&self, names: &HashMap<String, usize>) -> Result<(), Diagnostic> {
        // 0 = unvisited, 1 = on the stack, 2 = done.
        let n = self.groups.len();
        let mut state = vec![0u8; n];
        for start in 0..n {
            if state[start] != 0 {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            state[start] = 1;
            while let Some(&mut (g, ref mut next)) = stack.last_mut() {
                let prereqs = &self.groups[g].group.prerequisites;
                if *next >= prereqs.len() {
                    state[g] = 2;
                    stack.pop();
                    continue;
                }
                let p = names[&prereqs[*next]];
                *next += 1;
                match state[p] {
                    0 => {
                        state[p] = 1;
                        stack.push((p, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|&(x, _)| x == p).unwrap_or(0);
                        let cycle: Vec<usize> = stack[from..].iter().map(|&(x, _)| x).collect();
                        let needs: Vec<String> = cycle
                            .iter()
                            .enumerate()
                            .map(|(k, &x)| {
                                let y = cycle[(k + 1) % cycle.len()];
                                format!(
                                    "{} needs {}",
                                    self.groups[x].group.name, self.groups[y].group.name
                                )
                            })
                            .collect();
                        let first = &self.groups[cycle[0]].group;
                        return Err(self
                            .diag(
                                first.prerequisites_line.unwrap_or(first.line),
                                format!("groups need each other in a cycle: {}", needs.join(", ")),
                            )
                            .help("remove one of these prerequisites"));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// Words a `Prerequisites:` line may have around bare group names.
const PREREQ_FILLER: &[&str] = &["complete", "completed", "done", "finished", "first", "and"];

/// Words a `Depends on:` line may have around the tracks it names.
const FILLER: &[&str] = &[
    "after",
    "blocked",
    "by",
    "complete",
    "completed",
    "done",
    "finished",
    "first",
    "must",
    "be",
    "being",
    "needs",
    "need",
    "requires",
    "the",
    "of",
    "from",
    "in",
    "on",
    "its",
    "to",
];

/// Reads a ROADMAP.md. Errors name the line and say how to fix it.
pub fn parse_roadmap(path: &Path, text: &str) -> Result<Roadmap, Diagnostic> {
    let src = markdown::Source::new(text);
    let read = markdown::lines(path, &src)?;
    let lines = read.lines;
    let mut p = Parser {
        path,
        groups: Vec::new(),
        open: false,
        track: None,
        closed_by: None,
        depends: Vec::new(),
        warnings: Vec::new(),
        phase: None,
        fence: None,
        hidden: Vec::new(),
    };
    for line in &lines {
        p.line(line)?;
    }
    let mut roadmap = p.finish()?;
    roadmap.warnings.splice(0..0, read.warnings);
    Ok(roadmap)
}

impl Roadmap {
    /// Counts these tracks done (id to why: "succeeded in session X"),
    /// whatever the file says: a roadmap run by cron moves on past tracks
    /// its earlier sessions finished, marked in the file or not.
    pub fn count_done(&mut self, done: &HashMap<String, String>) {
        for t in self.groups.iter_mut().flat_map(|g| g.tracks.iter_mut()) {
            if t.status == Status::Done {
                continue;
            }
            if let Some(why) = done.get(&t.id) {
                t.status = Status::Done;
                self.done_elsewhere.insert(t.id.clone(), why.clone());
            }
        }
    }

    /// The lines (1-based) of these tracks that do not say they are done.
    pub fn unmarked_lines(&self, ids: &[String]) -> Vec<usize> {
        self.groups
            .iter()
            .flat_map(|g| &g.tracks)
            .filter(|t| ids.contains(&t.id) && t.done_line.is_none())
            .map(|t| t.line)
            .collect()
    }

    fn group_index(&self, name: &str) -> Option<usize> {
        self.lookup.groups.get(name).copied().or_else(|| {
            match self
                .lookup
                .lowercase
                .get(&name.to_lowercase())
                .map(Vec::as_slice)
            {
                Some([one]) => Some(*one),
                _ => None,
            }
        })
    }

    fn track(&self, id: &str) -> Option<&Track> {
        let &(g, k) = self.lookup.tracks.get(id)?;
        self.groups.get(g)?.tracks.get(k)
    }

    fn file_name(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        )
    }

    /// What the agent is told for a track: the track's content with its
    /// group's title, deliverables and success criteria.
    pub fn prompt(&self, group: &Group, track: &Track) -> String {
        let mut p = format!(
            "Group {}: {} (from {})\nTrack {}: {}\n",
            group.name,
            group.title,
            self.file_name(),
            track.number,
            track.title
        );
        if !track.content.is_empty() {
            p += &format!("\n{}\n", track.content);
        }
        if !group.deliverables.is_empty() {
            p += &format!(
                "\nDeliverables of Group {}:\n{}\n",
                group.name, group.deliverables
            );
        }
        if !group.success_criteria.is_empty() {
            p += &format!(
                "\nSuccess Criteria of Group {}:\n{}\n",
                group.name, group.success_criteria
            );
        }
        p
    }

    /// The open tracks of the selected groups as tasks, with their
    /// dependencies: a track's `Depends on:` tracks that are not done, and,
    /// with [`Selection::All`], every open track of its group's
    /// prerequisite groups.
    pub fn select(
        &self,
        which: Selection<'_>,
        settings: &Settings,
    ) -> Result<Selected, SelectError> {
        let done: Vec<bool> = self.groups.iter().map(Group::is_done).collect();
        let file = self.path.display().to_string();
        let every_group_done =
            || SelectError::NothingToPlan(format!("every group of `{file}` is done"));
        let mut warnings = Vec::new();
        let planned: Vec<usize> = match which {
            Selection::All => {
                let p: Vec<usize> = (0..self.groups.len()).filter(|&i| !done[i]).collect();
                if p.is_empty() {
                    return Err(every_group_done());
                }
                p
            }
            Selection::Current => {
                let prereqs_done = |g: &Group| {
                    g.prerequisites
                        .iter()
                        .all(|p| self.group_index(p).is_some_and(|i| done[i]))
                };
                match (0..self.groups.len()).find(|&i| !done[i] && prereqs_done(&self.groups[i])) {
                    Some(i) => vec![i],
                    None => return Err(every_group_done()),
                }
            }
            Selection::Group(name) => {
                let Some(i) = self.group_index(name) else {
                    return Err(SelectError::UnknownGroup {
                        file: self.path.clone(),
                        name: name.to_owned(),
                        known: self
                            .groups
                            .iter()
                            .map(|g| g.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                };
                let g = &self.groups[i];
                if done[i] {
                    let why = match g.done_line {
                        Some(l) => format!("marked done on line {l}"),
                        None => "all its tracks are done".to_owned(),
                    };
                    return Err(SelectError::NothingToPlan(format!(
                        "group {} of `{file}` is done ({why})",
                        g.name
                    )));
                }
                for p in &g.prerequisites {
                    if self.group_index(p).is_some_and(|pi| !done[pi]) {
                        warnings.push(format!(
                            "group {} needs group {p}, which is not done yet",
                            g.name
                        ));
                    }
                }
                vec![i]
            }
        };
        for &gi in &planned {
            let g = &self.groups[gi];
            if g.tracks.is_empty() {
                let why = match (g.checklist_line, g.table_line) {
                    (Some(l), _) => format!("; its checklist (line {l}) is not read as tracks: they have no numbers to name them by"),
                    (None, Some(l)) => format!("; its table (line {l}) is not read as tracks"),
                    (None, None) => String::new(),
                };
                return Err(Diagnostic::new(&self.path, format!("group {} is not done but lists no tracks{why}", g.name))
                    .line(Some(g.line))
                    .help("write each task as `### Track N: Title` (with its files and `Depends on:`), or mark the group [DONE]")
                    .into());
            }
        }
        let in_plan: HashSet<&str> = planned
            .iter()
            .flat_map(|&gi| &self.groups[gi].tracks)
            .filter(|t| t.status != Status::Done)
            .map(|t| t.id.as_str())
            .collect();
        let mut tasks = Vec::new();
        let mut skipped = Vec::new();
        for &gi in &planned {
            let g = &self.groups[gi];
            for t in &g.tracks {
                if t.status == Status::Done {
                    skipped.push(Skipped {
                        id: t.id.clone(),
                        title: t.title.clone(),
                        reason: match self.done_elsewhere.get(&t.id) {
                            Some(why) => why.clone(),
                            None => {
                                format!("marked done on line {}", t.done_line.unwrap_or(t.line))
                            }
                        },
                    });
                    continue;
                }
                let mut after: Vec<(String, Option<usize>)> = Vec::new();
                for dep in &t.depends_on {
                    let Some(d) = self.track(dep) else { continue };
                    if d.status == Status::Done {
                        continue;
                    }
                    if !in_plan.contains(dep.as_str()) {
                        let dg = dep.split('_').nth(1).unwrap_or("?");
                        return Err(Diagnostic::new(
                            &self.path,
                            format!("track {} depends on `{dep}`, which is neither done nor in this plan", t.id),
                        )
                        .line(t.depends_line)
                        .help(format!("plan with --all, or finish group {dg} first"))
                        .into());
                    }
                    after.push((dep.clone(), t.depends_line));
                }
                if which == Selection::All {
                    for p in &g.prerequisites {
                        let Some(pi) = self.group_index(p) else {
                            continue;
                        };
                        if done[pi] {
                            continue;
                        }
                        for pt in self.groups[pi]
                            .tracks
                            .iter()
                            .filter(|x| x.status != Status::Done)
                        {
                            after.push((pt.id.clone(), g.prerequisites_line));
                        }
                    }
                }
                let mut seen = HashSet::new();
                after.retain(|(d, _)| seen.insert(d.clone()));
                tasks.push(SourcedTask {
                    task: Task {
                        id: t.id.clone(),
                        title: Some(t.title.clone()),
                        action: Action::Prompt(self.prompt(g, t)),
                        after: after.iter().map(|(d, _)| After::Task(d.clone())).collect(),
                        files: t.files.clone(),
                        // Read from the track's own body.
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
                        group: Some(g.name.clone()),
                        line: Some(t.line),
                        wave: 0,
                        priority: 0,
                    },
                    file: self.path.clone(),
                    after_lines: after.iter().map(|(_, l)| *l).collect(),
                });
            }
        }
        Ok(Selected {
            groups: planned
                .iter()
                .map(|&gi| self.groups[gi].name.clone())
                .collect(),
            tasks,
            skipped,
            done_groups: self
                .groups
                .iter()
                .zip(&done)
                .filter(|(_, d)| **d)
                .map(|(g, _)| g.name.clone())
                .collect(),
            warnings,
        })
    }
}

/// The roadmap's text with ` ✅ [DONE]` at the end of each of `lines`
/// (1-based), line endings kept. Check the result by reading it again.
pub fn mark_done_text(text: &str, lines: &[usize]) -> String {
    let mut out = String::with_capacity(text.len() + lines.len() * 12);
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if !lines.contains(&(i + 1)) {
            out.push_str(line);
            continue;
        }
        let body = line.trim_end_matches(['\n', '\r']);
        let ending = &line[body.len()..];
        out.push_str(body.trim_end());
        out.push_str(" \u{2705} [DONE]");
        out.push_str(ending);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::plan_from_tasks;

    const BOLD: &str = include_str!("../../../tests/fixtures/roadmap/bold.md");
    const HEADINGS: &str = include_str!("../../../tests/fixtures/roadmap/headings.md");

    fn parse(text: &str) -> Result<Roadmap, Diagnostic> {
        parse_roadmap(Path::new("ROADMAP.md"), text)
    }

    fn select(text: &str, which: Selection<'_>) -> Selected {
        parse(text)
            .unwrap()
            .select(which, &Settings::default())
            .unwrap()
    }

    fn ids(s: &Selected) -> Vec<&str> {
        s.tasks.iter().map(|t| t.task.id.as_str()).collect()
    }

    fn edges(s: &Selected) -> BTreeSet<(String, String)> {
        s.tasks
            .iter()
            .flat_map(|t| {
                t.task
                    .after
                    .iter()
                    .map(|d| (t.task.id.clone(), d.to_string()))
            })
            .collect()
    }

    fn prompt(s: &Selected, id: &str) -> String {
        let t = s.tasks.iter().find(|t| t.task.id == id).unwrap();
        match &t.task.action {
            Action::Prompt(p) => p.clone(),
            Action::Command(c) => panic!("a command: {c}"),
        }
    }

    #[test]
    fn both_styles_read_the_same_roadmap() {
        for text in [BOLD, HEADINGS] {
            let r = parse(text).unwrap();
            let names: Vec<&str> = r.groups.iter().map(|g| g.name.as_str()).collect();
            assert_eq!(
                names,
                ["A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K"]
            );
            let done: Vec<bool> = r.groups.iter().map(Group::is_done).collect();
            assert_eq!(
                done,
                [true, true, true, true, true, true, false, false, false, false, false]
            );
            let g = &r.groups[6];
            assert_eq!(g.title, "Payment Service");
            assert_eq!(g.status, Status::InProgress);
            assert_eq!(g.prerequisites, ["F"]);
            assert_eq!(g.tracks.len(), 8);
            let statuses: Vec<Status> = g.tracks.iter().map(|t| t.status).collect();
            use Status::*;
            assert_eq!(
                statuses,
                [Done, Done, Done, Done, Done, Done, Pending, InProgress]
            );
            assert_eq!(g.tracks[0].title, "Ledger Core");
            assert_eq!(g.tracks[1].title, "Card Gateway Adapter (all parallel)");
            assert_eq!(g.tracks[7].id, "group_G_track_8");
            assert_eq!(g.tracks[7].depends_on, ["group_G_track_7"]);
            assert_eq!(g.tracks[6].depends_on, ["group_G_track_1"]);
            assert_eq!(r.groups[8].prerequisites, ["E", "G"]);
            assert_eq!(r.groups[10].prerequisites, ["C", "D", "F", "H", "I"]);
            assert_eq!(r.groups[0].prerequisites, Vec::<String>::new());
            assert!(g
                .deliverables
                .contains("ledger, gateway, refunds and webhooks"));
            assert!(g.success_criteria.contains("Every cent reconciles nightly"));
            assert!(g.success_criteria.contains("signed and retried"));
        }
    }

    #[test]
    fn current_group_plans_exactly_its_open_tracks() {
        for text in [BOLD, HEADINGS] {
            let s = select(text, Selection::Current);
            assert_eq!(s.groups, ["G"]);
            assert_eq!(ids(&s), ["group_G_track_7", "group_G_track_8"]);
            let skipped: Vec<&str> = s.skipped.iter().map(|k| k.id.as_str()).collect();
            assert_eq!(
                skipped,
                (1..=6)
                    .map(|n| format!("group_G_track_{n}"))
                    .collect::<Vec<_>>()
            );
            assert!(s.skipped[0].reason.starts_with("marked done on line "));
            assert_eq!(s.done_groups, ["A", "B", "C", "D", "E", "F"]);
            // Track 7 depends on a done track: no edge. Track 8 on track 7.
            assert_eq!(
                edges(&s),
                BTreeSet::from([("group_G_track_8".into(), "group_G_track_7".into())])
            );
            let t8 = &s.tasks[1].task;
            assert_eq!(t8.group.as_deref(), Some("G"));
            assert_eq!(t8.title.as_deref(), Some("Payment Webhooks"));
            assert_eq!(
                t8.files,
                [
                    "services/payments/webhooks.py",
                    "services/payments/ledger.py"
                ]
            );
            let p = prompt(&s, "group_G_track_8");
            for want in [
                "Group G: Payment Service",
                "Track 8: Payment Webhooks",
                "signed webhook delivery",
                "Deliverables of Group G:",
                "Payments API with ledger",
                "Success Criteria of Group G:",
                "Every cent reconciles nightly",
            ] {
                assert!(p.contains(want), "missing {want:?} in:\n{p}");
            }
            for unwanted in [
                "nightly ledger against gateway",
                "Money moves",
                "Cart Service",
            ] {
                assert!(!p.contains(unwanted), "{unwanted:?} leaked into:\n{p}");
            }
            // A code block inside a track is part of its prompt.
            assert!(prompt(&s, "group_G_track_7").contains("GROUP A: a diagram inside a track"));
        }
    }

    #[test]
    fn all_plans_every_open_group_with_cross_group_edges() {
        let g7 = "group_G_track_7";
        let g8 = "group_G_track_8";
        let (h1, h2) = ("group_H_track_1", "group_H_track_2");
        let (i1, i2) = ("group_I_track_1", "group_I_track_2");
        let j1 = "group_J_track_1";
        let (k1, k2) = ("group_K_track_1", "group_K_track_2");
        let want: BTreeSet<(String, String)> = [
            (g8, g7),
            (h1, g7),
            (h1, g8),
            (h2, h1),
            (h2, g7),
            (h2, g8),
            (i1, g7),
            (i1, g8),
            (i2, g7),
            (i2, g8),
            (j1, h1),
            (j1, h2),
            (k1, h1),
            (k1, h2),
            (k1, i1),
            (k1, i2),
            (k2, k1),
            (k2, h1),
            (k2, h2),
            (k2, i1),
            (k2, i2),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        for text in [BOLD, HEADINGS] {
            let s = select(text, Selection::All);
            assert_eq!(s.groups, ["G", "H", "I", "J", "K"]);
            assert_eq!(ids(&s), [g7, g8, h1, h2, i1, i2, j1, k1, k2]);
            assert_eq!(edges(&s), want);
            // The same validation and analysis as a TOML plan.
            let plan = plan_from_tasks(
                Path::new("ROADMAP.md"),
                "roadmap-all",
                Settings::default(),
                s.tasks.clone(),
            )
            .unwrap();
            assert_eq!(plan.analysis.edges, 21);
            let wave = |id: &str| plan.tasks.iter().find(|t| t.id == id).unwrap().wave;
            assert_eq!([wave(g7), wave(g8), wave(h1), wave(h2)], [1, 2, 3, 4]);
            assert_eq!([wave(i1), wave(j1), wave(k1), wave(k2)], [3, 5, 5, 6]);
        }
    }

    #[test]
    fn a_named_group_and_its_warnings() {
        let s = select(BOLD, Selection::Group("H"));
        assert_eq!(ids(&s), ["group_H_track_1", "group_H_track_2"]);
        assert_eq!(
            edges(&s),
            BTreeSet::from([("group_H_track_2".into(), "group_H_track_1".into())])
        );
        assert_eq!(s.warnings, ["group H needs group G, which is not done yet"]);
        assert_eq!(s.tasks[1].task.files, ["web/checkout/**"]);
        // Case does not matter when it is unambiguous.
        assert_eq!(select(BOLD, Selection::Group("k")).groups, ["K"]);
        let r = parse(BOLD).unwrap();
        let err = r
            .select(Selection::Group("F"), &Settings::default())
            .unwrap_err();
        assert!(matches!(err, SelectError::NothingToPlan(_)), "{err}");
        assert!(
            err.to_string()
                .contains("group F of `ROADMAP.md` is done (marked done on line "),
            "{err}"
        );
        let err = r
            .select(Selection::Group("Q"), &Settings::default())
            .unwrap_err();
        assert!(matches!(err, SelectError::UnknownGroup { .. }), "{err}");
        assert!(
            err.to_string().contains("A, B, C, D, E, F, G, H, I, J, K"),
            "{err}"
        );
    }

    #[test]
    fn crlf_and_bom_read_the_same() {
        for text in [BOLD, HEADINGS] {
            let crlf = format!("\u{feff}{}", text.replace('\n', "\r\n"));
            assert_eq!(parse(&crlf).unwrap(), parse(text).unwrap());
        }
    }

    #[test]
    fn everything_done_leaves_nothing_to_plan() {
        let text = "## Group A: One\n### Track 1: x [DONE]\n## Group B: Two ✅\n### Track 1: y\n";
        let r = parse(text).unwrap();
        for which in [Selection::Current, Selection::All] {
            let err = r.select(which, &Settings::default()).unwrap_err();
            assert!(matches!(err, SelectError::NothingToPlan(_)), "{err}");
            assert!(err.to_string().contains("every group"), "{err}");
        }
        // The tracks of a done group are done.
        assert_eq!(r.groups[1].tracks[0].status, Status::Done);
        assert_eq!(r.groups[1].tracks[0].done_line, Some(3));
    }

    #[test]
    fn the_current_group_waits_for_its_prerequisites() {
        let text = "\
## Group A: Later
Prerequisites: Group B complete
### Track 1: a
## Group B: First
### Track 1: b
";
        let s = select(text, Selection::Current);
        assert_eq!(s.groups, ["B"]);
        let s = select(text, Selection::All);
        assert_eq!(
            edges(&s),
            BTreeSet::from([("group_A_track_1".into(), "group_B_track_1".into())])
        );
    }

    #[test]
    fn prerequisites_and_dependencies_in_their_spellings() {
        let text = "\
## Group A: a
### Track 1: x
### Track 2: y
## Group B: b
### Track 1: x
## Group C: c
### Track 1: x
## Group D: d
Prerequisites: Groups A-C complete.
### Track 1: x
Depends on: Tracks 2 and 3 (both)
### Track 2: y
Depends on: Group A Track 2, group_B_track_1
### Track 3: z
Depends on: Group C
### Track 4: w
Depends on: none
## Group E: e
**Prerequisites**: Group A and Group D complete, plus a staging account
### Track 1: x
Depends on: `group_d_track_1`, Track 1 of Group D
";
        let r = parse(text).unwrap();
        assert_eq!(r.groups[3].prerequisites, ["A", "B", "C"]);
        assert_eq!(r.groups[4].prerequisites, ["A", "D"]);
        let d = &r.groups[3].tracks;
        assert_eq!(d[0].depends_on, ["group_D_track_2", "group_D_track_3"]);
        assert_eq!(d[1].depends_on, ["group_A_track_2", "group_B_track_1"]);
        assert_eq!(d[2].depends_on, ["group_C_track_1"]);
        assert!(d[3].depends_on.is_empty());
        assert_eq!(r.groups[4].tracks[0].depends_on, ["group_D_track_1"]);
    }

    /// (roadmap, line, words the message must contain)
    const BAD: &[(&str, Option<usize>, &[&str])] = &[
        ("## Group A: x\n### Track 1: a\n\n## Group A: y\n### Track 1: b\n", Some(4), &["second group A", "line 1"]),
        ("# Roadmap\n### Track 1: a\n## Group A: x\n", Some(2), &["not inside any group"]),
        ("## Group A: x\n### Track 1: a\n## Notes\n### Track 2: b\n", Some(4), &["not inside any group", "line 3 ended the group"]),
        ("## Group A: x\nPrerequisites: Group Q complete\n### Track 1: a\n", Some(2), &["prerequisite group `Q`", "A"]),
        ("## Group A: x\nPrerequisites: Group a\n### Track 1: a\n## Group B: y\n### Track 1: b\n", Some(2), &["did you mean group `A`"]),
        ("## Group A: x\nPrerequisites: Group B\n### Track 1: a\n## Group B: y\nPrerequisites: Group A\n### Track 1: b\n", Some(2), &["cycle", "A needs B", "B needs A"]),
        ("## Group A: x\nPrerequisites: Group A\n### Track 1: a\n", Some(2), &["cycle", "A needs A"]),
        ("## Group A: x\n1. **Track 1: a**\n2. **Track 2: b**\n3. **Track 2: c**\n", Some(4), &["second track 2", "line 3"]),
        ("## Group A: x\n### Track 1: a\nDepends on: Track 5\n", Some(3), &["track 5 of group A", "its tracks are 1"]),
        ("## Group A: x\n### Track 1: a\nDepends on: Group Q Track 1\n", Some(3), &["group `Q`"]),
        ("## Group A: x\n### Track 1: a\nDepends on: the ledger\n", Some(3), &["cannot read `ledger`"]),
        ("## Group A: x\n### Track 1: a\nDepends on: Track 1\n", Some(3), &["depends on itself"]),
        ("## Group A: x\n### Track 1: a [DONE] 🔄\n", Some(2), &["both done and in progress"]),
        ("## Group A: x\n### Track 1: a ✅\nStatus: in progress\n", Some(3), &["marked done on line 2 but in progress"]),
        ("## Group A: x [DONE]\nStatus: pending\n### Track 1: a\n", Some(2), &["group A is marked done on line 1 but pending"]),
        ("## Group A: x\nStatus: shipped\n### Track 1: a\n", Some(2), &["unknown status `shipped`", "DONE, IN PROGRESS or PENDING"]),
        ("## Group A: x\n### Track 1: a\nStatus: done\nStatus: pending\n", Some(4), &["says `pending` here but done on line 3", "keep one Status line"]),
        ("## Group A: x\n### Track 1: a\n### Track 2: b\n### Track 3: c\nDepends on: Track 1 or Track 2\n", Some(5), &["offers a choice", "Tracks 2 and 3"]),
        ("## Group A: x\n### Track 1: a\n## Group B: y (Requires Group A)\nPrerequisites: None of them\n### Track 1: b\n", Some(4), &["names no group"]),
        ("## Group A: x\n### Track 1: a\n## Group C: z (Requires Group A)\nPrerequisites: Group B\n### Track 1: c\n## Group B: y\n### Track 1: b\n", Some(4), &["needs B here but A in its heading (line 3)"]),
        ("## Group A: x\n### Track 1: a\n```yaml\nk: v\n## Group B: y\n### Track 1: b\n```text\nz\n```\n## Group C: z\nPrerequisites: Group B\n### Track 1: c\n", Some(3), &["still open at `Group B` (line 5)", "close the block before line 5"]),
        ("## Group A: x\n### Track 1: a\n## Group B: y\nDepends on: Group A\nPrerequisites: Group A\n### Track 1: b\n", Some(5), &["second `Prerequisites:`"]),
        ("## Group A: x\nPrerequisites: a staging account\n### Track 1: a\n", Some(2), &["names no group", "None"]),
        ("## Group A: x\nPrerequisites: None\nPrerequisites: Group B\n### Track 1: a\n", Some(3), &["second `Prerequisites:`"]),
        ("## Group A: x ✅\n### Track 1: a 🔄\n", Some(2), &["in progress", "group A is marked done on line 1"]),
        ("# Just notes\n\nNo groups here.\n", None, &["no groups found", "## Group A: Title"]),
        ("## Group A: x\n<!-- ## Group B: y\n", Some(2), &["comment is never closed"]),
        ("## Group A: x\n### Track 1: a\n- body\n1. **Track 2: b**\n", Some(4), &["inside the content of track 1 (line 2)"]),
    ];

    #[test]
    fn malformed_roadmaps_name_the_line() {
        for (text, line, words) in BAD {
            let err = parse(text).expect_err(text);
            assert_eq!(err.line, *line, "{text:?}: {err}");
            let shown = err.to_string();
            assert!(shown.starts_with("ROADMAP.md"), "{shown}");
            assert!(err.help.is_some(), "{text:?}: no fix in {shown}");
            for w in *words {
                assert!(shown.contains(w), "{text:?}: want {w:?} in {shown}");
            }
        }
    }

    #[test]
    fn unplannable_selections_name_the_line() {
        let text = "## Group A: x\n### Track 1: a\n## Group B: y\n\nTo be written.\n";
        let err = parse(text)
            .unwrap()
            .select(Selection::All, &Settings::default())
            .unwrap_err();
        let SelectError::Invalid(d) = err else {
            panic!("{err}")
        };
        assert_eq!(d.line, Some(3));
        assert!(
            d.message
                .contains("group B is not done but lists no tracks"),
            "{d}"
        );

        let text = "## Group A: x\n### Track 1: a\nDepends on: group_B_track_1\n## Group B: y\n### Track 1: b\n";
        let r = parse(text).unwrap();
        let err = r
            .select(Selection::Group("A"), &Settings::default())
            .unwrap_err();
        let SelectError::Invalid(d) = err else {
            panic!("{err}")
        };
        assert_eq!(d.line, Some(3));
        assert!(
            d.to_string().contains("neither done nor in this plan"),
            "{d}"
        );
        assert!(d.to_string().contains("--all"), "{d}");
        // With --all the same dependency is an edge.
        let s = r.select(Selection::All, &Settings::default()).unwrap();
        assert_eq!(
            edges(&s),
            BTreeSet::from([("group_A_track_1".into(), "group_B_track_1".into())])
        );
    }

    #[test]
    fn a_cycle_among_tracks_is_found_by_the_plan_check_with_its_line() {
        let text = "## Group A: x\n### Track 1: a\nDepends on: Track 2\n### Track 2: b\nDepends on: Track 1\n";
        let s = select(text, Selection::Current);
        let err = plan_from_tasks(Path::new("ROADMAP.md"), "r", Settings::default(), s.tasks)
            .unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.message.contains("dependency cycle"), "{err}");
    }

    #[test]
    fn headings_end_tracks_and_groups_at_their_level() {
        let text = "\
## Group A: x
Intro that is in no prompt.
### Deliverables
- the thing
### Track 1: a
#### Notes for track 1
kept in track 1
### Track 2: b
body of 2
**Deliverables:** stays in track 2, heading tracks run to the next heading
## Appendix
### Track notes
";
        let r = parse(text).unwrap();
        let g = &r.groups[0];
        assert_eq!(g.deliverables, "- the thing");
        assert_eq!(g.tracks.len(), 2);
        assert!(g.tracks[0].content.contains("kept in track 1"));
        assert!(g.tracks[1].content.contains("stays in track 2"));
        assert!(!g.tracks[1].content.contains("Track notes"));
        let p = r.prompt(g, &g.tracks[0]);
        assert!(!p.contains("Intro"), "{p}");
        assert!(p.contains("Deliverables of Group A:\n- the thing"), "{p}");
    }

    #[test]
    fn the_example_in_the_docs_plans_what_the_docs_say() {
        let doc = include_str!("../../../docs/roadmap.md");
        let start = doc.find("````markdown\n").unwrap() + "````markdown\n".len();
        let end = start + doc[start..].find("\n````").unwrap();
        let example = &doc[start..=end];
        let s = select(example, Selection::Current);
        assert_eq!(ids(&s), ["group_G_track_2", "group_G_track_3"]);
        assert_eq!(
            edges(&s),
            BTreeSet::from([("group_G_track_3".into(), "group_G_track_2".into())])
        );
        assert_eq!(s.skipped[0].id, "group_G_track_1");
        assert_eq!(s.skipped[0].reason, "marked done on line 20");
        let want = prompt(&s, "group_G_track_3");
        assert!(
            doc.contains(&want),
            "the prompt shown in the docs is not:\n{want}"
        );
        let s = select(example, Selection::All);
        let h: BTreeSet<(String, String)> = edges(&s)
            .into_iter()
            .filter(|(a, _)| a.starts_with("group_H"))
            .collect();
        let want: BTreeSet<(String, String)> = [
            ("group_H_track_1", "group_G_track_2"),
            ("group_H_track_1", "group_G_track_3"),
            ("group_H_track_2", "group_G_track_2"),
            ("group_H_track_2", "group_G_track_3"),
            ("group_H_track_2", "group_H_track_1"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        assert_eq!(h, want);
    }

    #[test]
    fn track_like_lines_nested_in_content_stay_content() {
        let text = "\
## Group A: x
1. **Track 1: a**
   - Track 2: must merge first, says the note
### Track 3: c
  - Track 4: an indented note under a heading track
";
        let r = parse(text).unwrap();
        let numbers: Vec<&str> = r.groups[0]
            .tracks
            .iter()
            .map(|t| t.number.as_str())
            .collect();
        assert_eq!(numbers, ["1", "3"]);
        assert!(r.groups[0].tracks[0]
            .content
            .contains("Track 2: must merge first"));
    }

    #[test]
    fn list_tracks_end_where_their_indentation_does() {
        let text = "\
### **Group A: x**
- [x] Track 1: done by checkbox
- [ ] Track 2: open by checkbox
  - `src/two.rs`

  more of track 2 after a blank line
Not indented: ends track 2.
  1. **Track 3: nested under a paragraph**
     - `src/three.rs`
";
        let r = parse(text).unwrap();
        let t = &r.groups[0].tracks;
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].status, Status::Done);
        assert_eq!(t[1].status, Status::Pending);
        assert_eq!(
            t[1].content,
            "- `src/two.rs`\n\nmore of track 2 after a blank line"
        );
        assert_eq!(t[1].files, ["src/two.rs"]);
        assert_eq!(t[2].files, ["src/three.rs"]);
        assert_eq!(t[2].title, "nested under a paragraph");
    }

    #[test]
    fn marking_tracks_done_keeps_line_endings_and_reads_back_done() {
        let text = "## Group A: One\r\n### Track 1: x\r\n### Track 2: y  \r\nbody\r\n";
        let r = parse_roadmap(Path::new("R.md"), text).unwrap();
        let lines = r.unmarked_lines(&["group_A_track_2".to_owned()]);
        assert_eq!(lines, [3]);
        let marked = mark_done_text(text, &lines);
        assert_eq!(
            marked,
            "## Group A: One\r\n### Track 1: x\r\n### Track 2: y \u{2705} [DONE]\r\nbody\r\n"
        );
        let again = parse_roadmap(Path::new("R.md"), &marked).unwrap();
        let t = &again.groups[0].tracks;
        assert_eq!((t[0].status, t[1].status), (Status::Pending, Status::Done));
        assert_eq!(t[1].title, "y");
        assert!(again
            .unmarked_lines(&["group_A_track_2".to_owned()])
            .is_empty());
    }

    #[test]
    fn tracks_counted_done_elsewhere_are_skipped_with_the_reason() {
        let text = "## Group A: One\n### Track 1: x\n### Track 2: y\n## Group B: Two\nPrerequisites: Group A\n### Track 1: z\n";
        let mut r = parse_roadmap(Path::new("R.md"), text).unwrap();
        let done: HashMap<String, String> = [
            ("group_A_track_1", "succeeded in session s1"),
            ("group_A_track_2", "succeeded in session s2"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        r.count_done(&done);
        let sel = r.select(Selection::Current, &Settings::default()).unwrap();
        assert_eq!(sel.groups, ["B"]);
        let sel = r.select(Selection::Group("A"), &Settings::default());
        assert!(sel.is_err(), "group A is done");
        let mut r = parse_roadmap(Path::new("R.md"), text).unwrap();
        r.count_done(
            &done
                .into_iter()
                .take(0)
                .chain([(
                    "group_A_track_1".to_owned(),
                    "succeeded in session s1".to_owned(),
                )])
                .collect(),
        );
        let sel = r.select(Selection::Current, &Settings::default()).unwrap();
        assert_eq!(sel.groups, ["A"]);
        assert_eq!(sel.skipped[0].reason, "succeeded in session s1");
    }
}
