//! How command lines become requests.

use super::*;

fn request(line: &str) -> Request {
    Arguments::try_parse_from(line.split_whitespace())
        .unwrap()
        .command
        .request()
}

#[test]
fn arguments_are_consistent() {
    Arguments::command().debug_assert();
}

#[test]
fn completions_and_man_pages_cover_the_commands() {
    let mut script = Vec::new();
    let shell = clap_complete::Shell::Bash;
    clap_complete::generate(shell, &mut Arguments::command(), "envsnapctl", &mut script);
    let script = String::from_utf8(script).unwrap();
    assert!(script.contains("complete -F _envsnapctl"), "{script}");
    assert!(script.contains("download") && script.contains("import"));

    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man");
    let command = Command::ManPages { dir: pages.clone() };
    answer_locally(&command).unwrap().unwrap();
    let page = std::fs::read_to_string(pages.join("envsnapctl-backup-download.1")).unwrap();
    assert!(
        page.contains("\n.TH envsnapctl-backup-download 1 "),
        "{page}"
    );
    assert!(page.contains("\\-\\-part"), "{page}");
    assert!(pages.join("envsnapctl.1").exists());
}

#[test]
fn commands_map_to_requests() {
    assert_eq!(request("envsnapctl --json status"), Request::Status);
    assert_eq!(
        request("envsnapctl backup create live --name b1 --wait --socket /s"),
        Request::BackupCreate {
            env: "live".into(),
            name: Some("b1".into()),
            wait: true,
            keep_until: None,
        }
    );
    assert_eq!(
        request("envsnapctl backup delete live b1 --yes"),
        Request::BackupDelete {
            env: "live".into(),
            backup: "b1".into()
        }
    );
    assert_eq!(
        request("envsnapctl verify live --read-data"),
        Request::Verify {
            env: "live".into(),
            backup: None,
            read_data: true
        }
    );
    assert_eq!(
        request("envsnapctl prune --dry-run"),
        Request::Prune { dry_run: true }
    );
    assert_eq!(
        request("envsnapctl job watch 7"),
        Request::JobWatch { id: 7 }
    );
    assert_eq!(
        request("envsnapctl catalog rebuild"),
        Request::CatalogRebuild
    );
    let Request::Log {
        env,
        since: Some(since),
        limit: None,
    } = request("envsnapctl log live --since 2h")
    else {
        panic!("not a log request with a time");
    };
    assert_eq!(env.as_deref(), Some("live"));
    assert!(Utc::now() - since >= chrono::Duration::hours(2));
}

#[test]
fn bad_since_is_a_usage_error() {
    let error = Arguments::try_parse_from(["envsnapctl", "log", "--since", "soon"]).unwrap_err();
    assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
}
