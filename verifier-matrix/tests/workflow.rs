//! The CI workflow (`.github/workflows/verifier-matrix.yml`) and the sharded matrix it runs.
//!
//! - `the_workflow_passes_actionlint`: the workflow lints clean with actionlint (ci/setup.sh
//!   installs it under target/ci-tools; shellcheck, which it runs on `run:` scripts, comes from
//!   Debian).
//! - `the_workflow_shards_what_it_uploads_and_merges`: the command lines read from the workflow
//!   fit together (each shard's `--out` is what its job uploads, the merge reads what the report
//!   job downloads), without booting anything.
//! - `sharded_default_matrix_judges_as_one_run` (the acceptance test of issue 18, item 3; ignored
//!   by `cargo test`, run by `make test` after the matrix): takes each shard's command line from
//!   the workflow, runs them side by side on this machine on the default matrix (with `--jobs 1`
//!   appended: the shards share the machine's cores), merges their reports with the workflow's
//!   own merge command line, and requires the merged verdicts, run problems and exit status to be
//!   those of one run of the whole matrix. The one run is `TAPIO_MATRIX_REPORT` (the report of
//!   the `cargo xtask verifier-matrix` that `make test` has just run, from this same tree) or,
//!   without it, a run this test makes first.

#[path = "../../loader/tests/common/skip.rs"]
mod skip;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use verifier_matrix::report::document::Report;
use yaml_rust2::{Yaml, YamlLoader};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_owned()
}

fn workflow_path() -> PathBuf {
    workspace().join(".github/workflows/verifier-matrix.yml")
}

/// What the test needs of the workflow, its expressions substituted for each shard.
struct Workflow {
    /// Per shard (1..=n): its command line, its artifact name and the files it uploads.
    shards: Vec<ShardJob>,
    /// The report job's merge command line, and the folder it downloads the artifacts into.
    merge: String,
    download_dir: String,
    download_pattern: String,
}

struct ShardJob {
    command: String,
    artifact: String,
    uploads: Vec<String>,
}

fn step<'a>(job: &'a Yaml, what: &str, found: impl Fn(&Yaml) -> bool) -> &'a Yaml {
    job["steps"].as_vec().expect("steps").iter().find(|s| found(s)).unwrap_or_else(|| panic!("workflow: no step {what}"))
}

fn text<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str().unwrap_or_else(|| panic!("workflow: {what} is not a string: {y:?}"))
}

fn read_workflow() -> Workflow {
    let source = std::fs::read_to_string(workflow_path()).expect("read the workflow");
    let docs = YamlLoader::load_from_str(&source).expect("the workflow is YAML");
    let doc = &docs[0];
    let shard_job = &doc["jobs"]["shard"];
    let values: Vec<i64> = shard_job["strategy"]["matrix"]["shard"]
        .as_vec()
        .expect("jobs.shard.strategy.matrix.shard is a list")
        .iter()
        .map(|v| v.as_i64().expect("a shard number"))
        .collect();
    let total = values.len();
    assert_eq!(values, (1..=total as i64).collect::<Vec<_>>(), "matrix.shard lists 1..=n");
    let run = text(&step(shard_job, "id: matrix-shard", |s| s["id"].as_str() == Some("matrix-shard"))["run"], "the shard's run");
    let upload = step(shard_job, "uses: actions/upload-artifact", |s| s["uses"].as_str().is_some_and(|u| u.starts_with("actions/upload-artifact@")));
    let substitute = |s: &str, shard: usize| {
        let out = s.replace("${{ matrix.shard }}", &shard.to_string()).replace("${{ strategy.job-total }}", &total.to_string());
        assert!(!out.contains("${{"), "an expression the test does not know: {out}");
        out
    };
    let shards = values
        .iter()
        .map(|&i| {
            let i = i as usize;
            ShardJob {
                command: substitute(run.trim(), i),
                artifact: substitute(text(&upload["with"]["name"], "the artifact name"), i),
                uploads: text(&upload["with"]["path"], "the upload path").lines().map(|l| substitute(l.trim(), i)).filter(|l| !l.is_empty()).collect(),
            }
        })
        .collect();
    let report_job = &doc["jobs"]["report"];
    assert_eq!(report_job["needs"].as_str(), Some("shard"), "the report job waits for the shards");
    let download = step(report_job, "uses: actions/download-artifact", |s| s["uses"].as_str().is_some_and(|u| u.starts_with("actions/download-artifact@")));
    let merge = text(&step(report_job, "id: merge", |s| s["id"].as_str() == Some("merge"))["run"], "the merge's run").trim().to_owned();
    Workflow {
        shards,
        merge,
        download_dir: text(&download["with"]["path"], "the download path").to_owned(),
        download_pattern: text(&download["with"]["pattern"], "the download pattern").to_owned(),
    }
}

/// The `--out` of a shard's command line.
fn out_of(command: &str) -> String {
    let after = command.split_once("--out ").unwrap_or_else(|| panic!("no --out in `{command}`")).1;
    after.split_whitespace().next().expect("--out's value").trim_matches('"').to_owned()
}

#[test]
fn the_workflow_shards_what_it_uploads_and_merges() {
    let wf = read_workflow();
    assert!(wf.shards.len() >= 2, "a matrix of shards");
    for (i, shard) in wf.shards.iter().enumerate() {
        let n = wf.shards.len();
        // One command line, the matrix of the lock's default kernels (no --kernels), this shard.
        assert!(!shard.command.contains('\n'), "one command line: {}", shard.command);
        assert!(shard.command.starts_with("cargo xtask verifier-matrix "), "{}", shard.command);
        assert!(shard.command.contains(&format!("--shard \"{}/{n}\"", i + 1)), "{}", shard.command);
        assert!(!shard.command.contains("--kernels") && !shard.command.contains("--jobs"), "{}", shard.command);
        let out = out_of(&shard.command);
        assert!(shard.uploads.contains(&format!("{out}/report.json")), "shard {} uploads its report.json: {:?}", i + 1, shard.uploads);
        let prefix = wf.download_pattern.trim_end_matches('*');
        assert!(shard.artifact.starts_with(prefix), "{} matches the download pattern {}", shard.artifact, wf.download_pattern);
    }
    assert!(wf.merge.starts_with("cargo xtask verifier-matrix report merge "), "{}", wf.merge);
    assert!(wf.merge.contains(&format!("{}/*/report.json", wf.download_dir)), "{}", wf.merge);
    assert!(wf.merge.contains("--summary \"$GITHUB_STEP_SUMMARY\""), "{}", wf.merge);
}

/// actionlint: ci/setup.sh's copy, or one on PATH.
fn actionlint() -> Option<PathBuf> {
    let ours = workspace().join("target/ci-tools/actionlint/bin/actionlint");
    if ours.is_file() {
        return Some(ours);
    }
    let on_path = Command::new("actionlint").arg("-version").output().is_ok_and(|o| o.status.success());
    on_path.then(|| PathBuf::from("actionlint"))
}

#[test]
fn the_workflow_passes_actionlint() {
    let test = "the_workflow_passes_actionlint";
    let Some(actionlint) = actionlint() else {
        skip::skip(test, skip::Why::Environment("no actionlint (ci/setup.sh installs it)".to_owned()));
        return;
    };
    let out = Command::new(&actionlint)
        .current_dir(workspace())
        .arg(workflow_path())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", actionlint.display()));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "actionlint finds problems in the workflow:\n{said}");
}

/// Starts a workflow command line with bash in `dir`, as its step would, output into `log`.
///
/// The variables cargo sets for this test binary (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...) are
/// not passed on: no CI step has them, and build scripts that watch them (ring's) would make the
/// inner `cargo xtask` rebuild its dependencies, and the next plain one rebuild them back.
fn run_line(line: &str, dir: &Path, log: &Path) -> std::process::Child {
    let log = std::fs::File::create(log).expect("log file");
    let mut command = Command::new("bash");
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let from_cargo_test = ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_TARGET_TMPDIR", "CARGO_PRIMARY_PACKAGE"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            || name == "CARGO"
            || name == "OUT_DIR";
        if from_cargo_test {
            command.env_remove(name.as_ref());
        }
    }
    command
        .args(["-eo", "pipefail", "-c", line])
        .current_dir(dir)
        .env("GITHUB_STEP_SUMMARY", dir.join("summary.md"))
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("run `{line}`: {e}"))
}

fn wait(mut child: std::process::Child, what: &str, log: &Path) -> i32 {
    let status = child.wait().unwrap_or_else(|e| panic!("wait for {what}: {e}"));
    let code = status.code().unwrap_or_else(|| panic!("{what} was killed: {status}"));
    // 3 is the harness failing (not a verdict): show why.
    assert!(code != 3, "{what} failed to run (exit 3):\n{}", std::fs::read_to_string(log).unwrap_or_default());
    code
}

fn verdicts(r: &Report) -> Vec<(String, &'static str)> {
    r.rows.iter().map(|row| (row.key().to_string(), row.verdict.label())).collect()
}

#[test]
#[ignore = "boots the default matrix twice over (a shard run and, without TAPIO_MATRIX_REPORT, a whole run): make test runs it after the matrix"]
fn sharded_default_matrix_judges_as_one_run() {
    let test = "sharded_default_matrix_judges_as_one_run";
    if skip::unless_root(test, "the host row loads into this kernel") {
        return;
    }
    let wf = read_workflow();
    // Under target/, so cargo finds the workspace (and its xtask alias) from here.
    let dir = workspace().join("target/verifier-matrix/workflow-test");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");

    let started = Instant::now();
    let (whole, whole_status) = match std::env::var_os("TAPIO_MATRIX_REPORT") {
        Some(path) => {
            let report = Report::load(Path::new(&path)).unwrap_or_else(|e| panic!("TAPIO_MATRIX_REPORT: {e}"));
            let status = report.exit_status();
            (report, i32::from(status))
        }
        None => {
            let log = dir.join("whole.log");
            let code = wait(run_line("cargo xtask verifier-matrix --out whole", &dir, &log), "the whole run", &log);
            (Report::load(&dir.join("whole/report.json")).expect("the whole run's report"), code)
        }
    };
    let whole_took = started.elapsed();
    assert!(whole.is_complete() && whole.selection.shards == 1, "the one run is unsharded: {}", whole.shard_label());
    assert_eq!(whole.selection.kernels, "default", "the one run is of the default matrix");

    // Every shard at once, each on one core.
    let started = Instant::now();
    let children: Vec<_> = wf
        .shards
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let log = dir.join(format!("shard-{}.log", i + 1));
            (run_line(&format!("{} --jobs 1", s.command), &dir, &log), log)
        })
        .collect();
    let codes: Vec<i32> = children.into_iter().enumerate().map(|(i, (c, log))| wait(c, &format!("shard {}", i + 1), &log)).collect();
    let shards_took = started.elapsed();

    // What the artifacts hold, where the report job's download puts them.
    for shard in &wf.shards {
        for file in &shard.uploads {
            let from = dir.join(file);
            assert!(from.is_file(), "the shard wrote {file}, which its job uploads");
            let to = dir.join(&wf.download_dir).join(&shard.artifact).join(Path::new(file).file_name().expect("a file"));
            std::fs::create_dir_all(to.parent().expect("dir")).expect("download dir");
            std::fs::copy(&from, &to).expect("copy the artifact");
        }
    }
    let started = Instant::now();
    let log = dir.join("merge.log");
    let merge_code = wait(run_line(&wf.merge, &dir, &log), "the merge", &log);
    let merge_took = started.elapsed();
    let merged = Report::load(&dir.join(out_of(&wf.merge)).join("report.json")).expect("the merged report");

    eprintln!(
        "{test}: whole run {:.0} s ({}), {} shards side by side {:.0} s (exit {codes:?}), merge {:.1} s (exit {merge_code})",
        whole_took.as_secs_f64(),
        if std::env::var_os("TAPIO_MATRIX_REPORT").is_some() { "read from TAPIO_MATRIX_REPORT" } else { "run here" },
        wf.shards.len(),
        shards_took.as_secs_f64(),
        merge_took.as_secs_f64(),
    );
    assert_eq!(merged.source, whole.source, "the one run and the shards proved the same tree");
    assert_eq!(
        merged.selection.rows.iter().map(|p| p.key()).collect::<Vec<_>>(),
        whole.selection.rows.iter().map(|p| p.key()).collect::<Vec<_>>(),
        "the same rows selected"
    );
    assert!(merged.is_complete(), "every shard merged: {}", merged.shard_label());
    assert_eq!(verdicts(&merged), verdicts(&whole), "the merged verdicts are the one run's");
    assert_eq!(merged.problems, whole.problems, "the run problems are the one run's");
    assert_eq!(merge_code, whole_status, "the merge exits as the one run did");
    let summary = std::fs::read_to_string(dir.join("summary.md")).expect("the merge wrote the job summary");
    assert!(summary.contains("| arch | kernel |") && summary.contains(&format!("Shards: {}", merged.shard_label())), "{summary}");
}
