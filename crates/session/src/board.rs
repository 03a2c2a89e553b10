//! The board: an in-memory view of which tasks are done, which are ready,
//! and in what order to try them. Built from `plan.json`, `results/` and the
//! journal, kept current from the journal, and always rebuildable.
//!
//! A task is ready when every dependency succeeded and it has no final
//! result. Ready tasks come out largest priority first (the longest
//! remaining critical path), ties in plan order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fs;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, IoContext, Result};
use crate::journal;
use crate::json::read_json;
use crate::layout::SessionDir;
use crate::plan::{After, ResourceDecl, Task};
use crate::result::{Status, TaskResult};
use crate::tasks::{BoardPlan, Tasks};

/// What the board knows of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// No result yet.
    Pending,
    /// Interrupted: no final result, claimable again.
    Interrupted,
    /// A final result.
    Final(Status),
    /// A result file that cannot be read; dependents stay blocked.
    Corrupt,
}

impl TaskState {
    fn is_open(self) -> bool {
        matches!(self, TaskState::Pending | TaskState::Interrupted)
    }
}

/// Counts of tasks by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Succeeded.
    pub success: usize,
    /// Failed.
    pub failure: usize,
    /// Timed out.
    pub timeout: usize,
    /// Skipped.
    pub skipped: usize,
    /// Interrupted and waiting to run again.
    pub interrupted: usize,
    /// Not run yet (includes running ones; the board does not know).
    pub pending: usize,
    /// Unreadable result files.
    pub corrupt: usize,
}

impl Counts {
    /// Tasks with a final result.
    pub fn finished(&self) -> usize {
        self.success + self.failure + self.timeout + self.skipped
    }
}

/// A competition that tasks wait for.
#[derive(Debug)]
struct Competition {
    name: String,
    members: Vec<u32>,
    waiters: Vec<u32>,
    /// `None` while undecided; then the winner, or `None` for none.
    decision: Option<Option<u32>>,
    /// Why, once decided.
    reason: String,
}

/// The scheduler's view of a session.
#[derive(Debug)]
pub struct Board {
    dir: SessionDir,
    tasks: Tasks,
    /// Each task's wave and priority (what ordering reads for every task).
    wave: Vec<u32>,
    priority: Vec<u64>,
    /// The resources of the tasks that need any.
    needs: HashMap<u32, Vec<String>>,
    /// Each task's estimate (or the default), and its group (0: none,
    /// else 1 + its place in `group_names`).
    estimate: Vec<u64>,
    group: Vec<u32>,
    group_names: Vec<String>,
    /// Dependencies of every task, one after the other: task `i`'s are
    /// `deps[dep_at[i]..dep_at[i + 1]]`; the same for dependents.
    deps: Edges,
    children: Edges,
    state: Vec<TaskState>,
    unmet: Vec<u32>,
    ready: BinaryHeap<(u64, Reverse<u32>)>,
    in_ready: Vec<bool>,
    doomed: Vec<u32>,
    journal: journal::Reader,
    /// Checkpoints not signalled yet, with the tasks waiting for them.
    waiting: Vec<(Checkpoint, Vec<u32>)>,
    resources: std::collections::BTreeMap<String, ResourceDecl>,
    /// Strict waves: the failure threshold, when on.
    strict: Option<f64>,
    /// Open (not final) tasks per wave (index wave - 1).
    open_in_wave: Vec<usize>,
    by_wave: Vec<Vec<u32>>,
    halted: Option<String>,
    /// Competitions tasks wait for (`after = ["compete:NAME"]`).
    competitions: Vec<Competition>,
    /// Per entrant: the waited-for competitions it enters.
    enters: HashMap<u32, Vec<usize>>,
    /// Waiters of competitions decided without a winner.
    doomed_by_competition: Vec<(u32, usize)>,
    /// Result files that could not be read, with the error.
    pub corrupt: Vec<(String, Error)>,
    /// Tasks that could not be claimed for a reason of their own (a lock
    /// file that is a directory, ...), with the error; they are left out.
    pub unclaimable: Vec<(String, Error)>,
    /// Tasks claimed and let go at once, with why (a dependency's result
    /// was not what the journal said).
    pub unclaimable_why: Vec<(String, String)>,
}

impl Board {
    /// Builds the board from the plan, the journal and `results/`.
    pub fn load(dir: &SessionDir, plan: impl Into<BoardPlan>) -> Result<Board> {
        let BoardPlan {
            tasks,
            resources,
            template: _,
            waves,
            priorities,
            after,
            compete,
            needs,
            estimates,
            groups,
            group_names,
        } = plan.into();
        let n = tasks.len();
        let mut edges: Vec<(u32, u32)> = Vec::new();
        let mut cp_waiters: std::collections::BTreeMap<&str, Vec<u32>> = Default::default();
        let mut extra_unmet = vec![0u32; n];
        let mut competitions: Vec<Competition> = Vec::new();
        let mut enters: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, t_after) in after.iter().enumerate() {
            for d in t_after {
                match d {
                    After::Compete(name) => {
                        let c = match competitions.iter().position(|c| c.name == *name) {
                            Some(c) => c,
                            None => {
                                let members: Vec<u32> = compete
                                    .iter()
                                    .enumerate()
                                    .filter(|(_, m)| m.as_deref() == Some(name.as_str()))
                                    .map(|(j, _)| j as u32)
                                    .collect();
                                for &m in &members {
                                    enters.entry(m).or_default().push(competitions.len());
                                }
                                competitions.push(Competition {
                                    name: name.to_owned(),
                                    members,
                                    waiters: Vec::new(),
                                    decision: None,
                                    reason: String::new(),
                                });
                                competitions.len() - 1
                            }
                        };
                        competitions[c].waiters.push(i as u32);
                        extra_unmet[i] += 1;
                    }
                    After::Checkpoint(cp) => {
                        cp_waiters.entry(cp).or_default().push(i as u32);
                        extra_unmet[i] += 1;
                    }
                    After::Task(id) => {
                        if let Some(j) = tasks.index_of(id) {
                            edges.push((i as u32, j));
                        }
                    }
                }
            }
        }
        let deps = Edges::new(n, edges.iter().copied());
        let children = Edges::new(n, edges.iter().map(|&(i, j)| (j, i)));
        drop(edges);
        let mut waiting = Vec::new();
        for (name, waiters) in cp_waiters {
            let cp = Checkpoint::new(dir, name)?;
            if cp.is_signalled() {
                for &w in &waiters {
                    extra_unmet[w as usize] -= 1;
                }
            } else {
                waiting.push((cp, waiters));
            }
        }
        let depth = waves.iter().copied().max().unwrap_or(0) as usize;
        let mut by_wave = vec![Vec::new(); depth];
        for (i, &w) in waves.iter().enumerate() {
            by_wave[(w.max(1) - 1) as usize].push(i as u32);
        }
        let mut journal = journal::Reader::new(dir.results_journal());
        let mut known: HashMap<u32, Option<Status>> = HashMap::new();
        for e in journal.read_new()? {
            if let Some(i) = tasks.index_of(&e.task) {
                known.insert(i, e.status);
            }
        }
        let rdir = dir.results_dir();
        let mut present = HashSet::new();
        for entry in fs::read_dir(&rdir).ctx("read", &rdir)?.flatten() {
            let name = entry.file_name();
            if let Some(i) = name
                .to_str()
                .and_then(|s| s.strip_suffix(".json"))
                .and_then(|t| tasks.index_of(t))
            {
                present.insert(i);
            }
        }
        let mut board = Board {
            dir: dir.clone(),
            unmet: (0..n)
                .map(|i| deps.of(i as u32).len() as u32 + extra_unmet[i])
                .collect(),
            open_in_wave: by_wave.iter().map(Vec::len).collect(),
            by_wave,
            waiting,
            resources,
            strict: None,
            halted: None,
            competitions,
            enters,
            doomed_by_competition: Vec::new(),
            state: vec![TaskState::Pending; n],
            in_ready: vec![false; n],
            ready: BinaryHeap::new(),
            doomed: Vec::new(),
            corrupt: Vec::new(),
            unclaimable: Vec::new(),
            unclaimable_why: Vec::new(),
            tasks,
            wave: waves,
            priority: priorities,
            needs,
            estimate: estimates,
            group: groups,
            group_names,
            children,
            deps,
            journal,
        };
        let mut loaded = Vec::new();
        for &i in &present {
            let state = match known.get(&i) {
                Some(Some(s)) => state_of(*s),
                _ => {
                    match read_json::<TaskResult>(&board.dir.result(board.tasks.id(i))) {
                        Ok(r) => state_of(r.status),
                        // Removed since the listing: pending after all.
                        Err(Error::Io { source, .. })
                            if source.kind() == std::io::ErrorKind::NotFound =>
                        {
                            continue
                        }
                        Err(e) => {
                            board.corrupt.push((board.tasks.id(i).to_owned(), e));
                            TaskState::Corrupt
                        }
                    }
                }
            };
            loaded.push((i, state));
        }
        for (i, s) in loaded {
            board.set(i, s);
        }
        for i in 0..n as u32 {
            board.enqueue_if_ready(i);
        }
        Ok(board)
    }

    /// The session directory.
    pub fn dir(&self) -> &SessionDir {
        &self.dir
    }

    /// The tasks, in plan order.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// How many tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the plan has no task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Task `i`, whole (parsed from the plan's text: keep it rather than
    /// asking again).
    pub fn task(&self, i: u32) -> Task {
        self.tasks.get(i)
    }

    /// Task `i`'s id.
    pub fn id(&self, i: u32) -> &str {
        self.tasks.id(i)
    }

    /// Task `i`'s wave (1 for a plan without waves).
    pub fn wave(&self, i: u32) -> u32 {
        self.wave[i as usize].max(1)
    }

    /// Index of a task id.
    pub fn index_of(&self, id: &str) -> Option<u32> {
        self.tasks.index_of(id)
    }

    /// Task `i`'s priority: its longest estimated path to the end.
    pub fn priority(&self, i: u32) -> u64 {
        self.priority[i as usize]
    }

    /// Task `i`'s estimate, or the default when it has none.
    pub fn estimate(&self, i: u32) -> u64 {
        self.estimate[i as usize]
    }

    /// The groups of the plan's tasks, in plan order.
    pub fn groups(&self) -> &[String] {
        &self.group_names
    }

    /// The last wave (0 for a plan without waves).
    pub fn depth(&self) -> u32 {
        // The waves' lists run to the last wave.
        self.by_wave.len() as u32
    }

    /// Task `i`'s group.
    pub fn group(&self, i: u32) -> Option<&str> {
        match self.group[i as usize] {
            0 => None,
            k => Some(self.group_names[k as usize - 1].as_str()),
        }
    }

    /// The named resources task `i` holds while it runs.
    pub fn resources_of(&self, i: u32) -> &[String] {
        self.needs.get(&i).map_or(&[], Vec::as_slice)
    }

    /// The ids of the entrants of competition `name` that a task waits
    /// for, in plan order (none for a competition nothing waits for).
    pub fn entrants(&self, name: &str) -> Vec<&str> {
        self.competitions
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.members.iter().map(|&m| self.tasks.id(m)).collect())
            .unwrap_or_default()
    }

    /// Current state of a task.
    pub fn state(&self, i: u32) -> TaskState {
        self.state[i as usize]
    }

    /// Dependencies of a task.
    pub fn deps(&self, i: u32) -> &[u32] {
        self.deps.of(i)
    }

    /// The tasks that depend on task `i`.
    pub fn dependents(&self, i: u32) -> &[u32] {
        self.children.of(i)
    }

    /// Reconciles with `results/` itself, for what the journal may have
    /// missed (a line lost to a crash, a journal that cannot be written):
    /// reads every result file whose task the board thinks is open.
    /// Returns how many tasks changed.
    pub fn reconcile(&mut self) -> Result<usize> {
        let rdir = self.dir.results_dir();
        let mut changed = 0;
        let mut present = HashSet::new();
        for entry in fs::read_dir(&rdir).ctx("read", &rdir)?.flatten() {
            let name = entry.file_name();
            let Some(i) = name
                .to_str()
                .and_then(|s| s.strip_suffix(".json"))
                .and_then(|t| self.tasks.index_of(t))
            else {
                continue;
            };
            present.insert(i);
            if !self.state[i as usize].is_open() {
                continue;
            }
            if let Ok(r) = read_json::<TaskResult>(&entry.path()) {
                if self.state[i as usize] != state_of(r.status) {
                    self.record(i, Some(r.status));
                    changed += 1;
                }
            }
        }
        // Results moved away (a retry) without a journal line.
        for i in 0..self.tasks.len() as u32 {
            if matches!(self.state[i as usize], TaskState::Final(_)) && !present.contains(&i) {
                self.record(i, None);
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Applies journal lines written since the last refresh, and notices
    /// checkpoints that were signalled.
    pub fn refresh(&mut self) -> Result<()> {
        for e in self.journal.read_new()? {
            if let Some(i) = self.tasks.index_of(&e.task) {
                // A line that says what the board already knows (this
                // worker's own results, recorded when written) changes
                // nothing: no need to read the file again.
                if e.status
                    .is_some_and(|s| self.state[i as usize] == TaskState::Final(s))
                {
                    continue;
                }
                // A line says which task changed; its result file says how
                // (the journal is a cache and may lead: a line written
                // early, or planted).
                let status = match read_json::<TaskResult>(&self.dir.result(&e.task)) {
                    Ok(r) => Some(r.status),
                    Err(Error::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        None
                    }
                    // Being written, or damaged: the next reconcile says.
                    Err(_) => continue,
                };
                self.record(i, status);
            }
        }
        let mut k = 0;
        while k < self.waiting.len() {
            if self.waiting[k].0.is_signalled() {
                let (_, waiters) = self.waiting.swap_remove(k);
                for w in waiters {
                    self.unmet[w as usize] -= 1;
                    self.enqueue_if_ready(w);
                }
            } else {
                k += 1;
            }
        }
        Ok(())
    }

    /// Checkpoints not signalled yet that open tasks wait for, with those
    /// tasks.
    pub fn waiting_checkpoints(&self) -> Vec<(&Checkpoint, Vec<u32>)> {
        self.waiting
            .iter()
            .map(|(cp, w)| {
                (
                    cp,
                    w.iter()
                        .copied()
                        .filter(|&t| self.state[t as usize].is_open())
                        .collect::<Vec<_>>(),
                )
            })
            .filter(|(_, w)| !w.is_empty())
            .collect()
    }

    /// Whether task `i` waits for a checkpoint that is not signalled.
    pub fn waits_for_checkpoint(&self, i: u32) -> Option<&Checkpoint> {
        self.waiting
            .iter()
            .find(|(_, w)| w.contains(&i))
            .map(|(cp, _)| cp)
    }

    /// The declared resources.
    pub fn resources(&self) -> &std::collections::BTreeMap<String, ResourceDecl> {
        &self.resources
    }

    /// A resource's capacity (1 when undeclared).
    pub fn capacity(&self, name: &str) -> u32 {
        self.resources.get(name).map_or(1, |r| r.capacity)
    }

    /// Runs wave by wave from now on: a wave starts only when the one
    /// before it has finished with at most `threshold` of its tasks failed.
    pub fn set_strict_waves(&mut self, threshold: f64) {
        self.strict = Some(threshold);
        self.check_waves();
    }

    /// Why the session halted (strict waves), if it did.
    pub fn halted(&self) -> Option<&str> {
        self.halted.as_deref()
    }

    fn open_wave(&self) -> Option<u32> {
        self.open_in_wave
            .iter()
            .position(|&n| n > 0)
            .map(|i| i as u32 + 1)
    }

    /// In strict mode: halts if a finished wave failed too much; enqueues
    /// the tasks of the wave now open.
    fn check_waves(&mut self) {
        let Some(threshold) = self.strict else { return };
        let open = self.open_wave().unwrap_or(self.by_wave.len() as u32 + 1);
        if self.halted.is_none() {
            for w in 1..open {
                let tasks = &self.by_wave[(w - 1) as usize];
                let failed: Vec<&str> = tasks
                    .iter()
                    .filter(|&&t| {
                        matches!(
                            self.state[t as usize],
                            TaskState::Final(Status::Failure | Status::Timeout)
                        )
                    })
                    .map(|&t| self.tasks.id(t))
                    .collect();
                let rate = failed.len() as f64 / tasks.len().max(1) as f64;
                if rate > threshold {
                    self.halted = Some(format!(
                        "wave {w} failed {} of {} tasks ({:.0}% > {:.0}%): {}",
                        failed.len(),
                        tasks.len(),
                        rate * 100.0,
                        threshold * 100.0,
                        failed.join(", ")
                    ));
                    return;
                }
            }
        }
        if let Some(w) = self.open_wave() {
            for k in 0..self.by_wave[(w - 1) as usize].len() {
                let t = self.by_wave[(w - 1) as usize][k];
                self.enqueue_if_ready(t);
            }
        }
    }

    /// Records what happened to a task (`None`: its result was moved away).
    pub fn record(&mut self, i: u32, status: Option<Status>) {
        let state = status.map_or(TaskState::Pending, state_of);
        self.set(i, state);
        self.enqueue_if_ready(i);
    }

    fn set(&mut self, i: u32, new: TaskState) {
        let old = self.state[i as usize];
        if old == new {
            return;
        }
        self.state[i as usize] = new;
        let wave = (self.wave(i) - 1) as usize;
        match (
            matches!(old, TaskState::Final(_)),
            matches!(new, TaskState::Final(_)),
        ) {
            (false, true) => {
                self.open_in_wave[wave] -= 1;
                if self.open_in_wave[wave] == 0 {
                    self.check_waves();
                }
            }
            (true, false) => self.open_in_wave[wave] += 1,
            _ => {}
        }
        let was_success = old == TaskState::Final(Status::Success);
        let is_success = new == TaskState::Final(Status::Success);
        if was_success && !is_success {
            for k in 0..self.children.of(i).len() {
                let c = self.children.of(i)[k];
                self.unmet[c as usize] += 1;
            }
        }
        if is_success && !was_success {
            for k in 0..self.children.of(i).len() {
                let c = self.children.of(i)[k];
                self.unmet[c as usize] -= 1;
                self.enqueue_if_ready(c);
            }
        }
        if matches!(new, TaskState::Final(s) if s != Status::Success) {
            self.doomed.extend(self.children.of(i).iter().copied());
        }
        if let Some(cs) = self.enters.get(&i).cloned() {
            for c in cs {
                self.recheck_competition(c);
            }
        }
    }

    /// Decides competition `c` again when its entrants' states change: a
    /// winner releases the tasks waiting for it, no winner dooms them, and
    /// an entrant run again (its result moved away) undoes the decision.
    fn recheck_competition(&mut self, c: usize) {
        let comp = &self.competitions[c];
        let all_final = comp
            .members
            .iter()
            .all(|&m| matches!(self.state[m as usize], TaskState::Final(_)));
        let mut reason = String::new();
        let decision = if all_final {
            let ids: Vec<&str> = comp.members.iter().map(|&m| self.tasks.id(m)).collect();
            let judged = crate::competition::judge_ids(&self.dir, &comp.name, &ids);
            if crate::competition::is_decided(&judged) {
                reason = judged.reason.clone();
                Some(judged.winner.and_then(|w| self.tasks.index_of(&w)))
            } else {
                None
            }
        } else {
            None
        };
        if decision == self.competitions[c].decision {
            return;
        }
        let old = std::mem::replace(&mut self.competitions[c].decision, decision);
        self.competitions[c].reason = reason;
        let waiters = self.competitions[c].waiters.clone();
        if let Some(Some(_)) = old {
            for &w in &waiters {
                self.unmet[w as usize] += 1;
            }
        }
        match decision {
            Some(Some(_)) => {
                for &w in &waiters {
                    self.unmet[w as usize] -= 1;
                    self.enqueue_if_ready(w);
                }
            }
            Some(None) => self
                .doomed_by_competition
                .extend(waiters.iter().map(|&w| (w, c))),
            None => {}
        }
    }

    /// The first dependency of task `i` the board counts as succeeded whose
    /// result file does not say so (the results journal is a cache, never
    /// trusted over the files), recording what the file says instead; with
    /// why, or `None` when every dependency is confirmed. Read when a task
    /// is claimed: a few files, not the session.
    pub fn unconfirmed_dep(&mut self, i: u32) -> Option<String> {
        let deps = self.deps.of(i).to_vec();
        for d in deps {
            if self.state[d as usize] != TaskState::Final(Status::Success) {
                continue;
            }
            let id = self.tasks.id(d).to_owned();
            let on_disk = match read_json::<TaskResult>(&self.dir.result(&id)) {
                Ok(r) => Some(r.status),
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    None
                }
                // Unreadable: not a success either; the next load says why.
                Err(_) => Some(Status::Failure),
            };
            if on_disk != Some(Status::Success) {
                self.record(d, on_disk.filter(|s| s.is_final()));
                return Some(format!(
                    "dependency `{id}` has {} (the results journal said it succeeded)",
                    on_disk.map_or("no result yet".to_owned(), |s| format!("a {s} result"))
                ));
            }
        }
        None
    }

    /// Notes that task `i` was claimed and let go because of `why`.
    pub fn unclaimed_because(&mut self, i: u32, why: String) {
        self.unclaimable_why
            .push((self.tasks.id(i).to_owned(), why));
    }

    /// Open tasks that can never run because a competition they wait for
    /// ended without a winner, each with the competition's name and why.
    pub fn take_doomed_by_competition(&mut self) -> Vec<(u32, String, String)> {
        let mut out = Vec::new();
        for (w, c) in std::mem::take(&mut self.doomed_by_competition) {
            let comp = &self.competitions[c];
            if self.state[w as usize].is_open() && comp.decision == Some(None) {
                out.push((w, comp.name.clone(), comp.reason.clone()));
            }
        }
        out
    }

    fn enqueue_if_ready(&mut self, i: u32) {
        let iu = i as usize;
        if self.state[iu].is_open() && self.unmet[iu] == 0 && !self.in_ready[iu] {
            self.in_ready[iu] = true;
            self.ready.push((self.priority[iu], Reverse(i)));
        }
    }

    /// Whether task `i` can start now (as far as the board knows).
    pub fn is_ready(&self, i: u32) -> bool {
        let iu = i as usize;
        if !(self.state[iu].is_open() && self.unmet[iu] == 0) {
            return false;
        }
        match self.strict {
            None => true,
            Some(_) => self.halted.is_none() && Some(self.wave(i)) == self.open_wave(),
        }
    }

    /// Takes the best ready task out of the queue; give it back with
    /// [`Board::push_ready`] if it could not be claimed.
    pub fn pop_ready(&mut self) -> Option<u32> {
        while let Some((_, Reverse(i))) = self.ready.pop() {
            self.in_ready[i as usize] = false;
            if self.is_ready(i) {
                return Some(i);
            }
        }
        None
    }

    /// Puts a task back into the ready queue (if it is still ready).
    pub fn push_ready(&mut self, i: u32) {
        self.enqueue_if_ready(i);
    }

    /// Whether any task is ready (claimable or held by someone).
    pub fn has_ready(&mut self) -> bool {
        while let Some(&(_, Reverse(i))) = self.ready.peek() {
            if self.is_ready(i) {
                return true;
            }
            self.ready.pop();
            self.in_ready[i as usize] = false;
        }
        false
    }

    /// Open tasks that can never run because a dependency ended without
    /// success, each with that dependency. They should be recorded as
    /// skipped (which dooms their own dependents in turn).
    pub fn take_doomed(&mut self) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for c in std::mem::take(&mut self.doomed) {
            if !self.state[c as usize].is_open() || !seen.insert(c) {
                continue;
            }
            let failed_dep = self.deps.of(c).iter().copied().find(
                |&d| matches!(self.state[d as usize], TaskState::Final(s) if s != Status::Success),
            );
            if let Some(d) = failed_dep {
                out.push((c, d));
            }
        }
        out
    }

    /// Counts by state.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for s in &self.state {
            match s {
                TaskState::Pending => c.pending += 1,
                TaskState::Interrupted => c.interrupted += 1,
                TaskState::Corrupt => c.corrupt += 1,
                TaskState::Final(Status::Success) => c.success += 1,
                TaskState::Final(Status::Failure) => c.failure += 1,
                TaskState::Final(Status::Timeout) => c.timeout += 1,
                TaskState::Final(Status::Skipped) => c.skipped += 1,
                TaskState::Final(Status::Interrupted) => c.interrupted += 1,
            }
        }
        c
    }

    /// Whether every task has a final result.
    pub fn is_finished(&self) -> bool {
        self.state.iter().all(|s| matches!(s, TaskState::Final(_)))
    }

    /// The lowest wave that still has an open task.
    pub fn current_wave(&self) -> Option<u32> {
        self.wave
            .iter()
            .zip(&self.state)
            .filter(|(_, s)| !matches!(s, TaskState::Final(_)))
            .map(|(&w, _)| w)
            .min()
    }
}

/// One list of task indices per task, all in one array (compressed
/// rows): 4 bytes per task and per edge, where a `Vec` per task took 24
/// bytes even when empty.
#[derive(Debug)]
struct Edges {
    at: Vec<u32>,
    list: Vec<u32>,
}

impl Edges {
    /// The lists of `n` tasks from `(task, other)` pairs, each list in
    /// the order its pairs came.
    fn new(n: usize, pairs: impl Iterator<Item = (u32, u32)> + Clone) -> Edges {
        let mut at = vec![0u32; n + 1];
        for (i, _) in pairs.clone() {
            at[i as usize + 1] += 1;
        }
        for i in 0..n {
            at[i + 1] += at[i];
        }
        let mut next = at.clone();
        let mut list = vec![0u32; at[n] as usize];
        for (i, j) in pairs {
            list[next[i as usize] as usize] = j;
            next[i as usize] += 1;
        }
        Edges { at, list }
    }

    fn of(&self, i: u32) -> &[u32] {
        &self.list[self.at[i as usize] as usize..self.at[i as usize + 1] as usize]
    }
}

fn state_of(s: Status) -> TaskState {
    if s.is_final() {
        TaskState::Final(s)
    } else {
        TaskState::Interrupted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanDoc;
    use crate::store::write_result;

    /// A plan of `tasks` (id, after), as plan.json holds it.
    fn plan_of(tasks: &[(&str, &[&str])]) -> PlanDoc {
        let tasks: Vec<serde_json::Value> = tasks
            .iter()
            .map(|(id, after)| {
                serde_json::json!({
                    "id": id, "action": {"command": "true"}, "timeout_ms": 1000,
                    "retries": 0, "after": after, "priority": 1, "wave": 1
                })
            })
            .collect();
        crate::testing::plan_doc(serde_json::Value::Array(tasks))
    }

    /// A session directory holding `tasks`, and its board.
    fn board_of(tasks: &[(&str, &[&str])]) -> (tempfile::TempDir, Board) {
        let (t, dir) = crate::testing::session_dir();
        let board = Board::load(&dir, plan_of(tasks)).expect("board");
        (t, board)
    }

    fn result(dir: &SessionDir, task: &str, status: Status) {
        write_result(
            dir,
            &TaskResult::new(task, 1, status, None, crate::time::now()),
        )
        .expect("result");
    }

    fn ids(board: &mut Board) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(i) = board.pop_ready() {
            out.push(board.id(i).to_owned());
        }
        out
    }

    #[test]
    fn a_task_is_ready_once_every_dependency_succeeded() {
        let (_t, mut board) = board_of(&[("a", &[]), ("b", &[]), ("c", &["a", "b"])]);
        let c = board.index_of("c").expect("c");
        assert!(!board.is_ready(c));
        let a = board.index_of("a").expect("a");
        board.record(a, Some(Status::Success));
        assert!(!board.is_ready(c), "b is still open");
        board.record(board.index_of("b").expect("b"), Some(Status::Success));
        assert!(board.is_ready(c));
        assert_eq!(ids(&mut board), ["c"]);
        // Its dependency's result moved away (a retry): waiting again.
        board.record(a, None);
        assert!(!board.is_ready(c));
        assert_eq!(board.counts().pending, 2);
    }

    #[test]
    fn results_on_disk_are_what_a_board_starts_from() {
        let tasks: &[(&str, &[&str])] = &[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &[])];
        let (_t, dir) = crate::testing::session_dir();
        result(&dir, "a", Status::Success);
        result(&dir, "b", Status::Failure);
        let mut board = Board::load(&dir, plan_of(tasks)).expect("board");
        let counts = board.counts();
        assert_eq!((counts.success, counts.failure, counts.pending), (1, 1, 2));
        // c can never run (b failed): it is doomed, with the reason.
        let (b, c) = (
            board.index_of("b").expect("b"),
            board.index_of("c").expect("c"),
        );
        assert_eq!(board.take_doomed(), [(c, b)]);
        assert_eq!(ids(&mut board), ["d"]);
        assert!(!board.is_finished());
        // A result moved away without a journal line (a retry by hand):
        // reconcile reads the directory again.
        fs::remove_file(dir.result("b")).expect("remove");
        assert_eq!(board.reconcile().expect("reconcile"), 1);
        assert_eq!(board.state(b), TaskState::Pending);
        assert_eq!(ids(&mut board), ["b"]);
    }

    #[test]
    fn another_workers_result_reaches_the_board_through_the_journal() {
        let (_t, mut board) = board_of(&[("a", &[]), ("b", &["a"])]);
        assert_eq!(ids(&mut board), ["a"]);
        // Written by someone else: the file and its journal line.
        result(board.dir(), "a", Status::Success);
        board.refresh().expect("refresh");
        assert_eq!(board.state(0), TaskState::Final(Status::Success));
        assert_eq!(ids(&mut board), ["b"]);
        result(board.dir(), "b", Status::Success);
        board.refresh().expect("refresh");
        assert!(board.is_finished());
        assert_eq!(board.counts().success, 2);
    }

    #[test]
    fn edges_keep_each_tasks_list_in_the_order_given() {
        let e = Edges::new(4, [(2, 0), (0, 3), (2, 1), (2, 0)].into_iter());
        assert_eq!(e.of(0), [3]);
        assert!(e.of(1).is_empty());
        assert_eq!(e.of(2), [0, 1, 0]);
        assert!(e.of(3).is_empty());
        assert!(Edges::new(0, std::iter::empty()).list.is_empty());
    }
}
