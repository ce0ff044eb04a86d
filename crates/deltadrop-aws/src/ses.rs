//! Emails through Amazon SES v2.

use async_trait::async_trait;
use aws_sdk_sesv2::error::DisplayErrorContext;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};
use deltadrop::error::{Error, Result};
use deltadrop::mail::{header_value, Email, Mailer};

/// Sends emails through Amazon SES v2; the sender (`notifications.from`) must be an identity
/// SES has verified.
#[derive(Clone)]
pub struct SesMailer {
    client: aws_sdk_sesv2::Client,
}

impl SesMailer {
    /// Sends through `client`.
    pub fn new(client: aws_sdk_sesv2::Client) -> Self {
        SesMailer { client }
    }
}

fn content(text: &str) -> Result<Content> {
    Content::builder()
        .data(text)
        .charset("UTF-8")
        .build()
        .map_err(|e| Error::MailError {
            message: e.to_string(),
        })
}

#[async_trait]
impl Mailer for SesMailer {
    async fn send(&self, email: &Email) -> Result<String> {
        let message = Message::builder()
            // SES builds the headers; the subject is still cleaned so nothing can inject one.
            .subject(content(&header_value(&email.subject))?)
            .body(
                Body::builder()
                    .text(content(&email.text)?)
                    .html(content(&email.html)?)
                    .build(),
            )
            .build();
        let sent = self
            .client
            .send_email()
            .from_email_address(&email.from)
            .destination(
                Destination::builder()
                    .set_to_addresses(Some(email.to.clone()))
                    .build(),
            )
            .content(EmailContent::builder().simple(message).build())
            .send()
            .await
            .map_err(|e| Error::MailError {
                message: DisplayErrorContext(e).to_string(),
            })?;
        Ok(sent.message_id().unwrap_or("sent").to_string())
    }
}
