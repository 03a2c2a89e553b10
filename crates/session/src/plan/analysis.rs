//! Plan analysis: topological order, waves, priorities, the critical path,
//! and a simulation of the schedule the workers will follow.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::Task;

/// What `orch-plan` prints and stores about a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Number of tasks.
    pub tasks: usize,
    /// Number of dependency edges.
    pub edges: usize,
    /// Number of waves (longest chain, counted in tasks).
    pub depth: u32,
    /// Tasks per wave; wave `n` is index `n - 1`.
    pub wave_sizes: Vec<usize>,
    /// The critical path: the chain with the largest estimated time.
    pub critical_path: Vec<String>,
    /// Its estimated length, milliseconds.
    pub critical_path_ms: u64,
    /// Sum of all estimates, milliseconds: the sequential time.
    pub sequential_ms: u64,
    /// Agents the plan will run with.
    pub agents: u32,
    /// Simulated makespan with `agents` agents, milliseconds.
    pub parallel_ms: u64,
    /// How many tasks had no estimate (and were assumed to take the default).
    pub assumed_estimates: usize,
    /// When agents were chosen automatically: makespan for each count tried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auto_scaling: Vec<(u32, u64)>,
}

impl Analysis {
    /// The widest wave: (1-based wave number, task count).
    pub fn widest_wave(&self) -> (u32, usize) {
        let mut best = (0, 0);
        for (i, &n) in self.wave_sizes.iter().enumerate() {
            if n > best.1 {
                best = (u32::try_from(i + 1).unwrap_or(u32::MAX), n);
            }
        }
        best
    }
}

/// Dependency lists as indices.
struct Graph {
    deps: Vec<Vec<usize>>,
    children: Vec<Vec<usize>>,
}

impl Graph {
    fn new(tasks: &[Task], index: &HashMap<String, usize>) -> Self {
        let mut deps = vec![Vec::new(); tasks.len()];
        let mut children = vec![Vec::new(); tasks.len()];
        for (i, t) in tasks.iter().enumerate() {
            for d in &t.after {
                if let Some(&j) = index.get(d) {
                    deps[i].push(j);
                    children[j].push(i);
                }
            }
        }
        Self { deps, children }
    }

    /// Kahn's order, or the tasks left over when there is a cycle.
    fn topo(&self) -> Result<Vec<usize>, Vec<bool>> {
        let n = self.deps.len();
        let mut indeg: Vec<usize> = self.deps.iter().map(Vec::len).collect();
        let mut queue: VecDeque<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = queue.pop_front() {
            order.push(i);
            for &c in &self.children[i] {
                indeg[c] -= 1;
                if indeg[c] == 0 {
                    queue.push_back(c);
                }
            }
        }
        if order.len() == n {
            Ok(order)
        } else {
            Err(indeg.iter().map(|&d| d > 0).collect())
        }
    }

    /// A cycle among the left-over tasks, as ids, first repeated at the end.
    fn find_cycle(&self, left: &[bool], tasks: &[Task]) -> Vec<String> {
        // Every left-over task has a left-over dependency: walk them until
        // one repeats.
        let Some(start) = left.iter().position(|&l| l) else {
            return Vec::new();
        };
        let mut seen = HashMap::new();
        let mut path = Vec::new();
        let mut cur = start;
        loop {
            if let Some(&pos) = seen.get(&cur) {
                let mut cycle: Vec<String> = path[pos..]
                    .iter()
                    .map(|&i: &usize| tasks[i].id.clone())
                    .collect();
                cycle.push(tasks[cur].id.clone());
                return cycle;
            }
            seen.insert(cur, path.len());
            path.push(cur);
            match self.deps[cur].iter().find(|&&d| left[d]) {
                Some(&d) => cur = d,
                None => return Vec::new(),
            }
        }
    }
}

/// Analyses `tasks` in place (sets `wave` and `priority`). `agents` is the
/// agent count, or `None` to choose one. Returns the cycle on failure.
pub fn analyse(
    tasks: &mut [Task],
    index: &HashMap<String, usize>,
    agents: Option<u32>,
) -> Result<Analysis, Vec<String>> {
    let graph = Graph::new(tasks, index);
    let order = match graph.topo() {
        Ok(o) => o,
        Err(left) => return Err(graph.find_cycle(&left, tasks)),
    };
    let est: Vec<u64> = tasks.iter().map(Task::estimate_or_default).collect();

    let mut wave = vec![1u32; tasks.len()];
    for &i in &order {
        wave[i] = graph.deps[i]
            .iter()
            .map(|&d| wave[d] + 1)
            .max()
            .unwrap_or(1);
    }
    let bottom = bottom_levels(&graph, &order, &est);
    let depth = wave.iter().copied().max().unwrap_or(0);
    let mut wave_sizes = vec![0usize; depth as usize];
    for (t, (&w, &b)) in tasks.iter_mut().zip(wave.iter().zip(&bottom)) {
        t.wave = w;
        t.priority = b;
        wave_sizes[(w - 1) as usize] += 1;
    }

    let mut critical_path = Vec::new();
    let mut cur = (0..tasks.len()).max_by_key(|&i| (bottom[i], Reverse(i)));
    while let Some(i) = cur {
        critical_path.push(tasks[i].id.clone());
        cur = graph.children[i]
            .iter()
            .copied()
            .max_by_key(|&c| (bottom[c], Reverse(c)));
    }
    let critical_path_ms = bottom.iter().copied().max().unwrap_or(0);
    let sequential_ms = est.iter().fold(0u64, |a, &b| a.saturating_add(b));

    let mut auto_scaling = Vec::new();
    let agents = match agents {
        Some(n) => n,
        None => {
            let cap = std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(1))
                .max(1);
            let (choice, tried) = choose_agents(&graph, &est, &bottom, cap);
            auto_scaling = tried;
            choice
        }
    };
    let parallel_ms = simulate(&graph, &est, &bottom, agents);
    Ok(Analysis {
        tasks: tasks.len(),
        edges: graph.deps.iter().map(Vec::len).sum(),
        depth,
        wave_sizes,
        critical_path,
        critical_path_ms,
        sequential_ms,
        agents,
        parallel_ms,
        assumed_estimates: tasks.iter().filter(|t| t.estimate_ms.is_none()).count(),
        auto_scaling,
    })
}

/// Each task's bottom level: its duration plus the longest chain of
/// durations below it, over `order` (a topological order).
fn bottom_levels(graph: &Graph, order: &[usize], durations: &[u64]) -> Vec<u64> {
    let mut bottom = vec![0u64; durations.len()];
    for &i in order.iter().rev() {
        let tail = graph.children[i]
            .iter()
            .map(|&c| bottom[c])
            .max()
            .unwrap_or(0);
        bottom[i] = durations[i].saturating_add(tail);
    }
    bottom
}

/// The smallest agent count up to `cap` whose simulated makespan is within
/// 5% of unlimited agents (the critical path), with the counts tried.
fn choose_agents(graph: &Graph, est: &[u64], bottom: &[u64], cap: u32) -> (u32, Vec<(u32, u64)>) {
    let unlimited = bottom.iter().copied().max().unwrap_or(0);
    let good = |ms: u64| (ms as f64) <= (unlimited as f64) * 1.05;
    let mut tried = Vec::new();
    let mut k = 1u32;
    loop {
        let ms = simulate(graph, est, bottom, k);
        tried.push((k, ms));
        if good(ms) || k >= cap {
            break;
        }
        k = (k * 2).min(cap);
    }
    let (mut hi, hi_ms) = *tried.last().unwrap_or(&(1, 0));
    if good(hi_ms) {
        let mut lo = hi / 2 + 1;
        while lo < hi {
            let mid = (lo + hi) / 2;
            let ms = simulate(graph, est, bottom, mid);
            tried.push((mid, ms));
            if good(ms) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
    }
    tried.sort_unstable();
    tried.dedup();
    (hi, tried)
}

/// List scheduling with `agents` agents: whenever an agent is free, it takes
/// the ready task with the largest priority (ties: plan order). Returns the
/// makespan.
fn simulate(graph: &Graph, est: &[u64], priority: &[u64], agents: u32) -> u64 {
    let n = est.len();
    let mut indeg: Vec<usize> = graph.deps.iter().map(Vec::len).collect();
    let mut ready: BinaryHeap<(u64, Reverse<usize>)> = (0..n)
        .filter(|&i| indeg[i] == 0)
        .map(|i| (priority[i], Reverse(i)))
        .collect();
    let mut running: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut now = 0u64;
    let agents = agents.max(1) as usize;
    loop {
        while running.len() < agents {
            let Some((_, Reverse(i))) = ready.pop() else {
                break;
            };
            running.push(Reverse((now.saturating_add(est[i]), i)));
        }
        let Some(Reverse((t, i))) = running.pop() else {
            break;
        };
        now = t;
        for &c in &graph.children[i] {
            indeg[c] -= 1;
            if indeg[c] == 0 {
                ready.push((priority[c], Reverse(c)));
            }
        }
    }
    now
}

/// Simulates the workers' schedule for `tasks` (already analysed) with
/// `agents` agents and the given per-task durations in milliseconds.
pub fn simulate_makespan(tasks: &[Task], durations: &[u64], agents: u32) -> u64 {
    let index: HashMap<String, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.clone(), i))
        .collect();
    let graph = Graph::new(tasks, &index);
    let priority: Vec<u64> = tasks.iter().map(|t| t.priority).collect();
    simulate(&graph, durations, &priority, agents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Action, Task};

    fn task(id: &str, after: &[&str], est: u64) -> Task {
        Task {
            id: id.into(),
            title: None,
            action: Action::Command("true".into()),
            after: after.iter().map(|s| (*s).to_owned()).collect(),
            files: vec![],
            scan_prompt: true,
            conflicts: true,
            resources: vec![],
            estimate_ms: Some(est),
            timeout_ms: 1000,
            retries: 0,
            env: Default::default(),
            cwd: None,
            compete: None,
            phases: true,
            group: None,
            worktree: None,
            line: None,
            wave: 0,
            priority: 0,
        }
    }

    #[test]
    fn waves_priorities_and_makespan() {
        // a(10) -> b(10) -> c(10); d(25) independent.
        let mut tasks = vec![
            task("a", &[], 10),
            task("b", &["a"], 10),
            task("c", &["b"], 10),
            task("d", &[], 25),
        ];
        let index = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i))
            .collect();
        let a = analyse(&mut tasks, &index, Some(1)).unwrap();
        assert_eq!(a.depth, 3);
        assert_eq!(a.wave_sizes, vec![2, 1, 1]);
        assert_eq!(a.critical_path, vec!["a", "b", "c"]);
        assert_eq!(a.critical_path_ms, 30);
        assert_eq!(a.sequential_ms, 55);
        assert_eq!(a.parallel_ms, 55);
        let a2 = analyse(&mut tasks, &index, Some(2)).unwrap();
        // a first (priority 30), d beside it; b at 10, c at 20..30; d ends 25.
        assert_eq!(a2.parallel_ms, 30);
    }

    #[test]
    fn auto_picks_smallest_count_near_unlimited() {
        // 8 independent tasks of 10: unlimited = 10; needs 8 agents (capped by cores).
        let mut tasks: Vec<Task> = (0..8).map(|i| task(&format!("t{i}"), &[], 10)).collect();
        let index = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i))
            .collect();
        let a = analyse(&mut tasks, &index, None).unwrap();
        let cores = std::thread::available_parallelism().unwrap().get() as u32;
        assert_eq!(a.agents, cores.min(8));
    }
}

/// What bounds the agent count on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// CPU cores.
    pub cores: u32,
    /// Available memory divided by the memory per agent.
    pub by_memory: u32,
    /// The plan's `max_agents`.
    pub max_agents: Option<u32>,
    /// The plan's project `level` (1 to 5 caps at 2 to 6).
    pub level: Option<u32>,
}

impl Capacity {
    /// The most agents allowed, and what set it.
    pub fn limit(&self) -> (u32, String) {
        let mut best = (self.cores.max(1), format!("{} cores", self.cores));
        if self.by_memory.max(1) < best.0 {
            best = (
                self.by_memory.max(1),
                "available memory / memory_per_agent".to_owned(),
            );
        }
        if let Some(m) = self.max_agents {
            if m < best.0 {
                best = (m, format!("max_agents = {m}"));
            }
        }
        if let Some(l) = self.level {
            let cap = l + 1;
            if cap < best.0 {
                best = (cap, format!("level {l}"));
            }
        }
        best
    }
}

/// The agent count chosen by simulation, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoScale {
    /// The choice.
    pub agents: u32,
    /// Makespan (ms) for each count tried.
    pub tried: Vec<(u32, u64)>,
    /// Makespan with unlimited agents (the critical path), ms.
    pub unlimited_ms: u64,
    /// The most agents the machine allows.
    pub capacity: u32,
    /// What set the capacity.
    pub bound_by: String,
    /// Whether the capacity, not the schedule, decided.
    pub capped: bool,
}

/// Chooses the agent count for `tasks` (analysed) with the given per-task
/// durations: the smallest count up to the capacity whose simulated
/// makespan is within 5% of unlimited agents.
pub fn autoscale(tasks: &[Task], durations: &[u64], capacity: &Capacity) -> AutoScale {
    let index: HashMap<String, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.clone(), i))
        .collect();
    let graph = Graph::new(tasks, &index);
    // Priorities from these durations, as the workers' would be.
    let order = graph.topo().unwrap_or_default();
    let bottom = bottom_levels(&graph, &order, durations);
    let (cap, bound_by) = capacity.limit();
    let (agents, tried) = choose_agents(&graph, durations, &bottom, cap);
    let unlimited_ms = bottom.iter().copied().max().unwrap_or(0);
    let capped = agents == cap
        && tried
            .iter()
            .find(|(k, _)| *k == agents)
            .is_some_and(|&(_, ms)| (ms as f64) > unlimited_ms as f64 * 1.05);
    AutoScale {
        agents,
        tried,
        unlimited_ms,
        capacity: cap,
        bound_by,
        capped,
    }
}

#[cfg(test)]
mod autoscale_tests {
    use super::*;
    use crate::plan::{Action, Task};

    fn t(id: &str, after: &[&str]) -> Task {
        Task {
            id: id.into(),
            title: None,
            action: Action::Command("true".into()),
            after: after.iter().map(|s| (*s).to_owned()).collect(),
            files: vec![],
            scan_prompt: true,
            conflicts: true,
            resources: vec![],
            estimate_ms: None,
            timeout_ms: 1000,
            retries: 0,
            env: Default::default(),
            cwd: None,
            compete: None,
            phases: true,
            worktree: None,
            group: None,
            line: None,
            wave: 0,
            priority: 0,
        }
    }

    #[test]
    fn chooses_the_smallest_count_near_the_critical_path_and_names_the_cap() {
        // a(40) -> b(40) is the critical path (80); c, d, e, f take 20 each.
        let tasks = vec![
            t("a", &[]),
            t("b", &["a"]),
            t("c", &[]),
            t("d", &[]),
            t("e", &[]),
            t("f", &[]),
        ];
        let d = [40, 40, 20, 20, 20, 20];
        let wide = Capacity {
            cores: 64,
            by_memory: 64,
            max_agents: None,
            level: None,
        };
        let s = autoscale(&tasks, &d, &wide);
        assert_eq!((s.agents, s.unlimited_ms), (2, 80));
        assert_eq!(s.tried.iter().find(|x| x.0 == 1), Some(&(1, 160)));
        let narrow = Capacity {
            cores: 64,
            by_memory: 64,
            max_agents: None,
            level: Some(1),
        };
        assert_eq!(narrow.limit(), (2, "level 1".to_owned()));
        let one = Capacity {
            cores: 1,
            by_memory: 64,
            max_agents: None,
            level: None,
        };
        let s = autoscale(&tasks, &d, &one);
        assert!(s.agents == 1 && s.capped && s.bound_by == "1 cores");
    }
}
