//! Times: spans of results, counts per bucket, makespan, speed-up,
//! utilization, overlap, and the critical path as it ran.

use std::collections::HashMap;

use chrono::{DateTime, Local};

use super::{ratio, CriticalPath, Inputs, PathStep, Stats, TaskState, Timing};
use crate::result::Status;
use crate::time;

/// Milliseconds since the epoch of an RFC 3339 time.
pub(super) fn millis(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// An RFC 3339 time (local zone) from milliseconds since the epoch.
fn format_millis(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| time::rfc3339(&t.with_timezone(&Local)))
        .unwrap_or_default()
}

/// Span of each task's final result (succeeded, failed or timed out).
pub(super) fn final_spans(inp: &Inputs) -> Vec<Option<(i64, i64)>> {
    (0..inp.tasks.len())
        .map(|i| {
            let r = inp.results.get(i)?.as_ref()?;
            if matches!(
                r.status,
                Status::Success | Status::Failure | Status::Timeout
            ) {
                r.span
            } else {
                None
            }
        })
        .collect()
}

/// Counts and times of a set of tasks, built task by task.
#[derive(Debug, Default)]
pub(super) struct Bucket {
    stats: Stats,
    first: Option<i64>,
    last: Option<i64>,
    slowest: Option<(i64, usize)>,
}

impl Bucket {
    pub(super) fn add(&mut self, i: usize, state: TaskState, span: Option<(i64, i64)>) {
        let s = &mut self.stats;
        s.tasks += 1;
        match state {
            TaskState::Pending => s.pending += 1,
            TaskState::Corrupt => s.corrupt += 1,
            TaskState::Has(r) => match r.status {
                Status::Success => s.success += 1,
                Status::Failure => s.failure += 1,
                Status::Timeout => s.timeout += 1,
                Status::Skipped => s.skipped += 1,
                Status::Interrupted => s.interrupted += 1,
            },
        }
        if let Some((start, end)) = span {
            let len = end - start;
            s.task_ms += len as u64;
            self.first = Some(self.first.map_or(start, |f| f.min(start)));
            self.last = Some(self.last.map_or(end, |l| l.max(end)));
            if self.slowest.is_none_or(|(l, _)| len > l) {
                self.slowest = Some((len, i));
            }
        }
    }

    pub(super) fn stats(self, id_of: impl Fn(usize) -> String) -> Stats {
        let mut s = self.stats;
        if let (Some(f), Some(l)) = (self.first, self.last) {
            s.span_ms = (l - f) as u64;
        }
        s.slowest = self.slowest.map(|(_, i)| id_of(i));
        s
    }
}

/// Makespan, sequential baseline, busy time, overlap and the ratios.
pub(super) fn timing(
    inp: &Inputs,
    in_scope: &[bool],
    spans: &[Option<(i64, i64)>],
    agents: u32,
) -> Timing {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    let mut sequential: i64 = 0;
    for i in (0..inp.tasks.len()).filter(|&i| in_scope[i]) {
        if let Some(s) = spans[i] {
            sequential += s.1 - s.0;
            runs.push(s);
        } else if let Some(r) = inp.results.get(i).and_then(Option::as_ref) {
            // An interrupted result took agent time too.
            if r.status == Status::Interrupted {
                runs.extend(r.span);
            }
        }
        if let Some(h) = inp.history.get(i) {
            runs.extend(h.iter().filter_map(|a| a.span));
        }
    }
    let mut t = Timing {
        runs: runs.len(),
        sequential_ms: sequential as u64,
        ..Timing::default()
    };
    let (Some(first), Some(last)) = (
        runs.iter().map(|r| r.0).min(),
        runs.iter().map(|r| r.1).max(),
    ) else {
        return t;
    };
    let busy: i64 = runs.iter().map(|r| r.1 - r.0).sum();
    let makespan = last - first;
    t.first_start = Some(format_millis(first));
    t.last_finish = Some(format_millis(last));
    t.makespan_ms = makespan as u64;
    t.busy_ms = busy as u64;
    t.overlapped_ms = overlapped(&runs) as u64;
    let (seq, mk, busy, agents) = (
        sequential as f64,
        makespan as f64,
        busy as f64,
        agents as f64,
    );
    t.speedup = ratio(seq, mk);
    t.efficiency = ratio(seq, mk * agents);
    t.utilization = ratio(busy, mk * agents);
    t.parallelization_rate = ratio(t.overlapped_ms as f64, busy);
    t
}

/// Run time during which at least one other run was going on: a sweep
/// over start and end events; while `k >= 2` runs are active, all `k`
/// overlap. Runs that only touch (one ends as the next starts) do not.
pub(super) fn overlapped(runs: &[(i64, i64)]) -> i64 {
    let mut events: Vec<(i64, i32)> = Vec::with_capacity(runs.len() * 2);
    for &(s, e) in runs.iter().filter(|(s, e)| e > s) {
        events.push((s, 1));
        events.push((e, -1));
    }
    events.sort_unstable();
    let mut active: i64 = 0;
    let mut prev = 0;
    let mut total = 0;
    for (t, d) in events {
        if active >= 2 {
            total += active * (t - prev);
        }
        prev = t;
        active += i64::from(d);
    }
    total
}

/// From the task that finished last, back through the dependency that
/// finished last each time.
pub(super) fn critical_path(
    inp: &Inputs,
    in_scope: &[bool],
    spans: &[Option<(i64, i64)>],
    index: &HashMap<&str, usize>,
    states: &[TaskState],
) -> CriticalPath {
    let latest = |cands: &mut dyn Iterator<Item = usize>| -> Option<usize> {
        let mut best: Option<(i64, usize)> = None;
        for i in cands {
            if !in_scope[i] {
                continue;
            }
            if let Some((_, end)) = spans[i] {
                if best.is_none_or(|(b, _)| end > b) {
                    best = Some((end, i));
                }
            }
        }
        best.map(|(_, i)| i)
    };
    let mut chain = Vec::new();
    let mut seen = vec![false; inp.tasks.len()];
    let mut cur = latest(&mut (0..inp.tasks.len()));
    while let Some(i) = cur {
        if seen[i] {
            break;
        }
        seen[i] = true;
        chain.push(i);
        let mut deps = inp.tasks[i]
            .after
            .iter()
            .filter_map(|d| d.task().and_then(|id| index.get(id)).copied());
        cur = latest(&mut deps);
    }
    chain.reverse();
    let origin = (0..inp.tasks.len())
        .filter(|&i| in_scope[i])
        .filter_map(|i| spans[i].map(|s| s.0))
        .chain(
            inp.history
                .iter()
                .enumerate()
                .filter(|(i, _)| in_scope[*i])
                .flat_map(|(_, h)| h.iter().filter_map(|a| a.span).map(|s| s.0)),
        )
        .min();
    let mut steps = Vec::with_capacity(chain.len());
    let mut prev_end = origin;
    for &i in &chain {
        let (Some((start, end)), TaskState::Has(r)) = (spans[i], states[i]) else {
            continue;
        };
        steps.push(PathStep {
            task: inp.tasks[i].id.clone(),
            status: r.status,
            started: format_millis(start),
            finished: format_millis(end),
            duration_ms: (end - start) as u64,
            waited_ms: prev_end.map_or(0, |p| (start - p).max(0) as u64),
        });
        prev_end = Some(end);
    }
    let length_ms = match (
        chain.first().and_then(|&i| spans[i]),
        chain.last().and_then(|&i| spans[i]),
    ) {
        (Some((s, _)), Some((_, e))) => (e - s) as u64,
        _ => 0,
    };
    CriticalPath { length_ms, steps }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_counts_every_run_while_two_or_more_are_active() {
        // 0-10 and 5-15 overlap for 5 each; 20-30 alone; 30-40 touches it.
        assert_eq!(overlapped(&[(0, 10), (5, 15), (20, 30), (30, 40)]), 10);
        // Three at once for 2, two for 2 on each side.
        assert_eq!(overlapped(&[(0, 6), (2, 4), (2, 8)]), 2 * 3 + 2 * 2);
        assert_eq!(overlapped(&[]), 0);
        assert_eq!(overlapped(&[(5, 5), (0, 10)]), 0);
    }
}
