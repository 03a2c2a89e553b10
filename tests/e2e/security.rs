//! Security: private files, symlinks never followed for writing, names
//! that could escape refused everywhere, secrets never written.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::support::*;

/// Every file and directory under `dir` whose mode lets group or others in.
fn too_open(dir: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let m = fs::symlink_metadata(e.path()).unwrap();
            if m.file_type().is_symlink() {
                continue;
            }
            if m.mode() & 0o077 != 0 {
                bad.push(format!("{:o} {}", m.mode() & 0o777, e.path().display()));
            }
            // output/ holds what tasks write themselves (ORCH_OUTPUT), with
            // their own umask; the directory is checked, not their files.
            if m.is_dir() && e.file_name() != "output" {
                stack.push(e.path());
            }
        }
    }
    bad
}

#[test]
fn every_file_a_session_makes_is_private_and_wider_modes_are_warned_about() {
    let env = Env::new();
    let id = env.plan(
        "[checkpoint.cp]\nexpect = [\"a\"]\n[resource.r]\ncapacity = 1\n[[task]]\nid = \"a\"\nresources = [\"r\"]\ncommand = \"orch-sync arrive cp; orch-sync set k 1; orch-sync send --to b hi; echo '{\\\"summary\\\": \\\"x\\\"}' > $ORCH_OUTPUT\"\n[[task]]\nid = \"b\"\nafter = [\"checkpoint:cp\"]\ncommand = \"orch-sync recv --as b\"\n",
    );
    let dir = env.session_dir(&id);
    let path = format!(
        "{}:{}",
        bin("orch-sync").parent().unwrap().display(),
        std::env::var("PATH").unwrap()
    );
    // A permissive umask must not widen anything orch creates.
    let out = output(
        env.sh(&format!(
            "umask 000; exec '{}'",
            bin("orch-worker").display()
        ))
        .env("PATH", &path),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(env.results(&id).len(), 2);
    assert_eq!(too_open(&env.root()), Vec::<String>::new());
    // Someone opened it up: the next worker says so.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let out = env.run("orch-worker", &["--session", &id]);
    assert!(
        stderr(&out).contains("is readable by other users"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn symlinks_planted_where_orch_writes_are_never_followed() {
    let env = Env::new();
    let victim = env.write("victim", "do not touch\n");
    let id = env.plan(
        "[[task]]\nid = \"r\"\ncommand = \"true\"\n[[task]]\nid = \"c\"\ncommand = \"true\"\n[[task]]\nid = \"l\"\ncommand = \"true\"\n",
    );
    let dir = env.session_dir(&id);
    // A planted result, claim and log, before the worker runs.
    symlink(&victim, dir.join("results/r.json")).unwrap();
    symlink(&victim, dir.join("claims/c.json")).unwrap();
    symlink(&victim, dir.join("logs/l.log")).unwrap();
    symlink(&victim, dir.join("status/orchestration.yaml")).unwrap();
    fs::create_dir_all(dir.join("checkpoints/cp")).unwrap();
    symlink(&victim, dir.join("checkpoints/cp/a.ready")).unwrap();
    fs::create_dir_all(dir.join("messages/m")).unwrap();
    symlink(&victim, dir.join("messages/m/000000000001.json")).unwrap();
    symlink(&victim, dir.join("shared-memory/k.json")).unwrap();
    let _ = output(&mut env.cmd("orch-worker"));
    assert!(env
        .run("orch-sync", &["arrive", "cp", "--as", "a"])
        .status
        .success());
    assert!(env
        .run("orch-sync", &["send", "--to", "m", "hello"])
        .status
        .success());
    assert!(env.run("orch-sync", &["set", "k", "v"]).status.success());
    assert_eq!(
        fs::read_to_string(&victim).unwrap(),
        "do not touch\n",
        "a symlink was written through"
    );
    // The claim and the others were replaced by real files, not followed.
    for p in [
        "checkpoints/cp/a.ready",
        "shared-memory/k.json",
        "status/orchestration.yaml",
    ] {
        assert!(
            !fs::symlink_metadata(dir.join(p))
                .unwrap()
                .file_type()
                .is_symlink(),
            "{p} still a link"
        );
    }
    // The planted result blocks its task (it is not a result) but stays.
    assert!(fs::symlink_metadata(dir.join("results/r.json"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(read_json(&dir.join("results/c.json"))["status"], "success");
    let l = read_json(&dir.join("results/l.json"));
    assert_eq!(l["status"], "failure");
    assert!(
        l["reason"]
            .as_str()
            .unwrap()
            .contains("cannot open its log"),
        "{l}"
    );
    // The planted message number was skipped: the message is number 2.
    assert!(dir.join("messages/m/000000000002.json").exists());
}

#[test]
fn names_that_could_escape_are_refused_by_every_binary() {
    let env = Env::new();
    env.plan("[[task]]\nid = \"t\"\ncommand = \"true\"\n");
    for args in [
        vec!["orch-claim", "--task", "../x"],
        vec!["orch-claim", "done", "a/b"],
        vec!["orch-claim", "--task=-rf"],
        vec!["orch-sync", "arrive", "../cp", "--as", "a"],
        vec!["orch-sync", "arrive", "cp", "--as=../a"],
        vec!["orch-sync", "arrive", "cp", "--as=-a"],
        vec![
            "orch-sync",
            "wait",
            "cp",
            "--expect",
            "a/b",
            "--timeout",
            "1ms",
        ],
        vec!["orch-sync", "set", "../k", "1"],
        vec!["orch-sync", "get", "a/b"],
        vec!["orch-sync", "send", "--to", "../x", "hi"],
        vec!["orch-sync", "send", "--to=-x", "hi"],
        vec!["orch-sync", "recv", "--as", "a/../b"],
        vec!["orch-sync", "lock", "../x", "--", "true"],
    ] {
        let out = env.run(args[0], &args[1..]);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("invalid"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(!env.root().join("x").exists() && !env.root().join("k.json").exists());
}

#[test]
fn secret_values_from_the_environment_are_never_written_by_orch() {
    let env = Env::new();
    let secret = "sk-very-secret-0123456789";
    let id = env.plan(
        "[[task]]\nid = \"s\"\ncommand = \"test \\\"$API_TOKEN\\\" = \\\"$EXPECTED\\\" && echo token ok\"\nenv = { API_TOKEN = \"${API_TOKEN}\" }\n",
    );
    let out = output(
        env.cmd("orch-worker")
            .env("API_TOKEN", secret)
            .env("EXPECTED", secret),
    );
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(env.results(&id)["s"]["status"], "success");
    let mut stack = vec![env.root()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let bytes = fs::read(e.path()).unwrap_or_default();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(secret),
                    "the secret was written to {}",
                    e.path().display()
                );
            }
        }
    }
    // And a literal secret in a plan is refused before anything is made.
    let p = env.write(
        "bad.toml",
        "[[task]]\nid = \"x\"\ncommand = \"true\"\nenv = { DB_PASSWORD = \"hunter2\" }\n",
    );
    let out = env.run("orch-plan", &[p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("looks secret"), "{}", stderr(&out));
}
