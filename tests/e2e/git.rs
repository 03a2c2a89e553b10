//! Git integration: worktrees per task, the safety backup, conflict
//! analysis, merging with one push, cleanup. Real repositories with a real
//! bare remote, in the test's temporary directory; git never sees the
//! user's configuration (`GIT_CONFIG_GLOBAL` points into the temp dir, and
//! it has no identity: orch's own commits must work without one).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::*;

/// Keeps git away from the real home, the system config and any
/// repository the tests run inside.
pub fn isolate(c: &mut Command, env: &Env) {
    c.env("HOME", env.dir.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", env.path("gitconfig"))
        .env("GIT_OPTIONAL_LOCKS", "0")
        // Never find a repository above the test's directory.
        .env("GIT_CEILING_DIRECTORIES", env.dir.path());
    for v in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_COMMON_DIR",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "EMAIL",
    ] {
        c.env_remove(v);
    }
}

/// An orch binary, isolated from the user's git.
pub fn orch(env: &Env, bin: &str) -> Command {
    let mut c = env.cmd(bin);
    isolate(&mut c, env);
    c
}

/// Runs git (as the test's user, with an identity) and returns stdout.
pub fn git(env: &Env, dir: &Path, args: &[&str]) -> String {
    let mut c = Command::new("git");
    c.arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .stdin(Stdio::null());
    isolate(&mut c, env);
    let out = output(&mut c);
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        stderr(&out)
    );
    stdout(&out).trim_end().to_owned()
}

/// A repository `repo/` with `files` committed on `main`, and a bare
/// remote `remote.git` that counts pushes in `pushes.log`.
pub fn repo(env: &Env, files: &[(&str, &str)]) -> PathBuf {
    env.write(
        "gitconfig",
        "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n",
    );
    let remote = env.path("remote.git");
    fs::create_dir_all(&remote).unwrap();
    git(env, &remote, &["init", "-q", "--bare"]);
    env.script(
        "remote.git/hooks/post-receive",
        &format!(
            "#!/bin/sh\ncat >/dev/null\necho push >> '{}'\n",
            env.path("pushes.log").display()
        ),
    );
    let repo = env.path("repo");
    fs::create_dir_all(&repo).unwrap();
    git(env, &repo, &["init", "-q"]);
    for (path, text) in files {
        env.write(&format!("repo/{path}"), text);
    }
    git(env, &repo, &["add", "-A"]);
    git(env, &repo, &["commit", "-q", "-m", "initial"]);
    git(
        env,
        &repo,
        &["remote", "add", "origin", remote.to_str().unwrap()],
    );
    git(env, &repo, &["push", "-q", "origin", "main"]);
    fs::remove_file(env.path("pushes.log")).unwrap();
    repo
}

/// Writes `repo/plan.toml` and creates a session; returns its id and the
/// text orch-plan printed.
pub fn plan_in_repo(env: &Env, text: &str, extra: &[&str]) -> (String, String) {
    let p = env.write("repo/plan.toml", text);
    let out = output(orch(env, "orch-plan").arg(&p).args(extra));
    assert!(
        out.status.success(),
        "orch-plan failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    let id = text.lines().last().unwrap().to_owned();
    (id, text)
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `git worktree list` as paths.
fn worktrees(env: &Env, repo: &Path) -> Vec<String> {
    git(env, repo, &["worktree", "list", "--porcelain"])
        .lines()
        .filter_map(|l| l.strip_prefix("worktree "))
        .map(str::to_owned)
        .collect()
}

/// `orch-worker --parallel`, stopped with SIGTERM if the test fails before
/// it ends: it forwards the signal to its workers, which stop their tasks,
/// so no worker is left blocked on a gate of a deleted directory.
struct Workers(Guard);

impl Workers {
    fn start(env: &Env, id: &str) -> Workers {
        Workers(Guard::new(
            orch(env, "orch-worker")
                .args(["--session", id, "--parallel", "4"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        ))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if matches!(self.0.child.try_wait(), Ok(None)) {
            // SAFETY: signalling the process this test started.
            unsafe { libc::kill(self.0.pid(), libc::SIGTERM) };
            let deadline = std::time::Instant::now() + LONG;
            while matches!(self.0.child.try_wait(), Ok(None))
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

fn git_of(r: &Value) -> &Value {
    &r["data"]["git"]
}

/// The issue's scenario: 8 tasks in worktrees, 6 on their own files and 2
/// on the same file (one declares it in `files`, the other names it in its
/// prompt). The plan flags the pair; they never run together (proved with
/// their start/end journal while the first holds a gate); every worktree
/// is created; one merge brings all 8 in without conflict and one push
/// updates the remote; a second merge changes nothing; cleanup removes
/// every worktree.
#[test]
fn eight_worktree_tasks_merge_without_conflict_and_push_once() {
    let env = Env::new();
    let repo = repo(
        &env,
        &[("README.md", "# demo\n"), ("shared.txt", "start\n")],
    );
    let journal = env.path("journal");
    let gate = env.path("gate");
    fs::write(&gate, "").unwrap();
    let agent = env.script(
        "agent.sh",
        &format!(
            "#!/bin/sh\n# The prompt is one argument: 'Append the line LINE to FILE'.\n\
             echo \"start $ORCH_TASK\" >> '{j}'\n\
             while [ -e '{g}' ]; do sleep 0.01; done\n\
             set -- $1\n\
             echo \"$4\" >> \"$6\"\n\
             git add -A && git -c user.name=agent -c user.email=agent@example.com commit -qm \"$ORCH_TASK: $4\"\n\
             echo \"end $ORCH_TASK\" >> '{j}'\n",
            j = journal.display(),
            g = gate.display()
        ),
    );
    let mut plan = format!(
        "name = \"eight\"\nagents = 4\nworkspace = \"worktree\"\nagent = [\"{}\", \"{{prompt}}\"]\n",
        agent.display()
    );
    plan += &format!(
        "[[task]]\nid = \"p1\"\nfiles = [\"shared.txt\"]\ncommand = \"echo \\\"start $ORCH_TASK\\\" >> '{j}'; while [ -e '{g}' ]; do sleep 0.01; done; echo p1 >> shared.txt; echo \\\"end $ORCH_TASK\\\" >> '{j}'\"\n",
        j = journal.display(),
        g = gate.display()
    );
    plan += "[[task]]\nid = \"p2\"\nprompt = \"Append the line p2 to shared.txt\"\n";
    for i in 1..=6 {
        // Odd tasks commit themselves; orch commits what the others leave.
        let commit = if i % 2 == 1 {
            format!(" && git add f{i}.txt && git -c user.name=agent -c user.email=agent@example.com commit -qm t{i}")
        } else {
            String::new()
        };
        plan += &format!(
            "[[task]]\nid = \"t{i}\"\nfiles = [\"f{i}.txt\"]\ncommand = \"echo t{i} > f{i}.txt{commit}\"\n"
        );
    }

    // The analysis flags the pair, and only the pair.
    let p = env.write("repo/plan.toml", &plan);
    let out = output(
        orch(&env, "orch-plan")
            .arg(&p)
            .args(["--dry-run", "--json"]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let conflicts = v["conflicts"]["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{v:#}");
    assert_eq!(conflicts[0]["a"], "p1");
    assert_eq!(conflicts[0]["b"], "p2");
    assert_eq!(conflicts[0]["files"][0], "shared.txt");
    assert_eq!(v["conflicts"]["prompt_paths"]["p2"][0], "shared.txt");
    let (id, text) = plan_in_repo(&env, &plan, &[]);
    assert!(text.contains("File conflicts: 1 pair"), "{text}");
    assert!(
        text.contains("p1 x p2: shared.txt (from p1's files, p2's prompt; resource files-1)"),
        "{text}"
    );
    assert!(
        text.contains("`files = [...]` is its whole file set (`[]` for none), `conflicts = false`"),
        "{text}"
    );
    assert!(text.contains("  1 p1  - X\n  2 p2  X -\n"), "{text}");
    assert!(
        text.contains(&format!("Backup: refs/orch/{id}/backup")),
        "{text}"
    );

    let mut workers = Workers::start(&env, &id);
    // One of the pair starts and waits at the gate. The other must not
    // start: wait until it did (the violation) or until everything else is
    // done and the three other workers wait with nothing they may take.
    let started = |j: &[String]| -> Vec<String> {
        j.iter()
            .filter_map(|l| l.strip_prefix("start "))
            .map(str::to_owned)
            .collect()
    };
    wait_until("the pair's first task to start", LONG, || {
        !started(&lines(&journal)).is_empty()
    });
    wait_until(
        "the other tasks to finish and the workers to idle",
        LONG,
        || {
            let both = started(&lines(&journal)).len() > 1;
            let others_done = (1..=6).all(|i| {
                env.session_dir(&id)
                    .join(format!("results/t{i}.json"))
                    .exists()
            });
            let waiting = worker_states(&env, &id)
                .values()
                .filter(|s| *s == "waiting")
                .count();
            both || (others_done && waiting == 3)
        },
    );
    let first = started(&lines(&journal));
    assert_eq!(
        first.len(),
        1,
        "both tasks of the conflicting pair started together: {first:?}"
    );
    fs::remove_file(&gate).unwrap();
    let status = workers.0.wait_timeout(LONG);
    assert!(status.success(), "workers failed: {:#?}", env.results(&id));

    let j = lines(&journal);
    let pos = |l: &str| {
        j.iter()
            .position(|x| x == l)
            .unwrap_or_else(|| panic!("{l} not in {j:?}"))
    };
    let (a, b) = if first[0] == "p1" {
        ("p1", "p2")
    } else {
        ("p2", "p1")
    };
    assert!(
        pos(&format!("end {a}")) < pos(&format!("start {b}")),
        "the pair overlapped: {j:?}"
    );

    // Every task succeeded on its own branch, in its own worktree.
    let results = env.results(&id);
    assert_eq!(results.len(), 8);
    for (task, r) in &results {
        assert_eq!(r["status"], "success", "{task}: {r:#}");
        let g = git_of(r);
        assert_eq!(g["branch"], format!("orch/{id}/{task}"));
        assert_eq!(
            g["worktree"].as_str().unwrap(),
            repo.join(".worktrees").join(task).to_str().unwrap()
        );
        assert_eq!(
            git(&env, &repo, &["rev-parse", &format!("orch/{id}/{task}")]),
            g["commit"].as_str().unwrap()
        );
        assert!(g["commits"].as_u64().unwrap() >= 1, "{r:#}");
    }
    for i in 1..=6 {
        let g = git_of(&results[&format!("t{i}")]);
        assert_eq!(g["committed_by_orch"], i % 2 == 0, "t{i}: {g}");
    }
    // The second of the pair built on the first's branch.
    assert_eq!(git_of(&results[b])["start"], git_of(&results[a])["commit"]);
    let listed = worktrees(&env, &repo);
    assert_eq!(listed.len(), 9, "{listed:?}");
    for task in results.keys() {
        let p = repo.join(".worktrees").join(task);
        assert!(
            listed.contains(&p.to_string_lossy().into_owned()),
            "{listed:?}"
        );
        assert!(env
            .session_dir(&id)
            .join(format!("worktrees/{task}.json"))
            .exists());
    }
    // The user's checkout saw none of it.
    assert_eq!(
        fs::read_to_string(repo.join("shared.txt")).unwrap(),
        "start\n"
    );
    assert!(!repo.join("f1.txt").exists());

    // One merge brings all 8 in, and one push updates the remote.
    let before = git(&env, &repo, &["rev-parse", "main"]);
    let out = output(orch(&env, "orch-sync").args(["merge", "--push", "origin", "--json"]));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let statuses: Vec<&str> = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    // Plan order: p1 first. If p1 ran second, its branch holds p2's
    // commit, so p2 comes in with it.
    let mut want = vec!["merged"; 8];
    if b == "p1" {
        want[1] = "already-merged";
        assert_eq!(
            report["tasks"][1]["reason"],
            "it came in with an earlier merge"
        );
    }
    assert_eq!(statuses, want, "{report:#}");
    assert_eq!(report["push"]["ok"], true, "{report:#}");
    let main = git(&env, &repo, &["rev-parse", "main"]);
    assert_ne!(main, before);
    assert_eq!(
        git(&env, &env.path("remote.git"), &["rev-parse", "main"]),
        main
    );
    assert_eq!(lines(&env.path("pushes.log")).len(), 1, "one push");
    assert_eq!(
        read_json(&env.session_dir(&id).join("status/git-merge.json")),
        report
    );
    // Each task is its own merge commit on main, in plan order.
    let merges = git(
        &env,
        &repo,
        &["log", "--merges", "--format=%s", &format!("{before}..main")],
    );
    assert_eq!(
        merges.lines().count(),
        if b == "p1" { 7 } else { 8 },
        "{merges}"
    );
    assert!(
        merges
            .lines()
            .last()
            .unwrap()
            .contains(&format!("orch/{id}/p1")),
        "{merges}"
    );
    // The checked-out main was brought forward: every file is there.
    for i in 1..=6 {
        assert_eq!(
            fs::read_to_string(repo.join(format!("f{i}.txt"))).unwrap(),
            format!("t{i}\n")
        );
    }
    let shared = fs::read_to_string(repo.join("shared.txt")).unwrap();
    assert_eq!(shared, format!("start\n{a}\n{b}\n"));
    assert!(git(
        &env,
        &repo,
        &["status", "--porcelain", "--untracked-files=no"]
    )
    .is_empty());

    // Running it again merges nothing, and pushes nothing new.
    let out = output(orch(&env, "orch-sync").args(["merge", "--push", "origin", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let again: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        again["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "already-merged"),
        "{again:#}"
    );
    assert_eq!(git(&env, &repo, &["rev-parse", "main"]), main);
    assert_eq!(lines(&env.path("pushes.log")).len(), 1, "no second push");

    // The monitor shows the worktrees, their branches and their size.
    let out = output(orch(&env, "orch-monitor").args(["--session", &id, "--json"]));
    let snap: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let wts = snap["git"]["worktrees"].as_array().unwrap();
    assert_eq!(wts.len(), 8, "{:#}", snap["git"]);
    assert!(wts
        .iter()
        .all(|w| w["state"] == "success" && w["branch"].as_str().unwrap().starts_with("orch/")));
    assert!(snap["git"]["worktrees_bytes"].as_u64().unwrap() > 0);
    assert!(
        snap["git"]["backup_ref"]
            .as_str()
            .is_some_and(|r| r.starts_with("refs/orch/")),
        "{:#}",
        snap["git"]
    );

    // Cleanup removes every worktree and says what it freed.
    let out = output(orch(&env, "orch-sync").args(["cleanup", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let c: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(c["removed"], 8, "{c:#}");
    assert!(c["freed_bytes"].as_u64().unwrap() > 0, "{c:#}");
    assert_eq!(
        worktrees(&env, &repo),
        vec![repo.to_string_lossy().into_owned()]
    );
    assert!(!repo.join(".worktrees").exists());
    for task in results.keys() {
        let rec = read_json(&env.session_dir(&id).join(format!("worktrees/{task}.json")));
        assert!(rec["removed"].is_string(), "{rec:#}");
        // The branches stay: they hold the work.
        git(
            &env,
            &repo,
            &["rev-parse", "--verify", &format!("orch/{id}/{task}")],
        );
    }
    assert!(damaged_files(&env.session_dir(&id)).is_empty());
}

/// Two tasks given overlapping edits without declaring their files: the
/// plan cannot see it, both run, and the merge reports the conflict with
/// its file, leaves nothing half-merged, and merges the others (also those
/// after it in plan order). Re-running reports the same; `--squash` into a
/// new branch works and is idempotent too.
#[test]
fn an_undeclared_conflict_is_reported_and_the_others_merge() {
    let env = Env::new();
    let repo = repo(&env, &[("shared.txt", "one\ntwo\nthree\n")]);
    let plan = "name = \"clash\"\nagents = 2\nworkspace = \"worktree\"\n\
        [[task]]\nid = \"x1\"\ncommand = \"sed -i s/two/TWO-x1/ shared.txt\"\n\
        [[task]]\nid = \"x2\"\ncommand = \"sed -i s/two/TWO-x2/ shared.txt\"\n\
        [[task]]\nid = \"ok\"\ncommand = \"echo ok > ok.txt\"\n";
    let (id, text) = plan_in_repo(&env, plan, &[]);
    assert!(!text.contains("File conflicts"), "{text}");
    let out = output(orch(&env, "orch-worker").args(["--session", &id, "--parallel", "2"]));
    assert!(out.status.success(), "{}", stderr(&out));

    // An uncommitted edit of the user's in a file the merge would change:
    // the merge refuses and changes nothing.
    let main = git(&env, &repo, &["rev-parse", "main"]);
    fs::write(repo.join("shared.txt"), "mine\n").unwrap();
    let out = output(orch(&env, "orch-sync").args(["merge", "--session", &id]));
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("cannot bring main, checked out in"),
        "{}",
        stderr(&out)
    );
    assert_eq!(git(&env, &repo, &["rev-parse", "main"]), main);
    assert_eq!(
        fs::read_to_string(repo.join("shared.txt")).unwrap(),
        "mine\n"
    );
    git(&env, &repo, &["checkout", "--", "shared.txt"]);

    let out = output(orch(&env, "orch-sync").args(["merge", "--session", &id, "--json"]));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let r: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let by: BTreeMap<&str, &Value> = r["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["task"].as_str().unwrap(), t))
        .collect();
    assert_eq!(by["x1"]["status"], "merged");
    assert_eq!(by["x2"]["status"], "conflict");
    assert_eq!(by["x2"]["files"], serde_json::json!(["shared.txt"]));
    assert_eq!(by["ok"]["status"], "merged");
    assert_eq!(
        fs::read_to_string(repo.join("shared.txt")).unwrap(),
        "one\nTWO-x1\nthree\n"
    );
    assert!(repo.join("ok.txt").exists());
    assert!(!repo.join(".git/MERGE_HEAD").exists());
    assert!(git(
        &env,
        &repo,
        &["status", "--porcelain", "--untracked-files=no"]
    )
    .is_empty());
    let text = output(orch(&env, "orch-sync").args(["merge", "--session", &id]));
    assert_eq!(text.status.code(), Some(1));
    let t = stdout(&text);
    assert!(t.contains("CONFLICT") && t.contains("in shared.txt"), "{t}");
    assert!(
        t.contains("0 merged, 2 already merged, 1 conflicting, 0 skipped"),
        "{t}"
    );

    // Squashed into a branch that does not exist yet: made at the base.
    let base = read_json(&env.session_dir(&id).join("session.json"))["git"]["base"]
        .as_str()
        .unwrap()
        .to_owned();
    let args = [
        "merge",
        "--session",
        &id,
        "--into",
        "integration",
        "--squash",
        "--json",
    ];
    let out = output(orch(&env, "orch-sync").args(args));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = git(
        &env,
        &repo,
        &["log", "--format=%s", &format!("{base}..integration")],
    );
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(git(
        &env,
        &repo,
        &["log", "--merges", "--format=%s", "integration"]
    )
    .is_empty());
    let again = output(orch(&env, "orch-sync").args(args));
    let r: Value = serde_json::from_str(&stdout(&again)).unwrap();
    assert_eq!(r["before"], r["after"], "{r:#}");
    let st: Vec<&str> = r["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(st, vec!["already-merged", "conflict", "already-merged"]);
}

/// Every file of `dir` (not `.git`): path to (kind and content, mode).
fn tree_of(dir: &Path) -> BTreeMap<String, (String, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if rel == ".git" {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap().to_string_lossy().into_owned();
                out.insert(rel, (format!("link {t}"), 0));
            } else if m.is_dir() {
                stack.push(p);
            } else {
                let bytes = fs::read(&p).unwrap();
                out.insert(rel, (format!("{bytes:?}"), m.permissions().mode() & 0o111));
            }
        }
    }
    out
}

/// The backup records the working tree exactly — modified, staged,
/// deleted, untracked, binary, executable-bit and symlink changes — without
/// touching the branch, the index or the files; restore-backup brings it
/// back into a new branch after the working tree was wiped.
#[test]
fn the_backup_restores_uncommitted_and_untracked_changes_exactly() {
    let env = Env::new();
    let repo = repo(
        &env,
        &[
            ("a.txt", "a\n"),
            ("b.txt", "b\n"),
            ("dir/c.txt", "c\n"),
            ("run.sh", "#!/bin/sh\n"),
            (".gitignore", "*.log\n"),
        ],
    );
    fs::set_permissions(repo.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    git(&env, &repo, &["add", "run.sh"]);
    std::os::unix::fs::symlink("a.txt", repo.join("link")).unwrap();
    git(&env, &repo, &["add", "link"]);
    git(&env, &repo, &["commit", "-q", "-m", "mode and link"]);
    // Uncommitted state.
    fs::write(repo.join("a.txt"), "a changed, not staged\n").unwrap();
    fs::write(repo.join("b.txt"), "b changed and staged\n").unwrap();
    git(&env, &repo, &["add", "b.txt"]);
    fs::remove_file(repo.join("dir/c.txt")).unwrap();
    fs::set_permissions(repo.join("run.sh"), fs::Permissions::from_mode(0o644)).unwrap();
    env.write("repo/new/deep/d.txt", "untracked\n");
    env.write("repo/with space.txt", "spaces\n");
    fs::write(repo.join("blob.bin"), [0u8, 159, 146, 150, 255, 10, 0]).unwrap();
    fs::remove_file(repo.join("link")).unwrap();
    std::os::unix::fs::symlink("b.txt", repo.join("link")).unwrap();
    env.write("repo/ignored.log", "ignored\n");
    env.write(
        "repo/plan.toml",
        "name = \"backup\"\n[[task]]\nid = \"t\"\ncommand = \"true\"\n",
    );

    let head = git(&env, &repo, &["rev-parse", "HEAD"]);
    let status = git(&env, &repo, &["status", "--porcelain=v2"]);
    let stage = git(&env, &repo, &["ls-files", "--stage"]);
    let index = fs::read(repo.join(".git/index")).unwrap();
    let files = tree_of(&repo);

    let out = output(orch(&env, "orch-plan").arg(repo.join("plan.toml")));
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).lines().last().unwrap().to_owned();
    let backup = format!("refs/orch/{id}/backup");
    // Nothing of the user's was touched.
    assert_eq!(git(&env, &repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(
        git(&env, &repo, &["symbolic-ref", "HEAD"]),
        "refs/heads/main"
    );
    assert_eq!(
        fs::read(repo.join(".git/index")).unwrap(),
        index,
        "the index changed"
    );
    assert_eq!(git(&env, &repo, &["status", "--porcelain=v2"]), status);
    assert_eq!(tree_of(&repo), files);
    let info = read_json(&env.session_dir(&id).join("session.json"));
    assert_eq!(info["git"]["base"], head.as_str());
    assert_eq!(info["git"]["dirty"], true);
    assert_eq!(info["git"]["backup_ref"], backup.as_str());
    assert_eq!(
        git(&env, &repo, &["rev-parse", &backup]),
        info["git"]["backup"].as_str().unwrap()
    );
    assert_eq!(
        git(&env, &repo, &["rev-parse", &format!("{backup}^")]),
        head
    );
    // The index backup is exactly what was staged.
    let staged: Vec<String> = git(&env, &repo, &["ls-tree", "-r", &format!("{backup}-index")])
        .lines()
        .map(|l| {
            let (meta, path) = l.split_once('\t').unwrap();
            let f: Vec<&str> = meta.split(' ').collect();
            format!("{} {} 0\t{path}", f[0], f[2])
        })
        .collect();
    assert_eq!(staged.join("\n"), stage);

    // Disaster, then recovery into a new branch and worktree.
    git(&env, &repo, &["reset", "-q", "--hard"]);
    git(&env, &repo, &["clean", "-q", "-fdx"]);
    assert_ne!(tree_of(&repo), files);
    let restored = env.path("restored");
    let out = output(orch(&env, "orch-sync").args([
        "restore-backup",
        "--session",
        &id,
        "--branch",
        "rescue",
        "--worktree",
        restored.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("git switch rescue"),
        "{}",
        stdout(&out)
    );
    let mut want = files.clone();
    want.remove("ignored.log");
    assert_eq!(tree_of(&restored), want);
    assert_eq!(git(&env, &restored, &["rev-parse", "HEAD~1"]), head);
    // The branch the user was on is where it was; a second restore into
    // the same branch is refused.
    assert_eq!(git(&env, &repo, &["rev-parse", "main"]), head);
    let again = output(orch(&env, "orch-sync").args([
        "restore-backup",
        "--session",
        &id,
        "--branch",
        "rescue",
    ]));
    assert_eq!(again.status.code(), Some(6), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("rescue exists already"),
        "{}",
        stderr(&again)
    );
}

/// Four workers create 32 worktrees, four at a time: the tasks of each
/// round of four meet at a checkpoint, so the four workers finish together
/// and all create their next worktree in the same instant. Git's own locks
/// and the half-written metadata of a neighbour's `git worktree add` must
/// never fail a task. The setup command runs in each new worktree, its
/// output in the task's log, and what it leaves is not committed for the
/// task.
#[test]
fn four_workers_creating_worktrees_at_once_never_fail() {
    let env = Env::new();
    let repo = repo(&env, &[("README.md", "hi\n")]);
    const ROUNDS: usize = 8;
    let sync = bin("orch-sync");
    let mut plan = String::from(
        "name = \"many\"\nagents = 4\nworkspace = \"worktree\"\n\
         setup = \"echo setting up $ORCH_TASK; mkdir -p node_modules && echo dep > node_modules/dep.js\"\n",
    );
    let round =
        |r: usize| -> Vec<String> { (4 * r..4 * r + 4).map(|i| format!("w{i:02}")).collect() };
    for r in 0..ROUNDS {
        let ids: Vec<String> = round(r).iter().map(|t| format!("\"{t}\"")).collect();
        plan += &format!("[checkpoint.r{r}]\nexpect = [{}]\n", ids.join(", "));
    }
    for r in 0..ROUNDS {
        for t in round(r) {
            plan += &format!(
                "[[task]]\nid = \"{t}\"\ncommand = \"echo $ORCH_TASK > $ORCH_TASK.txt && '{s}' arrive r{r} >/dev/null && '{s}' wait r{r} --proceed --timeout 10m >/dev/null\"\n",
                s = sync.display(),
            );
        }
    }
    let (id, _) = plan_in_repo(&env, &plan, &[]);
    let dir = env.session_dir(&id);
    let base = read_json(&dir.join("session.json"))["git"]["base"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut workers = Workers::start(&env, &id);
    let failed = || -> Vec<String> {
        env.results(&id)
            .iter()
            .filter(|(_, r)| r["status"] != "success")
            .map(|(t, r)| format!("{t}: {}", r["reason"]))
            .collect()
    };
    // Watch each round arrive; if a task fails, it never arrives: release
    // the rounds for it so the workers can finish, then report.
    for r in 0..ROUNDS {
        wait_until("a round of four to arrive, or a failure", LONG, || {
            round(r)
                .iter()
                .all(|t| dir.join(format!("checkpoints/r{r}/{t}.ready")).exists())
                || !failed().is_empty()
        });
        if !failed().is_empty() {
            for rest in r..ROUNDS {
                for t in round(rest) {
                    output(orch(&env, "orch-sync").args([
                        "arrive",
                        &format!("r{rest}"),
                        "--session",
                        &id,
                        "--as",
                        &t,
                    ]));
                }
            }
            break;
        }
    }
    let status = workers.0.wait_timeout(LONG);
    assert!(failed().is_empty(), "{:#?}", failed());
    assert!(status.success());
    let results = env.results(&id);
    assert_eq!(results.len(), 4 * ROUNDS);
    assert_eq!(worktrees(&env, &repo).len(), 4 * ROUNDS + 1);
    for i in 0..4 * ROUNDS {
        let task = format!("w{i:02}");
        let branch = format!("orch/{id}/{task}");
        let changed = git(&env, &repo, &["diff", "--name-only", &base, &branch]);
        assert_eq!(
            changed,
            format!("{task}.txt"),
            "{task} committed more than its file"
        );
        let log = fs::read_to_string(dir.join(format!("logs/{task}.log"))).unwrap();
        assert!(
            log.contains(&format!("[{task}] setting up {task}")),
            "{log}"
        );
        assert!(log.contains("--- setup done"), "{log}");
        assert!(repo
            .join(".worktrees")
            .join(&task)
            .join("node_modules/dep.js")
            .exists());
    }
    git(&env, &repo, &["fsck", "--no-progress"]);
    git(&env, &repo, &["worktree", "prune"]);
    assert_eq!(
        worktrees(&env, &repo).len(),
        4 * ROUNDS + 1,
        "worktrees git had to prune"
    );
}

/// A failing setup fails the task with its reason and the agent never
/// runs; a success that leaves no commit is `no-commit`, unless
/// require_commit = false; failed tasks keep their worktrees, and cleanup
/// keeps them (and the ones in use, and young ones with --older-than).
#[test]
fn setup_failure_no_commit_and_cleanup_of_what_is_not_in_use() {
    let env = Env::new();
    let repo = repo(&env, &[("README.md", "hi\n")]);
    let gate = env.path("gate");
    fs::write(&gate, "").unwrap();
    let plan = format!(
        "name = \"edge\"\nagents = 4\nworkspace = \"worktree\"\nbackoff = \"0s\"\nbreaker = 0\n\
         [[task]]\nid = \"badsetup\"\nsetup = \"echo cannot install >&2; exit 3\"\ncommand = \"touch ran.txt\"\n\
         [[task]]\nid = \"lazy\"\ncommand = \"true\"\n\
         [[task]]\nid = \"fine\"\ncommand = \"true\"\nrequire_commit = false\n\
         [[task]]\nid = \"again\"\nretries = 1\ncommand = \"test -e marker || {{ touch marker; exit 1; }}; echo ok > ok.txt\"\n\
         [[task]]\nid = \"wander\"\ncommand = \"git checkout -q -b elsewhere && echo w > w.txt\"\n\
         [[task]]\nid = \"busy\"\ncommand = \"echo x > x.txt; while [ -e '{}' ]; do sleep 0.01; done\"\n",
        gate.display()
    );
    let (id, _) = plan_in_repo(&env, &plan, &[]);
    let mut workers = Workers::start(&env, &id);
    let dir = env.session_dir(&id);
    wait_until("the quick tasks, and busy running", LONG, || {
        ["badsetup", "lazy", "fine", "wander", "again"]
            .iter()
            .all(|t| dir.join(format!("results/{t}.json")).exists())
            && repo.join(".worktrees/busy/x.txt").exists()
    });
    let results = env.results(&id);
    let bad = &results["badsetup"];
    assert_eq!(bad["status"], "failure");
    assert!(
        bad["reason"]
            .as_str()
            .unwrap()
            .starts_with("setup failed: exit code 3"),
        "{bad:#}"
    );
    let log = fs::read_to_string(dir.join("logs/badsetup.log")).unwrap();
    assert!(log.contains("[badsetup] cannot install"), "{log}");
    assert!(!repo.join(".worktrees/badsetup/ran.txt").exists());
    assert_eq!(results["lazy"]["status"], "failure");
    assert_eq!(results["lazy"]["reason"], "no-commit");
    assert_eq!(results["fine"]["status"], "success");
    // A retry continues in the same worktree: the first attempt's marker
    // is there, and the worktree was made once.
    assert_eq!(
        results["again"]["status"], "success",
        "{:#}",
        results["again"]
    );
    assert_eq!(results["again"]["attempt"], 2);
    let files = git(
        &env,
        &repo,
        &["ls-tree", "--name-only", &format!("orch/{id}/again")],
    );
    assert!(
        files.contains("marker") && files.contains("ok.txt"),
        "{files}"
    );
    let log = fs::read_to_string(dir.join("logs/again.log")).unwrap();
    assert_eq!(log.matches("--- worktree ").count(), 1, "{log}");
    let wander = results["wander"]["reason"].as_str().unwrap();
    assert!(
        wander.contains("left its worktree on elsewhere instead of branch"),
        "{wander}"
    );
    assert_eq!(git_of(&results["fine"])["commits"], 0);

    // Young worktrees stay with --older-than; the running one is in use.
    let out = output(orch(&env, "orch-sync").args([
        "cleanup",
        "--session",
        &id,
        "--older-than",
        "1h",
        "--json",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let c: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(c["removed"], 0, "{c:#}");
    let out = output(orch(&env, "orch-sync").args(["cleanup", "--session", &id, "--json"]));
    let c: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let by: BTreeMap<&str, &Value> = c["worktrees"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["task"].as_str().unwrap(), w))
        .collect();
    assert_eq!(by["fine"]["action"], "removed", "{c:#}");
    assert_eq!(by["again"]["action"], "removed", "{c:#}");
    let rec = read_json(&dir.join("worktrees/again.json"));
    assert!(
        rec["removed"].is_string() && rec["freed_bytes"].as_u64().unwrap() > 0,
        "{rec:#}"
    );
    assert_eq!(by["busy"]["action"], "kept");
    assert!(
        by["busy"]["reason"].as_str().unwrap().contains("in use"),
        "{c:#}"
    );
    for t in ["badsetup", "lazy"] {
        assert_eq!(by[t]["action"], "kept");
        assert!(by[t]["reason"]
            .as_str()
            .unwrap()
            .contains("kept for inspection"));
        assert!(repo.join(".worktrees").join(t).is_dir());
    }
    assert!(
        repo.join(".worktrees/busy/x.txt").exists(),
        "removed while in use"
    );
    fs::remove_file(&gate).unwrap();
    workers.0.wait_timeout(LONG);
    let out =
        output(orch(&env, "orch-sync").args(["cleanup", "--session", &id, "--failed", "--json"]));
    let c: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(c["removed"], 4, "{c:#}");

    assert_eq!(worktrees(&env, &repo).len(), 1);
}

/// Plans that cannot work in worktrees are refused with the file and line,
/// and nothing is created; import dependencies are reported, and ordered
/// with --import-deps.
#[test]
fn bad_worktree_plans_are_refused_and_imports_are_reported() {
    let env = Env::new();
    env.write("gitconfig", "");
    let outside = env.write(
        "norepo/plan.toml",
        "[[task]]\nid = \"a\"\ncommand = \"true\"\n\n[[task]]\nid = \"b\"\nworkspace = \"worktree\"\ncommand = \"true\"\n",
    );
    let out = output(orch(&env, "orch-plan").arg(&outside));
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("plan.toml:6: task `b` runs in a worktree")
            && err.contains("not in a git repository"),
        "{err}"
    );
    assert!(!env.root().exists() || fs::read_dir(env.root()).unwrap().next().is_none());

    let bad = env.write(
        "norepo/bad.toml",
        "[[task]]\nid = \"a\"\ncommand = \"true\"\nsetup = \"npm ci\"\n",
    );
    let out = output(orch(&env, "orch-plan").arg(&bad));
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("bad.toml:2:6: task `a` sets `setup` but does not run in a worktree"),
        "{}",
        stderr(&out)
    );
    let bad = env.write(
        "norepo/bad2.toml",
        "workspace = \"tree\"\n[[task]]\nid = \"a\"\ncommand = \"true\"\n",
    );
    let out = output(orch(&env, "orch-plan").arg(&bad));
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("bad2.toml:1:1: workspace = \"tree\" is not a workspace"),
        "{}",
        stderr(&out)
    );

    env.write("py/app/models.py", "class User: pass\n");
    env.write("py/app/views.py", "from app.models import User\n");
    let plan = env.write(
        "py/plan.toml",
        "[[task]]\nid = \"views\"\ncommand = \"true\"\nfiles = [\"app/views.py\"]\n\
         [[task]]\nid = \"models\"\nprompt = \"Add an email field to app/models.py\"\n",
    );
    let out = output(orch(&env, "orch-plan").arg(&plan).arg("--dry-run"));
    let text = stdout(&out);
    assert!(
        text.contains("views -> models: app/views.py imports app/models.py"),
        "{text}"
    );
    assert!(text.contains("--import-deps"), "{text}");
    assert!(text.contains("Wave 1 (2 tasks)"), "{text}");
    let out =
        output(
            orch(&env, "orch-plan")
                .arg(&plan)
                .args(["--dry-run", "--import-deps", "--json"]),
        );
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["conflicts"]["imports"][0]["ordered"], true, "{v:#}");
    assert_eq!(v["waves"], serde_json::json!([["models"], ["views"]]));
}

/// Cron users re-plan one repository all day: ten sessions in a row, each
/// with a task that fails and keeps its worktree, and plans without
/// worktrees between them, all plan (the backup skips `.worktrees`, even
/// once it is ignored and holds kept worktrees), run and merge.
#[test]
fn ten_sessions_in_a_row_on_one_repository_with_kept_failed_worktrees() {
    let env = Env::new();
    let repo = repo(&env, &[("README.md", "# day\n")]);
    for round in 1..=10 {
        let plan = format!(
            "name = \"tick\"\nworkspace = \"worktree\"\nbackup = true\n\
             [[task]]\nid = \"ok\"\ncommand = \"echo {round} > f{round}.txt\"\nfiles = [\"f{round}.txt\"]\n\
             [[task]]\nid = \"bad\"\ncommand = \"echo broken > b.txt; exit 1\"\nfiles = [\"b.txt\"]\n"
        );
        let (id, _) = plan_in_repo(&env, &plan, &[]);
        let out = output(orch(&env, "orch-worker").args(["--session", &id]));
        assert_eq!(
            out.status.code(),
            Some(1),
            "round {round}: {}",
            stderr(&out)
        );
        let results = env.results(&id);
        assert_eq!(results["ok"]["status"], "success", "round {round}");
        assert_eq!(results["bad"]["status"], "failure", "round {round}");
        // The failed task's worktree is kept, to look into.
        let kept = results["bad"]["data"]["git"]["worktree"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            Path::new(&kept).join("b.txt").exists(),
            "round {round}: {kept}"
        );
        let out = output(orch(&env, "orch-sync").args(["merge", "--session", &id]));
        assert!(
            out.status.success(),
            "round {round}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert_eq!(
            git(&env, &repo, &["show", &format!("main:f{round}.txt")]),
            round.to_string()
        );
        // A plan without worktrees in between never trips over them.
        if round % 3 == 0 {
            let (id, _) = plan_in_repo(
                &env,
                "name = \"shared\"\n[[task]]\nid = \"look\"\ncommand = \"ls .worktrees > seen.txt\"\n",
                &[],
            );
            let out = output(orch(&env, "orch-worker").args(["--session", &id]));
            assert!(out.status.success(), "round {round}: {}", stderr(&out));
        }
    }
    // Every session kept its backup; the user's files are as they were,
    // with the merged work.
    let refs = git(
        &env,
        &repo,
        &["for-each-ref", "--format=%(refname)", "refs/orch/"],
    );
    assert!(
        refs.lines().filter(|r| r.ends_with("/backup")).count() >= 10,
        "{refs}"
    );
    assert_eq!(
        fs::read_to_string(repo.join("README.md")).unwrap(),
        "# day\n"
    );
}

/// Competitions: a task after `compete:NAME` starts from the winner's
/// branch (never a loser's), a competition nobody wins skips what waits
/// for it, and `orch-sync merge` merges the winner only.
#[test]
fn a_competition_merges_its_winner_only_and_a_task_can_wait_for_the_winner() {
    let env = Env::new();
    let repo = repo(&env, &[("README", "x\n")]);
    let entrant = |id: &str, text: &str, score: u32| {
        format!(
            "[[task]]\nid = \"{id}\"\ncompete = \"impl\"\ncommand = \"echo {text} > impl.txt && echo '{{\\\"score\\\": {score}}}' > \\\"$ORCH_OUTPUT\\\"\"\n"
        )
    };
    let mut plan = "workspace = \"worktree\"\n".to_owned();
    plan += &entrant("fast", "fast", 40);
    plan += &entrant("good", "good", 90);
    plan += "[[task]]\nid = \"broken\"\ncompete = \"impl\"\ncommand = \"exit 1\"\n";
    plan += "[[task]]\nid = \"review\"\nafter = [\"compete:impl\"]\ncommand = \"cat impl.txt > review.txt\"\n";
    plan += "[[task]]\nid = \"x1\"\ncompete = \"doomed\"\ncommand = \"exit 1\"\n";
    plan += "[[task]]\nid = \"x2\"\ncompete = \"doomed\"\ncommand = \"exit 2\"\n";
    plan += "[[task]]\nid = \"after-doomed\"\nafter = [\"compete:doomed\"]\ncommand = \"true\"\n";
    let (id, text) = plan_in_repo(&env, &plan, &[]);
    // The analysis counts the wait: review is in the wave after the entrants.
    assert!(
        text.contains("Wave 2 (2 tasks): review, after-doomed"),
        "{text}"
    );
    let out = output(orch(&env, "orch-worker").args(["--session", &id, "--parallel", "3"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let results = env.results(&id);
    assert_eq!(results["review"]["status"], "success", "{results:#?}");
    assert_eq!(results["after-doomed"]["status"], "skipped");
    assert_eq!(
        results["after-doomed"]["reason"],
        "competition `doomed` has no winner: no entrant succeeded"
    );
    // review's branch starts from the winner's, not the loser's.
    let review_branch = format!("orch/{id}/review");
    assert_eq!(
        git(
            &env,
            &repo,
            &["show", &format!("{review_branch}:review.txt")]
        ),
        "good"
    );
    let merged = output(orch(&env, "orch-sync").args(["merge", "--session", &id, "--json"]));
    let v: Value = serde_json::from_slice(&merged.stdout).unwrap();
    let status = |t: &str| -> (String, String) {
        let e = v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["task"] == t)
            .unwrap();
        (
            e["status"].as_str().unwrap().to_owned(),
            e["reason"].as_str().unwrap_or("").to_owned(),
        )
    };
    assert_eq!(status("good").0, "merged", "{v:#}");
    assert_eq!(status("review").0, "merged", "{v:#}");
    assert_eq!(
        status("fast"),
        (
            "skipped".to_owned(),
            "lost competition `impl` to good".to_owned()
        )
    );
    assert_eq!(git(&env, &repo, &["show", "main:impl.txt"]), "good");
    assert_eq!(git(&env, &repo, &["show", "main:review.txt"]), "good");

    // Waiting for a competition nobody enters, or one's own, is refused.
    for (bad, words) in [
        ("[[task]]\nid = \"a\"\ncompete = \"impl\"\ncommand = \"true\"\n[[task]]\nid = \"b\"\nafter = [\"compete:imp\"]\ncommand = \"true\"\n", "waits for competition `imp`, which no task enters (fix: did you mean `compete:impl`?)"),
        ("[[task]]\nid = \"a\"\ncompete = \"impl\"\nafter = [\"compete:impl\"]\ncommand = \"true\"\n", "enters competition `impl` and waits for its winner"),
    ] {
        let p = env.write("repo/bad.toml", bad);
        let out = output(orch(&env, "orch-plan").arg(&p).arg("--dry-run"));
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(stderr(&out).contains(words), "{}", stderr(&out));
    }
}
