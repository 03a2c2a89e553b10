//! One attempt of a task: its own command or prompt, or the phases of the
//! plan's template in rounds, with the agent's output read as it comes
//! (the one [`Reader`]: readable log lines, raw stream-json, usage limits,
//! refused tool calls, cost), and claude tasks resumed where an earlier
//! attempt was cut short.

use std::collections::VecDeque;
use std::time::Instant;

use orch_session::claim::Claim;
use orch_session::layout::SessionDir;
use orch_session::log::{self, RawLog, TaskLog};
use orch_session::plan::agent::AgentFormat;
use orch_session::plan::{Action, Phase, Task, Template};
use orch_session::proc::ProcessIdentity;
use orch_session::result::{AgentReport, Cost, PhaseRun, Status, TaskOutput, TaskResult};
use orch_session::time;

use super::Worker;
use crate::agent::limit::{self, UsageLimit};
use crate::agent::Reader;
use crate::runner::{self, Control, Event, Outcome, Seen, Transcript};

/// Lines of output kept for a gate's report and a failure's last lines.
const KEEP_LINES: usize = 200;

/// What one attempt produced.
pub(super) struct AttemptRun {
    /// How it ended.
    pub outcome: Outcome,
    /// What to merge into the result beside `ORCH_OUTPUT`.
    pub output: TaskOutput,
    /// A usage limit the agent hit.
    pub limit: Option<UsageLimit>,
    /// What this attempt's agent runs spent.
    pub cost: Option<Cost>,
    /// A failure another attempt would not mend (a refused tool call).
    pub final_failure: bool,
}

impl AttemptRun {
    /// An attempt that could not start, for `reason`.
    pub(super) fn failed(reason: String) -> AttemptRun {
        AttemptRun::of(Outcome::not_started(reason, time::now()))
    }

    /// An attempt that ended as `outcome`, with nothing else to say.
    pub(super) fn of(outcome: Outcome) -> AttemptRun {
        AttemptRun {
            outcome,
            output: TaskOutput::default(),
            limit: None,
            cost: None,
            final_failure: false,
        }
    }
}

/// A claude conversation to take up again.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Resume {
    /// claude's session id.
    pub session_id: String,
    /// Why the run before stopped.
    pub why: String,
}

impl Resume {
    /// The conversation an earlier attempt left to resume: one cut short by
    /// a usage limit, a timeout, a stopped or dead worker, or an API error,
    /// whose claude session id is known.
    pub(super) fn after(previous: &TaskResult) -> Option<Resume> {
        let agent = previous.output.agent.as_ref()?;
        let cut_short = match previous.status {
            Status::Interrupted | Status::Timeout => true,
            Status::Failure => {
                agent.api_error
                    && !previous
                        .reason
                        .as_deref()
                        .is_some_and(|r| r.starts_with(PERMISSION_DENIED))
            }
            Status::Success | Status::Skipped => false,
        };
        Some(Resume {
            session_id: agent.session_id.clone()?,
            why: previous
                .reason
                .clone()
                .unwrap_or_else(|| previous.status.to_string()),
        })
        .filter(|_| cut_short)
    }

    /// The prompt that takes the conversation up again.
    pub(super) fn prompt(&self) -> String {
        format!(
            "Your previous run of this task was cut short ({}). Continue the same task from where you left off: check what is already done, finish what is not, and end with a short summary of the whole task.",
            self.why
        )
    }
}

/// The reason a refused tool call gives an attempt.
pub(super) const PERMISSION_DENIED: &str = "permission-denied";

/// Reads what one action prints: the task's log gets the readable form,
/// `logs/<task>.jsonl` the raw stream-json, and limits, progress and the
/// agent's session id are noticed as they come.
pub(super) struct Watch {
    reader: Reader,
    raw: Option<RawLog>,
    raw_at: Option<(SessionDir, String)>,
    builtin_limits: bool,
    patterns: Vec<String>,
    limit: Option<UsageLimit>,
    lines: VecDeque<String>,
    started: Instant,
    estimate_ms: u64,
    session_told: bool,
    /// In a `--tmux` window: the task's readable lines are shown there too
    /// (the terminal only; the log file gets them as always).
    echo: Option<(String, crate::common::Style)>,
}

impl Watch {
    fn new(worker: &Worker, task: &Task, action: &Action) -> Watch {
        let settings = &worker.session.info.settings;
        let prompt = matches!(action, Action::Prompt(_));
        let format = if prompt {
            settings.agent_format()
        } else {
            AgentFormat::Text
        };
        let stream = format == AgentFormat::ClaudeStreamJson;
        Watch {
            reader: Reader::new(format, Some(&worker.task_env().workdir(task))),
            raw: None,
            raw_at: stream.then(|| (worker.dir.clone(), task.id.clone())),
            builtin_limits: prompt,
            patterns: settings.usage_limit_patterns.clone(),
            limit: None,
            lines: VecDeque::new(),
            started: Instant::now(),
            estimate_ms: task.estimate_or_default(),
            session_told: false,
            echo: std::env::var_os("ORCH_TMUX_WINDOW")
                .map(|_| (task.id.clone(), crate::common::Style::stdout())),
        }
    }

    fn keep(&mut self, line: &str) {
        if self.lines.len() == KEEP_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line.to_owned());
    }

    /// What this run spent, once the agent said.
    fn cost(&self) -> Option<Cost> {
        self.reader
            .report
            .cost_usd
            .is_some()
            .then(|| Cost::of(&self.reader.report))
    }
}

impl Transcript for Watch {
    fn take(&mut self, stderr: bool, line: String, log: &mut Vec<String>) -> Seen {
        let mut seen = Seen::default();
        if !stderr {
            if let Some((dir, task)) = self.raw_at.take() {
                // Opened at the first line; a log that cannot be opened
                // (a planted symlink) costs the raw copy, not the task.
                self.raw = RawLog::open(&dir, &task).ok();
            }
            if let Some(raw) = self.raw.as_mut() {
                raw.push(&line);
            }
        }
        let fed = self.reader.feed(stderr, &line);
        for l in &fed.readable {
            self.keep(l);
        }
        if let Some((task, style)) = &self.echo {
            echo(task, *style, &fed.readable);
        }
        log.extend(fed.readable);
        if fed.progress {
            let pct = (self.started.elapsed().as_millis() as f64 / self.estimate_ms.max(1) as f64
                * 100.0)
                .min(95.0);
            seen.progress = Some(runner::AgentProgress {
                percent: pct,
                detail: self.reader.progress_detail(),
                turns: self.reader.report.turns,
                tool_calls: self.reader.report.tool_uses,
            });
        }
        if !self.session_told {
            if let Some(id) = &self.reader.report.session_id {
                self.session_told = true;
                seen.session = Some(id.clone());
            }
        }
        if self.limit.is_none() {
            let now = time::now();
            let hit = match &fed.parsed {
                Some(parsed) => limit::from_stream(parsed, &self.patterns, &now),
                // A stream-json agent's other lines never say a limit.
                None if self.reader.is_stream() => None,
                None => limit::from_text(&line, self.builtin_limits, &self.patterns, &now),
            };
            if let Some(l) = hit {
                seen.stop = Some(format!("usage limit: {}", l.message));
                self.limit = Some(l);
            }
        }
        seen
    }

    fn flush(&mut self) {
        if let Some(raw) = self.raw.as_mut() {
            let _ = raw.flush();
        }
    }
}

/// Shows a task's readable lines on the worker's terminal, as
/// `orch-monitor --follow` shows them: `12:00:01 task | text`.
fn echo(task: &str, style: crate::common::Style, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let stamp = time::now().format("%H:%M:%S");
    let mut text = String::new();
    for l in lines {
        text.push_str(&format!(
            "{stamp} {} {}\n",
            style.paint(crate::common::Color::Cyan, &format!("{task} |")),
            crate::monitor::logtail::clean(l)
        ));
    }
    // One write per batch; a closed terminal is not the task's problem.
    let _ = crate::common::out(&text);
}

/// What one action (the task's own, or a phase) produced.
struct ActionRun {
    outcome: Outcome,
    watch: Watch,
}

impl ActionRun {
    /// What the agent said about its run (stream-json agents).
    fn report(&self) -> Option<AgentReport> {
        self.watch
            .reader
            .is_stream()
            .then(|| self.watch.reader.report.clone())
    }
}

/// What the agent's own report changes about how an action ended: a
/// refused tool call fails it (`permission-denied`, naming the tool and
/// the setting to change); an error the agent reported fails it even if
/// it exited 0, with the agent's words rather than its exit code.
fn conclude(outcome: &mut Outcome, watch: &Watch, permission_mode: Option<&str>) {
    let r = &watch.reader;
    if !r.is_stream() || !matches!(outcome.status, Status::Success | Status::Failure) {
        return;
    }
    if let Some((tool, target)) = r.denials.first() {
        let more = match r.denials.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        let rule = match (tool.as_str(), target) {
            ("Bash", Some(cmd)) => {
                format!("Bash({} *)", cmd.split_whitespace().next().unwrap_or(""))
            }
            (t, _) => t.to_owned(),
        };
        outcome.status = Status::Failure;
        outcome.reason = Some(format!(
            "{PERMISSION_DENIED}: claude refused {tool}{}{more} under permission_mode = \"{}\"; allow it in the plan with allowed_tools = [\"{rule}\"] or another permission_mode (see docs/agents.md)",
            target.as_deref().map(|t| format!(" {t}")).unwrap_or_default(),
            permission_mode.unwrap_or("default"),
        ));
        return;
    }
    if r.report.is_error {
        // claude reports an API error it gave up on as subtype `success`
        // with `is_error`; its own words then say what happened.
        let kind = match (r.report.api_error_status, r.report.subtype.as_deref()) {
            (Some(code), _) => format!("API {code}"),
            (None, Some("success") | None) => "error".to_owned(),
            (None, Some(sub)) => sub.to_owned(),
        };
        outcome.status = Status::Failure;
        outcome.reason = Some(match r.result_text.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => format!(
                "the agent reported an error ({kind}): {}",
                crate::agent::cut(t, 200)
            ),
            None => format!("the agent reported an error ({kind})"),
        });
    }
}

/// `{prompt}`, `{task}`, `{title}`, `{phase}` in a phase's text.
fn fill(text: &str, task: &Task, phase: &str) -> String {
    let own = match &task.action {
        Action::Command(c) | Action::Prompt(c) => c.as_str(),
    };
    text.replace("{task}", &task.id)
        .replace("{title}", task.label())
        .replace("{phase}", phase)
        .replace("{prompt}", own)
}

/// The last number printed (for a gate's threshold).
fn last_number(lines: &VecDeque<String>) -> Option<f64> {
    lines.iter().rev().find_map(|l| {
        l.split(|c: char| {
            c.is_whitespace() || c == ',' || c == ':' || c == '=' || c == '(' || c == ')'
        })
        .rev()
        .find_map(|w| {
            w.trim_end_matches(['%', '.'])
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
        })
    })
}

fn tail(lines: &VecDeque<String>, n: usize) -> String {
    let skip = lines.len().saturating_sub(n);
    lines
        .iter()
        .skip(skip)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// A phase ready to run: its label, action, extra environment and log.
type Prepared = (String, Action, Vec<(String, String)>, TaskLog);

impl Worker {
    /// The action, environment and log of phase `p` in `round`.
    fn prepare_phase(
        &self,
        task: &Task,
        p: &Phase,
        round: u32,
        first_phase: &Phase,
        feedback: Option<&str>,
    ) -> Result<Prepared, String> {
        let label = format!("{}/{}", task.id, p.name);
        let action = match &p.action {
            None => task.action.clone(),
            Some(Action::Prompt(text)) => Action::Prompt(fill(text, task, &p.name)),
            Some(Action::Command(text)) => Action::Command(fill(text, task, &p.name)),
        };
        let first = std::ptr::eq(p, first_phase);
        let action = match (action, feedback, first) {
            (Action::Prompt(text), Some(fb), true) => Action::Prompt(format!("{text}\n\n{fb}")),
            (a, _, _) => a,
        };
        let mut env = vec![("ORCH_ROUND".to_owned(), round.to_string())];
        if let (Some(fb), true) = (feedback, first) {
            let path = self.dir.feedback_file(&task.id);
            orch_session::atomic::write_atomic(
                &path,
                fb.as_bytes(),
                orch_session::atomic::Durability::Volatile,
            )
            .map_err(|e| format!("cannot write the gate feedback: {e:#}"))?;
            env.push((
                "ORCH_GATE_FEEDBACK".to_owned(),
                path.to_string_lossy().into_owned(),
            ));
        }
        let plog = TaskLog::open_as(&self.dir, &task.id, &label)
            .map_err(|e| format!("cannot open the log: {e:#}"))?;
        Ok((label, action, env, plog))
    }

    /// A line in a task's log, for what the worker decided about it.
    fn tlog_note(
        dir: &orch_session::SessionDir,
        task: &str,
        what: &str,
    ) -> orch_session::Result<()> {
        TaskLog::open(dir, task)?.event(what)
    }

    /// Runs the phases of a stage at the same time, one thread each (each
    /// agent is spawned from the thread that waits for it).
    fn run_parallel<'p>(
        &mut self,
        task: &Task,
        prepared: Vec<(&'p Phase, Prepared)>,
        attempt: u32,
        fds: &[i32],
    ) -> Vec<(&'p Phase, String, ActionRun)> {
        let signals = self.signals.clone();
        let mut jobs = Vec::new();
        let mut done = Vec::new();
        for (p, (label, action, env, mut plog)) in prepared {
            let watch = Watch::new(self, task, &action);
            match self.task_env().spec(task, &action, attempt, fds, None) {
                Ok(mut spec) => {
                    spec.env.extend(env);
                    spec.env.push(("ORCH_PHASE".to_owned(), p.name.clone()));
                    let _ = plog.event(&log::attempt_started(
                        Some(&p.name),
                        attempt,
                        &self.id,
                        std::process::id(),
                        &super::task_env::describe(&spec.argv, &action),
                        None,
                    ));
                    jobs.push((p, label, spec, watch, plog));
                }
                Err(reason) => {
                    let _ = plog.event(&reason);
                    let outcome = Outcome::not_started(reason, time::now());
                    done.push((p, label, ActionRun { outcome, watch }));
                }
            }
        }
        // Phase agents count against the session's `agents`: this worker is
        // one; more at once only while fewer workers than `agents` live,
        // each extra one holding a slot (`locks/agent-slot.<k>.lock`).
        let slots = self.extra_agent_slots(jobs.len().saturating_sub(1));
        let at_once = 1 + slots.len();
        if at_once < jobs.len() {
            let _ = Self::tlog_note(
                &self.dir,
                &task.id,
                &format!(
                    "{} parallel phases, {at_once} at a time: agents = {} and {} workers are live",
                    jobs.len(),
                    self.session.info.settings.agents,
                    super::life::live_slots(&self.dir).len()
                ),
            );
        }
        let mut ran: Vec<(&Phase, String, ActionRun)> = Vec::new();
        let mut queue = jobs.into_iter();
        loop {
            let batch: Vec<_> = queue.by_ref().take(at_once).collect();
            if batch.is_empty() {
                break;
            }
            ran.extend(std::thread::scope(|s| {
                let handles: Vec<_> = batch
                    .into_iter()
                    .map(|(p, label, spec, mut watch, mut plog)| {
                        let signals = &signals;
                        s.spawn(move || {
                            let outcome =
                                runner::run(&spec, &mut plog, signals, &mut watch, |_| {
                                    Control::Continue
                                });
                            (p, label, ActionRun { outcome, watch })
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .filter_map(|h| h.join().ok())
                    .collect::<Vec<_>>()
            }));
        }
        drop(slots);
        let mode = self.session.info.settings.permission_mode.clone();
        done.extend(ran.into_iter().map(|(p, label, mut run)| {
            conclude(&mut run.outcome, &run.watch, mode.as_deref());
            (p, label, run)
        }));
        for (_, _, run) in &done {
            self.spent(&task.id, run.watch.cost());
        }
        done
    }

    /// Up to `want` slots for agents beyond this worker's own, taken
    /// without waiting: `agents` minus the live workers are there to take.
    fn extra_agent_slots(&self, want: usize) -> Vec<orch_session::lock::LockGuard> {
        let agents = self.session.info.settings.agents as usize;
        let free = agents.saturating_sub(super::life::live_slots(&self.dir).len().max(1));
        let mut got = Vec::new();
        for k in 0..free {
            if got.len() >= want {
                break;
            }
            let path = self.dir.agent_slot_lock(k);
            if let Ok(Some(g)) = orch_session::lock::try_lock(&path) {
                got.push(g);
            }
        }
        got
    }

    /// Runs one attempt of `task`; a claude task with a conversation to
    /// `resume` takes it up again.
    pub(super) fn run_attempt(
        &mut self,
        task: &Task,
        attempt: u32,
        fds: &[i32],
        claim: &mut Claim,
        tlog: &mut TaskLog,
        resume: Option<&Resume>,
    ) -> AttemptRun {
        if let (Some(t), true) = (&self.template, task.phases) {
            let t = t.clone();
            return self.run_phases(task, &t, attempt, fds, claim);
        }
        let run = self.run_action(
            task,
            &task.action,
            None,
            attempt,
            fds,
            claim,
            tlog,
            Vec::new(),
            resume,
        );
        let mut output = TaskOutput::default();
        if run.watch.reader.unparsed > 0 {
            let _ = tlog.event(&format!(
                "{} lines of agent output were not stream-json (they are in this log)",
                run.watch.reader.unparsed
            ));
        }
        output.summary = run.watch.reader.result_text.clone();
        output.agent = run.report();
        let final_failure = run
            .outcome
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with(PERMISSION_DENIED));
        AttemptRun {
            cost: run.watch.cost(),
            outcome: run.outcome,
            output,
            limit: run.watch.limit,
            final_failure,
        }
    }

    /// Runs one action, in the foreground, watching its output.
    #[allow(clippy::too_many_arguments)]
    fn run_action(
        &mut self,
        task: &Task,
        action: &Action,
        phase: Option<&str>,
        attempt: u32,
        fds: &[i32],
        claim: &mut Claim,
        tlog: &mut TaskLog,
        extra_env: Vec<(String, String)>,
        resume: Option<&Resume>,
    ) -> ActionRun {
        let mut watch = Watch::new(self, task, action);
        // Only a claude prompt resumes.
        let resume = resume.filter(|_| watch.reader.is_stream());
        let outcome = match self.task_env().spec(task, action, attempt, fds, resume) {
            Ok(mut spec) => {
                spec.env.extend(extra_env.iter().cloned());
                if let Some(p) = phase {
                    spec.env.push(("ORCH_PHASE".to_owned(), p.to_owned()));
                }
                let _ = tlog.event(&log::attempt_started(
                    phase,
                    attempt,
                    &self.id,
                    std::process::id(),
                    &super::task_env::describe(&spec.argv, action),
                    resume.map(|r| r.session_id.as_str()),
                ));
                self.summary(false);
                let signals = self.signals.clone();
                // The agent's pid goes into the claim when the agent first
                // prints or at the first tick (runner::FIRST_TICK), not at
                // its start: a task done sooner in silence never shows, and
                // its claim is written once instead of twice. The record is
                // for people and the monitor (the inherited lock, not the
                // record, keeps an orphaned agent's task taken), and each
                // rewrite is an inode made and freed, which ext4 without a
                // journal makes every later file creation pay for
                // (docs/performance.md).
                let mut agent_unrecorded = None;
                runner::run(&spec, tlog, &signals, &mut watch, |ev| match ev {
                    Event::Agent(p) => {
                        self.life.hb.progress = Some(p.percent);
                        self.life.hb.progress_source = Some(p.detail);
                        self.life.hb.turns = Some(p.turns);
                        self.life.hb.tool_calls = Some(p.tool_calls);
                        self.life.beat_progress();
                        Control::Continue
                    }
                    Event::AgentSession(id) => {
                        // Kept in the claim: if this worker dies, the next
                        // attempt can still resume the conversation.
                        let agent = agent_unrecorded.take();
                        let _ = claim.update(|r| {
                            r.agent_session = Some(id);
                            if agent.is_some() {
                                r.agent = agent;
                            }
                        });
                        Control::Continue
                    }
                    Event::Spawned(pid) => {
                        agent_unrecorded = Some(ProcessIdentity::of(pid));
                        self.on_event(ev)
                    }
                    Event::Tick | Event::Output => {
                        if let Some(agent) = agent_unrecorded.take() {
                            let _ = claim.update(|r| r.agent = Some(agent));
                        }
                        self.on_event(ev)
                    }
                    other => self.on_event(other),
                })
            }
            Err(reason) => {
                let _ = tlog.event(&reason);
                Outcome::not_started(reason, time::now())
            }
        };
        let mut outcome = outcome;
        self.spent(&task.id, watch.cost());
        if let Some(r) = resume {
            if watch.reader.resume_missing {
                // claude's transcript of that conversation is gone (another
                // HOME, another host, cleaned up): start over instead.
                let _ = tlog.event(&format!(
                    "claude has no conversation {} to resume here; starting the task over",
                    r.session_id
                ));
                return self.run_action(
                    task, action, phase, attempt, fds, claim, tlog, extra_env, None,
                );
            }
            watch.reader.report.resumed_from = Some(r.session_id.clone());
        }
        let mode = self.session.info.settings.permission_mode.clone();
        conclude(&mut outcome, &watch, mode.as_deref());
        ActionRun { outcome, watch }
    }

    /// The template's phases in rounds: a failed gate sends the task back
    /// to its first phase, with the gate's output, until `max_rounds`.
    fn run_phases(
        &mut self,
        task: &Task,
        t: &Template,
        attempt: u32,
        fds: &[i32],
        claim: &mut Claim,
    ) -> AttemptRun {
        let started = time::now();
        let mut runs: Vec<PhaseRun> = Vec::new();
        let mut output = TaskOutput::default();
        let mut feedback: Option<String> = None;
        let mut cost: Option<Cost> = None;
        let mut stages: Vec<Vec<&Phase>> = Vec::new();
        for p in &t.phases {
            match stages.last_mut() {
                Some(stage) if p.parallel => stage.push(p),
                _ => stages.push(vec![p]),
            }
        }
        let finish = |status: Status,
                      reason: Option<String>,
                      exit_code: Option<i32>,
                      output: TaskOutput,
                      runs: Vec<PhaseRun>,
                      limit: Option<UsageLimit>,
                      cost: Option<Cost>| {
            let mut output = output;
            output.phases = runs;
            let final_failure = reason
                .as_deref()
                .is_some_and(|r| r.contains(PERMISSION_DENIED));
            AttemptRun {
                outcome: Outcome {
                    status,
                    exit_code,
                    signal: None,
                    reason,
                    pid: None,
                    started,
                    finished: time::now(),
                },
                output,
                limit,
                cost,
                final_failure,
            }
        };
        for round in 1..=t.max_rounds {
            let mut gate_failed: Option<(String, String)> = None;
            for (k, stage) in stages.iter().enumerate() {
                let names: Vec<&str> = stage.iter().map(|p| p.name.as_str()).collect();
                self.life.hb.progress = Some(100.0 * k as f64 / stages.len() as f64);
                self.life.hb.progress_source = Some(format!(
                    "phase {} of {} (round {round})",
                    names.join("+"),
                    stages.len()
                ));
                self.life.beat();
                let mut prepared = Vec::new();
                for p in stage.iter() {
                    match self.prepare_phase(task, p, round, &t.phases[0], feedback.as_deref()) {
                        Ok(x) => prepared.push((*p, x)),
                        Err(e) => {
                            return finish(Status::Failure, Some(e), None, output, runs, None, cost)
                        }
                    }
                }
                let results: Vec<(&Phase, String, ActionRun)> = if prepared.len() == 1 {
                    let (p, (label, action, env, mut plog)) = prepared.pop().expect("one phase");
                    let run = self.run_action(
                        task,
                        &action,
                        Some(&p.name),
                        attempt,
                        fds,
                        claim,
                        &mut plog,
                        env,
                        None,
                    );
                    vec![(p, label, run)]
                } else {
                    self.run_parallel(task, prepared, attempt, fds)
                };
                for (p, label, run) in results {
                    if let Some(c) = run.watch.cost() {
                        cost.get_or_insert_with(Cost::default).add(&c);
                    }
                    let o = &run.outcome;
                    let duration =
                        (o.finished - o.started).num_milliseconds().max(0) as f64 / 1000.0;
                    let mut status = o.status;
                    let mut reason = o.reason.clone();
                    if p.gate && status == Status::Success {
                        if let Some(th) = p.threshold {
                            match last_number(&run.watch.lines) {
                                Some(x) if th.passes(x) => {}
                                Some(x) => {
                                    status = Status::Failure;
                                    reason = Some(format!("{x} does not pass {th}"));
                                }
                                None => {
                                    status = Status::Failure;
                                    reason =
                                        Some(format!("printed no number to compare with {th}"));
                                }
                            }
                        }
                    }
                    runs.push(PhaseRun {
                        phase: label.clone(),
                        round,
                        status,
                        exit_code: o.exit_code,
                        reason: reason.clone(),
                        duration,
                    });
                    if let Some(report) = run.report() {
                        output.summary = run
                            .watch
                            .reader
                            .result_text
                            .clone()
                            .or(output.summary.take());
                        output.agent = Some(report);
                    }
                    if run.watch.limit.is_some() || status == Status::Interrupted {
                        return finish(
                            Status::Interrupted,
                            reason,
                            o.exit_code,
                            output,
                            runs,
                            run.watch.limit,
                            cost,
                        );
                    }
                    if status == Status::Success {
                        continue;
                    }
                    if p.gate {
                        let text = tail(&run.watch.lines, 50);
                        gate_failed = Some((
                            p.name.clone(),
                            format!("{}\n{text}", reason.unwrap_or_default()),
                        ));
                    } else {
                        return finish(
                            status,
                            Some(format!(
                                "phase {label} failed: {}",
                                reason.unwrap_or_default()
                            )),
                            o.exit_code,
                            output,
                            runs,
                            None,
                            cost,
                        );
                    }
                }
                if gate_failed.is_some() {
                    break;
                }
            }
            let Some((gate, text)) = gate_failed else {
                return finish(Status::Success, None, Some(0), output, runs, None, cost);
            };
            if let Ok(mut l) = TaskLog::open(&self.dir, &task.id) {
                let _ = l.event(&format!(
                    "gate {gate} failed in round {round} of {}",
                    t.max_rounds
                ));
            }
            if round == t.max_rounds {
                output.data.insert(
                    "gate_output".to_owned(),
                    serde_json::Value::String(text.clone()),
                );
                return finish(
                    Status::Failure,
                    Some(format!(
                        "gate {gate} failed after {round} rounds: {}",
                        text.lines().next().unwrap_or("").trim()
                    )),
                    None,
                    output,
                    runs,
                    None,
                    cost,
                );
            }
            feedback = Some(format!(
                "The `{gate}` check failed (round {round} of {}). Its output:\n{text}",
                t.max_rounds
            ));
        }
        finish(
            Status::Failure,
            Some("no rounds ran".to_owned()),
            None,
            output,
            runs,
            None,
            cost,
        )
    }
}
