//! File conflicts between tasks, and import dependencies.
//!
//! Each task's *file set* is its `files` globs, plus the file paths found
//! in its prompt when its files were not given (a plan's `files = [...]`,
//! even empty, or what a ROADMAP or prompt-file reader found in the task's
//! own body, is the whole set). A task with `conflicts = false` has none. Two tasks whose sets overlap conflict: they would edit the
//! same files. [`apply`] keeps conflicting tasks apart with an **implicit
//! shared resource** of capacity 1 (`files-<n>`), not an order edge:
//!
//! * the pair still runs in whichever order the scheduler finds best, and
//!   each can run beside every task it does not conflict with;
//! * one failing does not doom the other, as a dependency would;
//! * waves and the critical path stay those the user wrote;
//! * workers already take a task's resources all at once without waiting,
//!   or skip the task, so no new mechanism (and no deadlock) is added.
//!
//! Conflicting tasks are grouped into cliques (tasks that all conflict with
//! each other), one resource per clique, so twenty tasks editing one file
//! share one resource rather than holding 190. A pair already ordered by
//! dependencies needs no resource.
//!
//! In worktree mode, each task's branch also builds on the branches of the
//! succeeded tasks it conflicts with ([`orch_session::plan::WorktreeSpec::builds_on`]):
//! running them apart is what lets the second see the first's edit, so
//! their branches merge without conflict.
//!
//! Import dependencies: a task whose files import a module that another
//! task edits is reported; with `import_deps` it is ordered after it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::Path;

use orch_session::competition;
use orch_session::plan::conflicts::{Conflict, ImportDep, Report, RESOURCE_PREFIX};
use orch_session::plan::{Action, After, Plan, ResourceDecl};

use crate::analysis;
use crate::glob::PathPattern;
use crate::imports;

/// Most files read for imports (globs are expanded on disk).
const MAX_IMPORT_FILES: usize = 20_000;
/// Largest file read for imports.
const MAX_IMPORT_BYTES: u64 = 1 << 20;

/// Extensions taken as file names in prompts even when no such file exists.
const KNOWN_EXTS: &[&str] = &[
    "py",
    "pyi",
    "rs",
    "ts",
    "tsx",
    "mts",
    "cts",
    "js",
    "jsx",
    "mjs",
    "cjs",
    "go",
    "java",
    "kt",
    "kts",
    "scala",
    "c",
    "h",
    "cc",
    "cpp",
    "cxx",
    "hpp",
    "hh",
    "cs",
    "rb",
    "php",
    "swift",
    "m",
    "mm",
    "sh",
    "bash",
    "zsh",
    "fish",
    "ps1",
    "md",
    "rst",
    "txt",
    "adoc",
    "toml",
    "yaml",
    "yml",
    "json",
    "jsonc",
    "xml",
    "html",
    "htm",
    "css",
    "scss",
    "sass",
    "less",
    "sql",
    "proto",
    "graphql",
    "gql",
    "lock",
    "cfg",
    "ini",
    "conf",
    "env",
    "vue",
    "svelte",
    "lua",
    "ex",
    "exs",
    "erl",
    "hs",
    "ml",
    "mli",
    "r",
    "jl",
    "dart",
    "tf",
    "gradle",
    "cmake",
    "mk",
    "nix",
    "zig",
    "sol",
    "ipynb",
    "csv",
    "tsv",
    "svg",
    "dockerfile",
];

/// Words with a known extension that name things, not files.
const NOT_PATHS: &[&str] = &[
    "node.js",
    "vue.js",
    "next.js",
    "nuxt.js",
    "express.js",
    "react.js",
    "d3.js",
    "three.js",
    "chart.js",
    "ember.js",
    "backbone.js",
    "angular.js",
];

/// File paths mentioned in a prompt: words made of path characters that
/// either name an existing file or directory under `base`, or end in a
/// known source or document extension. URLs, options and `e.g.` are not
/// paths.
pub fn paths_in_prompt(prompt: &str, base: &Path) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-');
    for raw in prompt.split(|c: char| !is_path_char(c) && c != ':' && c != '*') {
        if raw.contains("://") || raw.contains(':') || raw.contains('*') {
            continue;
        }
        let word = raw.trim_end_matches(['.', ',', ';', '-']);
        let word = word.strip_prefix("./").unwrap_or(word);
        if word.is_empty() || word.starts_with('-') || word.starts_with('/') || word == ".." {
            continue;
        }
        // Only words with a `/` or an extension can be paths (and only
        // those are worth a look on disk).
        if !word.contains('/') && !word.contains('.') {
            continue;
        }
        let last = word.rsplit('/').next().unwrap_or(word);
        let ext = last
            .rsplit_once('.')
            .filter(|(stem, _)| !stem.is_empty())
            .map(|(_, e)| e.to_ascii_lowercase());
        let known = ext.as_deref().is_some_and(|e| KNOWN_EXTS.contains(&e))
            && !NOT_PATHS.contains(&word.to_ascii_lowercase().as_str());
        let on_disk = fs::symlink_metadata(base.join(word));
        let path = match on_disk {
            Ok(m) if m.is_dir() && word.contains('/') => format!("{}/", word.trim_end_matches('/')),
            Ok(m) if m.is_file() && (known || word.contains('/') || ext.is_some()) => {
                word.to_owned()
            }
            _ if known => word.to_owned(),
            _ => continue,
        };
        if !out.contains(&path) {
            out.push(path);
        }
    }
    out
}

/// Whether task `to` is reachable from `from` through `after` edges.
fn reaches(deps: &[Vec<usize>], from: usize, to: usize) -> bool {
    let mut seen = HashSet::new();
    let mut stack = vec![from];
    while let Some(i) = stack.pop() {
        if i == to {
            return true;
        }
        if seen.insert(i) {
            stack.extend(deps[i].iter().copied());
        }
    }
    false
}

/// Finds file conflicts and import dependencies in `plan`, whose files are
/// relative to `base` (the plan's directory); gives conflicting tasks
/// implicit resources, fills the worktree tasks' `builds_on`, and with
/// `import_deps` orders importing tasks after the tasks editing what they
/// import (then analyses the plan again).
pub fn apply(plan: &mut Plan, base: &Path, import_deps: bool) {
    let n = plan.tasks.len();
    let mut report = Report::default();
    let index: HashMap<String, usize> = plan
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.clone(), i))
        .collect();
    let competitions = competition::members_by_name(&plan.tasks);
    // Order: a task after a competition runs after all its entrants.
    let mut deps: Vec<Vec<usize>> = plan
        .tasks
        .iter()
        .map(|t| {
            t.after
                .iter()
                .flat_map(|d| match d {
                    After::Compete(c) => competitions.get(c.as_str()).cloned().unwrap_or_default(),
                    After::Task(id) => index.get(id).copied().into_iter().collect(),
                    After::Checkpoint(_) => Vec::new(),
                })
                .collect()
        })
        .collect();
    // What a worktree builds on: its task dependencies, and the winner of
    // each competition it waits for (`compete:NAME`, resolved when it
    // starts), never the losers.
    let mut direct: Vec<Vec<usize>> = plan
        .tasks
        .iter()
        .map(|t| {
            t.after
                .iter()
                .filter_map(|d| d.task().and_then(|id| index.get(id)).copied())
                .collect()
        })
        .collect();

    // Each task's patterns.
    let mut patterns: Vec<Vec<PathPattern>> = Vec::with_capacity(n);
    for t in &plan.tasks {
        if !t.conflicts {
            patterns.push(Vec::new());
            continue;
        }
        let mut texts: Vec<String> = t.files.clone();
        if let (Action::Prompt(p), true) = (&t.action, t.scan_prompt) {
            let found = paths_in_prompt(p, base);
            if !found.is_empty() {
                report.prompt_paths.insert(t.id.clone(), found.clone());
            }
            texts.extend(found);
        }
        let mut pats: Vec<PathPattern> = Vec::new();
        for text in texts {
            let p = PathPattern::parse(&text, base);
            if !pats.contains(&p) {
                pats.push(p);
            }
        }
        patterns.push(pats);
    }

    // Overlapping pairs, with what overlaps.
    let mut pairs: BTreeMap<(usize, usize), BTreeSet<String>> = BTreeMap::new();
    let mut literal: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut globs: Vec<(usize, &PathPattern)> = Vec::new();
    for (i, pats) in patterns.iter().enumerate() {
        for p in pats {
            if p.is_literal() {
                let v = literal.entry(p.as_str()).or_default();
                if !v.contains(&i) {
                    v.push(i);
                }
            } else {
                globs.push((i, p));
            }
        }
    }
    let mut add = |i: usize, j: usize, what: String| {
        if i != j {
            pairs.entry((i.min(j), i.max(j))).or_default().insert(what);
        }
    };
    for (path, tasks) in &literal {
        for (k, &i) in tasks.iter().enumerate() {
            for &j in &tasks[k + 1..] {
                add(i, j, (*path).to_owned());
            }
        }
    }
    for (gi, &(i, g)) in globs.iter().enumerate() {
        for (path, tasks) in &literal {
            if tasks.iter().any(|&j| j != i) && g.matches(path) {
                for &j in tasks {
                    add(i, j, format!("{} ~ {path}", g.as_str()));
                }
            }
        }
        for &(j, h) in &globs[gi + 1..] {
            if i != j && g.overlaps(h) {
                let what = if g.as_str() == h.as_str() {
                    g.as_str().to_owned()
                } else {
                    format!("{} ~ {}", g.as_str(), h.as_str())
                };
                add(i, j, what);
            }
        }
    }

    // Pairs not ordered by dependencies need keeping apart.
    let mut adj: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    let mut partners: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    let mut apart: Vec<(usize, usize)> = Vec::new();
    for &(i, j) in pairs.keys() {
        partners[i].insert(j);
        partners[j].insert(i);
        if !reaches(&deps, i, j) && !reaches(&deps, j, i) {
            adj[i].insert(j);
            adj[j].insert(i);
            apart.push((i, j));
        }
    }
    // Cover the pairs with cliques, one resource each.
    let mut covered: HashSet<(usize, usize)> = HashSet::new();
    let mut resource_of: HashMap<(usize, usize), String> = HashMap::new();
    let mut k = 0usize;
    for &(u, v) in &apart {
        if covered.contains(&(u, v)) {
            continue;
        }
        let mut clique = vec![u, v];
        for &c in adj[u].intersection(&adj[v]) {
            if clique.iter().all(|&m| adj[m].contains(&c)) {
                clique.push(c);
            }
        }
        clique.sort_unstable();
        let name = loop {
            k += 1;
            let name = format!("{RESOURCE_PREFIX}{k}");
            if !plan.resources.contains_key(&name) {
                break name;
            }
        };
        for (x, &a) in clique.iter().enumerate() {
            for &b in &clique[x + 1..] {
                covered.insert((a, b));
                resource_of.entry((a, b)).or_insert_with(|| name.clone());
            }
            let t = &mut plan.tasks[a];
            if !t.resources.contains(&name) {
                t.resources.push(name.clone());
            }
        }
        plan.resources.insert(
            name.clone(),
            ResourceDecl {
                capacity: 1,
                rate_limit: None,
            },
        );
        report.resources.insert(
            name,
            clique.iter().map(|&i| plan.tasks[i].id.clone()).collect(),
        );
    }
    for ((i, j), what) in &pairs {
        report.conflicts.push(Conflict {
            a: plan.tasks[*i].id.clone(),
            b: plan.tasks[*j].id.clone(),
            files: what.iter().cloned().collect(),
            resource: resource_of.get(&(*i, *j)).cloned(),
        });
    }

    // Import dependencies.
    let files = existing_files(&patterns, base);
    let mut seen_dep: HashSet<(usize, usize)> = HashSet::new();
    let mut added = false;
    for (i, own) in files.iter().enumerate() {
        for file in own {
            let Ok(meta) = fs::metadata(base.join(file)) else {
                continue;
            };
            if meta.len() > MAX_IMPORT_BYTES {
                continue;
            }
            let Ok(text) = fs::read_to_string(base.join(file)) else {
                continue;
            };
            for target in imports::imported_files(file, &text) {
                for (j, pats) in patterns.iter().enumerate() {
                    if j == i
                        || seen_dep.contains(&(i, j))
                        || !pats.iter().any(|p| p.matches(&target))
                    {
                        continue;
                    }
                    seen_dep.insert((i, j));
                    let mut dep = ImportDep {
                        task: plan.tasks[i].id.clone(),
                        file: file.clone(),
                        imports: target.clone(),
                        edited_by: plan.tasks[j].id.clone(),
                        ordered: false,
                        note: None,
                    };
                    if import_deps {
                        if reaches(&deps, i, j) {
                            dep.note = Some("already ordered".to_owned());
                        } else if reaches(&deps, j, i) {
                            dep.note = Some(format!(
                                "not ordered: `{}` already runs after `{}`",
                                plan.tasks[j].id, plan.tasks[i].id
                            ));
                        } else {
                            deps[i].push(j);
                            direct[i].push(j);
                            let edited_by = plan.tasks[j].id.clone();
                            plan.tasks[i].after.push(After::Task(edited_by));
                            dep.ordered = true;
                            added = true;
                        }
                    }
                    report.imports.push(dep);
                }
            }
        }
    }
    if added {
        // New edges were checked for cycles as they were added. The
        // schedule (agents, estimated time) is simulated later, once.
        if let Ok(a) = analysis::analyse(&mut plan.tasks, &index) {
            plan.analysis = a;
        }
    }

    // Worktree tasks build on their dependencies and conflict partners.
    for i in 0..n {
        if plan.tasks[i].worktree.is_none() {
            continue;
        }
        let mut on: Vec<usize> = direct[i].clone();
        on.extend(partners[i].iter().copied());
        on.sort_unstable();
        on.dedup();
        let mut ids: Vec<After> = on
            .into_iter()
            .filter(|&j| plan.tasks[j].worktree.is_some())
            .map(|j| After::Task(plan.tasks[j].id.clone()))
            .collect();
        ids.extend(
            plan.tasks[i]
                .after
                .iter()
                .filter(|d| d.competition().is_some())
                .cloned(),
        );
        if let Some(w) = plan.tasks[i].worktree.as_mut() {
            w.builds_on = ids;
        }
    }
    plan.conflicts = report;
}

/// The files of each task that exist under `base` and are in a language
/// whose imports are read: literal paths, and globs expanded by walking
/// `base` (without `.git`, `.worktrees`, `node_modules`, `target`).
fn existing_files(patterns: &[Vec<PathPattern>], base: &Path) -> Vec<Vec<String>> {
    let any_glob = patterns.iter().flatten().any(|p| !p.is_literal());
    let mut all: Vec<String> = Vec::new();
    if any_glob {
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let Ok(entries) = fs::read_dir(base.join(&rel)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let path = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                let skip = matches!(
                    name.as_str(),
                    ".git" | ".worktrees" | "node_modules" | "target"
                );
                match e.file_type() {
                    Ok(t) if t.is_dir() && !skip => stack.push(path),
                    Ok(t) if t.is_file() && imports::lang_of(&path).is_some() => all.push(path),
                    _ => {}
                }
                if all.len() >= MAX_IMPORT_FILES {
                    stack.clear();
                    break;
                }
            }
        }
        all.sort();
    }
    patterns
        .iter()
        .map(|pats| {
            let mut own: Vec<String> = Vec::new();
            for p in pats {
                if p.is_literal() {
                    if imports::lang_of(p.as_str()).is_some()
                        && base.join(p.as_str()).is_file()
                        && !own.iter().any(|o| o == p.as_str())
                    {
                        own.push(p.as_str().to_owned());
                    }
                } else {
                    for f in all.iter().filter(|f| p.matches(f)) {
                        if !own.contains(f) {
                            own.push(f.clone());
                        }
                    }
                }
            }
            own
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_plan, PlanSource};

    fn plan(text: &str, base: &Path) -> Plan {
        let path = base.join("plan.toml");
        parse_plan(PlanSource { path: &path, text }, None).unwrap()
    }

    #[test]
    fn prompt_paths_are_found() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("src/api")).unwrap();
        fs::write(dir.path().join("Makefile.am"), "").unwrap();
        let got = paths_in_prompt(
            "Fix `src/lib.rs` and ./docs/api.md, e.g. the API in src/api. See https://x.io/a.md; \
             also Makefile.am and and/or --flag.txt, version 1.2, notes.txt.",
            dir.path(),
        );
        assert_eq!(
            got,
            vec![
                "src/lib.rs",
                "docs/api.md",
                "src/api/",
                "Makefile.am",
                "notes.txt"
            ]
        );
    }

    #[test]
    fn conflicting_tasks_share_a_resource_unless_ordered() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = plan(
            r#"
[[task]]
id = "a"
command = "true"
files = ["src/shared.rs"]
[[task]]
id = "b"
prompt = "Edit src/shared.rs"
[[task]]
id = "c"
command = "true"
files = ["src/*.rs"]
[[task]]
id = "d"
command = "true"
files = ["docs/x.md"]
[[task]]
id = "e"
command = "true"
files = ["docs/"]
after = ["d"]
"#,
            dir.path(),
        );
        apply(&mut p, dir.path(), false);
        let r = &p.conflicts;
        let pairs: Vec<(&str, &str)> = r
            .conflicts
            .iter()
            .map(|c| (c.a.as_str(), c.b.as_str()))
            .collect();
        assert_eq!(pairs, vec![("a", "b"), ("a", "c"), ("b", "c"), ("d", "e")]);
        // a, b, c all conflict: one resource for the three.
        assert_eq!(r.resources.len(), 1, "{r:?}");
        let res = &r.resources["files-1"];
        assert_eq!(res, &vec!["a", "b", "c"]);
        for t in &p.tasks[..3] {
            assert_eq!(t.resources, vec!["files-1"]);
        }
        // d and e are ordered by a dependency: no resource.
        assert!(p.tasks[3].resources.is_empty() && p.tasks[4].resources.is_empty());
        assert_eq!(r.conflicts[3].resource, None);
        assert_eq!(p.resources["files-1"].capacity, 1);
    }

    #[test]
    fn pairs_that_share_nothing_else_get_their_own_resources() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = plan(
            "[[task]]\nid = \"a\"\ncommand = \"true\"\nfiles = [\"x\", \"y\"]\n\
             [[task]]\nid = \"b\"\ncommand = \"true\"\nfiles = [\"x\"]\n\
             [[task]]\nid = \"c\"\ncommand = \"true\"\nfiles = [\"y\"]\n",
            dir.path(),
        );
        apply(&mut p, dir.path(), false);
        // b and c do not conflict, so they must not share a resource.
        assert_eq!(p.tasks[1].resources.len(), 1);
        assert_eq!(p.tasks[2].resources.len(), 1);
        assert_ne!(p.tasks[1].resources, p.tasks[2].resources);
        assert_eq!(p.tasks[0].resources.len(), 2);
    }

    #[test]
    fn import_dependencies_are_reported_and_ordered_on_request() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("app")).unwrap();
        fs::write(dir.path().join("app/models.py"), "X = 1\n").unwrap();
        fs::write(dir.path().join("app/views.py"), "from app import models\n").unwrap();
        let text = "[[task]]\nid = \"views\"\ncommand = \"true\"\nfiles = [\"app/views.py\"]\n\
                    [[task]]\nid = \"models\"\ncommand = \"true\"\nfiles = [\"app/models.py\"]\n";
        let mut p = plan(text, dir.path());
        apply(&mut p, dir.path(), false);
        assert_eq!(p.conflicts.imports.len(), 1, "{:?}", p.conflicts);
        let d = &p.conflicts.imports[0];
        assert_eq!((d.task.as_str(), d.edited_by.as_str()), ("views", "models"));
        assert_eq!(d.imports, "app/models.py");
        assert!(!d.ordered && p.tasks[0].after.is_empty());
        let mut p = plan(text, dir.path());
        apply(&mut p, dir.path(), true);
        assert!(p.conflicts.imports[0].ordered);
        assert_eq!(p.tasks[0].after, vec!["models"]);
        assert_eq!(p.analysis.depth, 2);
        assert_eq!(p.tasks[0].wave, 2);
    }

    #[test]
    fn worktree_tasks_build_on_dependencies_and_partners() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = plan(
            "workspace = \"worktree\"\n\
             [[task]]\nid = \"a\"\ncommand = \"true\"\nfiles = [\"f\"]\n\
             [[task]]\nid = \"b\"\ncommand = \"true\"\nfiles = [\"f\"]\n\
             [[task]]\nid = \"c\"\ncommand = \"true\"\nafter = [\"a\"]\n",
            dir.path(),
        );
        apply(&mut p, dir.path(), false);
        let on = |i: usize| p.tasks[i].worktree.as_ref().unwrap().builds_on.clone();
        assert_eq!(on(0), vec!["b"]);
        assert_eq!(on(1), vec!["a"]);
        assert_eq!(on(2), vec!["a"]);
    }
}
