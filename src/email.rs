//! Outgoing email: [`Mailer`] sends an [`Email`] through the configured
//! backend (`STAYAFRICA_EMAIL`): one file per message, the log, or SMTP.

use secrecy::ExposeSecret;
use std::path::PathBuf;

use anyhow::Context;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::EmailSetting;

/// One outgoing message.
#[derive(Debug, Clone)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub body: String,
    /// A credential the body carries (a one-time code): the log backend
    /// writes it only when `STAYAFRICA_EMAIL_LOG_CODES` asks for it, since
    /// whoever reads the log could sign in with it.
    pub secret: Option<String>,
}

/// Where email goes.
#[derive(Clone)]
pub enum Mailer {
    /// Each message becomes one `.eml` file in this directory.
    File(PathBuf),
    /// Each message is logged under the `stayafrica::email` target
    /// (development only), its [`Email::secret`] withheld unless
    /// `codes` (`STAYAFRICA_EMAIL_LOG_CODES=true`).
    Log { codes: bool },
    /// Each message is sent through this SMTP transport.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

const FROM: &str = "StayAfrica <no-reply@stayafrica.example>";

impl Mailer {
    /// Builds the configured backend without connecting; fails on a directory that
    /// cannot be created or an invalid SMTP URL.
    pub fn from_settings(s: &EmailSetting, log_codes: bool) -> anyhow::Result<Mailer> {
        Ok(match s {
            EmailSetting::File(dir) => {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!(
                        "STAYAFRICA_EMAIL: cannot create directory {}",
                        dir.display()
                    )
                })?;
                Mailer::File(dir.clone())
            }
            EmailSetting::Log => Mailer::Log { codes: log_codes },
            EmailSetting::Smtp(url) => Mailer::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .context("STAYAFRICA_EMAIL: invalid smtp:// URL")?
                    .build(),
            ),
        })
    }

    /// Delivers one message; a file appears whole (written, then renamed) or not at all.
    pub async fn send(&self, email: &Email) -> anyhow::Result<()> {
        match self {
            Mailer::File(dir) => {
                let name = format!(
                    "{}-{}.eml",
                    time::OffsetDateTime::now_utc().unix_timestamp_nanos(),
                    uuid::Uuid::new_v4()
                );
                let text = format!(
                    "From: {FROM}\nTo: {}\nSubject: {}\n\n{}\n",
                    email.to, email.subject, email.body
                );
                // Write then rename, so a reader never sees half a message.
                let tmp = dir.join(format!(".{name}.tmp"));
                tokio::fs::write(&tmp, text)
                    .await
                    .context("writing email file")?;
                tokio::fs::rename(&tmp, dir.join(name))
                    .await
                    .context("renaming email file")?;
            }
            Mailer::Log { codes } => {
                let body = match &email.secret {
                    Some(secret) if !codes && !secret.is_empty() => {
                        email.body.replace(secret.as_str(), "[withheld]")
                    }
                    _ => email.body.clone(),
                };
                tracing::info!(target: "stayafrica::email", to = %email.to, subject = %email.subject,
                    body = %body, "email (log backend)");
            }
            Mailer::Smtp(transport) => {
                let msg = Message::builder()
                    .from(FROM.parse().context("sender address")?)
                    .to(email.to.parse().context("recipient address")?)
                    .subject(&email.subject)
                    .body(email.body.clone())
                    .context("building email")?;
                transport.send(msg).await.context("SMTP send failed")?;
            }
        }
        Ok(())
    }
}
