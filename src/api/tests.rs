//! The handlers in-process: a context on a temporary directory with a manual clock,
//! the runner loop started where a test needs jobs to run, no socket and no daemon.

use chrono::Duration;
use serde_json::Value;
use tokio::sync::mpsc;

use super::Api;
use crate::catalog::{JobKind, JobState};
use crate::context::testing::{TestContext, at, demo};
use crate::control::peer::Caller;
use crate::control::protocol::{ErrorCode, Request};

fn root() -> Caller {
    Caller {
        uid: 0,
        user: "root".into(),
        groups: vec!["root".into()],
    }
}

/// Admits and runs `request` as `caller`, as the server would; the result as JSON.
async fn ask(api: &Api, caller: &Caller, request: Request) -> Result<Value, (ErrorCode, String)> {
    let (replies, mut progress) = mpsc::channel(64);
    // Progress lines are not what these tests look at; keep the channel drained.
    tokio::spawn(async move { while progress.recv().await.is_some() {} });
    let outcome = match api.admit(caller, &request).await {
        Ok(()) => api.handle(caller, request, Vec::new(), &replies).await,
        Err(e) => Err(e),
    };
    outcome
        .map(|raw| serde_json::from_str(raw.get()).expect("results are JSON"))
        .map_err(|e| (e.code, e.message))
}

fn backup_create(name: Option<&str>, wait: bool, keep_until: Option<&str>) -> Request {
    Request::BackupCreate {
        env: "demo".into(),
        name: name.map(str::to_owned),
        wait,
        keep_until: keep_until.map(at),
    }
}

fn dry_run_restore(backup: &str) -> Request {
    Request::Restore {
        env: "demo".into(),
        backup: backup.into(),
        from: None,
        map: Default::default(),
        wait: false,
        no_safety_backup: false,
        dry_run: true,
    }
}

async fn setup(start: &str) -> (TestContext, Api) {
    let test = demo(at(start), |_| {}).await;
    let api = Api::new(test.ctx.clone());
    (test, api)
}

#[tokio::test]
async fn time_comes_from_the_context_clock() {
    // In 2031, an expiry in 2030 is in the past, whatever the machine's clock says.
    let (_test, api) = setup("2031-06-01T12:00:00Z").await;
    let refused = ask(
        &api,
        &root(),
        backup_create(None, false, Some("2030-01-01T00:00:00Z")),
    )
    .await
    .unwrap_err();
    assert_eq!(
        refused,
        (
            ErrorCode::Invalid,
            "--keep-until 2030-01-01T00:00:00+00:00 is in the past".to_owned()
        )
    );
    let queued = ask(&api, &root(), backup_create(None, false, None))
        .await
        .unwrap();
    assert_eq!(
        queued["backup"], "20310601-120000-manual",
        "named by the clock"
    );
    assert_eq!(queued["kind"], "backup");
    assert_eq!(queued["state"], "queued");
}

#[tokio::test]
async fn a_queued_job_cancelled_leaves_nothing_listed() {
    let (test, api) = setup("2030-01-01T00:00:00Z").await;
    let job = ask(&api, &root(), backup_create(Some("nightly"), false, None))
        .await
        .unwrap();
    let id = job["id"].as_i64().unwrap();
    let taken = ask(&api, &root(), backup_create(Some("nightly"), false, None))
        .await
        .unwrap_err();
    assert_eq!(taken.0, ErrorCode::Conflict, "{}", taken.1);
    // No runner loop: the job stays queued until cancelled.
    let cancelled = ask(&api, &root(), Request::JobCancel { id }).await.unwrap();
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancelled["error"], "cancelled while queued");
    let listed = ask(&api, &root(), Request::BackupList { env: "demo".into() })
        .await
        .unwrap();
    assert_eq!(listed, Value::Array(vec![]));
    let record = test.ctx.catalog.get_job(id).unwrap().unwrap();
    assert_eq!(
        (record.kind, record.state),
        (JobKind::Backup, JobState::Cancelled)
    );
}

#[tokio::test]
async fn access_is_decided_before_anything_runs() {
    let (test, api) = setup("2030-01-01T00:00:00Z").await;
    let stranger = Caller {
        uid: 4_000_000_000,
        user: "stranger".into(),
        groups: vec![],
    };
    let refused = ask(&api, &stranger, backup_create(None, false, None))
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        (
            ErrorCode::Forbidden,
            "user stranger may not backup on environment demo".to_owned()
        )
    );
    let unknown = ask(&api, &root(), Request::EnvShow { env: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(
        unknown,
        (
            ErrorCode::NotFound,
            "unknown environment \"nope\"".to_owned()
        )
    );
    assert!(
        test.ctx.catalog.list_jobs(10).unwrap().is_empty(),
        "nothing queued"
    );
}

#[tokio::test]
async fn backups_run_restore_and_expire_by_the_clock() {
    let (test, api) = setup("2030-01-01T00:00:00Z").await;
    let runner = tokio::spawn(crate::jobs::run(test.ctx.clone()));
    let first = ask(&api, &root(), backup_create(Some("first"), true, None))
        .await
        .unwrap();
    assert_eq!(first["job"]["state"], "succeeded");
    assert_eq!(first["backup"]["status"], "completed");
    assert_eq!(
        first["backup"]["expires"], "2030-01-15T00:00:00Z",
        "14 days later"
    );
    test.hand.advance(Duration::days(10));
    ask(&api, &root(), backup_create(Some("second"), true, None))
        .await
        .unwrap();

    let plan = ask(&api, &root(), dry_run_restore("first")).await.unwrap();
    let parts: Vec<&str> = plan["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["part"].as_str().unwrap())
        .collect();
    assert_eq!(parts, ["code", "database:app"]);

    // Day 15: the first backup has expired and goes; the second stays.
    test.hand.advance(Duration::days(5));
    let pruned = ask(&api, &root(), Request::Prune { dry_run: false })
        .await
        .unwrap();
    assert_eq!(pruned["pruned"], serde_json::json!(["demo/first"]));
    let expired = ask(&api, &root(), dry_run_restore("first"))
        .await
        .unwrap_err();
    assert_eq!(expired.0, ErrorCode::NotFound, "{}", expired.1);
    test.ctx.shutdown.cancel();
    runner.await.unwrap();
}

#[tokio::test]
async fn generated_names_stay_unique_within_one_second() {
    let (_test, api) = setup("2030-01-01T00:00:00Z").await;
    let mut names = Vec::new();
    for _ in 0..2 {
        let request = Request::Import {
            env: "demo".into(),
            parts: vec!["code".into()],
            urls: Default::default(),
            name: None,
            version: None,
            wait: false,
            keep_setuid: false,
        };
        api.admit(&root(), &request).await.unwrap();
        let file = std::os::fd::OwnedFd::from(tempfile::tempfile().unwrap());
        let (replies, _progress) = mpsc::channel(1);
        let job = api
            .handle(&root(), request, vec![file], &replies)
            .await
            .map_err(|e| e.message)
            .unwrap();
        let job: Value = serde_json::from_str(job.get()).unwrap();
        assert_eq!(job["kind"], "import");
        names.push(job["backup"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        names,
        ["20300101-000000-import", "20300101-000000-import-2"]
    );
    // A name asked for is never changed: taken is taken.
    let taken = ask(
        &api,
        &root(),
        backup_create(Some("20300101-000000-import"), false, None),
    )
    .await
    .unwrap_err();
    assert_eq!(taken.0, ErrorCode::Conflict, "{}", taken.1);
}

#[tokio::test]
async fn a_stopping_daemon_takes_no_new_jobs() {
    let (test, api) = setup("2030-01-01T00:00:00Z").await;
    test.ctx.shutdown.cancel();
    let refused = ask(&api, &root(), backup_create(None, false, None))
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        (
            ErrorCode::ShuttingDown,
            "envsnapd is shutting down and takes no new jobs".to_owned()
        )
    );
    let restore = ask(&api, &root(), dry_run_restore("any"))
        .await
        .unwrap_err();
    assert_eq!(restore.0, ErrorCode::ShuttingDown);
    assert!(test.ctx.catalog.list_jobs(10).unwrap().is_empty());
}
