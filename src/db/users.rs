//! Users: accounts with an argon2id (or imported Django) password hash.

use serde::Serialize;
use time::OffsetDateTime;

use super::{Db, is_unique_violation};
use crate::domain::{Email, Role};
use crate::with_pool;

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct User {
    pub id: i64,
    #[schema(format = Email)]
    pub email: String,
    pub full_name: String,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

/// A user row including the password hash (never serialized).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub email: String,
    pub password_hash: String,
    pub full_name: String,
    pub role: String,
    pub created_at: OffsetDateTime,
}

impl UserRow {
    /// The API view of the row: drops the hash; an unknown stored role reads as guest.
    pub fn into_user(self) -> User {
        User {
            id: self.id,
            email: self.email,
            full_name: self.full_name,
            role: Role::from_db(&self.role),
            created_at: self.created_at,
        }
    }
}

/// A user to insert.
pub struct NewUser<'a> {
    pub email: &'a str,
    pub password_hash: &'a str,
    pub full_name: &'a str,
    pub role: Role,
    pub created_at: OffsetDateTime,
}

const COLS: &str = "id, email, password_hash, full_name, role, created_at";

impl Db {
    /// Inserts a user; `Ok(None)` when the email is already registered.
    pub async fn create_user(&self, u: &NewUser<'_>) -> anyhow::Result<Option<User>> {
        let res = with_pool!(self, p => sqlx::query_as::<_, UserRow>(
            "INSERT INTO users (email, password_hash, full_name, role, created_at)
             VALUES ($1, $2, $3, $4, $5)
             RETURNING id, email, password_hash, full_name, role, created_at")
            .bind(u.email)
            .bind(u.password_hash)
            .bind(u.full_name)
            .bind(u.role.as_str())
            .bind(u.created_at)
            .fetch_one(p)
            .await);
        match res {
            Ok(row) => Ok(Some(row.into_user())),
            Err(e) if is_unique_violation(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The row with its password hash, for sign-in; `None` when the email is not registered.
    pub async fn user_by_email(&self, email: &Email) -> anyhow::Result<Option<UserRow>> {
        let sql = format!("SELECT {COLS} FROM users WHERE email = $1");
        Ok(
            with_pool!(self, p => sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql))
            .bind(email.as_str())
            .fetch_optional(p)
            .await)?,
        )
    }

    /// The API view of a user; `None` when no user has this id.
    pub async fn user_by_id(&self, id: i64) -> anyhow::Result<Option<User>> {
        let sql = format!("SELECT {COLS} FROM users WHERE id = $1");
        let row = with_pool!(self, p => sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(p)
            .await)?;
        Ok(row.map(UserRow::into_user))
    }

    /// Replaces a user's password hash (rehash on login, password change).
    pub async fn set_password_hash(&self, id: i64, hash: &str) -> anyhow::Result<()> {
        with_pool!(self, p => sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
            .bind(id)
            .bind(hash)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }
}
