//! Trust: no directory inside a session is ever written through when it is
//! a symbolic link, and a root or session another user controls is refused
//! before anything in it is read or run.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::*;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The uid the tests give away directories to.
const NOBODY: u32 = 65534;

/// A directory outside the session that must stay empty.
fn outside(env: &Env) -> PathBuf {
    let p = env.path("outside");
    fs::create_dir_all(&p).unwrap();
    p
}

/// Puts a symlink to `target` at `rel` in session directory `dir`, in place
/// of whatever is there; returns the link.
fn plant(dir: &Path, rel: &str, target: &Path) -> PathBuf {
    let p = dir.join(rel);
    if fs::symlink_metadata(&p).is_ok() {
        fs::remove_dir_all(&p).unwrap();
    }
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    symlink(target, &p).unwrap();
    p
}

/// What is in `dir`, for messages.
fn listing(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The command failed with exit 5 and one error line naming `link` as a
/// symlink and where it points; nothing appeared in `outside`.
fn assert_refused(what: &str, out: &Output, link: &Path, outside: &Path) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(5), "{what}: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "{what}: {err}");
    let want = format!("refusing to write through `{}`", link.display());
    assert!(
        errors[0].contains(&want)
            && errors[0].contains("symbolic link")
            && errors[0].contains(&outside.display().to_string()),
        "{what}: {err}"
    );
    assert_eq!(
        listing(outside),
        Vec::<String>::new(),
        "{what}: written through {}",
        link.display()
    );
}

#[test]
fn a_symlinked_checkpoint_directory_is_never_written_through() {
    let env = Env::new();
    let id = env.plan("[[task]]\nid = \"t\"\ncommand = \"true\"\n");
    let out_dir = outside(&env);
    let link = plant(&env.session_dir(&id), "checkpoints/api", &out_dir);
    let out = env.run("orch-sync", &["arrive", "api", "--as", "backend"]);
    assert_refused("arrive", &out, &link, &out_dir);
    let out = env.run(
        "orch-sync",
        &["wait", "api", "--expect", "backend", "--timeout", "1ms"],
    );
    assert_refused("wait --expect", &out, &link, &out_dir);
    // The link is left for a person to look at.
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_symlinked_mailbox_is_never_written_through() {
    let env = Env::new();
    let id = env.plan("[[task]]\nid = \"t\"\ncommand = \"true\"\n");
    let out_dir = outside(&env);
    let link = plant(&env.session_dir(&id), "messages/frontend", &out_dir);
    let out = env.run("orch-sync", &["send", "--to", "frontend", "contract ready"]);
    assert_refused("send", &out, &link, &out_dir);
    let out = env.run("orch-sync", &["recv", "--as", "frontend"]);
    assert_refused("recv", &out, &link, &out_dir);
}

#[test]
fn a_symlinked_shared_memory_directory_is_never_written_through() {
    let env = Env::new();
    let id = env.plan("[[task]]\nid = \"t\"\ncommand = \"true\"\n");
    let out_dir = outside(&env);
    let link = plant(&env.session_dir(&id), "shared-memory", &out_dir);
    let out = env.run("orch-sync", &["set", "api.port", "8080"]);
    assert_refused("set", &out, &link, &out_dir);
    let out = env.run("orch-sync", &["cas", "api.port", "null", "1"]);
    assert_refused("cas", &out, &link, &out_dir);
    // Removing goes through no link either: a file of the same name
    // outside stays.
    fs::write(out_dir.join("api.port.json"), "keep").unwrap();
    let out = env.run("orch-sync", &["unset", "api.port"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(out_dir.join("api.port.json")).unwrap(),
        "keep"
    );
}

#[test]
fn a_symlinked_history_directory_is_never_written_through() {
    let env = Env::new();
    let id = env.plan("[[task]]\nid = \"f\"\ncommand = \"false\"\nretries = 1\n");
    let out_dir = outside(&env);
    let link = plant(&env.session_dir(&id), "history/f", &out_dir);
    // The first attempt fails and is archived before the retry: refused.
    let out = env.run("orch-worker", &["--session", &id]);
    assert_refused("worker", &out, &link, &out_dir);
}

#[test]
fn symlinked_top_level_directories_are_never_written_through() {
    for dir in ["locks", "status", "results"] {
        let env = Env::new();
        let marker = env.path("ran");
        let id = env.plan(&format!(
            "[[task]]\nid = \"t\"\ncommand = \"touch '{}'\"\n",
            marker.display()
        ));
        let out_dir = outside(&env);
        let link = plant(&env.session_dir(&id), dir, &out_dir);
        let out = env.run("orch-worker", &["--session", &id]);
        assert_refused(&format!("orch-worker with {dir}/"), &out, &link, &out_dir);
        if dir == "locks" {
            // Refused before anything ran.
            assert!(!marker.exists(), "orch-worker with {dir}/ ran the task");
        }
    }
}

#[test]
fn symlinked_directories_the_worker_carries_on_without_are_never_written_through() {
    // A claim that cannot be written leaves its task out, a log that cannot
    // be opened fails its task, the journal is a cache: the worker goes on,
    // and writes nothing through the link.
    for dir in ["claims", "logs", "index"] {
        let env = Env::new();
        let id = env.plan("[[task]]\nid = \"t\"\ncommand = \"true\"\n");
        let out_dir = outside(&env);
        let link = plant(&env.session_dir(&id), dir, &out_dir);
        let out = env.run("orch-worker", &["--session", &id]);
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            dir == "index"
                || all.contains(&format!("refusing to write through `{}`", link.display())),
            "orch-worker with {dir}/: {all}"
        );
        assert_eq!(listing(&out_dir), Vec::<String>::new(), "{dir}/");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}

#[test]
fn a_hand_claim_never_records_through_a_symlinked_directory() {
    let env = Env::new();
    let id = env.plan("[[task]]\nid = \"t\"\ncommand = \"true\"\n");
    let owner = Guard::new(
        Command::new("sleep")
            .arg("1000")
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = env.run("orch-claim", &["--pid", &owner.pid().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "t");
    let out_dir = outside(&env);
    let link = plant(&env.session_dir(&id), "results", &out_dir);
    let out = env.run("orch-claim", &["done", "t", "--summary", "done by hand"]);
    assert_refused("orch-claim done", &out, &link, &out_dir);
}

/// Sets `path`'s owner to `uid` (as root).
fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), None).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A session with one task that leaves `ran` in the test's directory.
fn planted_session(env: &Env) -> (String, PathBuf) {
    let marker = env.path("ran");
    let id = env.plan(&format!(
        "[[task]]\nid = \"t\"\ncommand = \"touch '{}'\"\n",
        marker.display()
    ));
    (id, marker)
}

/// `bin` refused `dir` with exit 5, naming it, `owner` and `mode`, and ran
/// nothing.
fn assert_untrusted(env: &Env, id: &str, marker: &Path, dir: &Path, owner: &str, mode: &str) {
    for (bin, args) in [
        ("orch-worker", vec!["--session", id]),
        ("orch-worker", vec![]),
        ("orch-claim", vec!["--session", id]),
        ("orch-claim", vec![]),
    ] {
        let out = env.run(bin, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(5), "{bin} {args:?}: {err}");
        let line = err.lines().find(|l| l.contains("error:")).unwrap_or("");
        assert!(
            line.contains(&format!("refusing to use `{}`", dir.display()))
                && line.contains(owner)
                && line.contains(&format!("mode {mode}")),
            "{bin} {args:?}: {err}"
        );
    }
    assert!(!marker.exists(), "a task ran");
    assert_eq!(env.results(id).len(), 0);
}

#[test]
fn a_root_owned_by_another_user_is_refused() {
    if !is_root() {
        return skip("giving a directory to another user needs root");
    }
    let env = Env::new();
    let (id, marker) = planted_session(&env);
    chown(&env.root(), NOBODY);
    assert_untrusted(&env, &id, &marker, &env.root(), "uid 65534", "0700");
    // Nor is a session planned there.
    let out = env.run("orch-plan", &[env.path("plan.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    chown(&env.root(), 0);
}

#[test]
fn a_root_others_can_write_is_refused() {
    let env = Env::new();
    let (id, marker) = planted_session(&env);
    chmod(&env.root(), 0o777);
    assert_untrusted(&env, &id, &marker, &env.root(), "owner", "0777");
    let out = env.run("orch-plan", &[env.path("plan.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("mode 0777"), "{}", stderr(&out));
    assert_eq!(listing(&env.root()).len(), 1, "a session was planned");
    chmod(&env.root(), 0o700);
}

#[test]
fn a_session_owned_by_another_user_is_refused() {
    if !is_root() {
        return skip("giving a directory to another user needs root");
    }
    let env = Env::new();
    let (id, marker) = planted_session(&env);
    let dir = env.session_dir(&id);
    chown(&dir, NOBODY);
    assert_untrusted(&env, &id, &marker, &dir, "uid 65534", "0700");
    chown(&dir, 0);
}

#[test]
fn a_session_others_can_write_is_refused() {
    let env = Env::new();
    let (id, marker) = planted_session(&env);
    let dir = env.session_dir(&id);
    chmod(&dir, 0o777);
    assert_untrusted(&env, &id, &marker, &dir, "owner", "0777");
    // Named by its path too.
    let out = env.run("orch-worker", &["--session", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(!marker.exists());
    chmod(&dir, 0o700);
}

#[test]
fn a_session_that_is_a_symlink_is_refused() {
    let env = Env::new();
    let (id, marker) = planted_session(&env);
    // The real session moved away; its name in the root is a link to it.
    let dir = env.session_dir(&id);
    let moved = env.path("elsewhere");
    fs::rename(&dir, &moved).unwrap();
    symlink(&moved, &dir).unwrap();
    for args in [vec!["--session", id.as_str()], vec![]] {
        let out = env.run("orch-worker", &args);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("refusing to use `{}`", dir.display()))
                && stderr(&out).contains("symbolic link"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!marker.exists());
}

#[test]
fn another_users_unreadable_session_is_permission_denied_not_no_session() {
    if !is_root() {
        return skip("running as another user needs root");
    }
    let env = Env::new();
    let (id, _) = planted_session(&env);
    // The root is nobody's; the session in it is root's, private.
    chown(env.dir.path(), NOBODY);
    chown(&env.root(), NOBODY);
    let as_nobody = |name: &str, args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(bin(name))
            .args(args)
            .env("ORCH_HOME", env.root())
            .env("HOME", env.dir.path())
            .env_remove("ORCH_SESSION");
        output(&mut c)
    };
    for (bin, args) in [
        ("orch-claim", vec!["--session", id.as_str()]),
        ("orch-worker", vec!["--session", id.as_str()]),
        ("orch-claim", vec![]),
    ] {
        let out = as_nobody(bin, &args);
        assert_eq!(
            out.status.code(),
            Some(5),
            "{bin} {args:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("Permission denied")
                && stderr(&out).contains(&env.session_dir(&id).display().to_string()),
            "{bin} {args:?}: {}",
            stderr(&out)
        );
    }
    chown(&env.root(), 0);
    chown(env.dir.path(), 0);
}
