//! The first run (issue 17): `scripts/demo.sh` end to end, as a new user
//! runs it — a release build and install, the demo session, and the
//! commands it prints to look around, run verbatim in a new shell.
//!
//! Only with ORCH_LONG_TESTS=1: it builds a release install (minutes the
//! first time). The script runs from a copy of this source tree, a git
//! repository of its own (files changed here, and an untracked one), so
//! that its refs, status and worktrees can be compared before and after
//! while other work goes on in this tree. The copy has the sources'
//! modification times, sits at a fixed place under the target directory
//! (removed at the end) and builds into it (`CARGO_TARGET_DIR`): a second
//! run rebuilds only what changed. HOME and PREFIX are temporary; cargo's and
//! rustup's homes stay the real ones.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{output_within, stderr, stdout};

/// The workspace's target directory, where the release build is cached.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=orch-test",
            "-c",
            "user.email=orch-test@localhost",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Copies the source tree as git sees it (tracked and untracked files, not
/// ignored ones, not deleted ones) into `dest`, keeping modification times.
fn copy_tree(src: &Path, dest: &Path) {
    let listed = git(
        src,
        &[
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
    );
    for rel in listed.split('\0').filter(|r| !r.is_empty()) {
        let from = src.join(rel);
        let Ok(meta) = fs::symlink_metadata(&from) else {
            continue; // deleted in the working tree
        };
        let to = dest.join(rel);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from).unwrap(), &to).unwrap();
        } else if meta.is_file() {
            fs::copy(&from, &to).unwrap();
            let f = fs::File::options().write(true).open(&to).unwrap();
            f.set_modified(meta.modified().unwrap()).unwrap();
        }
    }
}

/// What must not change in the user's clone.
fn clone_state(clone: &Path) -> String {
    [
        git(clone, &["for-each-ref"]),
        git(
            clone,
            &[
                "status",
                "--porcelain=v1",
                "--untracked-files=all",
                "--ignored",
            ],
        ),
        git(clone, &["worktree", "list", "--porcelain"]),
    ]
    .join("\n")
}

/// The real home's cargo and rustup directories, unless set already.
fn toolchain_env(cmd: &mut Command) {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    for (var, default) in [("CARGO_HOME", ".cargo"), ("RUSTUP_HOME", ".rustup")] {
        let dir = std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(default));
        if dir.is_dir() {
            cmd.env(var, dir);
        }
    }
}

#[test]
fn the_demo_runs_in_its_own_root_and_leaves_the_clone_untouched_long() {
    if std::env::var_os("ORCH_LONG_TESTS").is_none() {
        eprintln!("skipped: set ORCH_LONG_TESTS=1 to run the demo (a release build, minutes)");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("orch-demo-")
        .tempdir()
        .unwrap();
    let home = tmp.path().join("home");
    let prefix = tmp.path().join("prefix");
    fs::create_dir_all(&home).unwrap();

    // The user's clone: committed, with a change and an untracked file.
    let clone = target_dir().join("e2e-demo/clone");
    if clone.exists() {
        fs::remove_dir_all(&clone).unwrap();
    }
    let _remove = RemoveOnDrop(clone.clone());
    copy_tree(Path::new(env!("CARGO_MANIFEST_DIR")), &clone);
    git(&clone, &["init", "--quiet"]);
    git(&clone, &["add", "-A"]);
    git(&clone, &["commit", "--quiet", "-m", "the user's clone"]);
    git(&clone, &["tag", "v0"]);
    fs::write(clone.join("notes.txt"), "mine\n").unwrap();
    let readme = fs::read_to_string(clone.join("README.md")).unwrap();
    fs::write(clone.join("README.md"), readme + "\nan edit of mine\n").unwrap();
    let before = clone_state(&clone);

    let mut cmd = Command::new("sh");
    cmd.arg(clone.join("scripts/demo.sh"))
        .current_dir(&clone)
        .env("HOME", &home)
        .env("PREFIX", &prefix)
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("ORCH_HOME")
        .env_remove("ORCH_SESSION")
        .env_remove("XDG_STATE_HOME")
        .stdin(std::process::Stdio::null());
    toolchain_env(&mut cmd);
    let out = output_within(&mut cmd, Duration::from_secs(20 * 60));
    let text = stdout(&out);
    let context = format!("stdout:\n{text}\nstderr:\n{}", stderr(&out));
    assert!(out.status.success(), "demo failed: {context}");

    // It showed the build as it went, in plain ASCII on a pipe.
    assert!(text.contains("== 1/4 build and install"), "{context}");
    assert!(
        stderr(&out).contains("Finished `release` profile"),
        "{context}"
    );
    assert!(
        text.is_ascii() && !text.contains('\x1b'),
        "not plain ASCII on a pipe: {text}"
    );
    for b in ["orch-plan", "orch-worker", "orch-monitor", "orch-aggregate"] {
        assert!(prefix.join("bin").join(b).is_file(), "{b} not installed");
    }

    // The root it announced: the stable default under the (temporary) home,
    // holding the session; the retried task shown.
    let root = home.join(".local/state/orch-demo");
    assert!(
        text.lines()
            .any(|l| l == format!("export ORCH_HOME={}", root.display())),
        "no export line for {}: {context}",
        root.display()
    );
    let sessions: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("session-").map(str::to_owned)
        })
        .collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let id = &sessions[0];
    assert!(
        text.contains("docs failed its first attempt and was retried"),
        "{context}"
    );

    // orch-monitor and orch-aggregate find it with that ORCH_HOME alone.
    for (bin, args) in [
        ("orch-monitor", &["-s", "demo"][..]),
        ("orch-monitor", &[][..]),
        ("orch-aggregate", &[][..]),
    ] {
        let o = output_within(
            Command::new(prefix.join("bin").join(bin))
                .args(args)
                .env("HOME", &home)
                .env("ORCH_HOME", &root)
                .env_remove("ORCH_SESSION")
                .env("NO_COLOR", "1")
                .current_dir(tmp.path()),
            Duration::from_secs(60),
        );
        assert!(
            o.status.success() && stdout(&o).contains(id.as_str()),
            "{bin} {args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
    }

    // The commands it ends with work as printed, in a new shell.
    let (_, tour) = text.split_once("== look around\n").expect("look around");
    let o = output_within(
        Command::new("sh")
            .args(["-e", "-c", tour])
            .env("HOME", &home)
            .env_remove("ORCH_HOME")
            .env_remove("ORCH_SESSION")
            .current_dir(tmp.path()),
        Duration::from_secs(60),
    );
    assert!(
        o.status.success(),
        "the printed commands failed:\n{tour}\n{}{}",
        stdout(&o),
        stderr(&o)
    );
    let shown = stdout(&o);
    assert!(
        shown.contains(&format!("Session {id} (demo): finished")),
        "{shown}"
    );
    assert!(shown.contains("8 tasks: 8 succeeded"), "{shown}");
    assert!(shown.contains("package success"), "{shown}");

    // The clone: the same refs, status and worktrees as before.
    assert_eq!(clone_state(&clone), before, "the demo touched the clone");
}

/// Removes the copy, passed or failed: the build's dependency records
/// name its files, and a copy left behind would let cargo take its
/// artifacts as fresh for this tree once this tree has moved on.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
