//! Object Lock on the wire: the lock's types, and the XML, headers and key encoding
//! S3 uses for them. Pure: no I/O, tested on S3's documented samples.

use std::fmt::Write as _;

use chrono::{DateTime, SubsecRound, Utc};
use reqwest::header::{HeaderMap, HeaderName};
use serde::Deserialize;

pub(super) const MODE: HeaderName = HeaderName::from_static("x-amz-object-lock-mode");
pub(super) const UNTIL: HeaderName = HeaderName::from_static("x-amz-object-lock-retain-until-date");
pub(super) const LEGAL_HOLD: HeaderName = HeaderName::from_static("x-amz-object-lock-legal-hold");
pub(super) const VERSION_ID: HeaderName = HeaderName::from_static("x-amz-version-id");

/// How strictly a version is locked until its date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum LockMode {
    /// Deletable early only by a caller allowed to bypass governance retention.
    Governance,
    /// Deletable by nobody before the date, not even the account's root user.
    Compliance,
}

impl LockMode {
    /// The name S3 uses.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

impl std::fmt::Display for LockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LockMode {
    type Err = String;

    /// `governance` or `compliance`, in any case (config files and S3 both).
    fn from_str(text: &str) -> Result<Self, String> {
        if text.eq_ignore_ascii_case("governance") {
            Ok(LockMode::Governance)
        } else if text.eq_ignore_ascii_case("compliance") {
            Ok(LockMode::Compliance)
        } else {
            Err(format!(
                "lock mode {text:?} is not \"governance\" or \"compliance\""
            ))
        }
    }
}

/// A version's lock: its mode, and the date until which it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub mode: LockMode,
    /// Sent in whole seconds, rounded up: the lock never ends before this.
    pub until: DateTime<Utc>,
}

/// What locks a version: its retention, if any, and whether a legal hold is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockState {
    pub retention: Option<Retention>,
    pub legal_hold: bool,
    /// The version these are of (`None` where the bucket is not versioned).
    pub version_id: Option<String>,
}

/// One version of an object, or a delete marker, as S3 lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// The object's full path in the bucket.
    pub key: String,
    pub version_id: String,
    /// Whether this is the object's current version (what a plain GET reads).
    pub is_latest: bool,
    /// A delete marker hides the versions under it; it has no content.
    pub delete_marker: bool,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

/// Where a truncated listing goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Markers {
    pub(super) key: String,
    pub(super) version_id: Option<String>,
}

/// One page of a versions listing.
#[derive(Debug)]
pub(super) struct VersionsPage {
    pub(super) versions: Vec<ObjectVersion>,
    pub(super) next: Option<Markers>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListVersionsResult {
    /// Always sent by S3: without it, the body is not a listing.
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_version_id_marker: Option<String>,
    #[serde(rename = "Version", default)]
    versions: Vec<ListedVersion>,
    #[serde(rename = "DeleteMarker", default)]
    delete_markers: Vec<ListedVersion>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedVersion {
    key: String,
    version_id: String,
    is_latest: bool,
    last_modified: String,
    /// Delete markers have none.
    #[serde(default)]
    size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ObjectLockConfiguration {
    object_lock_enabled: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct ErrorBody {
    pub(super) code: String,
    pub(super) message: String,
}

pub(super) fn parse_versions(body: &[u8]) -> Result<VersionsPage, String> {
    let text = xml_named(body, "ListVersionsResult")?;
    let listed: ListVersionsResult = quick_xml::de::from_str(text).map_err(|e| e.to_string())?;
    let entries = (listed.versions.into_iter().map(|v| (v, false)))
        .chain(listed.delete_markers.into_iter().map(|v| (v, true)));
    let versions = entries
        .map(|(version, delete_marker)| {
            Ok(ObjectVersion {
                last_modified: parse_date(&version.last_modified)?,
                key: version.key,
                version_id: version.version_id,
                is_latest: version.is_latest,
                delete_marker,
                size: version.size,
            })
        })
        .collect::<Result<_, String>>()?;
    let next = match (listed.is_truncated, listed.next_key_marker) {
        (false, _) => None,
        (true, Some(key)) => Some(Markers {
            key,
            version_id: listed.next_version_id_marker,
        }),
        (true, None) => return Err("a truncated listing without NextKeyMarker".into()),
    };
    Ok(VersionsPage { versions, next })
}

pub(super) fn parse_lock_configuration(body: &[u8]) -> Result<bool, String> {
    let text = xml_named(body, "ObjectLockConfiguration")?;
    let config: ObjectLockConfiguration =
        quick_xml::de::from_str(text).map_err(|e| e.to_string())?;
    Ok(config.object_lock_enabled.as_deref() == Some("Enabled"))
}

/// `body` as text, if it is the XML document `root` (quick-xml reads any root
/// element into any type: a proxy's page must not read as an empty answer).
fn xml_named<'a>(body: &'a [u8], root: &str) -> Result<&'a str, String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    if text.contains(&format!("<{root}")) {
        Ok(text)
    } else {
        Err(format!("not an S3 {root}"))
    }
}

/// S3's `<Error>`; empty where the body is none (HEAD) or not S3's.
pub(super) fn parse_error(body: &[u8]) -> ErrorBody {
    std::str::from_utf8(body)
        .ok()
        .and_then(|text| quick_xml::de::from_str(text).ok())
        .unwrap_or_default()
}

pub(super) fn lock_state_from_headers(headers: &HeaderMap) -> Result<LockState, String> {
    let text = |name: &HeaderName| headers.get(name).and_then(|value| value.to_str().ok());
    let retention = match (text(&MODE), text(&UNTIL)) {
        (Some(mode), Some(until)) => Some(Retention {
            mode: mode.parse()?,
            until: parse_date(until)?,
        }),
        (None, None) => None,
        _ => return Err("a lock mode without a date, or a date without a mode".into()),
    };
    Ok(LockState {
        retention,
        legal_hold: text(&LEGAL_HOLD) == Some("ON"),
        version_id: text(&VERSION_ID).map(str::to_owned),
    })
}

pub(super) fn retention_xml(mode: LockMode, until: DateTime<Utc>) -> String {
    format!(
        "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{mode}</Mode>\
         <RetainUntilDate>{}</RetainUntilDate></Retention>",
        format_date(until)
    )
}

pub(super) fn legal_hold_xml(on: bool) -> String {
    let status = if on { "ON" } else { "OFF" };
    format!(
        "<LegalHold xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Status>{status}</Status></LegalHold>"
    )
}

/// Whether a lock `current` holds at least until `until`.
pub(super) fn reaches(current: &Option<Retention>, until: DateTime<Utc>) -> bool {
    current.as_ref().is_some_and(|held| held.until >= until)
}

/// `until` rounded up to the whole second: S3 keeps dates in whole seconds, and a
/// lock rounded down would end before it was asked to.
pub(super) fn whole_seconds(until: DateTime<Utc>) -> DateTime<Utc> {
    let down = until.trunc_subsecs(0);
    if down == until {
        down
    } else {
        down + chrono::TimeDelta::seconds(1)
    }
}

/// ISO 8601 in UTC, whole seconds (`2027-01-31T12:00:00Z`), as S3 takes it.
pub(super) fn format_date(until: DateTime<Utc>) -> String {
    whole_seconds(until)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn parse_date(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|date| date.with_timezone(&Utc))
        .map_err(|e| format!("date {text:?}: {e}"))
}

/// Percent-encodes all but S3's unreserved characters (and `/` in a path), as S3
/// and object_store's signer expect.
pub(super) fn encode(text: &str, keep_slash: bool) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                encoded.push(byte as char)
            }
            b'/' if keep_slash => encoded.push('/'),
            _ => {
                let _ = write!(encoded, "%{byte:02X}");
            }
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn date(text: &str) -> DateTime<Utc> {
        parse_date(text).unwrap()
    }

    /// The example of S3's ListObjectVersions documentation (shortened), a truncated
    /// page whose versions and delete markers interleave.
    const VERSIONS_PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name>
  <Prefix>my</Prefix>
  <KeyMarker/>
  <VersionIdMarker/>
  <NextKeyMarker>my-second-image.jpg</NextKeyMarker>
  <NextVersionIdMarker>03jpff543dhffds434rfdsFDN943fdsFkdmqnh892</NextVersionIdMarker>
  <MaxKeys>3</MaxKeys>
  <IsTruncated>true</IsTruncated>
  <Version>
    <Key>my-image.jpg</Key>
    <VersionId>3/L4kqtJl40Nr8X8gdRQBpUMLUo</VersionId>
    <IsLatest>true</IsLatest>
    <LastModified>2009-10-12T17:50:30.000Z</LastModified>
    <ETag>"fba9dede5f27731c9771645a39863328"</ETag>
    <Size>434234</Size>
    <StorageClass>STANDARD</StorageClass>
    <Owner><ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeeb</ID><DisplayName>mtd</DisplayName></Owner>
  </Version>
  <DeleteMarker>
    <Key>my-second-image.jpg</Key>
    <VersionId>03jpff543dhffds434rfdsFDN943fdsFkdmqnh892</VersionId>
    <IsLatest>true</IsLatest>
    <LastModified>2009-11-12T17:50:30.000Z</LastModified>
    <Owner><ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeeb</ID><DisplayName>mtd</DisplayName></Owner>
  </DeleteMarker>
  <Version>
    <Key>my-second-image.jpg</Key>
    <VersionId>QUpfdndhfd8438MNFDN93jdnJFkdmqnh893</VersionId>
    <IsLatest>false</IsLatest>
    <LastModified>2009-10-10T17:50:30.000Z</LastModified>
    <ETag>"9b2cf535f27731c974343645a3985328"</ETag>
    <Size>166434</Size>
    <StorageClass>STANDARD</StorageClass>
  </Version>
</ListVersionsResult>"#;

    #[test]
    fn a_truncated_versions_page_says_where_to_go_on() {
        let page = parse_versions(VERSIONS_PAGE.as_bytes()).unwrap();
        assert_eq!(
            page.next,
            Some(Markers {
                key: "my-second-image.jpg".into(),
                version_id: Some("03jpff543dhffds434rfdsFDN943fdsFkdmqnh892".into()),
            })
        );
        let summary: Vec<_> = page
            .versions
            .iter()
            .map(|v| {
                (
                    v.key.as_str(),
                    v.version_id.as_str(),
                    v.is_latest,
                    v.delete_marker,
                    v.size,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "my-image.jpg",
                    "3/L4kqtJl40Nr8X8gdRQBpUMLUo",
                    true,
                    false,
                    434234
                ),
                (
                    "my-second-image.jpg",
                    "QUpfdndhfd8438MNFDN93jdnJFkdmqnh893",
                    false,
                    false,
                    166434
                ),
                (
                    "my-second-image.jpg",
                    "03jpff543dhffds434rfdsFDN943fdsFkdmqnh892",
                    true,
                    true,
                    0
                ),
            ]
        );
        assert_eq!(page.versions[2].last_modified, date("2009-11-12T17:50:30Z"));
    }

    #[test]
    fn the_last_versions_page_ends_the_listing() {
        let last = r#"<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
            <Name>bucket</Name><Prefix>p/</Prefix><KeyMarker>p/a</KeyMarker>
            <VersionIdMarker>v1</VersionIdMarker><MaxKeys>1000</MaxKeys>
            <IsTruncated>false</IsTruncated>
            <Version><Key>p/b</Key><VersionId>null</VersionId><IsLatest>true</IsLatest>
            <LastModified>2026-12-07T11:48:29Z</LastModified><Size>5</Size></Version>
            </ListVersionsResult>"#;
        let page = parse_versions(last.as_bytes()).unwrap();
        assert_eq!(page.next, None);
        assert_eq!(page.versions.len(), 1);
        let empty = r#"<ListVersionsResult><IsTruncated>false</IsTruncated></ListVersionsResult>"#;
        assert!(
            parse_versions(empty.as_bytes())
                .unwrap()
                .versions
                .is_empty()
        );
        // Asked for again and again, a truncated page without a marker would never end.
        let stuck = "<ListVersionsResult><IsTruncated>true</IsTruncated></ListVersionsResult>";
        assert!(parse_versions(stuck.as_bytes()).is_err());
        assert!(parse_versions(b"<html>proxy error</html>").is_err());
        assert!(parse_lock_configuration(b"<html>proxy error</html>").is_err());
    }

    #[test]
    fn a_lock_configuration_says_whether_object_lock_is_on() {
        let enabled = r#"<?xml version="1.0" encoding="UTF-8"?>
            <ObjectLockConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
              <ObjectLockEnabled>Enabled</ObjectLockEnabled>
              <Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>1</Days></DefaultRetention></Rule>
            </ObjectLockConfiguration>"#;
        assert_eq!(parse_lock_configuration(enabled.as_bytes()), Ok(true));
        let bare = "<ObjectLockConfiguration></ObjectLockConfiguration>";
        assert_eq!(parse_lock_configuration(bare.as_bytes()), Ok(false));
    }

    #[test]
    fn s3_errors_give_their_code_and_message() {
        let answer = r#"<?xml version="1.0" encoding="UTF-8"?>
            <Error><Code>ObjectLockConfigurationNotFoundError</Code>
            <Message>Object Lock configuration does not exist for this bucket</Message>
            <BucketName>b</BucketName><RequestId>X</RequestId></Error>"#;
        let error = parse_error(answer.as_bytes());
        assert_eq!(error.code, "ObjectLockConfigurationNotFoundError");
        assert_eq!(
            error.message,
            "Object Lock configuration does not exist for this bucket"
        );
        assert_eq!(parse_error(b"").code, "");
        assert_eq!(parse_error(b"Bad Gateway").code, "");
    }

    #[test]
    fn retention_and_legal_hold_are_read_from_a_heads_headers() {
        let mut headers = HeaderMap::new();
        let none = lock_state_from_headers(&headers).unwrap();
        assert_eq!(
            (none.retention, none.legal_hold, none.version_id),
            (None, false, None)
        );
        headers.insert(MODE, HeaderValue::from_static("COMPLIANCE"));
        headers.insert(UNTIL, HeaderValue::from_static("2027-01-31T12:00:00.000Z"));
        headers.insert(LEGAL_HOLD, HeaderValue::from_static("ON"));
        headers.insert(VERSION_ID, HeaderValue::from_static("v7"));
        let locked = lock_state_from_headers(&headers).unwrap();
        assert_eq!(
            locked.retention,
            Some(Retention {
                mode: LockMode::Compliance,
                until: date("2027-01-31T12:00:00Z"),
            })
        );
        assert!(locked.legal_hold);
        assert_eq!(locked.version_id.as_deref(), Some("v7"));
        headers.remove(UNTIL);
        assert!(lock_state_from_headers(&headers).is_err());
    }

    #[test]
    fn dates_are_sent_in_whole_seconds_never_earlier() {
        assert_eq!(
            format_date(date("2027-01-31T12:00:00Z")),
            "2027-01-31T12:00:00Z"
        );
        assert_eq!(
            format_date(date("2027-01-31T12:00:00.001Z")),
            "2027-01-31T12:00:01Z"
        );
        assert_eq!(
            retention_xml(LockMode::Governance, date("2027-01-31T12:00:00+01:00")),
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>GOVERNANCE\
             </Mode><RetainUntilDate>2027-01-31T11:00:00Z</RetainUntilDate></Retention>"
        );
        let held = Some(Retention {
            mode: LockMode::Governance,
            until: date("2027-01-31T12:00:00Z"),
        });
        assert!(reaches(&held, date("2027-01-31T12:00:00Z")));
        assert!(!reaches(&held, date("2027-01-31T12:00:01Z")));
        assert!(!reaches(&None, date("2000-01-01T00:00:00Z")));
    }

    #[test]
    fn lock_modes_read_in_any_case() {
        assert_eq!("governance".parse(), Ok(LockMode::Governance));
        assert_eq!("COMPLIANCE".parse(), Ok(LockMode::Compliance));
        assert_eq!(LockMode::Compliance.to_string(), "COMPLIANCE");
        let error = "legal".parse::<LockMode>().unwrap_err();
        assert_eq!(
            error,
            "lock mode \"legal\" is not \"governance\" or \"compliance\""
        );
    }
}
