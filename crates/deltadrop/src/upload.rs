//! Which upload of a key a run processes.
//!
//! A producer may upload `orders.csv` every hour under the same key. Each upload is its own
//! file: its run reads, copies and deletes exactly that upload (pinned by S3 object version, or
//! by ETag where the bucket keeps no versions), the target table records it as applied once, and
//! an older upload never overwrites a newer one of the same key (see docs/reliability.md).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One upload of a key: what pins it in the bucket, and what orders it among uploads of the key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    /// The S3 object version (a versioned bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// S3's ETag; in a local folder a fingerprint of size, modification time and inode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// S3's event sequencer: different for every PUT of a key, the same in a duplicated
    /// notification of one PUT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequencer: Option<String>,
    /// When the object was uploaded: S3's event time, or the file's modification time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded_at: Option<DateTime<Utc>>,
}

impl Upload {
    /// No pin: operations act on whatever the key holds (archive and quarantine copies, which
    /// only the run that wrote them touches).
    pub fn any() -> Upload {
        Upload::default()
    }

    /// Whether operations act on this upload only (it has a version or an ETag), rather than
    /// on whatever the key holds.
    pub fn is_pinned(&self) -> bool {
        self.version_id.is_some() || self.etag.is_some()
    }

    /// What tells this upload from any other upload of its key: the object version, else S3's
    /// sequencer (unique per PUT of a key), else the ETag (the same bytes uploaded twice share
    /// it, so it comes last).
    pub fn id(&self) -> &str {
        self.version_id
            .as_deref()
            .or(self.sequencer.as_deref())
            .or(self.etag.as_deref())
            .unwrap_or("")
    }

    /// Orders uploads of one key. On S3 by the event's sequencer: "right pad the shorter value
    /// with zeros, and then do a lexicographical comparison"; the event time only says when S3
    /// finished the request
    /// (https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html).
    /// In a folder, by modification time. `UploadOrder::UNKNOWN` never supersedes a known order.
    pub fn order(&self) -> UploadOrder {
        if let Some(sequencer) = &self.sequencer {
            return UploadOrder::from_sequencer(sequencer);
        }
        match self.uploaded_at.and_then(|t| t.timestamp_nanos_opt()) {
            Some(nanos) => UploadOrder(nanos.max(0), 0),
            None => UploadOrder::UNKNOWN,
        }
    }
}

/// Two 60-bit halves, so that it fits the two `i64` versions of Delta application transactions
/// (a sequencer holds 16 to 20 hex digits; the first 30 count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UploadOrder(pub i64, pub i64);

impl UploadOrder {
    /// The order of an upload with neither sequencer nor upload time: the lowest.
    pub const UNKNOWN: UploadOrder = UploadOrder(0, 0);
    const HALF_DIGITS: usize = 15;

    fn from_sequencer(sequencer: &str) -> UploadOrder {
        let digits: String = sequencer
            .chars()
            .filter(char::is_ascii_hexdigit)
            .chain(std::iter::repeat('0'))
            .take(2 * Self::HALF_DIGITS)
            .collect();
        let half = |range: std::ops::Range<usize>| {
            i64::from_str_radix(&digits[range], 16).expect("15 hex digits fit an i64")
        };
        UploadOrder(
            half(0..Self::HALF_DIGITS),
            half(Self::HALF_DIGITS..2 * Self::HALF_DIGITS),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_identifies_an_upload_before_the_sequencer_and_the_etag() {
        let mut upload = Upload {
            etag: Some("e".into()),
            ..Upload::any()
        };
        assert_eq!(upload.id(), "e");
        upload.sequencer = Some("s".into());
        assert_eq!(upload.id(), "s");
        upload.version_id = Some("v".into());
        assert_eq!(upload.id(), "v");
        assert!(upload.is_pinned());
        assert!(!Upload::any().is_pinned());
        assert_eq!(Upload::any().order(), UploadOrder::UNKNOWN);
    }

    #[test]
    fn sequencers_compare_as_right_padded_hex() {
        let order = |s: &str| {
            Upload {
                sequencer: Some(s.into()),
                ..Upload::any()
            }
            .order()
        };
        assert!(order("0055AED6DCD90281E5") > order("0055AED6DCD90281E4"));
        // Right-padded: "0056" is "005600...", later than "0055FF...".
        assert!(order("0056") > order("0055FFFFFFFFFFFFFFFF"));
        assert!(order("0055AED6DCD90281E5A1") > order("0055AED6DCD90281E5"));
        assert_eq!(order("0055aed6"), order("0055AED600"));
    }
}
