//! Plan analysis: topological order, waves, priorities and the critical
//! path ([`analyse`], from the dependencies alone), and one simulation of
//! the schedule the workers will follow ([`schedule`]): with the plan's
//! resources (file conflicts among them), checkpoints and strict waves, it
//! gives the estimated time and, for `agents = "auto"`, the agent count.
//! Run once, on the finished plan, and used for everything printed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use orch_session::competition;
use orch_session::plan::{After, Analysis, Plan, Task};

/// Dependency lists as indices.
struct Graph {
    deps: Vec<Vec<usize>>,
    children: Vec<Vec<usize>>,
}

impl Graph {
    fn new(tasks: &[Task], index: &HashMap<String, usize>) -> Self {
        let mut deps = vec![Vec::new(); tasks.len()];
        let mut children = vec![Vec::new(); tasks.len()];
        let competitions = competition::members_by_name(tasks);
        for (i, t) in tasks.iter().enumerate() {
            for d in &t.after {
                if let Some(&j) = d.task().and_then(|id| index.get(id)) {
                    deps[i].push(j);
                    children[j].push(i);
                } else if let Some(c) = d.competition() {
                    // Waiting for the winner is waiting for every entrant.
                    for &j in competitions.get(c).into_iter().flatten() {
                        deps[i].push(j);
                        children[j].push(i);
                    }
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

/// Analyses `tasks` in place (sets `wave` and `priority`) from their
/// dependencies; the agent count and the estimated time are [`schedule`]'s.
/// Returns the cycle on failure.
pub fn analyse(
    tasks: &mut [Task],
    index: &HashMap<String, usize>,
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

    Ok(Analysis {
        tasks: tasks.len(),
        edges: graph.deps.iter().map(Vec::len).sum(),
        depth,
        wave_sizes,
        critical_path,
        critical_path_ms,
        sequential_ms,
        agents: 0,
        parallel_ms: 0,
        assumed_estimates: tasks.iter().filter(|t| t.estimate_ms.is_none()).count(),
        auto_scaling: Vec::new(),
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

/// What the simulation knows of a plan: dependencies, durations and
/// priorities, the resources each task holds and their capacities, the
/// checkpoints tasks wait for and the tasks that reach them, and whether
/// waves are strict.
struct Model<'a> {
    graph: Graph,
    durations: &'a [u64],
    priority: Vec<u64>,
    /// Per task: indices into `capacity`.
    holds: Vec<Vec<usize>>,
    capacity: Vec<u32>,
    /// Per task: how many checkpoints it waits for.
    waits: Vec<usize>,
    /// Per checkpoint: the tasks waiting for it.
    waiters: Vec<Vec<usize>>,
    /// Per task: the checkpoints its end helps reach (as an expected agent).
    reaches: Vec<Vec<usize>>,
    /// Per checkpoint: how many tasks must end to reach it (expected agents
    /// that are tasks; others are taken as there from the start).
    needed: Vec<usize>,
    /// Per task: its wave, when waves are strict.
    strict: Option<Vec<u32>>,
}

impl<'a> Model<'a> {
    fn new(plan: &Plan, durations: &'a [u64]) -> Model<'a> {
        let tasks = &plan.tasks;
        let index: HashMap<String, usize> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i))
            .collect();
        let graph = Graph::new(tasks, &index);
        let order = graph.topo().unwrap_or_else(|_| (0..tasks.len()).collect());
        let priority = bottom_levels(&graph, &order, durations);
        let resources: HashMap<&str, usize> = plan
            .resources
            .keys()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let capacity = plan.resources.values().map(|r| r.capacity.max(1)).collect();
        let holds = tasks
            .iter()
            .map(|t| {
                t.resources
                    .iter()
                    .filter_map(|r| resources.get(r.as_str()).copied())
                    .collect()
            })
            .collect();
        let cps: HashMap<&str, usize> = plan
            .checkpoints
            .keys()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut waiters = vec![Vec::new(); cps.len()];
        let mut reaches = vec![Vec::new(); tasks.len()];
        let mut needed = vec![0; cps.len()];
        for (c, decl) in plan.checkpoints.values().enumerate() {
            for e in &decl.expect {
                if let Some(&i) = index.get(e) {
                    reaches[i].push(c);
                    needed[c] += 1;
                }
            }
        }
        let mut waits = vec![0; tasks.len()];
        for (i, t) in tasks.iter().enumerate() {
            for cp in t.after.iter().filter_map(After::checkpoint) {
                if let Some(&c) = cps.get(cp) {
                    if needed[c] > 0 {
                        waiters[c].push(i);
                        waits[i] += 1;
                    }
                }
            }
        }
        Model {
            graph,
            durations,
            priority,
            holds,
            capacity,
            waits,
            waiters,
            reaches,
            needed,
            strict: plan
                .settings
                .strict_waves
                .then(|| tasks.iter().map(|t| t.wave).collect()),
        }
    }

    /// List scheduling with `agents` agents, as the workers do it: when an
    /// agent is free it takes the ready task with the largest priority
    /// whose resources all have room (a task whose resource is full is
    /// passed over, not waited for). Returns the makespan.
    fn makespan(&self, agents: u32) -> u64 {
        let n = self.durations.len();
        let agents = agents.max(1) as usize;
        let mut indeg: Vec<usize> = self.graph.deps.iter().map(Vec::len).collect();
        let mut needed = self.needed.clone();
        let mut waits = self.waits.clone();
        // Strict waves: how many tasks each wave has left.
        let mut wave_left: Vec<usize> = Vec::new();
        if let Some(w) = &self.strict {
            for &x in w {
                let x = x as usize;
                if wave_left.len() <= x {
                    wave_left.resize(x + 1, 0);
                }
                wave_left[x] += 1;
            }
        }
        let mut open_wave = wave_left.iter().position(|&l| l > 0).unwrap_or(0);
        let mut ready: BinaryHeap<(u64, Reverse<usize>)> = (0..n)
            .filter(|&i| indeg[i] == 0 && waits[i] == 0)
            .map(|i| (self.priority[i], Reverse(i)))
            .collect();
        let mut passed: Vec<(u64, Reverse<usize>)> = Vec::new();
        let mut used = vec![0u32; self.capacity.len()];
        let mut running: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
        let mut now = 0u64;
        let mut done = 0;
        loop {
            // Start what fits, best first; what does not fit waits its turn.
            while running.len() < agents {
                let Some(entry) = ready.pop() else {
                    break;
                };
                let i = entry.1 .0;
                let fits = self.holds[i].iter().all(|&r| used[r] < self.capacity[r]);
                let in_wave = self
                    .strict
                    .as_ref()
                    .is_none_or(|w| w[i] as usize <= open_wave);
                if fits && in_wave {
                    for &r in &self.holds[i] {
                        used[r] += 1;
                    }
                    running.push(Reverse((now.saturating_add(self.durations[i]), i)));
                } else {
                    passed.push(entry);
                }
            }
            ready.extend(passed.drain(..));
            let Some(Reverse((t, i))) = running.pop() else {
                break;
            };
            now = t;
            done += 1;
            for &r in &self.holds[i] {
                used[r] -= 1;
            }
            if let Some(w) = &self.strict {
                wave_left[w[i] as usize] -= 1;
                while open_wave < wave_left.len() && wave_left[open_wave] == 0 {
                    open_wave += 1;
                }
            }
            let mut unblocked: Vec<usize> = Vec::new();
            for &c in &self.reaches[i] {
                needed[c] -= 1;
                if needed[c] == 0 {
                    for &j in &self.waiters[c] {
                        waits[j] -= 1;
                        if waits[j] == 0 && indeg[j] == 0 {
                            unblocked.push(j);
                        }
                    }
                }
            }
            for &c in &self.graph.children[i] {
                indeg[c] -= 1;
                if indeg[c] == 0 && waits[c] == 0 {
                    unblocked.push(c);
                }
            }
            ready.extend(
                unblocked
                    .into_iter()
                    .map(|j| (self.priority[j], Reverse(j))),
            );
        }
        // A task that never became ready (a checkpoint nothing reaches)
        // never ends.
        if done < n {
            now = u64::MAX;
        }
        now
    }
}

/// How the agent count was chosen, when it was chosen by simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoScale {
    /// The choice.
    pub agents: u32,
    /// Makespan (ms) for each count tried.
    pub tried: Vec<(u32, u64)>,
    /// Makespan with as many agents as tasks: the best the dependencies,
    /// resources and checkpoints allow, ms.
    pub unlimited_ms: u64,
    /// The most agents the machine allows.
    pub capacity: u32,
    /// What set the capacity.
    pub bound_by: String,
    /// Whether the capacity, not the schedule, decided.
    pub capped: bool,
}

/// Simulates the plan's schedule once, with `durations` (ms, one per task:
/// estimates, or measured runs): sets `analysis.agents` and `parallel_ms`,
/// and with `agents = "auto"` chooses the count, the smallest up to
/// `capacity` whose makespan is within 5% of unlimited agents, returning
/// how. The one place the plan's estimate and its agent count are made.
pub fn schedule(plan: &mut Plan, durations: &[u64], capacity: &Capacity) -> Option<AutoScale> {
    let model = Model::new(plan, durations);
    // The workers' priorities are the estimates' (plan order), the
    // simulation's its own durations'.
    if !plan.settings.agents_auto {
        let agents = plan.settings.agents.max(1);
        plan.analysis.agents = agents;
        plan.analysis.parallel_ms = model.makespan(agents);
        plan.analysis.auto_scaling.clear();
        return None;
    }
    let n = u32::try_from(plan.tasks.len()).unwrap_or(u32::MAX).max(1);
    let unlimited = model.makespan(n);
    let (cap, bound_by) = capacity.limit();
    let good = |ms: u64| (ms as f64) <= (unlimited as f64) * 1.05;
    let mut tried = Vec::new();
    let mut k = 1u32;
    loop {
        let ms = model.makespan(k);
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
            let ms = model.makespan(mid);
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
    let ms = tried.iter().find(|(k, _)| *k == hi).map_or(hi_ms, |t| t.1);
    let capped = hi == cap && !good(ms);
    plan.settings.agents = hi;
    plan.analysis.agents = hi;
    plan.analysis.parallel_ms = ms;
    plan.analysis.auto_scaling = tried.clone();
    Some(AutoScale {
        agents: hi,
        tried,
        unlimited_ms: unlimited,
        capacity: cap,
        bound_by,
        capped,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::parse::{parse_plan, PlanSource};

    fn plan(text: &str) -> Plan {
        match parse_plan(
            PlanSource {
                path: Path::new("plan.toml"),
                text,
            },
            None,
        ) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    fn estimates(p: &Plan) -> Vec<u64> {
        p.tasks.iter().map(Task::estimate_or_default).collect()
    }

    fn wide() -> Capacity {
        Capacity {
            cores: 64,
            by_memory: 64,
            max_agents: None,
            level: None,
        }
    }

    /// The estimated time of `text` with its own agent count.
    fn makespan(text: &str) -> u64 {
        let mut p = plan(text);
        let d = estimates(&p);
        schedule(&mut p, &d, &wide());
        p.analysis.parallel_ms
    }

    #[test]
    fn waves_priorities_and_makespan() {
        // a(10) -> b(10) -> c(10); d(25) independent.
        let text = |agents: u32| {
            format!(
                "agents = {agents}\n\
                 [[task]]\nid = \"a\"\ncommand = \"true\"\nestimate = \"10s\"\n\
                 [[task]]\nid = \"b\"\ncommand = \"true\"\nestimate = \"10s\"\nafter = [\"a\"]\n\
                 [[task]]\nid = \"c\"\ncommand = \"true\"\nestimate = \"10s\"\nafter = [\"b\"]\n\
                 [[task]]\nid = \"d\"\ncommand = \"true\"\nestimate = \"25s\"\n"
            )
        };
        let p = plan(&text(1));
        let a = &p.analysis;
        assert_eq!(a.depth, 3);
        assert_eq!(a.wave_sizes, vec![2, 1, 1]);
        assert_eq!(a.critical_path, vec!["a", "b", "c"]);
        assert_eq!(a.critical_path_ms, 30_000);
        assert_eq!(a.sequential_ms, 55_000);
        assert_eq!(makespan(&text(1)), 55_000);
        // a first (priority 30), d beside it; b at 10, c at 20..30; d ends 25.
        assert_eq!(makespan(&text(2)), 30_000);
    }

    #[test]
    fn a_resource_of_capacity_one_runs_its_holders_one_at_a_time() {
        let text = |capacity: u32| {
            format!(
                "agents = 4\n[resource.db]\ncapacity = {capacity}\n\
                 [[task]]\nid = \"a\"\ncommand = \"true\"\nestimate = \"10s\"\nresources = [\"db\"]\n\
                 [[task]]\nid = \"b\"\ncommand = \"true\"\nestimate = \"10s\"\nresources = [\"db\"]\n\
                 [[task]]\nid = \"c\"\ncommand = \"true\"\nestimate = \"10s\"\nresources = [\"db\"]\n\
                 [[task]]\nid = \"d\"\ncommand = \"true\"\nestimate = \"10s\"\n"
            )
        };
        assert_eq!(makespan(&text(1)), 30_000);
        assert_eq!(makespan(&text(2)), 20_000);
        assert_eq!(makespan(&text(3)), 10_000);
    }

    #[test]
    fn a_task_after_a_checkpoint_waits_for_the_tasks_that_reach_it() {
        // "late" waits for the checkpoint "ready", which "slow" (20 s)
        // reaches; "fast" is free at once.
        let text = "agents = 3\n[checkpoint.ready]\nexpect = [\"slow\"]\n\
             [[task]]\nid = \"slow\"\ncommand = \"true\"\nestimate = \"20s\"\n\
             [[task]]\nid = \"fast\"\ncommand = \"true\"\nestimate = \"5s\"\n\
             [[task]]\nid = \"late\"\ncommand = \"true\"\nestimate = \"5s\"\nafter = [\"checkpoint:ready\"]\n";
        assert_eq!(makespan(text), 25_000);
    }

    #[test]
    fn strict_waves_wait_for_the_whole_wave() {
        // a(30) and b(5) are wave 1; c(5) after b is wave 2. Dynamic: c
        // runs beside a; strict: c waits for a.
        let text = |waves: &str| {
            format!(
                "agents = 2\nwaves = \"{waves}\"\n\
                 [[task]]\nid = \"a\"\ncommand = \"true\"\nestimate = \"30s\"\n\
                 [[task]]\nid = \"b\"\ncommand = \"true\"\nestimate = \"5s\"\n\
                 [[task]]\nid = \"c\"\ncommand = \"true\"\nestimate = \"5s\"\nafter = [\"b\"]\n"
            )
        };
        assert_eq!(makespan(&text("dynamic")), 30_000);
        assert_eq!(makespan(&text("strict")), 35_000);
    }

    #[test]
    fn auto_picks_the_smallest_count_near_unlimited_and_names_the_cap() {
        // a(40) -> b(40) is the critical path (80); c, d, e, f take 20 each.
        let text = "agents = \"auto\"\n\
             [[task]]\nid = \"a\"\ncommand = \"true\"\nestimate = \"40s\"\n\
             [[task]]\nid = \"b\"\ncommand = \"true\"\nestimate = \"40s\"\nafter = [\"a\"]\n\
             [[task]]\nid = \"c\"\ncommand = \"true\"\nestimate = \"20s\"\n\
             [[task]]\nid = \"d\"\ncommand = \"true\"\nestimate = \"20s\"\n\
             [[task]]\nid = \"e\"\ncommand = \"true\"\nestimate = \"20s\"\n\
             [[task]]\nid = \"f\"\ncommand = \"true\"\nestimate = \"20s\"\n";
        let mut p = plan(text);
        let d = estimates(&p);
        let s = schedule(&mut p, &d, &wide()).expect("auto");
        assert_eq!((s.agents, s.unlimited_ms), (2, 80_000));
        assert_eq!(s.tried.iter().find(|x| x.0 == 1), Some(&(1, 160_000)));
        assert_eq!((p.settings.agents, p.analysis.agents), (2, 2));
        assert_eq!(p.analysis.parallel_ms, 80_000);
        let narrow = Capacity {
            level: Some(1),
            ..wide()
        };
        assert_eq!(narrow.limit(), (2, "level 1".to_owned()));
        let one = Capacity { cores: 1, ..wide() };
        let mut p = plan(text);
        let s = schedule(&mut p, &d, &one).expect("auto");
        assert!(s.agents == 1 && s.capped && s.bound_by == "1 cores");
        assert_eq!(p.analysis.parallel_ms, 160_000);
    }

    #[test]
    fn auto_does_not_add_agents_that_a_shared_resource_would_leave_idle() {
        // Four tasks all holding one lock: more than one agent never helps.
        let text = "agents = \"auto\"\n\
             [[task]]\nid = \"a\"\ncommand = \"true\"\nestimate = \"10s\"\nresources = [\"lock\"]\n\
             [[task]]\nid = \"b\"\ncommand = \"true\"\nestimate = \"10s\"\nresources = [\"lock\"]\n\
             [[task]]\nid = \"c\"\ncommand = \"true\"\nestimate = \"10s\"\nresources = [\"lock\"]\n\
             [[task]]\nid = \"d\"\ncommand = \"true\"\nestimate = \"10s\"\nresources = [\"lock\"]\n";
        let mut p = plan(text);
        let d = estimates(&p);
        let s = schedule(&mut p, &d, &wide()).expect("auto");
        assert_eq!((s.agents, s.unlimited_ms), (1, 40_000));
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
