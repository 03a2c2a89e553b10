//! `orch-plan`'s git part: checks that worktree tasks can run, and prints
//! the repository, the backup, the conflict matrix and the import
//! dependencies.

use std::path::{Path, PathBuf};

use anyhow::Result;
use orch_session::plan::Plan;
use orch_session::session::GitInfo;
use serde_json::{json, Value};

use super::Git;
use crate::common::{plural, Style};
use crate::exit::{self, coded};

/// Finds the repository holding `workdir`, and checks that every worktree
/// task can run in it: a repository with a commit, and the task's
/// directory inside it. Errors name the plan file and the task's line.
pub fn check(plan: &Plan, shown: &Path, workdir: &Path) -> Result<Option<PathBuf>> {
    let first = plan.tasks.iter().find(|t| t.worktree.is_some());
    let repo = match (super::toplevel(workdir), first) {
        (Ok(r), _) => r,
        (Err(e), Some(_)) => return Err(e.into()),
        (Err(e), None) => {
            eprintln!("orch-plan: warning: no git backup: {e}");
            None
        }
    };
    let Some(first) = first else {
        return Ok(repo);
    };
    let at = |line: Option<usize>| match line {
        Some(l) => format!("{}:{l}", shown.display()),
        None => shown.display().to_string(),
    };
    let Some(repo) = repo else {
        return Err(coded(
            exit::BAD_INPUT,
            format!(
                "{}: task `{}` runs in a worktree (workspace = \"worktree\"), but {} is not in a git repository (fix: `git init` and commit, or use workspace = \"shared\")",
                at(first.line),
                first.id,
                workdir.display()
            ),
        ));
    };
    if Git::new(&repo).commit_of("HEAD")?.is_none() {
        return Err(coded(
            exit::BAD_INPUT,
            format!(
                "{}: task `{}` runs in a worktree, but the repository {} has no commit yet for worktrees to start from (fix: commit something first)",
                at(first.line),
                first.id,
                repo.display()
            ),
        ));
    }
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let top = canon(&repo);
    for t in plan.tasks.iter().filter(|t| t.worktree.is_some()) {
        let dir = match &t.cwd {
            Some(c) => workdir.join(c),
            None => workdir.to_path_buf(),
        };
        if !canon(&dir).starts_with(&top) {
            return Err(coded(
                exit::BAD_INPUT,
                format!(
                    "{}: task `{}` runs in a worktree, but its directory {} is outside the repository {} (fix: give a cwd inside the repository, or use workspace = \"shared\")",
                    at(t.line),
                    t.id,
                    dir.display(),
                    repo.display()
                ),
            ));
        }
    }
    Ok(Some(repo))
}

fn short(c: &str) -> &str {
    &c[..c.len().min(10)]
}

const MAX_MATRIX: usize = 30;
const MAX_LINES: usize = 40;

/// The git section of `orch-plan`'s text output.
pub fn render(
    plan: &Plan,
    repo: Option<&Path>,
    git: Option<&GitInfo>,
    session: Option<&str>,
    style: Style,
) -> String {
    let mut s = String::new();
    let in_worktrees = plan.tasks.iter().filter(|t| t.worktree.is_some()).count();
    if let (Some(repo), Some(g)) = (repo, git) {
        let base = match (&g.base, &g.branch) {
            (Some(b), Some(br)) => format!("base {} on branch {br}", short(b)),
            (Some(b), None) => format!("base {} (detached HEAD)", short(b)),
            _ => "no commit yet".to_owned(),
        };
        s += &format!("Git: {}, {base}", repo.display());
        if in_worktrees > 0 {
            s += &format!(
                "; {} in worktrees ({}/.worktrees/TASK, branches orch/{}/TASK)",
                plural(in_worktrees, "task"),
                repo.display(),
                session.unwrap_or("SESSION")
            );
        }
        s += "\n";
        match (&g.backup_ref, &g.backup) {
            (Some(r), Some(c)) => {
                s += &format!(
                    "Backup: {r} (commit {}): the working tree{}; restore with `orch-sync restore-backup`\n",
                    short(c),
                    if g.dirty {
                        " with its uncommitted and untracked changes"
                    } else {
                        ", clean"
                    }
                );
            }
            _ if session.is_some() && !plan.settings.backup => {
                s += "Backup: none (backup = false)\n";
            }
            _ => {}
        }
        if g.dirty && in_worktrees > 0 {
            s += &format!(
                "warning: {} has uncommitted changes; worktrees start from the last commit without them{}\n",
                repo.display(),
                if plan.settings.backup {
                    " (they are in the backup)"
                } else {
                    ""
                }
            );
        }
    }
    let r = &plan.conflicts;
    if !r.conflicts.is_empty() {
        s += &format!(
            "File conflicts: {} (from `files` and paths in prompts); the tasks of a pair never run together\n",
            plural(r.conflicts.len(), "pair")
        );
        let mut involved: Vec<&str> = Vec::new();
        for t in &plan.tasks {
            if r.conflicts.iter().any(|c| c.a == t.id || c.b == t.id) {
                involved.push(&t.id);
            }
        }
        if involved.len() <= MAX_MATRIX {
            let w = involved.iter().map(|t| t.len()).max().unwrap_or(0);
            let nw = involved.len().to_string().len();
            let mut head = format!("  {:nw$} {:w$} ", "", "");
            for k in 1..=involved.len() {
                head += &format!(" {k:>nw$}");
            }
            s += head.trim_end();
            s += "\n";
            for (i, a) in involved.iter().enumerate() {
                let mut row = format!("  {:>nw$} {a:w$} ", i + 1);
                for (j, b) in involved.iter().enumerate() {
                    let mark = if i == j {
                        "-"
                    } else if r
                        .conflicts
                        .iter()
                        .any(|c| (c.a == *a && c.b == *b) || (c.a == *b && c.b == *a))
                    {
                        "X"
                    } else {
                        "."
                    };
                    row += &format!(" {mark:>nw$}");
                }
                s += &row;
                s += "\n";
            }
        }
        // Where each side's files came from, so the user knows what to edit.
        let origin = |id: &str| match plan.tasks.iter().find(|t| t.id == id) {
            Some(t) if !t.scan_prompt => "files",
            _ => "prompt",
        };
        for c in r.conflicts.iter().take(MAX_LINES) {
            let how = match &c.resource {
                Some(res) => format!("resource {res}"),
                None => "ordered by dependencies".to_owned(),
            };
            s += &format!(
                "  {} {} {}: {} (from {}'s {}, {}'s {}; {how})\n",
                c.a,
                style.sym("×", "x"),
                c.b,
                c.files.join(", "),
                c.a,
                origin(&c.a),
                c.b,
                origin(&c.b),
            );
        }
        if r.conflicts.len() > MAX_LINES {
            s += &format!(
                "  ... and {} more (orch-plan --json lists them all)\n",
                r.conflicts.len() - MAX_LINES
            );
        }
        s += "  Not a real conflict? On the task: `files = [...]` is its whole file set (`[]` for none), `conflicts = false` leaves it out of conflicts; in a ROADMAP, a `Files:` line under the track\n";
    }
    if !r.imports.is_empty() {
        let ordered = r.imports.iter().filter(|d| d.ordered).count();
        s += &format!(
            "Import dependencies: {}{}\n",
            plural(r.imports.len(), "task pair"),
            if ordered > 0 {
                format!(", {ordered} ordered by --import-deps")
            } else if r.imports.iter().any(|d| d.note.is_some()) {
                String::new()
            } else {
                " (orch-plan --import-deps runs importers after the tasks editing what they import)"
                    .to_owned()
            }
        );
        for d in r.imports.iter().take(MAX_LINES) {
            let what = if d.ordered {
                format!("; `{}` now runs after `{}`", d.task, d.edited_by)
            } else {
                d.note
                    .as_deref()
                    .map(|n| format!("; {n}"))
                    .unwrap_or_default()
            };
            s += &format!(
                "  {}{}{}: {} imports {}{what}\n",
                d.task,
                style.arrow(),
                d.edited_by,
                d.file,
                d.imports
            );
        }
        if r.imports.len() > MAX_LINES {
            s += &format!("  ... and {} more\n", r.imports.len() - MAX_LINES);
        }
    }
    s
}

/// The git section of `orch-plan --json`.
pub fn json(plan: &Plan, repo: Option<&Path>, git: Option<&GitInfo>) -> Value {
    json!({
        "repo": repo,
        "base": git.and_then(|g| g.base.clone()),
        "branch": git.and_then(|g| g.branch.clone()),
        "dirty": git.map(|g| g.dirty),
        "backup_ref": git.and_then(|g| g.backup_ref.clone()),
        "backup": git.and_then(|g| g.backup.clone()),
        "worktree_tasks": plan.tasks.iter().filter(|t| t.worktree.is_some()).map(|t| &t.id).collect::<Vec<_>>(),
    })
}
