//! One attempt of a task: its own command or prompt, or the phases of the
//! plan's template in rounds, with the agent's output read as it comes
//! (claude's stream-json, usage limits, gate output).

use std::collections::VecDeque;
use std::time::Instant;

use orch_session::claim::Claim;
use orch_session::log::TaskLog;
use orch_session::plan::{Action, Phase, Task, Template};
use orch_session::proc::ProcessIdentity;
use orch_session::result::{PhaseRun, Status, TaskOutput};
use orch_session::time;

use super::Worker;
use crate::agent::{self, StreamJson, UsageLimit};
use crate::runner::{self, Control, Event, Outcome};

/// Lines of output kept for a gate's report.
const KEEP_LINES: usize = 200;

/// What one attempt produced.
pub(super) struct AttemptRun {
    /// How it ended.
    pub outcome: Outcome,
    /// What to merge into the result beside `ORCH_OUTPUT`.
    pub output: TaskOutput,
    /// A usage limit the agent hit.
    pub limit: Option<UsageLimit>,
}

impl AttemptRun {
    /// An attempt that could not start, for `reason`.
    pub(super) fn failed(reason: String) -> AttemptRun {
        AttemptRun {
            outcome: Outcome::not_started(reason, time::now()),
            output: TaskOutput::default(),
            limit: None,
        }
    }
}

/// What the worker watches while one action runs.
pub(super) struct Watch {
    stream: Option<StreamJson>,
    builtin_limits: bool,
    limit: Option<UsageLimit>,
    lines: VecDeque<String>,
    started: Instant,
    estimate_ms: u64,
}

impl Watch {
    fn new(task: &Task, action: &Action, agent_argv: &[String]) -> Watch {
        let prompt = matches!(action, Action::Prompt(_));
        Watch {
            stream: (prompt && agent::kind(agent_argv) == "claude").then(StreamJson::default),
            builtin_limits: prompt,
            limit: None,
            lines: VecDeque::new(),
            started: Instant::now(),
            estimate_ms: task.estimate_or_default(),
        }
    }

    /// Takes a line; returns a stop request when it shows a usage limit.
    fn line(&mut self, stderr: bool, text: &str, patterns: &[String]) -> (bool, Control) {
        if self.lines.len() == KEEP_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(text.to_owned());
        let changed = match (&mut self.stream, stderr) {
            (Some(s), false) => s.line(text),
            _ => false,
        };
        if self.limit.is_none() {
            let hit = if self.builtin_limits {
                agent::usage_limit(text, patterns, &time::now())
            } else {
                // Command tasks: only the plan's own patterns count.
                let lower = text.to_ascii_lowercase();
                patterns
                    .iter()
                    .any(|p| !p.is_empty() && lower.contains(&p.to_ascii_lowercase()))
                    .then(|| agent::usage_limit(text, patterns, &time::now()))
                    .flatten()
            };
            if let Some(l) = hit {
                let reason = format!("usage limit: {}", l.line.trim());
                self.limit = Some(l);
                return (changed, Control::Stop(reason));
            }
        }
        (changed, Control::Continue)
    }

    fn progress(&self) -> Option<(f64, String)> {
        let s = self.stream.as_ref()?;
        let pct = (self.started.elapsed().as_millis() as f64 / self.estimate_ms.max(1) as f64
            * 100.0)
            .min(95.0);
        Some((
            pct,
            format!(
                "stream-json: {} turns, {} tool calls",
                s.report.turns, s.report.tool_uses
            ),
        ))
    }
}

/// What one action (the task's own, or a phase) produced.
struct ActionRun {
    outcome: Outcome,
    watch: Watch,
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
            let path = self
                .dir
                .join(orch_session::layout::OUTPUT_DIR)
                .join(format!("{}.feedback", task.id));
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
        let patterns = self.session.info.settings.usage_limit_patterns.clone();
        let mut jobs = Vec::new();
        let mut done = Vec::new();
        for (p, (label, action, env, mut plog)) in prepared {
            let watch = Watch::new(task, &action, &self.session.info.settings.agent);
            match self.spec(task, &action, attempt, fds) {
                Ok(mut spec) => {
                    spec.env.extend(env);
                    spec.env.push(("ORCH_PHASE".to_owned(), p.name.clone()));
                    spec.observe = true;
                    let _ = plog.event(&format!(
                        "started phase {} of attempt {attempt} on {} (pid {}): {}",
                        p.name,
                        self.id,
                        std::process::id(),
                        super::describe(&spec.argv, &action)
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
        let ran: Vec<(&Phase, String, ActionRun)> = std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|(p, label, spec, mut watch, mut plog)| {
                    let signals = &signals;
                    let patterns = &patterns;
                    s.spawn(move || {
                        let outcome = runner::run(&spec, &mut plog, signals, |ev| match ev {
                            Event::Line { stderr, text } => watch.line(stderr, &text, patterns).1,
                            _ => Control::Continue,
                        });
                        (p, label, ActionRun { outcome, watch })
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        done.extend(ran);
        done
    }

    /// Runs one attempt of `task`.
    pub(super) fn run_attempt(
        &mut self,
        task: &Task,
        attempt: u32,
        fds: &[i32],
        claim: &mut Claim,
        tlog: &mut TaskLog,
    ) -> AttemptRun {
        match (&self.template, task.phases) {
            (Some(t), true) => {
                let t = t.clone();
                self.run_phases(task, &t, attempt, fds, claim)
            }
            _ => {
                let run = self.run_action(
                    task,
                    &task.action,
                    None,
                    attempt,
                    fds,
                    claim,
                    tlog,
                    Vec::new(),
                );
                let mut output = TaskOutput::default();
                if let Some(s) = run.watch.stream {
                    if s.unparsed > 0 {
                        let _ = tlog.event(&format!(
                            "{} lines of agent output were not JSON (they are in this log)",
                            s.unparsed
                        ));
                    }
                    output.summary = s.result_text.clone();
                    output.agent = Some(s.report);
                }
                AttemptRun {
                    outcome: run.outcome,
                    output,
                    limit: run.watch.limit,
                }
            }
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
    ) -> ActionRun {
        let mut watch = Watch::new(task, action, &self.session.info.settings.agent);
        let outcome = match self.spec(task, action, attempt, fds) {
            Ok(mut spec) => {
                spec.env.extend(extra_env);
                if let Some(p) = phase {
                    spec.env.push(("ORCH_PHASE".to_owned(), p.to_owned()));
                    // Phases keep their last lines, for gates.
                    spec.observe = true;
                }
                let _ = tlog.event(&format!(
                    "started {}attempt {attempt} on {} (pid {}): {}",
                    phase.map(|p| format!("phase {p} of ")).unwrap_or_default(),
                    self.id,
                    std::process::id(),
                    super::describe(&spec.argv, action)
                ));
                self.summary(false);
                let signals = self.signals.clone();
                let patterns = self.session.info.settings.usage_limit_patterns.clone();
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
                runner::run(&spec, tlog, &signals, |ev| match ev {
                    Event::Line { stderr, text } => {
                        let (changed, control) = watch.line(stderr, &text, &patterns);
                        if changed {
                            if let Some((pct, source)) = watch.progress() {
                                self.hb.progress = Some(pct);
                                self.hb.progress_source = Some(source);
                                self.beat();
                            }
                        }
                        control
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
        // The agent said it failed, though it exited 0.
        let mut outcome = outcome;
        if let Some(s) = &watch.stream {
            if s.report.is_error && outcome.status == Status::Success {
                outcome.status = Status::Failure;
                outcome.reason = Some(format!(
                    "the agent reported an error ({})",
                    s.report.subtype.as_deref().unwrap_or("is_error")
                ));
            }
        }
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
                      limit: Option<UsageLimit>| {
            let mut output = output;
            output.phases = runs;
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
            }
        };
        for round in 1..=t.max_rounds {
            let mut gate_failed: Option<(String, String)> = None;
            for (k, stage) in stages.iter().enumerate() {
                let names: Vec<&str> = stage.iter().map(|p| p.name.as_str()).collect();
                self.hb.progress = Some(100.0 * k as f64 / stages.len() as f64);
                self.hb.progress_source = Some(format!(
                    "phase {} of {} (round {round})",
                    names.join("+"),
                    stages.len()
                ));
                self.beat();
                let mut prepared = Vec::new();
                for p in stage.iter() {
                    match self.prepare_phase(task, p, round, &t.phases[0], feedback.as_deref()) {
                        Ok(x) => prepared.push((*p, x)),
                        Err(e) => {
                            return finish(Status::Failure, Some(e), None, output, runs, None)
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
                    );
                    vec![(p, label, run)]
                } else {
                    self.run_parallel(task, prepared, attempt, fds)
                };
                for (p, label, run) in results {
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
                    if let Some(s) = run.watch.stream {
                        output.summary = s.result_text.clone().or(output.summary.take());
                        output.agent = Some(s.report);
                    }
                    if run.watch.limit.is_some() || status == Status::Interrupted {
                        return finish(
                            Status::Interrupted,
                            reason,
                            o.exit_code,
                            output,
                            runs,
                            run.watch.limit,
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
                        );
                    }
                }
                if gate_failed.is_some() {
                    break;
                }
            }
            let Some((gate, text)) = gate_failed else {
                return finish(Status::Success, None, Some(0), output, runs, None);
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
        )
    }
}
