//! The plan's tasks as a worker or a monitor holds them all day: compact.
//!
//! Held as `Vec<Task>`, a session of 100,000 tasks took 37 MB (368 bytes
//! per task before its strings), most of a worker's memory (heaptrack).
//! [`Tasks`] keeps the text of plan.json's task list, each task's place in
//! it, and the ids side by side with a sorted index over them: about 140
//! bytes per task for a plain command. A whole [`Task`] is parsed from its
//! text when it is asked for (a claim, a detail view), in microseconds.
//!
//! Every task is parsed once when the list is built, so a task that does
//! not parse is an error then, naming plan.json, never later.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Diagnostic, Error, Result};
use crate::json::{check_format, damaged};
use crate::plan::{After, PlanDoc, ResourceDecl, Task, Template, PLAN_FORMAT};

/// The tasks of a plan, in plan order.
#[derive(Debug)]
pub struct Tasks {
    /// The JSON text the tasks were read from.
    text: Box<str>,
    /// Each task's object in `text`: start and length.
    spans: Vec<(u32, u32)>,
    /// Every id, one after the other.
    ids: String,
    /// Where each id ends in `ids` (it starts where the one before ends).
    id_ends: Vec<u32>,
    /// Task indices in the order of their ids.
    by_id: Vec<u32>,
}

impl Tasks {
    /// Reads a JSON array of tasks, calling `each` with every task as it is
    /// parsed (the caller keeps what it needs of it). `path` names the file
    /// in errors.
    pub fn parse(
        array: &str,
        path: &Path,
        mut each: impl FnMut(u32, &Task) -> Result<()>,
    ) -> Result<Tasks> {
        let text: Box<str> = array.into();
        if u32::try_from(text.len()).is_err() {
            return Err(Error::invalid(
                Diagnostic::new(path, "the task list is larger than 4 GiB")
                    .help("split the plan into several sessions"),
            ));
        }
        let raws: Vec<&RawValue> = serde_json::from_str(&text).map_err(|e| damaged(path, &e))?;
        let base = text.as_ptr() as usize;
        let mut spans = Vec::with_capacity(raws.len());
        let mut ids = String::new();
        let mut id_ends = Vec::with_capacity(raws.len());
        for (i, raw) in raws.iter().enumerate() {
            let t: Task = serde_json::from_str(raw.get()).map_err(|e| damaged(path, &e))?;
            let start = raw.get().as_ptr() as usize - base;
            // Both fit: the whole text does.
            spans.push((start as u32, raw.get().len() as u32));
            ids.push_str(&t.id);
            id_ends.push(ids.len() as u32);
            each(i as u32, &t)?;
        }
        drop(raws);
        let mut tasks = Tasks {
            text,
            spans,
            ids,
            id_ends,
            by_id: Vec::new(),
        };
        let mut by_id: Vec<u32> = (0..tasks.len() as u32).collect();
        by_id.sort_unstable_by(|&a, &b| tasks.id(a).cmp(tasks.id(b)));
        tasks.by_id = by_id;
        tasks.ids.shrink_to_fit();
        Ok(tasks)
    }

    /// From tasks already in memory (as serialised to plan.json).
    pub fn from_tasks(tasks: &[Task]) -> Tasks {
        let text = serde_json::to_string(tasks)
            .unwrap_or_else(|e| unreachable!("tasks serialise to JSON: {e}"));
        // What serde_json wrote, serde_json reads.
        Tasks::parse(&text, Path::new("plan.json"), |_, _| Ok(()))
            .unwrap_or_else(|e| unreachable!("tasks written as JSON read back: {e}"))
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Task `i`'s id.
    pub fn id(&self, i: u32) -> &str {
        let end = self.id_ends[i as usize] as usize;
        let start = match i {
            0 => 0,
            _ => self.id_ends[i as usize - 1] as usize,
        };
        &self.ids[start..end]
    }

    /// Every id, in plan order.
    pub fn ids(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len() as u32).map(|i| self.id(i))
    }

    /// The index of the task with id `id`.
    pub fn index_of(&self, id: &str) -> Option<u32> {
        self.by_id
            .binary_search_by(|&j| self.id(j).cmp(id))
            .ok()
            .map(|k| self.by_id[k])
    }

    /// Task `i`, whole.
    pub fn get(&self, i: u32) -> Task {
        let (start, len) = self.spans[i as usize];
        let raw = &self.text[start as usize..(start + len) as usize];
        // Every task parsed when the list was built.
        serde_json::from_str(raw)
            .unwrap_or_else(|e| unreachable!("task {i} parsed when the list was built: {e}"))
    }

    /// Every task, whole, in plan order (each parsed as it comes).
    pub fn iter(&self) -> impl Iterator<Item = Task> + '_ {
        (0..self.len() as u32).map(|i| self.get(i))
    }
}

/// What a board needs of plan.json: the tasks, compact, and the
/// declarations they refer to.
#[derive(Debug)]
pub struct BoardPlan {
    /// The tasks.
    pub tasks: Tasks,
    /// Declared (or implied) resources.
    pub resources: BTreeMap<String, ResourceDecl>,
    /// Phases every task goes through.
    pub template: Option<Template>,
    /// Each task's wave and priority, in plan order (kept by the board).
    pub(crate) waves: Vec<u32>,
    pub(crate) priorities: Vec<u64>,
    /// Each task's `after` entries, in plan order, and the competition it
    /// enters: what the board builds its edges from, dropped after.
    pub(crate) after: Vec<Vec<After>>,
    pub(crate) compete: Vec<Option<String>>,
    /// The resources of the tasks that need any.
    pub(crate) needs: std::collections::HashMap<u32, Vec<String>>,
    /// Each task's estimate, or the default.
    pub(crate) estimates: Vec<u64>,
    /// Each task's group: 0 for none, else 1 + its place in `group_names`.
    pub(crate) groups: Vec<u32>,
    pub(crate) group_names: Vec<String>,
}

/// Numbers the groups of tasks as they come: 0 for none.
#[derive(Default)]
struct GroupNumbers {
    names: Vec<String>,
    index: std::collections::HashMap<String, u32>,
}

impl GroupNumbers {
    fn number(&mut self, group: Option<&str>) -> u32 {
        let Some(g) = group else {
            return 0;
        };
        if let Some(&k) = self.index.get(g) {
            return k;
        }
        self.names.push(g.to_owned());
        let k = self.names.len() as u32;
        self.index.insert(g.to_owned(), k);
        k
    }
}

/// plan.json with its task list left as text.
#[derive(Deserialize)]
struct RawPlan<'a> {
    format: u32,
    #[serde(borrow)]
    tasks: &'a RawValue,
    #[serde(default)]
    resources: BTreeMap<String, ResourceDecl>,
    #[serde(default)]
    template: Option<Template>,
}

impl BoardPlan {
    /// Reads plan.json at `path` (its text is `text`).
    pub fn read(path: &Path, text: &str) -> Result<BoardPlan> {
        let raw: RawPlan<'_> = serde_json::from_str(text).map_err(|e| damaged(path, &e))?;
        check_format(path, "plan", raw.format, PLAN_FORMAT)?;
        let (mut waves, mut priorities, mut after, mut compete) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut needs = std::collections::HashMap::new();
        let (mut estimates, mut groups, mut numbers) =
            (Vec::new(), Vec::new(), GroupNumbers::default());
        let tasks = Tasks::parse(raw.tasks.get(), path, |i, t| {
            estimates.push(t.estimate_or_default());
            groups.push(numbers.number(t.group.as_deref()));
            waves.push(t.wave);
            priorities.push(t.priority);
            after.push(t.after.clone());
            compete.push(t.compete.clone());
            if !t.resources.is_empty() {
                needs.insert(i, t.resources.clone());
            }
            Ok(())
        })?;
        Ok(BoardPlan {
            tasks,
            resources: raw.resources,
            template: raw.template,
            waves,
            priorities,
            after,
            compete,
            needs,
            estimates,
            groups,
            group_names: numbers.names,
        })
    }
}

impl From<PlanDoc> for BoardPlan {
    fn from(plan: PlanDoc) -> BoardPlan {
        let mut numbers = GroupNumbers::default();
        let groups = plan
            .tasks
            .iter()
            .map(|t| numbers.number(t.group.as_deref()))
            .collect();
        BoardPlan {
            estimates: plan.tasks.iter().map(Task::estimate_or_default).collect(),
            groups,
            group_names: numbers.names,
            waves: plan.tasks.iter().map(|t| t.wave).collect(),
            priorities: plan.tasks.iter().map(|t| t.priority).collect(),
            after: plan.tasks.iter().map(|t| t.after.clone()).collect(),
            compete: plan.tasks.iter().map(|t| t.compete.clone()).collect(),
            needs: plan
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| !t.resources.is_empty())
                .map(|(i, t)| (i as u32, t.resources.clone()))
                .collect(),
            tasks: Tasks::from_tasks(&plan.tasks),
            resources: plan.resources,
            template: plan.template,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Action;

    fn task(id: &str) -> Task {
        serde_json::from_value(serde_json::json!({
            "id": id, "action": {"command": format!("echo {id}")},
            "timeout_ms": 1000, "retries": 0
        }))
        .expect("a task")
    }

    #[test]
    fn ids_index_and_whole_tasks_come_back_as_they_went_in() {
        let list: Vec<Task> = ["b", "a", "c.2", "a-1"].iter().map(|i| task(i)).collect();
        let tasks = Tasks::from_tasks(&list);
        assert_eq!(tasks.len(), 4);
        assert_eq!(tasks.ids().collect::<Vec<_>>(), ["b", "a", "c.2", "a-1"]);
        for (i, t) in list.iter().enumerate() {
            assert_eq!(tasks.index_of(&t.id), Some(i as u32));
            assert_eq!(&tasks.get(i as u32), t);
        }
        assert_eq!(tasks.index_of("z"), None);
        assert_eq!(tasks.index_of(""), None);
        assert_eq!(tasks.get(2).action, Action::Command("echo c.2".to_owned()));
    }

    #[test]
    fn a_task_that_does_not_parse_is_an_error_naming_the_file() {
        let e = Tasks::parse(
            r#"[{"id": "a", "action": {"command": "x"}, "timeout_ms": 1, "retries": 0}, {"id": 3}]"#,
            Path::new("/s/plan.json"),
            |_, _| Ok(()),
        )
        .expect_err("damaged");
        assert!(e.to_string().contains("/s/plan.json"), "{e}");
    }
}
