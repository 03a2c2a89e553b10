//! Creating, finding and opening sessions.
//!
//! A session's plan holds commands that workers run as their user, so a
//! root or session directory another user controls is refused before
//! anything is read from it ([`check_root`], [`check_session_dir`]): it
//! must be owned by the user (or root) and not writable by group or
//! others. A session that cannot be read is an error (exit 5), never
//! silently "no session".

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::{self, Durability};
use crate::error::{Error, IoContext, Result};
use crate::layout::{session_dir_name, SessionDir, SESSION_PREFIX, SESSION_SUBDIRS};
use crate::plan::{Plan, PlanDoc, Settings, PLAN_FORMAT};
use crate::proc;
use crate::safefs::{self, Role};
use crate::time;

// Also public here, at the paths other crates use.
pub use crate::json::{check_format, damaged, json_error_text, read_json, to_json_bytes};
pub use crate::plan::NextPlan;
pub use crate::safefs::make_private_dir;

/// Current `session.json` format.
///
/// History: 1: first version.
pub const SESSION_FORMAT: u32 = 1;

/// `session.json`: what the session is, written once by `orch-plan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Format version.
    pub format: u32,
    /// The id: `session-<id>` is the directory.
    pub id: String,
    /// Human name (the plan's `name`, or `--name`).
    pub name: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// The plan file it was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Where tasks run unless they set `cwd`: the plan file's directory.
    pub workdir: String,
    /// The git repository the session works on (the top level of the
    /// repository containing `workdir`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Host that created it.
    pub host: String,
    /// Settings.
    pub settings: Settings,
    /// The state of `repo` when the session was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitInfo>,
    /// How a cron tick plans what comes after this session (a roadmap's
    /// next group), when it may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<NextPlan>,
}

/// The git state a session started from, recorded by `orch-plan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitInfo {
    /// The commit worktrees start from: `HEAD` when the session was
    /// created (none in a repository without commits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The branch checked out then, if any: the default target of
    /// `orch-sync merge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Whether the working tree had uncommitted or untracked changes.
    pub dirty: bool,
    /// The backup ref (`refs/orch/<id>/backup`), when a backup was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_ref: Option<String>,
    /// The backup commit: the working tree as it was, untracked files
    /// included, on top of `base`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// A commit of the index as it was (what was staged), on top of
    /// `base`; also kept as `refs/orch/<id>/backup-index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_index: Option<String>,
}

/// The moments of [`Session::create_with`] a caller can act in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// The session is built under a temporary name and about to appear
    /// under its id: an error now abandons it.
    Before,
    /// The id was taken by another session at the last moment: undo what
    /// `Before` did; another id follows.
    Abandon,
}

/// An open session: its directory and its `session.json`.
#[derive(Debug, Clone)]
pub struct Session {
    /// Paths.
    pub dir: SessionDir,
    /// Metadata.
    pub info: SessionInfo,
}

/// Refuses an orchestration root another user controls: one owned by
/// someone else than the user and root, or writable by group or others
/// (its sessions' commands would run as the user). The root may be a
/// symlink (the user's own choice); what it points to is checked. A root
/// that does not exist is fine.
pub fn check_root(root: &Path) -> Result<()> {
    let meta = match fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("open", root, e)),
    };
    Ok(safefs::check_trusted(root, &meta, Role::Root)?)
}

/// Refuses a session directory that is a symlink or that another user
/// controls (see [`check_root`]). A directory that does not exist is left
/// to the read that follows.
pub fn check_session_dir(dir: &Path) -> Result<()> {
    // Without a trailing `/`, which would follow a link.
    let dir: PathBuf = dir.components().collect();
    let meta = match fs::symlink_metadata(&dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("open", &dir, e)),
    };
    if meta.file_type().is_symlink() {
        let target = fs::read_link(&dir).unwrap_or_default();
        return Err(Error::Refused {
            action: "use",
            path: dir,
            reason: format!(
                "it is a symbolic link (to {}); a session directory must be a directory: remove the link, or name the session by its real path",
                target.display()
            ),
        });
    }
    Ok(safefs::check_trusted(&dir, &meta, Role::Session)?)
}

/// The backup ref of session `id`: `refs/orch/<id>/backup`.
pub fn backup_ref(id: &str) -> String {
    format!("refs/orch/{id}/backup")
}

fn new_id() -> String {
    let now = time::now();
    let nanos = now.timestamp_subsec_nanos();
    let mix = (u64::from(nanos) ^ (u64::from(std::process::id()) << 16))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!(
        "{}-{:04x}",
        now.format("%Y%m%d-%H%M%S"),
        (mix >> 48) & 0xffff
    )
}

impl Session {
    /// Creates a new session for `plan` under `root`. The directory appears
    /// whole (built under a temp name, then renamed) or not at all.
    pub fn create(
        root: &Path,
        plan: &Plan,
        source: Option<&Path>,
        workdir: &Path,
        repo: Option<&Path>,
    ) -> Result<Session> {
        Self::create_with(root, plan, source, workdir, repo, None, &mut |_, _| Ok(()))
    }

    /// [`Session::create`] with the repository's state, and a hook called
    /// with the final id just before the session appears (and again if
    /// that id turns out to be taken): `orch-plan` names the backup ref
    /// after the session there, so no session exists without its backup.
    pub fn create_with(
        root: &Path,
        plan: &Plan,
        source: Option<&Path>,
        workdir: &Path,
        repo: Option<&Path>,
        git: Option<GitInfo>,
        publish: &mut dyn FnMut(&SessionInfo, Publish) -> Result<()>,
    ) -> Result<Session> {
        make_private_dir(root)?;
        check_root(root)?;
        // A hint to ext4's allocator; without it, each file of this
        // session may cost a scan of the inodes of the last one removed.
        crate::fsinfo::spread_subdirs(root);
        let doc = PlanDoc {
            format: PLAN_FORMAT,
            tasks: plan.tasks.clone(),
            analysis: plan.analysis.clone(),
            checkpoints: plan.checkpoints.clone(),
            resources: plan.resources.clone(),
            template: plan.template.clone(),
            conflicts: plan.conflicts.clone(),
        };
        let plan_bytes = serde_json::to_vec(&doc)
            .map_err(|e| Error::io("serialise plan for", root, io::Error::other(e)))?;
        for _ in 0..20 {
            let id = new_id();
            let info = SessionInfo {
                format: SESSION_FORMAT,
                id: id.clone(),
                name: plan.name.clone().unwrap_or_else(|| id.clone()),
                created: time::rfc3339(&time::now()),
                source: source.map(|p| p.to_string_lossy().into_owned()),
                workdir: workdir.to_string_lossy().into_owned(),
                repo: repo.map(|r| r.to_string_lossy().into_owned()),
                host: proc::hostname(),
                settings: plan.settings.clone(),
                git: git.clone().map(|mut g| {
                    if g.backup.is_some() {
                        g.backup_ref = Some(backup_ref(&id));
                    }
                    g
                }),
                next: plan.next.clone(),
            };
            let temp = root.join(format!(".{SESSION_PREFIX}{id}.tmp.{}", std::process::id()));
            let built = (|| -> Result<()> {
                DirBuilder::new()
                    .mode(0o700)
                    .create(&temp)
                    .ctx("create directory", &temp)?;
                // Registered first: everything below is made without
                // following a link.
                let dir = SessionDir::new(&temp);
                for sub in SESSION_SUBDIRS {
                    make_private_dir(&dir.join(sub))?;
                }
                // Checkpoints the plan declares or waits for exist from the
                // start, with their expected agents, so waits can watch them.
                let referenced = plan
                    .tasks
                    .iter()
                    .flat_map(|t| t.after.iter())
                    .filter_map(crate::plan::After::checkpoint);
                for name in plan
                    .checkpoints
                    .keys()
                    .map(String::as_str)
                    .chain(referenced)
                {
                    let cp = crate::checkpoint::Checkpoint::new(&dir, name)?;
                    cp.ensure()?;
                    if let Some(decl) = plan.checkpoints.get(name) {
                        cp.expect(&decl.expect.iter().cloned().collect())?;
                    }
                }
                atomic::create_once(&dir.plan_json(), &plan_bytes, Durability::Durable)?;
                atomic::create_once(
                    &dir.session_json(),
                    &to_json_bytes(&info),
                    Durability::Durable,
                )?;
                Ok(())
            })();
            if let Err(e) = built {
                let _ = fs::remove_dir_all(&temp);
                return Err(e);
            }
            if let Err(e) = publish(&info, Publish::Before) {
                let _ = fs::remove_dir_all(&temp);
                return Err(e);
            }
            let final_dir = root.join(session_dir_name(&id));
            match atomic::rename_noreplace(&temp, &final_dir) {
                Ok(()) => {
                    return Ok(Session {
                        dir: SessionDir::new(final_dir),
                        info,
                    })
                }
                Err(Error::AlreadyExists { .. }) => {
                    let _ = fs::remove_dir_all(&temp);
                    let _ = publish(&info, Publish::Abandon);
                    continue;
                }
                Err(e) => {
                    let _ = fs::remove_dir_all(&temp);
                    let _ = publish(&info, Publish::Abandon);
                    return Err(e);
                }
            }
        }
        Err(Error::io(
            "create a session in",
            root,
            io::Error::other("could not find a free session id"),
        ))
    }

    /// Opens the session in `dir`, refusing a symlink or a directory
    /// another user controls ([`check_session_dir`]).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Session> {
        let dir = dir.into();
        check_session_dir(&dir)?;
        // Read before the directory is registered as a session (by
        // `SessionDir::new`): only a session gets its writes walked.
        let json = dir.join(crate::layout::SESSION_JSON);
        let info: SessionInfo = read_json(&json)?;
        check_format(&json, "session", info.format, SESSION_FORMAT)?;
        Ok(Session {
            dir: SessionDir::new(dir),
            info,
        })
    }

    /// Reads `plan.json`.
    pub fn load_plan(&self) -> Result<PlanDoc> {
        read_plan(&self.dir)
    }

    /// Reads `plan.json` for a board: the tasks kept compact
    /// ([`crate::tasks::Tasks`]), which is what a process that holds the
    /// board all day (a worker, a dashboard) should use.
    pub fn load_board_plan(&self) -> Result<crate::tasks::BoardPlan> {
        let path = self.dir.plan_json();
        let text = fs::read_to_string(&path).ctx("read", &path)?;
        crate::tasks::BoardPlan::read(&path, &text)
    }

    /// Whether a worker has marked the session finished.
    pub fn is_finished(&self) -> bool {
        self.dir.finished_marker().exists()
    }

    /// When the session was marked finished: the first line of
    /// `status/finished` (an RFC 3339 time), if it is there.
    pub fn finished_stamp(&self) -> Option<String> {
        fs::read_to_string(self.dir.finished_marker())
            .ok()
            .and_then(|t| t.lines().next().map(str::to_owned))
    }

    /// How many tasks have a result file in `results/`, counted by name
    /// (no result is read); 0 when it cannot be listed.
    pub fn result_count(&self) -> usize {
        fs::read_dir(self.dir.results_dir()).map_or(0, |d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.ends_with(".json") && !n.starts_with('.')
                })
                .count()
        })
    }

    /// The number of tasks `plan.json` says it has, read without building
    /// the tasks; `None` when it cannot be read.
    pub fn plan_task_count(&self) -> Option<usize> {
        #[derive(Deserialize)]
        struct Skim {
            analysis: SkimAnalysis,
        }
        #[derive(Deserialize)]
        struct SkimAnalysis {
            tasks: usize,
        }
        let bytes = fs::read(self.dir.plan_json()).ok()?;
        // Unknown fields (the tasks) are skipped without being built.
        serde_json::from_slice::<Skim>(&bytes)
            .ok()
            .map(|p| p.analysis.tasks)
    }

    /// Warns about files and directories readable by others: returns the
    /// paths whose mode allows group or other access.
    pub fn too_open(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut check = |p: PathBuf| {
            if let Ok(m) = fs::symlink_metadata(&p) {
                // A link's mode means nothing (and writes refuse it).
                if !m.file_type().is_symlink() && m.permissions().mode() & 0o077 != 0 {
                    out.push(p);
                }
            }
        };
        check(self.dir.path().to_path_buf());
        for sub in SESSION_SUBDIRS {
            check(self.dir.join(sub));
        }
        check(self.dir.session_json());
        check(self.dir.plan_json());
        out
    }
}

/// Reads `plan.json` of a session directory, refusing a format newer than
/// this orch understands.
pub fn read_plan(dir: &SessionDir) -> Result<PlanDoc> {
    let path = dir.plan_json();
    let doc: PlanDoc = read_json(&path)?;
    check_format(&path, "plan", doc.format, PLAN_FORMAT)?;
    Ok(doc)
}

/// Every session under `root`, oldest first. Directories whose
/// `session.json` cannot be read, or that are refused, are returned as
/// errors beside the rest. A root another user controls is refused
/// ([`check_root`]).
pub fn list_sessions(root: &Path) -> Result<(Vec<Session>, Vec<Error>)> {
    let (sessions, errors) = scan(root)?;
    Ok((sessions, errors.into_iter().map(|(_, e)| e).collect()))
}

/// The newest session under `root`, finished or not (`None` without
/// any readable one).
pub fn newest(root: &Path) -> Result<Option<Session>> {
    let (sessions, _) = scan(root)?;
    Ok(sessions.into_iter().last())
}

/// Sessions that could not be opened: directory name and why.
type Unopened = Vec<(String, Error)>;

/// [`list_sessions`], with the directory name of each error.
fn scan(root: &Path) -> Result<(Vec<Session>, Unopened)> {
    check_root(root)?;
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(Error::io("read", root, e)),
    };
    let mut sessions = Vec::new();
    let mut errors = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(SESSION_PREFIX) {
            continue;
        }
        // A link named like a session is refused by `open`, not skipped.
        if !entry
            .file_type()
            .is_ok_and(|t| t.is_dir() || t.is_symlink())
        {
            continue;
        }
        match Session::open(entry.path()) {
            Ok(s) => sessions.push(s),
            Err(e) => errors.push((name.to_owned(), e)),
        }
    }
    sessions.sort_by(|a, b| (&a.info.created, &a.info.id).cmp(&(&b.info.created, &b.info.id)));
    Ok((sessions, errors))
}

/// Whether an error opening a session means it could not be read or is not
/// trusted (as opposed to damaged, or not a session at all).
fn is_access_error(e: &Error) -> bool {
    match e {
        Error::Refused { .. } => true,
        Error::Io { source, .. } => source.kind() != io::ErrorKind::NotFound,
        _ => false,
    }
}

/// Opens `dir` if it is there: `None` if nothing has that name or it has
/// no `session.json` (not a session); an error if it cannot be read or is
/// refused.
fn open_if_there(dir: &Path) -> Result<Option<Session>> {
    match fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", dir, e)),
    }
    match Session::open(dir) {
        Ok(s) => Ok(Some(s)),
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Finds the session `query` names (an id, `session-<id>`, a path to a
/// session directory, or a name: the newest session with that name), or
/// without a query the newest unfinished session.
///
/// The root and the session must be trusted ([`check_root`],
/// [`check_session_dir`]); a session that cannot be read or is refused is
/// an error, not skipped: by name, when no readable session has it; by
/// default, when it is newer than the one found.
pub fn resolve(root: &Path, query: Option<&str>) -> Result<Session> {
    match query {
        Some(q) if !q.is_empty() => {
            if q.contains('/') {
                let p = Path::new(q);
                // Its directory is its root.
                if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    check_root(parent)?;
                }
                return open_if_there(p)?.ok_or_else(|| Error::SessionNotFound {
                    root: root.to_path_buf(),
                    query: q.to_owned(),
                });
            }
            check_root(root)?;
            let by_id = root.join(if q.starts_with(SESSION_PREFIX) {
                q.to_owned()
            } else {
                session_dir_name(q)
            });
            if crate::layout::check_name("session id", q).is_ok() {
                if let Some(s) = open_if_there(&by_id)? {
                    return Ok(s);
                }
            }
            let (sessions, errors) = scan(root)?;
            if let Some(s) = sessions.into_iter().rev().find(|s| s.info.name == q) {
                return Ok(s);
            }
            match errors.into_iter().find(|(_, e)| is_access_error(e)) {
                Some((_, e)) => Err(e),
                None => Err(Error::SessionNotFound {
                    root: root.to_path_buf(),
                    query: q.to_owned(),
                }),
            }
        }
        _ => {
            let (sessions, errors) = scan(root)?;
            let found = sessions.into_iter().rev().find(|s| !s.is_finished());
            // Ids sort by age: one newer than the session found (or any,
            // without one) that cannot be read may be the one meant.
            let newer = |name: &str| {
                found
                    .as_ref()
                    .is_none_or(|s| name > session_dir_name(&s.info.id).as_str())
            };
            if let Some((_, e)) = errors
                .into_iter()
                .filter(|(name, e)| is_access_error(e) && newer(name))
                .max_by(|a, b| a.0.cmp(&b.0))
            {
                return Err(e);
            }
            found.ok_or_else(|| Error::NoSession {
                root: root.to_path_buf(),
            })
        }
    }
}
