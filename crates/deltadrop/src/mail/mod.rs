//! Emails and the mailers that deliver them.

mod outbox;
mod render;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use outbox::OutboxMailer;
#[cfg(feature = "merge")]
pub(crate) use render::file_name;
pub use render::{render_digest, render_failure, render_stale_files, render_success};

use crate::error::Result;

/// A rendered email: plain text and HTML alternatives of the same content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    /// The sender address.
    pub from: String,
    /// The recipient addresses.
    pub to: Vec<String>,
    /// The subject line, as written (mailers make it safe for a header).
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body.
    pub html: String,
}

/// Delivers emails: SES on AWS, [`OutboxMailer`] on a machine.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Delivers the email and returns where it went (a message id or a file path).
    async fn send(&self, email: &Email) -> Result<String>;
}

/// A header value that cannot break out of its header: control characters (CR and LF above all)
/// become spaces, and non-ASCII text is RFC 2047 encoded.
pub fn header_value(raw: &str) -> String {
    let clean: String = raw
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.is_ascii() {
        clean
    } else {
        use base64::Engine;
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(clean.as_bytes())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_cannot_inject_headers() {
        let v = header_value("a.csv\r\nBcc: victim@example.com");
        assert!(!v.contains('\n') && !v.contains('\r'));
        assert_eq!(header_value("Zürich.csv"), "=?UTF-8?B?WsO8cmljaC5jc3Y=?=");
    }
}
