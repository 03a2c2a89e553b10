//! What the tasks said: insights merged, decisions settled, competitions
//! judged.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::Value;

use super::{
    Competition, Criterion, Decision, DecisionOption, DecisionState, Decisions, Entrant, Inputs,
    Insight, Outcome, Policy,
};
use crate::result::Status;

/// Text normalised for comparison: lowercase, runs of white space as one
/// space, no leading or trailing space or final punctuation.
pub(super) fn normalize(text: &str) -> String {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    let joined = words.join(" ");
    joined
        .trim_end_matches(['.', '!', ';', ',', ':'])
        .trim_end()
        .to_owned()
}

/// A decision value normalised for comparison: strings as [`normalize`]d
/// text, anything else as its JSON (object keys are sorted).
fn normalize_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("s:{}", normalize(s)),
        other => format!("j:{other}"),
    }
}

fn results_in_scope<'a>(
    inp: &'a Inputs,
    in_scope: &'a [bool],
) -> impl Iterator<Item = (usize, &'a Outcome)> + 'a {
    inp.results
        .iter()
        .enumerate()
        .filter(|(i, _)| in_scope.get(*i).copied().unwrap_or(false))
        .filter_map(|(i, r)| r.as_ref().map(|r| (i, r)))
}

/// Insights of every result, merged by normalised text; most-reported
/// first, then in order of first appearance.
pub(super) fn insights(inp: &Inputs, in_scope: &[bool]) -> Vec<Insight> {
    let mut order: Vec<(String, Vec<usize>)> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    // Most insights repeat word for word: normalise each text once.
    let mut by_text: HashMap<&str, Option<usize>> = HashMap::new();
    for (i, r) in results_in_scope(inp, in_scope) {
        for text in &r.insights {
            let slot = match by_text.get(text.as_str()) {
                Some(&s) => s,
                None => {
                    let key = normalize(text);
                    let s = (!key.is_empty()).then(|| {
                        *by_key.entry(key).or_insert_with(|| {
                            order.push((text.trim().to_owned(), Vec::new()));
                            order.len() - 1
                        })
                    });
                    by_text.insert(text, s);
                    s
                }
            };
            let Some(slot) = slot else { continue };
            let tasks = &mut order[slot].1;
            if tasks.last() != Some(&i) {
                tasks.push(i);
            }
        }
    }
    // Stable: equal counts keep their first-appearance order.
    order.sort_by_key(|(_, tasks)| std::cmp::Reverse(tasks.len()));
    order
        .into_iter()
        .map(|(text, tasks)| Insight {
            text,
            tasks: tasks.into_iter().map(|i| inp.tasks[i].id.clone()).collect(),
        })
        .collect()
}

/// One value of a decision while merging.
struct Opt {
    value: Value,
    tasks: Vec<usize>,
}

/// Decisions of every result, by key; conflicts settled by `policy`.
pub(super) fn decisions(inp: &Inputs, in_scope: &[bool], policy: Policy) -> Decisions {
    /// A key's values so far: the options, by normalised value, and a
    /// cache of string values seen word for word.
    #[derive(Default)]
    struct Seen<'a> {
        opts: Vec<Opt>,
        by_norm: HashMap<String, usize>,
        by_text: HashMap<&'a str, usize>,
    }
    let mut keys: HashMap<&str, Seen> = HashMap::new();
    for (i, r) in results_in_scope(inp, in_scope) {
        for (k, v) in &r.decisions {
            let seen = keys.entry(k.as_str()).or_default();
            let cached = v.as_str().and_then(|s| seen.by_text.get(s).copied());
            let slot = match cached {
                Some(slot) => slot,
                None => {
                    let Seen { opts, by_norm, .. } = &mut *seen;
                    let slot = *by_norm.entry(normalize_value(v)).or_insert_with(|| {
                        opts.push(Opt {
                            value: v.clone(),
                            tasks: Vec::new(),
                        });
                        opts.len() - 1
                    });
                    if let Some(s) = v.as_str() {
                        seen.by_text.insert(s, slot);
                    }
                    slot
                }
            };
            seen.opts[slot].tasks.push(i);
        }
    }
    let mut keys: Vec<(&str, Vec<Opt>)> = keys.into_iter().map(|(k, s)| (k, s.opts)).collect();
    keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let result = |i: usize| inp.results.get(i).and_then(Option::as_ref);
    let id = |i: usize| inp.tasks[i].id.as_str();
    let mut out = Decisions {
        policy,
        ..Decisions::default()
    };
    for (key, mut opts) in keys {
        opts.sort_by_key(|o| std::cmp::Reverse(o.tasks.len()));
        let (state, chosen, reason) = if opts.len() == 1 {
            (DecisionState::Agreed, Some(0), None)
        } else {
            out.conflicts += 1;
            let (chosen, reason) = settle(&opts, policy, result, id);
            let state = if chosen.is_some() {
                DecisionState::Resolved
            } else {
                out.unresolved += 1;
                DecisionState::Unresolved
            };
            (state, chosen, Some(reason))
        };
        out.items.push(Decision {
            key: key.to_owned(),
            value: chosen.map(|c| opts[c].value.clone()),
            state,
            reason,
            options: opts
                .into_iter()
                .map(|o| DecisionOption {
                    value: o.value,
                    tasks: o.tasks.into_iter().map(|i| id(i).to_owned()).collect(),
                })
                .collect(),
        });
    }
    out
}

/// Picks an option under `policy`: its index and why, or `None` and why
/// not.
fn settle<'a>(
    opts: &[Opt],
    policy: Policy,
    result: impl Fn(usize) -> Option<&'a Outcome>,
    id: impl Fn(usize) -> &'a str,
) -> (Option<usize>, String) {
    let total: usize = opts.iter().map(|o| o.tasks.len()).sum();
    match policy {
        Policy::Majority => {
            let top = opts[0].tasks.len();
            let tied = opts.iter().filter(|o| o.tasks.len() == top).count();
            if tied > 1 {
                (
                    None,
                    format!("no majority: {tied} values have {top} of {total} tasks each"),
                )
            } else {
                (Some(0), format!("majority: {top} of {total} tasks"))
            }
        }
        Policy::Priority => {
            // Tasks are in plan order within each option; the first task
            // of the plan that decided wins.
            let best = opts
                .iter()
                .enumerate()
                .filter_map(|(k, o)| o.tasks.first().map(|&i| (i, k)))
                .min();
            match best {
                Some((i, k)) => (
                    Some(k),
                    format!("priority: `{}` comes first in the plan", id(i)),
                ),
                None => (None, "no task decided it".to_owned()),
            }
        }
        Policy::First => {
            let best = opts
                .iter()
                .enumerate()
                .flat_map(|(k, o)| o.tasks.iter().map(move |&i| (i, k)))
                .map(|(i, k)| {
                    let at = result(i).map_or(i64::MAX, |r| r.finished_ms);
                    (at, i, k)
                })
                .min();
            match best {
                Some((_, i, k)) => (Some(k), format!("first: `{}` finished first", id(i))),
                None => (None, "no task decided it".to_owned()),
            }
        }
        Policy::Score => {
            // Each option's best score; the best option must be alone.
            let scored: Vec<(usize, f64, usize)> = opts
                .iter()
                .enumerate()
                .filter_map(|(k, o)| {
                    o.tasks
                        .iter()
                        .filter_map(|&i| result(i).and_then(|r| r.score).map(|s| (s, i)))
                        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
                        .map(|(s, i)| (k, s, i))
                })
                .collect();
            let Some(&(k, best, i)) = scored
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
            else {
                return (None, "no task that decided it has a score".to_owned());
            };
            let rivals = scored.iter().filter(|s| s.1 == best).count();
            if rivals > 1 {
                (
                    None,
                    format!("score: {rivals} values share the best score {best}"),
                )
            } else {
                (Some(k), format!("score: `{}` scored {best}", id(i)))
            }
        }
    }
}

/// How an entrant compares on one criterion; `Greater` is better.
fn compare(c: Criterion, a: &Entrant, b: &Entrant) -> Ordering {
    match c {
        Criterion::Success => {
            let ok = |e: &Entrant| e.status == Some(Status::Success);
            ok(a).cmp(&ok(b))
        }
        Criterion::Score => match (a.score, b.score) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => Ordering::Greater,
            (None, Some(_)) => Ordering::Less,
            (None, None) => Ordering::Equal,
        },
        Criterion::Duration => match (a.duration_ms, b.duration_ms) {
            (Some(x), Some(y)) => y.cmp(&x),
            (Some(_), None) => Ordering::Greater,
            (None, Some(_)) => Ordering::Less,
            (None, None) => Ordering::Equal,
        },
    }
}

fn compare_all(criteria: &[Criterion], a: &Entrant, b: &Entrant) -> Ordering {
    criteria
        .iter()
        .map(|&c| compare(c, a, b))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// Competitions (tasks sharing `compete`), in order of first appearance.
pub(super) fn competitions(
    inp: &Inputs,
    in_scope: &[bool],
    spans: &[Option<(i64, i64)>],
    criteria: &[Criterion],
) -> Vec<Competition> {
    let mut order: Vec<(&str, Vec<usize>)> = Vec::new();
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, t) in inp.tasks.iter().enumerate() {
        let Some(name) = t.compete.as_deref() else {
            continue;
        };
        if !in_scope[i] {
            continue;
        }
        let slot = *by_name.entry(name).or_insert_with(|| {
            order.push((name, Vec::new()));
            order.len() - 1
        });
        order[slot].1.push(i);
    }
    order
        .into_iter()
        .map(|(name, members)| judge(inp, name, &members, spans, criteria))
        .collect()
}

fn judge(
    inp: &Inputs,
    name: &str,
    members: &[usize],
    spans: &[Option<(i64, i64)>],
    criteria: &[Criterion],
) -> Competition {
    let entrants: Vec<Entrant> = members
        .iter()
        .map(|&i| {
            let r = inp.results.get(i).and_then(Option::as_ref);
            Entrant {
                task: inp.tasks[i].id.clone(),
                status: r.map(|r| r.status),
                score: r.and_then(|r| r.score),
                duration_ms: spans[i].map(|(s, e)| (e - s) as u64),
            }
        })
        .collect();
    decide(name, entrants, criteria)
}

/// Ranks a competition's entrants (in plan order) by `criteria` and picks
/// the winner, or says why there is none (a tie, nobody succeeded, nobody
/// finished). The one rule for reports, dependencies and merges.
pub fn decide(name: &str, mut entrants: Vec<Entrant>, criteria: &[Criterion]) -> Competition {
    // Best first; equal entrants keep plan order.
    entrants.sort_by(|a, b| compare_all(criteria, b, a));
    let finished = |e: &Entrant| e.status.is_some_and(Status::is_final);
    let needs_success = criteria.contains(&Criterion::Success);
    let eligible: Vec<&Entrant> = entrants
        .iter()
        .filter(|e| finished(e) && (!needs_success || e.status == Some(Status::Success)))
        .collect();
    let open = entrants.iter().filter(|e| !finished(e)).count();
    let names: Vec<&str> = criteria.iter().map(|c| c.as_str()).collect();
    let by = names.join(", then ");
    let (winner, tied, mut reason) = match eligible.first() {
        None if open == entrants.len() => {
            return Competition {
                name: name.to_owned(),
                criteria: criteria.to_vec(),
                winner: None,
                tied: Vec::new(),
                reason: "no entrant has finished yet".to_owned(),
                entrants,
            }
        }
        None => (None, Vec::new(), "no entrant succeeded".to_owned()),
        Some(best) => {
            let tied: Vec<String> = eligible
                .iter()
                .filter(|e| compare_all(criteria, e, best).is_eq())
                .map(|e| e.task.clone())
                .collect();
            if tied.len() > 1 {
                let reason = format!(
                    "tie: {} are equal on {}; choose by hand",
                    tied.join(", "),
                    names.join(", ")
                );
                (None, tied, reason)
            } else {
                let why = match eligible.get(1) {
                    Some(next) => {
                        let decider = criteria
                            .iter()
                            .find(|&&c| compare(c, best, next).is_ne())
                            .map_or("", |c| c.as_str());
                        format!("best by {by} (decided by {decider} over {})", next.task)
                    }
                    None if eligible.len() == entrants.len() => "the only entrant".to_owned(),
                    None => format!("the only eligible entrant (by {by})"),
                };
                (Some(best.task.clone()), Vec::new(), why)
            }
        }
    };
    if open > 0 {
        reason.push_str(&format!(
            "; {open} entrant{} not finished, so this may change",
            if open == 1 { " has" } else { "s have" }
        ));
    }
    Competition {
        name: name.to_owned(),
        criteria: criteria.to_vec(),
        winner,
        tied,
        reason,
        entrants,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_ignores_case_space_and_final_punctuation() {
        assert_eq!(normalize("  The  API is\tslow. "), "the api is slow");
        assert_eq!(normalize("The API is slow!"), "the api is slow");
        assert_ne!(normalize("the api is slow"), normalize("the api is fast"));
        assert_eq!(normalize("..."), "");
        assert_eq!(
            normalize_value(&Value::from("Postgres ")),
            normalize_value(&Value::from("postgres"))
        );
        assert_ne!(
            normalize_value(&Value::from("1")),
            normalize_value(&Value::from(1))
        );
    }
}
