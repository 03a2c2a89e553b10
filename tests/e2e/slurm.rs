//! `orch-worker --slurm`: the script without Slurm (`--print`), and a real
//! one-node Slurm cluster (munged, slurmctld, slurmd started by
//! `scripts/slurm-test-cluster.sh`) running a session through a job array,
//! and `orch-worker stop` cancelling one. The real scenario runs only with
//! ORCH_LONG_TESTS=1, as root (it starts daemons); it stops the cluster it
//! started, jobs and all, however it ends.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use orch_session::lock;
use serde_json::Value;

use crate::support::*;

#[test]
fn print_shows_the_script_and_writes_or_submits_nothing() {
    let env = Env::new();
    let id = env.plan(
        "name = \"night run\"\nmemory_per_agent = \"1GiB\"\n\
         [[task]]\nid = \"a\"\ncommand = \"true\"\n",
    );
    let dir = env.session_dir(&id);
    // No sbatch on PATH: --print must not need one.
    let out = output(
        env.cmd("orch-worker")
            .args(["--slurm", "3", "--print", "--sbatch-arg=--partition=short"])
            .env("PATH", "/nonexistent"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let script = stdout(&out);
    let root = env.root().canonicalize().unwrap();
    let worker = bin("orch-worker").canonicalize().unwrap();
    let sdir = root.join(format!("session-{id}"));
    for line in [
        "#!/bin/sh".to_owned(),
        "#SBATCH --job-name=orch-night_run".to_owned(),
        "#SBATCH --array=1-3".to_owned(),
        format!("#SBATCH --output={}/logs/slurm-%A_%a.log", sdir.display()),
        format!("#SBATCH --chdir={}", sdir.display()),
        // 1 GiB for the agent, 64 MiB for the worker.
        "#SBATCH --mem=1088M".to_owned(),
        "#SBATCH --partition=short".to_owned(),
        format!(
            "exec {} --root {} --session {id}",
            worker.display(),
            root.display()
        ),
    ] {
        assert!(
            script.lines().any(|l| l == line),
            "missing {line:?}:\n{script}"
        );
    }
    assert!(!script.contains("--time"), "no deadline, no time limit");
    assert!(!dir.join("slurm").exists(), "--print writes nothing");

    // A deadline gives a time limit: 2h + the 30m default timeout + 10s
    // grace, rounded up to minutes.
    let out = env.run(
        "orch-worker",
        &[
            "--slurm",
            "--print",
            "--until",
            "2h",
            "--session",
            &id,
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let script = v["script"].as_str().unwrap();
    assert!(script.contains("#SBATCH --time=02:31:00\n"), "{script}");
    assert!(script.contains("#SBATCH --signal=B:TERM@70\n"), "{script}");
    assert!(script.contains(" --until "), "the workers get the deadline");
    // --slurm without N: the session's agents.
    let agents = env.json(&id, "session.json")["settings"]["agents"].clone();
    assert!(
        script.contains(&format!("#SBATCH --array=1-{agents}\n")),
        "{script}"
    );
}

#[test]
fn without_slurm_the_submission_fails_clearly_and_records_no_job() {
    let env = Env::new();
    let id = env.plan("[[task]]\nid = \"a\"\ncommand = \"true\"\n");
    let dir = env.session_dir(&id);
    let out = output(
        env.cmd("orch-worker")
            .args(["--slurm", "2"])
            .env("PATH", "/nonexistent"),
    );
    assert_eq!(out.status.code(), Some(16), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("sbatch not found on PATH") && err.lines().count() <= 2,
        "{err}"
    );
    // The script is kept (it says what would have run); no job recorded.
    assert!(dir.join("slurm/submit-1.sh").exists());
    assert!(!dir.join("slurm/jobs.json").exists());
    // Bad sbatch arguments are refused before anything is written.
    let out = env.run(
        "orch-worker",
        &["--slurm", "2", "--sbatch-arg", "partition=x"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--sbatch-arg=--partition=gpu"));
    assert!(!dir.join("slurm/submit-2.sh").exists());
    // A damaged job list: named, and nothing submitted or written.
    fs::write(
        dir.join("slurm/jobs.json"),
        "{\"format\": 1,\n\"jobs\": [oops\n",
    )
    .unwrap();
    let out = output(
        env.cmd("orch-worker")
            .args(["--slurm", "2"])
            .env("PATH", "/nonexistent"),
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("slurm/jobs.json:2"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.join("slurm/submit-2.sh").exists());
    // --slurm does not go with --parallel.
    let out = env.run("orch-worker", &["--slurm", "2", "--parallel", "2"]);
    assert_eq!(out.status.code(), Some(2));
}

/// The test cluster: started on creation, stopped (jobs cancelled, daemons
/// gone) on drop. A lock file keeps two runs of this test on one machine
/// (two checkouts) from restarting each other's cluster.
struct Cluster {
    conf: String,
    script: PathBuf,
    env: Vec<(&'static str, String)>,
    _serial: File,
}

const CLUSTER_DIR: &str = "/var/lib/orch-slurm-e2e";
const CLUSTER_PORT: &str = "16837";

impl Cluster {
    fn start() -> Cluster {
        let serial = File::create("/tmp/orch-slurm-e2e.lock").unwrap();
        serial.lock().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-test-cluster.sh");
        let env = vec![
            ("ORCH_SLURM_DIR", CLUSTER_DIR.to_owned()),
            ("ORCH_SLURM_PORT", CLUSTER_PORT.to_owned()),
        ];
        let out = output_within(
            Command::new(&script).arg("start").envs(env.iter().cloned()),
            Duration::from_secs(600),
        );
        assert!(
            out.status.success(),
            "the test cluster did not start:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
        let text = stdout(&out);
        let conf = text
            .lines()
            .find_map(|l| l.strip_prefix("SLURM_CONF="))
            .unwrap_or_else(|| panic!("no SLURM_CONF line in {text:?}"))
            .to_owned();
        Cluster {
            conf,
            script,
            env,
            _serial: serial,
        }
    }

    /// A Slurm command against this cluster.
    fn slurm(&self, program: &str, args: &[&str]) -> Output {
        output(
            Command::new(program)
                .args(args)
                .env("SLURM_CONF", &self.conf)
                .stdin(Stdio::null()),
        )
    }

    /// `(array task, state)` of every task of `job` squeue lists.
    fn queue(&self, job: &str) -> Vec<(String, String)> {
        let out = self.slurm("squeue", &["-h", "-r", "-j", job, "-o", "%K|%T"]);
        if !out.status.success() {
            // A job Slurm has forgotten entirely: nothing listed.
            assert!(stderr(&out).contains("Invalid job id"), "{}", stderr(&out));
            return Vec::new();
        }
        stdout(&out)
            .lines()
            .filter_map(|l| l.split_once('|'))
            .map(|(t, s)| (t.to_owned(), s.to_owned()))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = output_within(
            Command::new(&self.script)
                .arg("stop")
                .envs(self.env.iter().cloned()),
            Duration::from_secs(300),
        );
        if !out.status.success() {
            eprintln!(
                "stopping the test cluster failed:\n{}{}",
                stdout(&out),
                stderr(&out)
            );
        }
    }
}

/// The live heartbeats of a session: (worker, slurm job, array task, task).
fn heartbeats(dir: &Path) -> Vec<(String, String, String, Option<String>)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir.join("status")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(worker) = name.strip_suffix(".active") else {
            continue;
        };
        if worker.starts_with('.')
            || !lock::is_held(&dir.join(format!("locks/{worker}.lock"))).unwrap()
        {
            continue;
        }
        let Ok(text) = fs::read_to_string(e.path()) else {
            continue;
        };
        let Ok(hb) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        out.push((
            worker.to_owned(),
            hb["slurm_job"].as_str().unwrap_or("").to_owned(),
            hb["slurm_array_task"].as_str().unwrap_or("").to_owned(),
            hb["task"].as_str().map(str::to_owned),
        ));
    }
    out
}

/// Pids of the test cluster's processes named `name`: started with its
/// SLURM_CONF, or naming its directory on their command line.
fn cluster_pids(name: &str) -> Vec<u32> {
    let conf = format!("SLURM_CONF={CLUSTER_DIR}/slurm.conf");
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let exe = fs::read_link(e.path().join("exe")).ok()?;
            // Debian's daemons are alternatives: slurmctld -> slurmctld-wlm.
            let exe = exe.file_name()?.to_string_lossy().into_owned();
            if exe != name && exe != format!("{name}-wlm") {
                return None;
            }
            if !pid_alive(pid as i32) {
                return None;
            }
            let environ = fs::read(e.path().join("environ")).unwrap_or_default();
            let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
            let ours = environ.split(|b| *b == 0).any(|v| v == conf.as_bytes())
                || String::from_utf8_lossy(&cmdline).contains(CLUSTER_DIR);
            ours.then_some(pid)
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The job id of the n-th recorded submission.
fn recorded_job(dir: &Path, n: usize) -> Value {
    read_json(&dir.join("slurm/jobs.json"))["jobs"][n].clone()
}

#[test]
fn a_real_slurm_cluster_runs_a_session_as_a_job_array_and_stop_cancels_it_long() {
    if std::env::var_os("ORCH_LONG_TESTS").is_none() {
        eprintln!("skipped: set ORCH_LONG_TESTS=1 to run this real-Slurm scenario (starts a one-node cluster, as root)");
        return;
    }
    // SAFETY: getuid has no preconditions.
    assert_eq!(
        unsafe { libc::getuid() },
        0,
        "the real-Slurm test starts slurmctld and slurmd: run it as root"
    );
    // Declared first, dropped last: after the sessions' workers are stopped.
    let cluster = Cluster::start();
    let env = Env::new();
    let worker = |args: &[&str]| {
        output(
            env.cmd("orch-worker")
                .args(args)
                .env("SLURM_CONF", &cluster.conf),
        )
    };

    // 60 short tasks. The first four wait for a gate, so that all four
    // array tasks are seen running, each holding a task.
    let gate = env.write("gate", "");
    let runs = env.path("runs");
    let mut plan =
        String::from("name = \"slurm60\"\nmemory_per_agent = \"200MiB\"\ndeadline = \"2h\"\n");
    for i in 0..60 {
        plan += &format!(
            "[[task]]\nid = \"t{i:02}\"\ncommand = \"while [ -e '{}' ]; do sleep 0.05; done; sleep 0.1; echo $ORCH_TASK >> '{}'\"\n",
            gate.display(),
            runs.display()
        );
    }
    let id = env.plan(&plan);
    let dir = env.session_dir(&id);
    let out = worker(&["--slurm", "4", "--session", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let job = recorded_job(&dir, 0);
    let job_id = job["job"].as_str().unwrap().to_owned();
    assert_eq!(job["workers"], 4);
    assert_eq!(job["script"], "slurm/submit-1.sh");
    assert!(stdout(&out).contains(&format!("submitted Slurm job {job_id}: 4 workers")));

    // squeue lists the array's four tasks running, and each is a worker
    // holding a task, its heartbeat naming the job and its array task.
    wait_until("squeue to list array tasks 1-4 running", LONG, || {
        let q = cluster.queue(&job_id);
        q.iter().all(|(_, s)| s == "RUNNING")
            && q.iter().map(|(t, _)| t.clone()).collect::<BTreeSet<_>>()
                == set(&["1", "2", "3", "4"])
    });
    wait_until("four workers to hold a gated task", LONG, || {
        let hbs = heartbeats(&dir);
        hbs.iter().filter(|h| h.3.is_some()).count() == 4
    });
    let hbs = heartbeats(&dir);
    assert!(hbs.iter().all(|h| h.1 == job_id), "{hbs:?}");
    assert_eq!(
        hbs.iter().map(|h| h.2.clone()).collect::<BTreeSet<_>>(),
        set(&["1", "2", "3", "4"])
    );
    // Slurm took the script's limits: memory_per_agent + 64 MiB, and the
    // time limit computed from the deadline.
    let script = fs::read_to_string(dir.join("slurm/submit-1.sh")).unwrap();
    assert!(script.contains("#SBATCH --mem=264M\n"), "{script}");
    let limit = script
        .lines()
        .find_map(|l| l.strip_prefix("#SBATCH --time="))
        .unwrap_or_else(|| panic!("no --time in {script}"));
    let shown = stdout(&cluster.slurm("scontrol", &["show", "job", &format!("{job_id}_1")]));
    assert!(shown.contains("MinMemoryNode=264M"), "{shown}");
    assert!(shown.contains(&format!("TimeLimit={limit} ")), "{shown}");
    // orch-monitor shows each worker's job and array task.
    let out = env.run("orch-monitor", &["--session", &id, "--json", "--no-git"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let snap: Value = serde_json::from_slice(&out.stdout).unwrap();
    let shown: BTreeSet<String> = snap["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["live"] == true)
        .map(|w| {
            assert_eq!(w["slurm_job"], job_id.as_str(), "{w}");
            w["slurm_array_task"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(shown, set(&["1", "2", "3", "4"]));
    let text = stdout(&env.run("orch-monitor", &["--session", &id, "--no-git"]));
    for t in 1..=4 {
        assert!(text.contains(&format!("slurm {job_id}_{t} on ")), "{text}");
    }

    fs::remove_file(&gate).unwrap();
    wait_until(
        "the array to finish the session",
        Duration::from_secs(300),
        || dir.join("status/finished").exists(),
    );
    wait_until("the array to leave the queue", LONG, || {
        cluster.queue(&job_id).is_empty()
    });
    // Each task ran once and succeeded once, in one of the array's workers.
    let ran: Vec<String> = fs::read_to_string(&runs)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ran.len(), 60, "{ran:?}");
    assert_eq!(ran.iter().collect::<BTreeSet<_>>().len(), 60, "{ran:?}");
    let results = env.results(&id);
    assert_eq!(results.len(), 60);
    let mut array_tasks = BTreeSet::new();
    for (t, r) in &results {
        assert_eq!(
            (r["status"].as_str(), r["attempt"].as_u64()),
            (Some("success"), Some(1)),
            "{t}: {r}"
        );
        assert_eq!(r["slurm_job"], job_id.as_str(), "{t}: {r}");
        assert!(r["worker"].as_str().unwrap().starts_with("worker-"), "{r}");
        array_tasks.insert(r["slurm_array_task"].as_str().unwrap().to_owned());
    }
    assert_eq!(array_tasks, set(&["1", "2", "3", "4"]));
    assert!(
        !dir.join("history").read_dir().unwrap().any(|_| true),
        "no retries"
    );
    for t in 1..=4 {
        let log = dir.join(format!("logs/slurm-{job_id}_{t}.log"));
        let text = fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        assert!(text.contains("started (pid"), "{text}");
    }
    assert_eq!(damaged_files(&dir), Vec::<String>::new());

    // A second session of long tasks and an array of 6 on 4 CPUs: 4
    // workers run, 2 array tasks wait in the queue.
    let mut plan = String::from("name = \"slurmstop\"\n");
    for i in 0..8 {
        plan += &format!("[[task]]\nid = \"s{i}\"\ncommand = \"sleep 600\"\n");
    }
    let id2 = env.plan(&plan);
    let dir2 = env.session_dir(&id2);
    let out = worker(&["--slurm", "6", "--session", &id2]);
    assert!(out.status.success(), "{}", stderr(&out));
    let job2 = recorded_job(&dir2, 0)["job"].as_str().unwrap().to_owned();
    assert_ne!(job2, job_id);
    wait_until(
        "four workers of the second array to run a task",
        LONG,
        || {
            let hbs = heartbeats(&dir2);
            hbs.len() == 4 && hbs.iter().all(|h| h.1 == job2 && h.3.is_some())
        },
    );
    let mut queue = cluster.queue(&job2);
    queue.sort();
    assert_eq!(
        queue.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        ["RUNNING", "RUNNING", "RUNNING", "RUNNING", "PENDING", "PENDING"],
        "{queue:?}"
    );
    let running: Vec<String> = heartbeats(&dir2).into_iter().filter_map(|h| h.3).collect();
    // `stop` from another host (a login node): its own UTS and PID
    // namespaces, so the workers are not local processes it could signal;
    // only Slurm can reach them.
    let out = output(
        Command::new("unshare")
            .args(["--uts", "--pid", "--fork", "--mount-proc", "sh", "-c"])
            .arg("hostname login-node && exec \"$@\"")
            .arg("sh")
            .arg(bin("orch-worker"))
            .args(["stop", "--session", &id2])
            .env("ORCH_HOME", env.root())
            .env("SLURM_CONF", &cluster.conf)
            .env("NO_COLOR", "1")
            .env_remove("ORCH_SESSION")
            .stdin(Stdio::null()),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains(&format!(
            "cancelled Slurm job {job2} (2 pending, 4 running)"
        )),
        "{said}"
    );
    // It waited for the four workers to let go of their slots.
    assert_eq!(said.matches("stopped worker-").count(), 4, "{said}");
    assert!(heartbeats(&dir2).is_empty(), "no live worker left");
    wait_until(
        "squeue to list no task of the cancelled array",
        LONG,
        || cluster.queue(&job2).is_empty(),
    );
    // The pending array tasks never started (Slurm makes their log when
    // they do).
    for t in [5, 6] {
        assert!(!dir2.join(format!("logs/slurm-{job2}_{t}.log")).exists());
    }
    // Every task released: no claim, no lock held, the four attempts
    // recorded as interrupted (to run again), the others untouched.
    assert_eq!(fs::read_dir(dir2.join("claims")).unwrap().count(), 0);
    for i in 0..8 {
        assert!(
            !lock::is_held(&dir2.join(format!("locks/s{i}.lock"))).unwrap(),
            "s{i} still locked"
        );
    }
    let results = env.results(&id2);
    assert_eq!(
        results.keys().cloned().collect::<BTreeSet<_>>(),
        running.iter().cloned().collect::<BTreeSet<_>>()
    );
    for (t, r) in &results {
        // Stopped in order by their worker (SIGTERM to the batch shell
        // only), not killed along with it.
        assert_eq!(
            (r["status"].as_str(), r["reason"].as_str()),
            (Some("interrupted"), Some("worker stopped by signal 15")),
            "{t}: {r}"
        );
        assert_eq!(r["slurm_job"], job2.as_str(), "{t}: {r}");
    }
    assert!(recorded_job(&dir2, 0)["cancelled"].is_string());
    // A second stop finds nothing left to cancel.
    let out = worker(&["stop", "--session", &id2]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stdout(&out).contains("cancelled Slurm job"),
        "{}",
        stdout(&out)
    );
    drop(env);
    drop(cluster);
    // The cluster is gone, jobs and daemons.
    for daemon in ["slurmctld", "slurmd", "slurmstepd", "munged"] {
        let pids = cluster_pids(daemon);
        assert!(pids.is_empty(), "{daemon} still runs: {pids:?}");
    }
}
