//! ROADMAP.md files as people write them: one fixture per shape found in
//! public projects (`tests/fixtures/corpus/`, written in our own words;
//! `SHAPES.md` says where each shape comes from and what a reader expects).
//! Each is planned by the real `orch-plan` the way a person would run it,
//! and what it plans, warns about or refuses is checked exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use crate::support::*;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/corpus");

/// What one run of `orch-plan --roadmap ROADMAP.md [--all]` should give.
struct Want {
    fixture: &'static str,
    all: bool,
    /// `id < after, after : file, file`, one per planned task.
    tasks: &'static [&'static str],
    /// Done tracks listed as skipped.
    skipped: &'static [&'static str],
    /// `line: words` of each warning, all of them.
    warnings: &'static [(usize, &'static str)],
    /// `line: words` of the error, when the roadmap is refused.
    error: Option<(usize, &'static str)>,
}

const fn ok(
    fixture: &'static str,
    all: bool,
    tasks: &'static [&'static str],
    skipped: &'static [&'static str],
    warnings: &'static [(usize, &'static str)],
) -> Want {
    Want {
        fixture,
        all,
        tasks,
        skipped,
        warnings,
        error: None,
    }
}

const fn refused(fixture: &'static str, line: usize, words: &'static str) -> Want {
    Want {
        fixture,
        all: false,
        tasks: &[],
        skipped: &[],
        warnings: &[],
        error: Some((line, words)),
    }
}

const WANT: &[Want] = &[
    ok("roadmap-01-none-with-prose.md", false, &[
        "group_B_track_1 : kelp/store/schema.py",
        "group_B_track_2 < group_B_track_1 : kelp/store/sqlite.py",
    ], &[], &[]),
    ok("roadmap-01-none-with-prose.md", true, &[
        "group_B_track_1 : kelp/store/schema.py",
        "group_B_track_2 < group_B_track_1 : kelp/store/sqlite.py",
        "group_C_track_1 : kelp/importers/csv_lots.py",
        "group_D_track_1 : site/index.html",
    ], &[], &[]),
    ok("roadmap-02-dash-separators.md", true, &[
        "group_B_track_1 : ferrylog/seats/layout.py",
        "group_B_track_2 < group_B_track_1 : ferrylog/seats/holds.py",
        "group_B_track_3 : ferrylog/seats/access.py",
        "group_C_track_1 < group_B_track_1, group_B_track_2, group_B_track_3 : ferrylog/pay/checkout.py",
        "group_C_track_2 < group_C_track_1, group_B_track_1, group_B_track_2, group_B_track_3 : ferrylog/pay/refunds.py",
    ], &[], &[]),
    // Five independent tracks, group paths and the roadmap itself are
    // context: no conflicts, one wave.
    ok("roadmap-03-five-track-parallel.md", false, &[
        "group_C_track_1 : orchard/sensors/soil.py, tests/sensors/test_soil.py",
        "group_C_track_2 : orchard/sensors/light.py, tests/sensors/test_light.py",
        "group_C_track_3 : orchard/sensors/co2.py, tests/sensors/test_co2.py",
        "group_C_track_4 : orchard/sensors/leaf.py, tests/sensors/test_leaf.py",
        "group_C_track_5 : orchard/actuators/valve.py, tests/actuators/test_valve.py",
    ], &[], &[]),
    ok("roadmap-04-unclosed-fence-at-end.md", false, &[
        "group_B_track_1 : lanternfish/sinks/http.py",
        "group_B_track_2 < group_B_track_1 : lanternfish/spool.py",
        "group_B_track_3 : lanternfish/cli.py",
    ], &[], &[(29, "code block opened here is never closed; it runs to the end of the file")]),
    refused("roadmap-05-unclosed-fence-swallows-group.md", 16, "still open at `Group B` (line 21)"),
    ok("roadmap-06-status-repeated-agree.md", false, &[
        "group_B_track_2 : quillmate/export/epub.py",
        "group_B_track_3 : quillmate/export/footnotes.py",
    ], &["group_B_track_1"], &[]),
    refused("roadmap-07-status-disagree.md", 20, "marked done on line 18 but in progress here"),
    ok("roadmap-08-group-deliverables-paths.md", true, &[
        "group_B_track_1 : barnowl/rota/constraints.py",
        "group_B_track_2 : barnowl/rota/solver.py",
        "group_B_track_3 : barnowl/rota/ical.py",
        "group_C_track_1 < group_B_track_1, group_B_track_2, group_B_track_3 : barnowl/notify/reminders.py",
        "group_C_track_2 < group_B_track_1, group_B_track_2, group_B_track_3 : barnowl/notify/swaps.py",
    ], &[], &[(42, "read as group C's, though it follows track 2")]),
    ok("roadmap-09-shared-reference-paths.md", false, &[
        "group_E_track_1 : saltmarsh/harmonics.py",
        "group_E_track_2 : saltmarsh/datum.py",
        "group_E_track_3 < group_E_track_1, group_E_track_2 : saltmarsh/print_table.py",
    ], &[], &[]),
    ok("roadmap-10-phase-wrapped-lettered-items.md", true, &[
        "group_C_track_2 : hearthbook/templates/starter.py, hearthbook/templates/data/starter.yaml",
        "group_C_track_3 < group_C_track_2 : hearthbook/ui/tour.py",
        "group_D_track_1 < group_C_track_2, group_C_track_3 : hearthbook/rotation.py",
        "group_D_track_2 < group_D_track_1, group_C_track_2, group_C_track_3 : hearthbook/badges.py",
    ], &["group_C_track_1"], &[]),
    refused("roadmap-11-checklist-groups-no-tracks.md", 11, "its checklist (line 12) is not read as tracks"),
    ok("roadmap-12-after-in-heading-folder-file.md", true, &[
        "group_B_track_2 : pkg/ledger/manager.go",
        "group_C_track_3 : pkg/ingest/batcher.go",
        "group_D_track_4 < group_B_track_2, group_C_track_3 : pkg/store/client_test.go, pkg/store/mock.go, pkg/ingest/batcher_test.go",
    ], &[], &[]),
    ok("roadmap-13-numeric-groups-range-prose.md", true, &[
        "group_2_track_1 : infra/iam/deploy_user.tf",
        "group_2_track_2 : infra/secrets.tf",
        "group_3_track_1 < group_2_track_1, group_2_track_2 : infra/sql/002_vectors.sql",
        "group_3_track_2 < group_3_track_1, group_2_track_1, group_2_track_2 : harrier/migrate_vectors.py",
        "group_4_track_1 < group_2_track_1, group_2_track_2, group_3_track_1, group_3_track_2 : api/Dockerfile",
    ], &[], &[]),
    refused("roadmap-14-track-registry-no-groups.md", 10, "is not inside any group"),
    ok("roadmap-15-paren-numbered-phase-gates.md", false, &[
        "group_F_track_1 : docs/roadmap/track-1-persistence.md",
        "group_F_track_2 : docs/roadmap/track-2-chat-ui.md",
        "group_F_track_4 : docs/roadmap/track-4-permissions.md",
        "group_F_track_5 : docs/roadmap/track-5-streaming.md",
        "group_F_track_6 : docs/roadmap/track-6-artifacts.md",
    ], &["group_F_track_3"], &[]),
    ok("roadmap-16-marker-first-decimal-groups.md", true, &[
        "group_5_track_3 : runebound/combat/interrupts.py",
        "group_5_track_4 : runebound/spells/outcomes.py",
        "group_6_track_1 < group_5_track_3, group_5_track_4 : runebound/skills/minor_studies.py",
        "group_6_track_2 < group_6_track_1, group_5_track_3, group_5_track_4 : runebound/skills/spellcasting.py",
    ], &["group_5_track_1", "group_5_track_2"], &[]),
    ok("roadmap-17-crlf-bom-mojibake.md", false, &[
        "group_B_track_2 : kiosk/basket/Basket.tsx",
        "group_B_track_3 < group_B_track_2 : kiosk/print/receipt.ts",
    ], &["group_B_track_1", "group_B_track_4"], &[(6, "saved through Windows-1252")]),
    ok("roadmap-18-front-matter-comments-details.md", true, &[
        "group_C_track_1 : wicker/rules/tension.py",
        "group_C_track_2 : wicker/rules/colour.py",
        "group_D_track_1 < group_C_track_1, group_C_track_2 : wicker/library/builtin.py",
    ], &[], &[]),
    refused("roadmap-19-depends-on-variants.md", 42, "offers a choice"),
    ok("roadmap-20-prerequisite-variants.md", true, &[
        "group_C_track_1 : gannet/match/trips.py",
        "group_D_track_1 < group_C_track_1 : gannet/report/tolerance.py",
        "group_E_track_1 < group_D_track_1 : gannet/export/auditor_csv.py",
        "group_F_track_1 < group_C_track_1 : gannet/inspector/screen.py",
        "group_G_track_1 < group_D_track_1 : gannet/notify/skipper.py",
    ], &[], &[
        (22, "`Phase 1` read as groups A, B"),
        (34, "group E's `Depends on:` is read as its prerequisites"),
        (40, "`offline tiles recommended` is not a group; ignored"),
    ]),
    refused("roadmap-21-tracks-as-table.md", 26, "its table (line 29) is not read as tracks"),
];

/// A task as the DSL writes it: id, its dependencies, its files.
fn parse_task(s: &str) -> (String, BTreeSet<String>, BTreeSet<String>) {
    let (head, files) = s.split_once(" : ").unwrap_or((s, ""));
    let (id, after) = head.split_once(" < ").unwrap_or((head, ""));
    let set = |v: &str| {
        v.split(", ")
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect::<BTreeSet<_>>()
    };
    (id.trim().to_owned(), set(after), set(files))
}

/// Plans `text` as ROADMAP.md in a directory of its own (not in git).
fn plan(env: &Env, text: &str, all: bool) -> std::process::Output {
    let dir = env.path("work");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("ROADMAP.md"), text).unwrap();
    let mut args = vec!["--roadmap", "ROADMAP.md"];
    if all {
        args.push("--all");
    }
    output(env.cmd("orch-plan").args(&args).current_dir(&dir))
}

fn check(env: &Env, w: &Want, text: &str) {
    let what = format!("{}{}", w.fixture, if w.all { " --all" } else { "" });
    let out = plan(env, text, w.all);
    let err = stderr(&out);
    if let Some((line, words)) = w.error {
        assert_eq!(out.status.code(), Some(3), "{what}: {err}");
        let want = format!("ROADMAP.md:{line}: ");
        assert!(
            err.contains(&want) && err.contains(words),
            "{what}: want {want}...{words} in {err}"
        );
        return;
    }
    assert!(out.status.success(), "{what}: {err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains(": warning: ")).collect();
    assert_eq!(warnings.len(), w.warnings.len(), "{what}: {err}");
    for (line, words) in w.warnings {
        let head = format!("ROADMAP.md:{line}: warning: ");
        assert!(
            warnings
                .iter()
                .any(|l| l.starts_with(&head) && l.contains(words)),
            "{what}: want {head}{words} in {err}"
        );
    }
    let id = stdout(&out).lines().last().unwrap().to_owned();
    let plan = env.json(&id, "plan.json");
    let got: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let strs = |k: &str| {
                t[k].as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect::<BTreeSet<_>>()
            };
            (
                t["id"].as_str().unwrap().to_owned(),
                (strs("after"), strs("files")),
            )
        })
        .collect();
    let want: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = w
        .tasks
        .iter()
        .map(|t| {
            let (id, after, files) = parse_task(t);
            (id, (after, files))
        })
        .collect();
    assert_eq!(got, want, "{what}");
    // Nothing planned conflicts: every track names its own files.
    assert!(
        plan["conflicts"].is_null()
            || plan["conflicts"]["conflicts"]
                .as_array()
                .is_none_or(Vec::is_empty),
        "{what}: {}",
        plan["conflicts"]
    );
    let skipped = stdout(&out);
    for s in w.skipped {
        assert!(
            skipped.contains(&format!("  {s}  ")),
            "{what}: {s} not listed as skipped:\n{skipped}"
        );
    }
}

#[test]
fn every_roadmap_shape_of_the_corpus_plans_as_a_reader_expects() {
    let env = Env::with_agent();
    for w in WANT {
        let text = fs::read_to_string(format!("{CORPUS}/{}", w.fixture)).unwrap();
        check(&env, w, &text);
    }
    // The dependency spellings of fixture 19, once its one real choice is
    // made a list.
    let text = fs::read_to_string(format!("{CORPUS}/roadmap-19-depends-on-variants.md")).unwrap();
    let text = text.replace(
        "Depends on: Track 2 or Track 3, whichever lands first",
        "Depends on: Tracks 2 and 3",
    );
    let fixed = Want {
        fixture: "roadmap-19-depends-on-variants.md (its choice made a list)",
        ..ok(
            "",
            false,
            &[
                "group_B_track_1 : heron/route/graph.py",
                "group_B_track_2 < group_B_track_1 : heron/route/elevation.py",
                "group_B_track_3 < group_B_track_1 : heron/route/shortest.py",
                "group_B_track_4 < group_B_track_3 : heron/route/gpx.py",
                "group_B_track_5 < group_B_track_1, group_B_track_3 : heron/route/hints.py",
                "group_B_track_6 : heron/route/preview.py",
                "group_B_track_7 < group_B_track_2, group_B_track_3 : heron/route/grade.py",
                "group_B_track_8 : heron/route/closures.py",
            ],
            &[],
            &[],
        )
    };
    check(&env, &fixed, &text);
}

/// Seed 002's example: a group of five independent tracks, "4 can run in
/// parallel". With four workers, four run at once: the fifth waits for a
/// free worker, not for a conflict.
#[test]
fn a_five_track_independent_group_runs_four_at_once_with_four_workers() {
    let env = Env::new();
    let text = fs::read_to_string(format!("{CORPUS}/roadmap-03-five-track-parallel.md")).unwrap();
    let dir = env.path("work");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("ROADMAP.md"), &text).unwrap();
    // Each track's agent says it started, then waits until the test
    // opens the gate.
    let gate = env.path("gate");
    fs::create_dir_all(&gate).unwrap();
    env.script(
        "bin/claude",
        &format!(
            "#!/bin/sh\n# a stand-in agent\nd='{}'\ntouch \"$d/$ORCH_TASK\"\nwhile [ ! -e \"$d/../open\" ]; do sleep 0.02; done\necho '{{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"ok\"}}'\n",
            gate.display()
        ),
    );
    let out = output(
        env.cmd("orch-plan")
            .args(["--roadmap", "ROADMAP.md"])
            .current_dir(&dir),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).lines().last().unwrap().to_owned();
    let sdir = env.session_dir(&id);
    let mut w = Guard::new(
        env.cmd("orch-worker")
            .args(["--session", &id, "--parallel", "4"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Four agents run at once, none waiting for another.
    wait_until("four agents started", LONG, || {
        fs::read_dir(&gate).map(|d| d.count()).unwrap_or(0) >= 4
    });
    let names = |d: &std::path::Path| -> Vec<String> {
        fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(&gate).len(), 4, "the fifth waits for a free worker");
    assert_eq!(names(&sdir.join("claims")).len(), 4);
    fs::write(env.path("open"), "").unwrap();
    assert!(w.wait_timeout(LONG).success());
    let results = env.results(&id);
    assert_eq!(results.len(), 5);
    assert!(results.values().all(|r| r["status"] == "success"));
}

/// Copies a corpus folder of prompt files into the test's directory.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Folders of prompt files as people keep them: planned with `--all`
/// (or file by file), as a reader expects (details in the unit tests of
/// `prompts.rs`).
#[test]
fn every_prompt_folder_shape_of_the_corpus_plans_as_a_reader_expects() {
    let env = Env::with_agent();
    let work = env.path("work");
    copy_dir(std::path::Path::new(CORPUS), &work);
    let run = |args: &[&str]| output(env.cmd("orch-plan").args(args).current_dir(&work));
    // (folder, planned ids with their dependencies, skipped ids, warnings).
    type Folder<'a> = (
        &'a str,
        &'a [&'a str],
        &'a [&'a str],
        &'a [(&'a str, &'a str)],
    );
    let planned: &[Folder] = &[
        (
            "prompts-01-numbered-with-index",
            &[
                "003-list-service",
                "004-today-view < 003-list-service",
                "005-polish < 003-list-service, 004-today-view",
            ],
            &["001-dev-container", "002-sqlite-models", "README.md"],
            &[("README.md:1", "an index of the other prompt files")],
        ),
        (
            "prompts-04-ticket-bold-status",
            &[
                "ticket-008-filters",
                "ticket-009-saved-views < ticket-008-filters",
                "ticket-010-polish",
            ],
            &["ticket-007-csv-export"],
            &[],
        ),
        (
            "prompts-05-read-list-paths",
            &["17.1-home-and-catalog", "17.2-category-browsing"],
            &[],
            &[
                ("17.1-home-and-catalog.md:9", "`Prerequisites:` is not read"),
                (
                    "17.2-category-browsing.md:4",
                    "write `Depends on: 17.1-home-and-catalog.md`",
                ),
            ],
        ),
        (
            "prompts-06-completed-subfolder",
            &["002-add-auth", "003-api-routes < 002-add-auth"],
            &[],
            &[],
        ),
    ];
    for (folder, tasks, skipped, warnings) in planned {
        let out = run(&["--all", folder]);
        assert!(out.status.success(), "{folder}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(
            err.lines().filter(|l| l.contains(": warning: ")).count(),
            warnings.len(),
            "{folder}: {err}"
        );
        for (at, words) in *warnings {
            assert!(
                err.lines()
                    .any(|l| l.contains(&format!("{at}: warning: ")) && l.contains(words)),
                "{folder}: want {at} {words} in {err}"
            );
        }
        let text = stdout(&out);
        for s in *skipped {
            assert!(
                text.contains(s),
                "{folder}: {s} not listed as skipped:\n{text}"
            );
        }
        let id = text.lines().last().unwrap().to_owned();
        let plan = env.json(&id, "plan.json");
        let got: BTreeMap<String, BTreeSet<String>> = plan["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let after = t["after"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect();
                (t["id"].as_str().unwrap().to_owned(), after)
            })
            .collect();
        let want: BTreeMap<String, BTreeSet<String>> = tasks
            .iter()
            .map(|t| {
                let (id, after, _) = parse_task(t);
                (id, after)
            })
            .collect();
        assert_eq!(got, want, "{folder}");
    }
    // Refused, with the line and the fix.
    let refusals: &[(&[&str], u8, &str)] = &[
        (&["--all", "prompts-02-front-matter-status"], 3, "05-undo-merge.md:9: `Status: In progress` contradicts `status: \"done\"` on line 4"),
        (&["--all", "prompts-07-copied-from-roadmap"], 3, "02-invoice-render.md:6: `Track 1` names no prompt file (fix: write `Depends on: 01-ledger-postings.md`)"),
        (&["--all", "prompts-03-readme-per-dir"], 2, "3 of its subdirectories hold a README.md: give them as files"),
    ];
    for (args, code, words) in refusals {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(i32::from(*code)),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(words), "{args:?}: {}", stderr(&out));
    }
    // A folder per task: ids from the folders.
    let dirs = ["20250301-0001", "20250301-0002", "20250301-0003"]
        .map(|d| format!("prompts-03-readme-per-dir/{d}/README.md"));
    let out = run(&dirs.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).lines().last().unwrap().to_owned();
    let plan = env.json(&id, "plan.json");
    let ids: Vec<&str> = plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["20250301-0002", "20250301-0003"]);
}
