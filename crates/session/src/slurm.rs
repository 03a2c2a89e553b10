//! `slurm/`: what `orch-worker --slurm` submitted to Slurm.
//!
//! ```text
//! slurm/submit-<n>.sh   the n-th sbatch script, as submitted    (create-once, never replaced)
//! slurm/jobs.json       every job submitted, oldest first       (atomic replace, durable)
//! locks/slurm.lock      held while jobs.json is read and replaced
//! ```
//!
//! Scripts are numbered from 1 and never overwritten: of two submitters
//! racing for a number, the one whose create fails takes the next. The job
//! list only grows; `orch-worker stop` adds `cancelled` to the jobs it
//! cancels. A job submitted but not yet recorded (the submitter died between
//! `sbatch` and the write) is still visible through its workers'
//! heartbeats, which carry the job id.
//!
//! Format history of `jobs.json`: 1: first version.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::atomic::{self, Durability};
use crate::error::{Error, IoContext, Result};
use crate::json::{read_json, to_json_bytes};
use crate::layout::{SessionDir, SLURM_LOCK};
use crate::lock;
use crate::safefs::make_private_dir;

/// Current format of `slurm/jobs.json`.
pub const SLURM_JOBS_FORMAT: u32 = 1;

/// `slurm/jobs.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmJobs {
    /// Format version.
    pub format: u32,
    /// Every submitted job, oldest first.
    pub jobs: Vec<SlurmJob>,
}

impl Default for SlurmJobs {
    fn default() -> Self {
        Self {
            format: SLURM_JOBS_FORMAT,
            jobs: Vec::new(),
        }
    }
}

/// One `sbatch` submission: an array of workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmJob {
    /// The job id `sbatch --parsable` printed (the array's job id).
    pub job: String,
    /// The cluster, when `sbatch` named one (federations, `--clusters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The script, relative to the session directory (`slurm/submit-1.sh`).
    pub script: String,
    /// How many array tasks (workers) were asked for.
    pub workers: u32,
    /// The `--array` specification (`1-4`).
    pub array: String,
    /// When it was submitted, RFC 3339.
    pub submitted: String,
    /// The host it was submitted from.
    pub host: String,
    /// The `--sbatch-arg` options given, as written into the script.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sbatch_args: Vec<String>,
    /// When `orch-worker stop` cancelled it, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<String>,
}

/// The Slurm job and array task a process runs in, from the variables
/// Slurm sets (`SLURM_ARRAY_JOB_ID` or `SLURM_JOB_ID`, and
/// `SLURM_ARRAY_TASK_ID`). Flattened into results as `slurm_job` and
/// `slurm_array_task`, the names heartbeats and claims use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmIds {
    /// The job id (of the array, for array tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job: Option<String>,
    /// The array task id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_array_task: Option<String>,
}

impl SlurmIds {
    /// The ids of the calling process (empty outside Slurm).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            slurm_job: var("SLURM_ARRAY_JOB_ID").or_else(|| var("SLURM_JOB_ID")),
            slurm_array_task: var("SLURM_ARRAY_TASK_ID"),
        }
    }

    /// `job_task` as Slurm writes an array task (`123_4`), or the job id.
    pub fn display(&self) -> Option<String> {
        let job = self.slurm_job.as_deref()?;
        Some(match &self.slurm_array_task {
            Some(t) => format!("{job}_{t}"),
            None => job.to_owned(),
        })
    }
}

/// How long a submitter waits for another one's `locks/slurm.lock`.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Reads `slurm/jobs.json`; empty when the session never used Slurm.
pub fn read(dir: &SessionDir) -> Result<SlurmJobs> {
    let path = dir.slurm_jobs();
    match read_json::<SlurmJobs>(&path) {
        Ok(j) => {
            crate::json::check_format(&path, "Slurm job list", j.format, SLURM_JOBS_FORMAT)?;
            Ok(j)
        }
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(SlurmJobs::default())
        }
        Err(e) => Err(e),
    }
}

/// Writes the next `slurm/submit-<n>.sh` (never replacing one); returns its
/// number and path.
pub fn write_script(dir: &SessionDir, text: &str) -> Result<(u32, PathBuf)> {
    let sdir = dir.slurm_dir();
    make_private_dir(&sdir)?;
    let mut n = highest_script(dir)? + 1;
    loop {
        let path = dir.slurm_script(n);
        match atomic::create_once(&path, text.as_bytes(), Durability::Durable) {
            Ok(()) => return Ok((n, path)),
            // Another submitter took this number: take the next.
            Err(Error::AlreadyExists { .. }) => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The highest `n` of the `slurm/submit-<n>.sh` present (0 when none).
fn highest_script(dir: &SessionDir) -> Result<u32> {
    let sdir = dir.slurm_dir();
    let entries = match fs::read_dir(&sdir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("read", &sdir, e)),
    };
    let mut max = 0;
    for entry in entries {
        let entry = entry.ctx("read", &sdir)?;
        let name = entry.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_prefix("submit-"))
            .and_then(|s| s.strip_suffix(".sh"))
            .and_then(|s| s.parse::<u32>().ok())
        {
            max = max.max(n);
        }
    }
    Ok(max)
}

/// Runs `f` on the job list under `locks/slurm.lock` and writes the list
/// back (durably) if `f` says it changed.
fn update(dir: &SessionDir, f: impl FnOnce(&mut SlurmJobs) -> bool) -> Result<()> {
    make_private_dir(&dir.slurm_dir())?;
    let lock_path = dir.named_lock(SLURM_LOCK);
    let Some(_guard) = lock::lock_until(&lock_path, Some(Instant::now() + LOCK_WAIT))? else {
        return Err(Error::Locked {
            path: lock_path,
            holder: Some(format!("for over {}s", LOCK_WAIT.as_secs())),
        });
    };
    let mut jobs = read(dir)?;
    if f(&mut jobs) {
        atomic::write_atomic(
            &dir.slurm_jobs(),
            &to_json_bytes(&jobs),
            Durability::Durable,
        )?;
    }
    Ok(())
}

/// Appends a submitted job to `slurm/jobs.json`.
pub fn record(dir: &SessionDir, job: SlurmJob) -> Result<()> {
    update(dir, |jobs| {
        jobs.jobs.push(job);
        true
    })
}

/// Marks the jobs `ids` cancelled at `when` (those already marked keep
/// their first time).
pub fn mark_cancelled(dir: &SessionDir, ids: &[String], when: &str) -> Result<()> {
    update(dir, |jobs| {
        let mut changed = false;
        for j in &mut jobs.jobs {
            if j.cancelled.is_none() && ids.contains(&j.job) {
                j.cancelled = Some(when.to_owned());
                changed = true;
            }
        }
        changed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> (tempfile::TempDir, SessionDir) {
        let t = tempfile::tempdir().expect("tempdir");
        let d = SessionDir::new(t.path());
        make_private_dir(&t.path().join("locks")).expect("locks");
        (t, d)
    }

    fn job(id: &str) -> SlurmJob {
        SlurmJob {
            job: id.to_owned(),
            cluster: None,
            script: "slurm/submit-1.sh".to_owned(),
            workers: 4,
            array: "1-4".to_owned(),
            submitted: "2026-11-21T15:00:00+00:00".to_owned(),
            host: "login1".to_owned(),
            sbatch_args: vec![],
            cancelled: None,
        }
    }

    #[test]
    fn scripts_are_numbered_and_never_overwritten() {
        let (_t, d) = session();
        assert_eq!(write_script(&d, "one").expect("1").0, 1);
        assert_eq!(write_script(&d, "two").expect("2").0, 2);
        // A gap (a script removed by hand) does not reuse a number below
        // the highest.
        fs::remove_file(d.slurm_script(1)).expect("rm");
        let (n, p) = write_script(&d, "three").expect("3");
        assert_eq!(n, 3);
        assert_eq!(fs::read_to_string(p).expect("read"), "three");
        assert_eq!(
            fs::read_to_string(d.slurm_script(2)).expect("read"),
            "two",
            "kept as written"
        );
    }

    #[test]
    fn jobs_are_appended_and_cancelled_once() {
        let (_t, d) = session();
        assert!(read(&d).expect("empty").jobs.is_empty());
        record(&d, job("10")).expect("record");
        record(&d, job("11")).expect("record");
        mark_cancelled(&d, &["11".to_owned()], "t1").expect("cancel");
        mark_cancelled(&d, &["10".to_owned(), "11".to_owned()], "t2").expect("cancel");
        let jobs = read(&d).expect("read").jobs;
        assert_eq!(
            jobs.iter()
                .map(|j| (j.job.as_str(), j.cancelled.as_deref()))
                .collect::<Vec<_>>(),
            vec![("10", Some("t2")), ("11", Some("t1"))]
        );
    }

    #[test]
    fn a_damaged_job_list_is_an_error_naming_it_and_is_left_alone() {
        let (_t, d) = session();
        make_private_dir(&d.slurm_dir()).expect("dir");
        fs::write(d.slurm_jobs(), "{\"format\": 1,\n\"jobs\": [oops]}").expect("write");
        let e = record(&d, job("12")).expect_err("damaged");
        let text = e.to_string();
        assert!(text.contains("slurm/jobs.json:2"), "{text}");
        assert_eq!(
            fs::read_to_string(d.slurm_jobs()).expect("read"),
            "{\"format\": 1,\n\"jobs\": [oops]}"
        );
    }

    #[test]
    fn results_carry_the_ids_as_flat_fields() {
        let text = r#"{"format": 1, "task": "a", "status": "success", "attempt": 1,
            "worker": "worker-2", "slurm_job": "77", "slurm_array_task": "3",
            "finished": "2026-11-21T15:00:00+00:00", "duration": 1.0, "summary": "s"}"#;
        let r: crate::result::TaskResult = serde_json::from_str(text).expect("parse");
        assert_eq!(r.slurm.display().as_deref(), Some("77_3"));
        assert_eq!(r.output.summary.as_deref(), Some("s"));
        let v: serde_json::Value = serde_json::from_slice(&r.to_bytes()).expect("json");
        assert_eq!(
            (v["slurm_job"].as_str(), v["slurm_array_task"].as_str()),
            (Some("77"), Some("3"))
        );
        // Results of workers outside Slurm have neither key.
        let plain = text.replace(r#""slurm_job": "77", "slurm_array_task": "3","#, "");
        let r: crate::result::TaskResult = serde_json::from_str(&plain).expect("parse");
        assert_eq!(r.slurm, SlurmIds::default());
        let v: serde_json::Value = serde_json::from_slice(&r.to_bytes()).expect("json");
        assert!(v.get("slurm_job").is_none() && v.get("slurm_array_task").is_none());
    }

    #[test]
    fn a_newer_format_is_refused() {
        let (_t, d) = session();
        make_private_dir(&d.slurm_dir()).expect("dir");
        fs::write(d.slurm_jobs(), "{\"format\": 9, \"jobs\": []}").expect("write");
        let text = read(&d).expect_err("newer").to_string();
        assert!(text.contains("format 9 is newer"), "{text}");
    }
}
