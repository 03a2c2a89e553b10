//! The gate: may this worker take another task now? It reads the session's
//! files — the stop marker, the deadline, a usage-limit pause, free disk,
//! the circuit breaker and the spend ledger — and answers with a
//! [`Gating`], keeping only what it must remember between two answers
//! (the pause it said, the sequential lock of a degraded session, the
//! ledger locked until the claim is made).
//!
//! It spawns nothing and writes no line: the worker tells what the
//! answer says, so the decision is unit-tested on real files.

use anyhow::{Context, Result};
use orch_session::breaker::{self, BreakerState};
use orch_session::lock::{self, LockGuard};
use orch_session::plan::Settings;
use orch_session::result::Cost;
use orch_session::{spend, time, SessionDir};

use super::report::{Spent, WorkerEvent};

/// Whether a worker may claim.
#[derive(Debug, PartialEq)]
pub(super) enum Gating {
    /// Yes.
    Go,
    /// Yes, again after a pause: with what changed, if it says.
    Resume(Option<String>),
    /// Not now: why (`new` when that is not what was said last).
    Wait {
        /// Why.
        reason: String,
        /// Not said yet: the worker tells it.
        new: bool,
    },
    /// Not any more: the event that says why.
    Stop(WorkerEvent),
}

/// The gate's state between two decisions.
pub(super) struct Gate {
    dir: SessionDir,
    /// The worker asking (the breaker's probe is a worker).
    worker: String,
    settings: Settings,
    /// Claim nothing new after this.
    pub until: Option<chrono::DateTime<chrono::Local>>,
    /// Why the worker does not claim right now (said once).
    paused: Option<String>,
    /// With degrade = "sequential": the lock that lets this worker go on.
    sequential: Option<LockGuard>,
    /// The spend ledger, locked from the budget check until the claim is
    /// made (sessions with a budget).
    budget_hold: Option<spend::Locked>,
    /// What was spent of the budget when the ledger was locked, for the
    /// "claimed" line.
    budget_note: Option<Spent>,
    /// "budget reached" was said after a task.
    budget_told: bool,
    /// An unreadable spend ledger was warned about.
    ledger_warned: bool,
}

impl Gate {
    /// The gate of `worker` in the session at `dir`, with its settings.
    pub(super) fn new(dir: SessionDir, worker: String, settings: Settings) -> Gate {
        Gate {
            dir,
            worker,
            settings,
            until: None,
            paused: None,
            sequential: None,
            budget_hold: None,
            budget_note: None,
            budget_told: false,
            ledger_warned: false,
        }
    }

    /// May the worker claim now? Warnings to tell on the way go to `told`.
    /// On [`Gating::Go`] and [`Gating::Resume`] in a session with a
    /// budget, the ledger stays locked until [`Gate::claimed`].
    pub(super) fn decide(&mut self, told: &mut Vec<WorkerEvent>) -> Result<Gating> {
        let note = match self.check()? {
            Ok(note) => note,
            Err(Gating::Wait { reason, .. }) => {
                let new = self.paused.as_deref() != Some(reason.as_str());
                if new {
                    self.paused = Some(reason.clone());
                }
                return Ok(Gating::Wait { reason, new });
            }
            Err(other) => return Ok(other),
        };
        if let Some(stop) = self.budget(told)? {
            return Ok(Gating::Stop(stop));
        }
        Ok(match self.paused.take() {
            Some(_) => Gating::Resume(note),
            None => Gating::Go,
        })
    }

    /// The stop marker, the deadline, a pause, free disk and the circuit
    /// breaker: `Ok` with what changed, or the answer that is not "go".
    #[allow(clippy::type_complexity)]
    fn check(&mut self) -> Result<std::result::Result<Option<String>, Gating>> {
        let wait = |reason: String| Err(Gating::Wait { reason, new: true });
        if let Some(stamp) = orch_session::stop::stopped(&self.dir) {
            return Ok(Err(Gating::Stop(WorkerEvent::Stopping(format!(
                "session stopped by `orch-worker stop` ({stamp}); `orch-worker resume` allows workers again"
            )))));
        }
        if let Some(until) = self.until {
            if time::now() >= until {
                return Ok(Err(Gating::Stop(WorkerEvent::Stopping(format!(
                    "deadline {} passed: not claiming new tasks",
                    time::rfc3339(&until)
                )))));
            }
        }
        if let Some(p) = orch_session::pause::current(&self.dir) {
            return Ok(wait(format!(
                "{}; `orch-worker --resume-now` lifts it",
                p.describe()
            )));
        }
        let min_free = self.settings.min_free_disk;
        if let Some(free) = orch_session::fsinfo::free_bytes(self.dir.path()) {
            if free < min_free {
                return Ok(wait(format!(
                    "only {} free on the session's filesystem (below {}): not claiming",
                    orch_session::size::format_size(free),
                    orch_session::size::format_size(min_free)
                )));
            }
        }
        if self.settings.breaker_failures == 0 {
            return Ok(Ok(None));
        }
        if self.settings.degrade_sequential {
            let b = breaker::read(&self.dir)?;
            if b.state == BreakerState::Closed {
                self.sequential = None;
                return Ok(Ok(Some("circuit breaker closed".to_owned())));
            }
            if self.sequential.is_none() {
                self.sequential = breaker::try_sequential(&self.dir)?;
            }
            return Ok(match self.sequential {
                Some(_) => Ok(Some(
                    "degraded to one worker while the circuit breaker is tripped".to_owned(),
                )),
                None => wait(format!(
                    "circuit breaker tripped ({} consecutive failures): the session runs on one worker",
                    b.consecutive
                )),
            });
        }
        let dir = &self.dir;
        let alive = |w: &str| lock::is_held(&dir.worker_lock(w)).unwrap_or(false);
        Ok(match breaker::gate(&self.dir, &self.worker, alive)? {
            breaker::Gate::Go => Ok(Some("circuit breaker closed".to_owned())),
            breaker::Gate::Probe => Ok(Some(
                "circuit breaker half-open: this worker runs one task to test".to_owned(),
            )),
            breaker::Gate::Wait(why) => wait(why),
        })
    }

    /// The budget check, last of the gates: the ledger is locked and, if
    /// the total is under the budget, kept locked until the claim is made,
    /// so no claim follows the moment the total reached it.
    fn budget(&mut self, told: &mut Vec<WorkerEvent>) -> Result<Option<WorkerEvent>> {
        let session_budget = self.settings.budget_usd;
        let raised = match spend::read(&self.dir) {
            Ok(s) => s.budget_usd,
            // Without a budget of its own, a session whose ledger is
            // damaged goes on (and says so once).
            Err(e) if session_budget.is_none() => {
                if !self.ledger_warned {
                    self.ledger_warned = true;
                    told.push(WorkerEvent::Warning(format!("{e:#}")));
                }
                None
            }
            Err(e) => return Err(anyhow::Error::new(e).context(
                "the session has a budget, but what it spent cannot be read; nothing is claimed",
            )),
        };
        // Without a budget anywhere the ledger is not locked.
        if session_budget.is_none() && raised.is_none() {
            return Ok(None);
        }
        let held = spend::lock(&self.dir).with_context(|| {
            "the session has a budget, but what it spent cannot be read; nothing is claimed"
        })?;
        let budget = held.spend.budget(session_budget);
        match budget {
            Some(b) if held.spend.reached(budget) => Ok(Some(WorkerEvent::BudgetReached {
                spent: held.spend.total.usd,
                budget: b,
                after: None,
            })),
            _ => {
                self.budget_note = budget.map(|b| Spent {
                    spent: held.spend.total.usd,
                    budget: b,
                });
                self.budget_hold = Some(held);
                Ok(None)
            }
        }
    }

    /// A claim was made (or not): others may spend again.
    pub(super) fn claimed(&mut self, made: bool) {
        self.budget_hold = None;
        if !made {
            self.budget_note = None;
        }
    }

    /// What the budget had spent at the last claim, once.
    pub(super) fn take_budget_note(&mut self) -> Option<Spent> {
        self.budget_note.take()
    }

    /// Adds what an agent run spent to the session's ledger. Returns what
    /// to tell: the budget reached (once), or a ledger that cannot be
    /// written.
    pub(super) fn spent(&mut self, task: &str, cost: &Cost) -> Option<WorkerEvent> {
        match spend::add(&self.dir, cost) {
            Ok(s) => {
                let budget = s.budget(self.settings.budget_usd);
                match (s.reached(budget), self.budget_told, budget) {
                    (true, false, Some(b)) => {
                        self.budget_told = true;
                        Some(WorkerEvent::BudgetReached {
                            spent: s.total.usd,
                            budget: b,
                            after: Some(task.to_owned()),
                        })
                    }
                    _ => None,
                }
            }
            Err(e) => Some(WorkerEvent::SpendUnrecorded {
                task: task.to_owned(),
                usd: cost.usd,
                error: format!("{e:#}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use orch_session::result::Status;
    use orch_session::Session;

    use super::*;

    /// A real session of `settings` and two tasks.
    fn session(settings: &str) -> (tempfile::TempDir, Session) {
        let (root, s, _) = super::super::testing::session(&format!(
            "{settings}\n[[task]]\nid = \"a\"\ncommand = \"true\"\n\n[[task]]\nid = \"b\"\ncommand = \"true\"\n"
        ));
        (root, s)
    }

    fn gate(s: &Session, worker: &str) -> Gate {
        Gate::new(s.dir.clone(), worker.to_owned(), s.info.settings.clone())
    }

    fn decide(g: &mut Gate) -> Gating {
        let mut told = Vec::new();
        let d = g.decide(&mut told).expect("decide");
        assert_eq!(told, vec![]);
        d
    }

    fn is_wait(d: &Gating, words: &str, is_new: bool) -> bool {
        matches!(d, Gating::Wait { reason, new } if reason.contains(words) && *new == is_new)
    }

    #[test]
    fn nothing_in_the_way_means_go() {
        let (_t, s) = session("");
        let mut g = gate(&s, "worker-1");
        assert_eq!(decide(&mut g), Gating::Go);
        // Without a budget nothing is locked, and the line says nothing.
        g.claimed(true);
        assert_eq!(g.take_budget_note(), None);
    }

    #[test]
    fn a_stopped_session_stops_the_worker() {
        let (_t, s) = session("");
        orch_session::stop::stop_session(&s.dir).expect("stop");
        let d = decide(&mut gate(&s, "worker-1"));
        assert!(
            matches!(&d, Gating::Stop(WorkerEvent::Stopping(why))
                if why.starts_with("session stopped by `orch-worker stop` (")
                    && why.ends_with("); `orch-worker resume` allows workers again")),
            "{d:?}"
        );
        orch_session::stop::resume_session(&s.dir).expect("resume");
        assert_eq!(decide(&mut gate(&s, "worker-1")), Gating::Go);
    }

    #[test]
    fn a_passed_deadline_stops_the_worker() {
        let (_t, s) = session("");
        let mut g = gate(&s, "worker-1");
        let past = time::now() - chrono::Duration::seconds(1);
        g.until = Some(past);
        assert_eq!(
            decide(&mut g),
            Gating::Stop(WorkerEvent::Stopping(format!(
                "deadline {} passed: not claiming new tasks",
                time::rfc3339(&past)
            )))
        );
        g.until = Some(time::now() + chrono::Duration::hours(1));
        assert_eq!(decide(&mut g), Gating::Go);
    }

    #[test]
    fn a_pause_waits_is_said_once_and_its_end_resumes() {
        let (_t, s) = session("");
        orch_session::pause::set(&s.dir, &orch_session::pause::Pause::by_hand("test", 1))
            .expect("pause");
        let mut g = gate(&s, "worker-1");
        let first = decide(&mut g);
        assert!(
            is_wait(&first, "; `orch-worker --resume-now` lifts it", true),
            "{first:?}"
        );
        // The same reason again: the worker waits without saying it twice.
        let again = decide(&mut g);
        assert!(
            is_wait(&again, "`orch-worker --resume-now`", false),
            "{again:?}"
        );
        orch_session::pause::clear(&s.dir).expect("clear");
        // The breaker (on by default) is closed: that is what is said.
        assert_eq!(
            decide(&mut g),
            Gating::Resume(Some("circuit breaker closed".to_owned()))
        );
        assert_eq!(decide(&mut g), Gating::Go);
    }

    #[test]
    fn a_full_disk_waits() {
        // More free space than any disk has.
        let (_t, s) = session("min_free_disk = \"1000000TiB\"");
        let d = decide(&mut gate(&s, "worker-1"));
        assert!(
            is_wait(
                &d,
                "free on the session's filesystem (below 1000000.0 TiB): not claiming",
                true
            ),
            "{d:?}"
        );
    }

    #[test]
    fn an_open_breaker_waits_out_its_cool_down() {
        let (_t, s) = session("breaker = 2");
        let failed = |task: &str| {
            breaker::record(&s.dir, task, Status::Failure, 2, Duration::from_secs(3600))
                .expect("record")
        };
        failed("a");
        assert_eq!(decide(&mut gate(&s, "worker-1")), Gating::Go);
        assert!(matches!(failed("b"), breaker::Change::Opened(_)));
        let mut g = gate(&s, "worker-1");
        let d = decide(&mut g);
        assert!(
            is_wait(
                &d,
                "circuit breaker open after 2 consecutive failures (a, b) until ",
                true
            ),
            "{d:?}"
        );
        assert!(is_wait(&decide(&mut g), "circuit breaker open", false));
    }

    #[test]
    fn after_the_cool_down_one_worker_probes_and_the_others_wait() {
        let (_t, s) = session("breaker = 1");
        // A cool-down of nothing: over as soon as it opened.
        let opened = breaker::record(&s.dir, "a", Status::Failure, 1, Duration::ZERO);
        assert!(matches!(opened, Ok(breaker::Change::Opened(_))));
        let mut probe = gate(&s, "worker-1");
        assert_eq!(
            decide(&mut probe),
            Gating::Go,
            "never paused, so nothing to resume"
        );
        assert_eq!(
            breaker::read(&s.dir).expect("read").probe.as_deref(),
            Some("worker-1")
        );
        // worker-1 holds its slot: its probe is live, the others wait.
        let (_n, _slot) = orch_session::slot::take_after(&s.dir, 0)
            .expect("slot")
            .expect("a free slot");
        let d = decide(&mut gate(&s, "worker-2"));
        assert_eq!(
            d,
            Gating::Wait {
                reason: "circuit breaker half-open: worker-1 runs one task to test the waters"
                    .to_owned(),
                new: true
            }
        );
    }

    #[test]
    fn a_tripped_breaker_degrades_to_one_worker() {
        let (_t, s) = session("breaker = 1\ndegrade = \"sequential\"");
        breaker::record(&s.dir, "a", Status::Failure, 1, Duration::from_secs(3600))
            .expect("record");
        let mut first = gate(&s, "worker-1");
        let mut second = gate(&s, "worker-2");
        // The first to ask holds the sequential lock and goes on...
        assert_eq!(decide(&mut first), Gating::Go);
        // ...the capacity left is none: the other waits.
        let d = decide(&mut second);
        assert!(
            is_wait(
                &d,
                "circuit breaker tripped (1 consecutive failures): the session runs on one worker",
                true
            ),
            "{d:?}"
        );
        // A success closes the breaker: both go, the second resuming.
        breaker::record(&s.dir, "a", Status::Success, 1, Duration::from_secs(3600))
            .expect("record");
        assert_eq!(decide(&mut first), Gating::Go);
        assert_eq!(
            decide(&mut second),
            Gating::Resume(Some("circuit breaker closed".to_owned()))
        );
    }

    #[test]
    fn a_spent_budget_stops_and_the_ledger_stays_locked_until_the_claim() {
        let (_t, s) = session("budget_usd = 1.0");
        let mut g = gate(&s, "worker-1");
        let cost = |usd| Cost {
            usd,
            ..Cost::default()
        };
        assert_eq!(g.spent("a", &cost(0.25)), None);
        assert_eq!(decide(&mut g), Gating::Go);
        // Under the budget the ledger is held: nobody adds to it meanwhile.
        assert!(lock::is_held(&s.dir.named_lock(spend::SPEND_LOCK)).expect("is_held"));
        g.claimed(true);
        assert!(!lock::is_held(&s.dir.named_lock(spend::SPEND_LOCK)).expect("is_held"));
        assert_eq!(
            g.take_budget_note(),
            Some(Spent {
                spent: 0.25,
                budget: 1.0
            })
        );
        // The run that reaches it is told once.
        assert_eq!(
            g.spent("b", &cost(0.75)),
            Some(WorkerEvent::BudgetReached {
                spent: 1.0,
                budget: 1.0,
                after: Some("b".to_owned())
            })
        );
        assert_eq!(g.spent("b", &cost(0.5)), None);
        assert_eq!(
            decide(&mut g),
            Gating::Stop(WorkerEvent::BudgetReached {
                spent: 1.5,
                budget: 1.0,
                after: None
            })
        );
        // `orch-worker resume --budget 5` raises it.
        spend::set_budget(&s.dir, 5.0).expect("set budget");
        assert_eq!(decide(&mut g), Gating::Go);
        g.claimed(false);
        assert_eq!(g.take_budget_note(), None);
    }

    #[test]
    fn a_damaged_ledger_is_said_once_without_a_budget_and_refused_with_one() {
        let (_t, s) = session("");
        let ledger = s.dir.status_dir().join(spend::SPEND_JSON);
        std::fs::write(&ledger, "{ not json").expect("write");
        let mut g = gate(&s, "worker-1");
        let mut told = Vec::new();
        assert_eq!(g.decide(&mut told).expect("decide"), Gating::Go);
        assert!(
            matches!(told.as_slice(), [WorkerEvent::Warning(_)]),
            "{told:?}"
        );
        assert_eq!(g.decide(&mut told).expect("decide"), Gating::Go);
        assert_eq!(told.len(), 1, "said once: {told:?}");
        let (_t2, with_budget) = session("budget_usd = 1.0");
        let ledger = with_budget.dir.status_dir().join(spend::SPEND_JSON);
        std::fs::write(&ledger, "{ not json").expect("write");
        let err = gate(&with_budget, "worker-1")
            .decide(&mut Vec::new())
            .expect_err("a budget the ledger cannot say");
        assert!(format!("{err:#}").contains("nothing is claimed"), "{err:#}");
    }
}
