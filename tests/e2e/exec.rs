//! How a task's command is started: a plain command without a shell, as
//! make does; anything with shell syntax, and a plain command whose
//! program cannot be started, with `sh -c`.

use std::fs;

use crate::support::*;

/// A `sh` first in `PATH` that notes every command line it is given and
/// then is the real shell: what went through a shell is in `sh.calls`.
fn noting_shell(env: &Env) -> std::path::PathBuf {
    let calls = env.path("sh.calls");
    env.script(
        "bin/sh",
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec /bin/sh \"$@\"\n",
            calls.display()
        ),
    );
    calls
}

#[test]
fn plain_commands_start_without_a_shell_and_the_rest_keep_it() {
    let env = Env::new();
    let calls = noting_shell(&env);
    let work = env.path("work");
    fs::create_dir_all(&work).unwrap();
    env.write("not-executable.sh", "#!/bin/sh\necho ran\n");
    let id = env.plan(
        "name = \"exec\"\n\
         [[task]]\nid = \"plain\"\ncommand = \"printenv PWD ORCH_TASK\"\ncwd = \"work\"\n\
         [[task]]\nid = \"shelled\"\ncommand = \"echo shell:$ORCH_TASK\"\n\
         [[task]]\nid = \"missing\"\ncommand = \"no-such-program-for-orch --flag\"\n\
         [[task]]\nid = \"builtin\"\ncommand = \"cd /\"\n\
         [[task]]\nid = \"noexec\"\ncommand = \"./not-executable.sh\"\n",
    );
    let out = env.run("orch-worker", &["--session", &id, "--parallel", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let res = env.results(&id);
    assert_eq!(res["plain"]["status"], "success", "{:?}", res["plain"]);
    assert_eq!(res["shelled"]["status"], "success");
    assert_eq!(res["builtin"]["status"], "success");
    // The missing program fails as it did under `sh -c`: 127, and the
    // shell's own words in the log.
    assert_eq!(res["missing"]["status"], "failure");
    assert_eq!(res["missing"]["exit_code"], 127, "{:?}", res["missing"]);
    let missing_log = fs::read_to_string(env.session_dir(&id).join("logs/missing.log")).unwrap();
    assert!(
        missing_log.contains("no-such-program-for-orch: not found"),
        "{missing_log}"
    );

    // A program that is there but cannot be executed: 126, as sh says.
    assert_eq!(res["noexec"]["exit_code"], 126, "{:?}", res["noexec"]);
    let noexec_log = fs::read_to_string(env.session_dir(&id).join("logs/noexec.log")).unwrap();
    assert!(noexec_log.contains("Permission denied"), "{noexec_log}");

    let shell_calls = fs::read_to_string(&calls).unwrap_or_default();
    let lines: Vec<&str> = shell_calls.lines().collect();
    assert!(lines.contains(&"-c echo shell:$ORCH_TASK"), "{shell_calls}");
    assert!(lines.contains(&"-c cd /"), "{shell_calls}");
    assert!(
        lines.contains(&"-c no-such-program-for-orch --flag"),
        "{shell_calls}"
    );
    assert!(lines.contains(&"-c ./not-executable.sh"), "{shell_calls}");
    assert!(!shell_calls.contains("printenv"), "{shell_calls}");

    // The plain command saw what a shell would have exported: PWD is its
    // working directory.
    let plain_log = fs::read_to_string(env.session_dir(&id).join("logs/plain.log")).unwrap();
    let real = fs::canonicalize(&work).unwrap();
    assert!(
        plain_log.contains(&format!("{}\n", real.display())),
        "{plain_log}"
    );
    assert!(plain_log.contains("plain\n"), "{plain_log}");
    // And its log says what was started.
    assert!(
        plain_log.contains("): printenv PWD ORCH_TASK"),
        "{plain_log}"
    );
    let shelled_log = fs::read_to_string(env.session_dir(&id).join("logs/shelled.log")).unwrap();
    assert!(
        shelled_log.contains("): sh -c 'echo shell:$ORCH_TASK'"),
        "{shelled_log}"
    );
}
