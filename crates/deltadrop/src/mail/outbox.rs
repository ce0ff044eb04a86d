//! The local mailer: each email becomes an `.eml` file in an outbox folder, readable by any mail
//! client or text editor.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{header_value, Email, Mailer};
use crate::error::{Error, Result};

/// Writes each email as an `.eml` file into a folder instead of sending it.
#[derive(Debug, Clone)]
pub struct OutboxMailer {
    dir: PathBuf,
}

impl OutboxMailer {
    /// Writes into `dir`, creating it when needed.
    pub fn new(dir: impl AsRef<Path>) -> Self {
        OutboxMailer {
            dir: dir.as_ref().to_path_buf(),
        }
    }
}

/// Renders a MIME multipart/alternative message (RFC 5322 + RFC 2046).
pub fn to_mime(email: &Email, message_id: &str, date: &str) -> String {
    let boundary = format!("deltadrop-{}", uuid::Uuid::new_v4().simple());
    let recipients: Vec<String> = email.to.iter().map(|r| header_value(r)).collect();
    let mut out = String::new();
    out.push_str(&format!("From: {}\r\n", header_value(&email.from)));
    out.push_str(&format!("To: {}\r\n", recipients.join(", ")));
    out.push_str(&format!("Subject: {}\r\n", header_value(&email.subject)));
    out.push_str(&format!("Date: {date}\r\n"));
    out.push_str(&format!("Message-ID: <{message_id}>\r\n"));
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str(&format!(
        "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n"
    ));
    for (mime, body) in [("text/plain", &email.text), ("text/html", &email.html)] {
        out.push_str(&format!("--{boundary}\r\n"));
        out.push_str(&format!("Content-Type: {mime}; charset=utf-8\r\n"));
        out.push_str("Content-Transfer-Encoding: 8bit\r\n\r\n");
        out.push_str(&body.replace("\r\n", "\n").replace('\n', "\r\n"));
        out.push_str("\r\n");
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out
}

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, email: &Email) -> Result<String> {
        let now = chrono::Utc::now();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let message_id = format!("{id}@deltadrop.local");
        let path = self.dir.join(format!(
            "{}-{}.eml",
            now.format("%Y%m%dT%H%M%S%.3fZ"),
            &id[..8]
        ));
        let mime = to_mime(email, &message_id, &now.to_rfc2822());
        let location = path.display().to_string();
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| Error::MailError {
                message: format!("{}: {e}", self.dir.display()),
            })?;
        tokio::fs::write(&path, mime)
            .await
            .map_err(|e| Error::MailError {
                message: format!("{location}: {e}"),
            })?;
        Ok(location)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_a_multipart_message_whose_headers_resist_injection() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = OutboxMailer::new(dir.path());
        let email = Email {
            from: "deltadrop@example.com".into(),
            to: vec!["ops@example.com".into()],
            subject: "Loaded evil.csv\r\nBcc: someone@example.com".into(),
            text: "hello\nworld".into(),
            html: "<p>hello</p>".into(),
        };
        let path = mailer.send(&email).await.unwrap();
        let written = std::fs::read_to_string(path).unwrap();
        let headers = written.split("\r\n\r\n").next().unwrap();
        assert!(!headers.lines().any(|l| l.starts_with("Bcc:")), "{headers}");
        assert!(written.contains("Content-Type: text/html; charset=utf-8"));
        assert!(written.contains("hello\r\nworld"));
    }
}
