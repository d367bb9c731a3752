//! Object Lock requests (`store::object_lock::S3Lock`) against a real S3 server that
//! implements Object Lock and versioning: moto's (see support::moto for what it does
//! and does not do like S3). The store's own client (object_store) reads what the
//! lock keeps, as a restore on a clean host would.

use bytes::Bytes;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use envsnap::store::StoreError;
use envsnap::store::object_lock::{LockMode, ObjectVersion, Retention, S3Lock};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt};
use url::Url;

use crate::support::{moto, s3};

/// `days` from now, in whole seconds (as S3 keeps lock dates).
fn days_ahead(days: i64) -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0) + Duration::days(days)
}

fn lock_for(bucket: &str) -> S3Lock {
    S3Lock::from_url(&Url::parse(&format!("s3://{bucket}/fleet")).unwrap()).unwrap()
}

/// The store's normal client on `bucket`, as `Store::from_url` builds it.
fn object_store_for(bucket: &str) -> impl ObjectStore {
    object_store::aws::AmazonS3Builder::from_env()
        .with_url(format!("s3://{bucket}"))
        .build()
        .unwrap()
}

/// The error's text, checked to be one line without the secret key.
fn shown(error: &StoreError) -> String {
    let text = error.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(!text.contains(s3::SECRET_KEY), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_versions_outlive_deletes_and_stay_readable() {
    let Some(binary) = moto::moto_server() else {
        return;
    };
    let (_server, port) = moto::start_server(&binary);
    // Ours while `_server` runs (see support::moto).
    unsafe { s3::point_aws_settings_at(port) };
    moto::create_bucket(port, "locked", true);
    moto::create_bucket(port, "plain", false);
    let lock = lock_for("locked");
    assert!(lock.bucket_lock_enabled().await.unwrap());
    assert!(!lock_for("plain").bucket_lock_enabled().await.unwrap());

    for mode in [LockMode::Governance, LockMode::Compliance] {
        let path = Path::from(format!("fleet/web1/packs/ab/{mode}"));
        let retention = Retention {
            mode,
            until: days_ahead(1),
        };
        let data = Bytes::from(format!("pack locked in {mode}"));
        let version = lock
            .put_locked(&path, data.clone(), &retention, false)
            .await;
        let version = version
            .unwrap()
            .expect("a versioned bucket names the version");
        assert_eq!(
            lock.retention(&path, None).await.unwrap(),
            Some(retention.clone())
        );
        let state = lock.lock_state(&path, Some(&version)).await.unwrap();
        assert_eq!(state.retention, Some(retention.clone()));
        assert_eq!(state.version_id.as_deref(), Some(version.as_str()));
        assert!(!state.legal_hold);

        // The version itself cannot be deleted...
        let refused = moto::delete_version(port, "locked", path.as_ref(), &version, false);
        assert_eq!(refused.status, 403, "{mode}: {}", refused.text());
        assert!(
            refused.text().contains("AccessDenied"),
            "{}",
            refused.text()
        );
        // ...but a plain delete hides it behind a delete marker.
        let store = object_store_for("locked");
        store.delete(&path).await.unwrap();
        assert!(matches!(
            store.get(&path).await,
            Err(object_store::Error::NotFound { .. })
        ));
        let versions = lock.list_versions(&Path::from("fleet/web1")).await.unwrap();
        let of_path: Vec<&ObjectVersion> =
            versions.iter().filter(|v| v.key == path.as_ref()).collect();
        assert_eq!(of_path.len(), 2, "{of_path:?}");
        assert!(
            of_path[0].delete_marker && of_path[0].is_latest,
            "{of_path:?}"
        );
        assert_eq!(of_path[1].version_id, version);
        assert!(!of_path[1].delete_marker && !of_path[1].is_latest);
        assert_eq!(of_path[1].size, data.len() as u64);

        // The locked version is still there for whoever knows its id.
        let options = GetOptions {
            version: Some(version.clone()),
            ..Default::default()
        };
        let read = store.get_opts(&path, options).await.unwrap().bytes().await;
        assert_eq!(read.unwrap(), data);
    }

    // Governance gives way to whoever may bypass it; compliance to nobody.
    let retention = Retention {
        mode: LockMode::Governance,
        until: days_ahead(1),
    };
    for (mode, deleted) in [(LockMode::Governance, 204), (LockMode::Compliance, 403)] {
        let path = Path::from(format!("fleet/web1/bypass/{mode}"));
        let retention = Retention {
            mode,
            ..retention.clone()
        };
        let put = lock.put_locked(&path, Bytes::from_static(b"x"), &retention, false);
        let version = put.await.unwrap().unwrap();
        let answer = moto::delete_version(port, "locked", path.as_ref(), &version, true);
        assert_eq!(answer.status, deleted, "{mode}: {}", answer.text());
    }

    // A locked write to a bucket without Object Lock is refused, and said so on a line.
    let path = Path::from("fleet/web1/config");
    let plain = lock_for("plain");
    let error = plain.put_locked(&path, Bytes::from_static(b"x"), &retention, false);
    let error = error.await.unwrap_err();
    assert!(!error.is_transient());
    let text = shown(&error);
    assert!(
        text.contains("fleet/web1/config") && text.contains("PUT answered 400"),
        "{text}"
    );
    let missing = lock.retention(&Path::from("fleet/none"), None).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_lengthens_never_shortens_and_legal_holds_come_and_go() {
    let Some(binary) = moto::moto_server() else {
        return;
    };
    let (_server, port) = moto::start_server(&binary);
    unsafe { s3::point_aws_settings_at(port) };
    moto::create_bucket(port, "locked", true);
    let lock = lock_for("locked");
    let path = Path::from("fleet/web1/packs/cd/shared");
    let first = Retention {
        mode: LockMode::Governance,
        until: days_ahead(2),
    };
    let version = lock.put_locked(&path, Bytes::from_static(b"shared pack"), &first, false);
    let version = version.await.unwrap().unwrap();

    let later = Retention {
        until: days_ahead(30),
        ..first.clone()
    };
    lock.extend_retention(&path, &later).await.unwrap();
    assert_eq!(
        lock.retention(&path, None).await.unwrap(),
        Some(later.clone())
    );
    // moto would shorten it if asked; the lock is not asked.
    lock.extend_retention(&path, &first).await.unwrap();
    let now = lock.retention(&path, Some(&version)).await.unwrap();
    assert_eq!(now, Some(later.clone()));

    // A compliance lock is lengthened as compliance, whatever the request says.
    let strict = Path::from("fleet/web1/packs/cd/strict");
    let compliance = Retention {
        mode: LockMode::Compliance,
        ..first.clone()
    };
    let put = lock.put_locked(&strict, Bytes::from_static(b"s"), &compliance, false);
    put.await.unwrap();
    lock.extend_retention(&strict, &later).await.unwrap();
    let now = lock.retention(&strict, None).await.unwrap().unwrap();
    assert_eq!((now.mode, now.until), (LockMode::Compliance, later.until));

    // A legal hold keeps the version whatever its retention; it goes off again.
    lock.set_legal_hold(&path, true).await.unwrap();
    assert!(lock.lock_state(&path, None).await.unwrap().legal_hold);
    lock.set_legal_hold(&path, false).await.unwrap();
    assert!(!lock.lock_state(&path, None).await.unwrap().legal_hold);
    // A legal hold can come with the put itself.
    let held = Path::from("fleet/web1/keep-forever");
    let put = lock.put_locked(&held, Bytes::from_static(b"m"), &first, true);
    put.await.unwrap();
    assert!(lock.lock_state(&held, None).await.unwrap().legal_hold);

    // An unreachable endpoint is worth retrying, and says so without the secret.
    let dead_port = crate::support::ports::free_loopback_port();
    unsafe { std::env::set_var("AWS_ENDPOINT", format!("http://127.0.0.1:{dead_port}")) };
    let error = lock_for("locked").retention(&path, None).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(shown(&error).contains("HEAD"), "{error}");
}

/// Listings come a page at a time (pages of 3 here, 1000 on S3): every version and
/// delete marker arrives once, across page ends that fall inside one key's versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_listings_follow_every_page() {
    let Some(binary) = moto::moto_server() else {
        return;
    };
    let (_server, port) = moto::start_server_paging(&binary, 3);
    unsafe { s3::point_aws_settings_at(port) };
    moto::create_bucket(port, "locked", true);
    let lock = lock_for("locked");
    let store = object_store_for("locked");
    let retention = Retention {
        mode: LockMode::Governance,
        until: days_ahead(1),
    };
    let mut expected = Vec::new();
    for object in 0..4 {
        let path = Path::from(format!("fleet/web1/index/{object}"));
        for write in 0..2 {
            let data = Bytes::from(format!("{object}.{write}"));
            let version = lock
                .put_locked(&path, data, &retention, false)
                .await
                .unwrap();
            expected.push((path.to_string(), version.unwrap()));
        }
        if object % 2 == 0 {
            store.delete(&path).await.unwrap();
        }
    }
    // Outside the prefix: not listed.
    let outside = Path::from("fleet/web10/index/0");
    lock.put_locked(&outside, Bytes::from_static(b"o"), &retention, false)
        .await
        .unwrap();

    let listed = lock.list_versions(&Path::from("fleet/web1")).await.unwrap();
    let markers = listed.iter().filter(|v| v.delete_marker).count();
    assert_eq!(markers, 2, "{listed:?}");
    let mut versions: Vec<(String, String)> = listed
        .iter()
        .filter(|v| !v.delete_marker)
        .map(|v| (v.key.clone(), v.version_id.clone()))
        .collect();
    versions.sort();
    expected.sort();
    assert_eq!(versions, expected);
    let latest = listed.iter().filter(|v| v.is_latest).count();
    assert_eq!(
        latest, 4,
        "one current version or marker per key: {listed:?}"
    );
}

/// The requests are signed as S3 checks them: moto with its signature checks on
/// (botocore's SigV4, not object_store's) accepts each kind, keys that need
/// encoding included, and refuses a wrong secret without showing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_carries_a_signature_a_checking_server_accepts() {
    let Some(binary) = moto::moto_server() else {
        return;
    };
    let checking = moto::start_server_checking_signatures(&binary, "locked");
    unsafe {
        s3::point_aws_settings_at(checking.port);
        std::env::set_var("AWS_ACCESS_KEY_ID", &checking.access_key);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", &checking.secret_key);
    }
    let lock = lock_for("locked");
    assert!(lock.bucket_lock_enabled().await.unwrap());
    // A space, not `+ = & ,`: moto's check refuses those even from botocore.
    let path = Path::from("fleet/web 1/packs/ab_c-d.e");
    let retention = Retention {
        mode: LockMode::Governance,
        until: days_ahead(1),
    };
    let put = lock.put_locked(&path, Bytes::from_static(b"signed"), &retention, true);
    let version = put.await.unwrap().unwrap();
    let state = lock.lock_state(&path, Some(&version)).await.unwrap();
    assert_eq!(
        (state.retention, state.legal_hold),
        (Some(retention.clone()), true)
    );
    let later = Retention {
        until: days_ahead(3),
        ..retention
    };
    lock.extend_retention(&path, &later).await.unwrap();
    lock.set_legal_hold(&path, false).await.unwrap();
    // The whole bucket: moto's check refuses a `/` in a query value (a prefix), even
    // from botocore.
    let listed = lock.list_versions(&Path::from("")).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].key, path.as_ref());

    unsafe { std::env::set_var("AWS_SECRET_ACCESS_KEY", "not-the-secret") };
    let error = lock_for("locked").bucket_lock_enabled().await.unwrap_err();
    assert!(!error.is_transient());
    let text = shown(&error);
    assert!(!text.contains(&checking.secret_key), "{text}");
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
}
