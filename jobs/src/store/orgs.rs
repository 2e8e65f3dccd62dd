//! Organisations, users and API keys.

use sqlx::PgExecutor;

use super::{StoreError, StoreResult};
use crate::domain::{ApiKeySecret, Role};
use crate::ids::{ApiKeyId, OrgId, UserId};

/// Who is calling: what an API key resolves to.
#[derive(Debug, Clone)]
pub struct Principal {
    pub org_id: OrgId,
    pub org_slug: String,
    pub user_id: UserId,
    pub role: Role,
    pub key_id: ApiKeyId,
}

#[derive(Debug, Clone)]
pub struct Org {
    pub id: OrgId,
    pub slug: String,
    pub name: String,
}

pub async fn create_org(db: impl PgExecutor<'_>, slug: &str, name: &str) -> StoreResult<OrgId> {
    let id = OrgId::generate();
    let res = sqlx::query("INSERT INTO orgs (id, slug, name) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(slug)
        .bind(name)
        .execute(db)
        .await;
    match res {
        Ok(_) => Ok(id),
        Err(e) if is_unique_violation(&e) => {
            Err(StoreError::Conflict(format!("an organisation with slug `{slug}` exists")))
        }
        Err(e) if is_check_violation(&e) => {
            Err(StoreError::Conflict(format!("slug `{slug}` must be 2 to 63 lowercase letters, digits or dashes")))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn find_org_by_slug(db: impl PgExecutor<'_>, slug: &str) -> StoreResult<Org> {
    let row: Option<(OrgId, String, String)> =
        sqlx::query_as("SELECT id, slug, name FROM orgs WHERE slug = $1").bind(slug).fetch_optional(db).await?;
    row.map(|(id, slug, name)| Org { id, slug, name }).ok_or(StoreError::NotFound("organisation"))
}

/// Creates the user, or returns the existing one with that email (its role is then updated).
pub async fn upsert_user(db: impl PgExecutor<'_>, org: OrgId, email: &str, role: Role) -> StoreResult<UserId> {
    let (id,): (UserId,) = sqlx::query_as(
        "INSERT INTO users (id, org_id, email, role) VALUES ($1, $2, lower($3), $4)
         ON CONFLICT (org_id, email) DO UPDATE SET role = EXCLUDED.role
         RETURNING id",
    )
    .bind(UserId::generate())
    .bind(org)
    .bind(email)
    .bind(role.as_str())
    .fetch_one(db)
    .await?;
    Ok(id)
}

/// Stores a new key for the user and returns its id and the secret (shown once).
pub async fn create_api_key(
    db: impl PgExecutor<'_>,
    org: OrgId,
    user: UserId,
    name: Option<&str>,
) -> StoreResult<(ApiKeyId, ApiKeySecret)> {
    let id = ApiKeyId::generate();
    let secret = ApiKeySecret::generate();
    sqlx::query(
        "INSERT INTO api_keys (id, org_id, user_id, key_hash, key_prefix, name) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(org)
    .bind(user)
    .bind(secret.hash())
    .bind(secret.display_prefix())
    .bind(name)
    .execute(db)
    .await?;
    Ok((id, secret))
}

/// Resolves a presented secret to its principal; revoked and unknown keys resolve to nothing.
#[tracing::instrument(skip_all)]
pub async fn principal_for_key(db: impl PgExecutor<'_>, secret: &ApiKeySecret) -> StoreResult<Option<Principal>> {
    let row: Option<(OrgId, String, UserId, String, ApiKeyId)> = sqlx::query_as(
        "SELECT o.id, o.slug, u.id, u.role, k.id
           FROM api_keys k JOIN users u ON u.id = k.user_id JOIN orgs o ON o.id = k.org_id
          WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
    )
    .bind(secret.hash())
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(org_id, org_slug, user_id, role, key_id)| Principal {
        org_id,
        org_slug,
        user_id,
        role: role.parse().unwrap_or(Role::Member),
        key_id,
    }))
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.code().as_deref() == Some("23505"))
}

fn is_check_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.code().as_deref() == Some("23514"))
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: UserId,
    pub email: String,
    pub name: Option<String>,
    pub role: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Creates a user; `Conflict` when the email is taken in the org.
pub async fn create_user(
    db: impl PgExecutor<'_>,
    org: OrgId,
    email: &str,
    name: Option<&str>,
    role: Role,
) -> StoreResult<UserRow> {
    let res = sqlx::query_as(
        "INSERT INTO users (id, org_id, email, name, role) VALUES ($1, $2, lower($3), $4, $5)
         RETURNING id, email, name, role, created_at",
    )
    .bind(UserId::generate())
    .bind(org)
    .bind(email)
    .bind(name)
    .bind(role.as_str())
    .fetch_one(db)
    .await;
    match res {
        Ok(row) => Ok(row),
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!("a user with email {email} exists"))),
        Err(e) => Err(e.into()),
    }
}

pub async fn list_users(db: impl PgExecutor<'_>, org: OrgId) -> StoreResult<Vec<UserRow>> {
    Ok(sqlx::query_as("SELECT id, email, name, role, created_at FROM users WHERE org_id = $1 ORDER BY created_at, id")
        .bind(org)
        .fetch_all(db)
        .await?)
}

pub async fn user_exists(db: impl PgExecutor<'_>, org: OrgId, user: UserId) -> StoreResult<bool> {
    let row: Option<(UserId,)> = sqlx::query_as("SELECT id FROM users WHERE org_id = $1 AND id = $2")
        .bind(org)
        .bind(user)
        .fetch_optional(db)
        .await?;
    Ok(row.is_some())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: ApiKeyId,
    pub user_id: UserId,
    pub key_prefix: String,
    pub name: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

const KEY_COLUMNS: &str = "id, user_id, key_prefix, name, created_at, revoked_at";

pub async fn get_api_key(db: impl PgExecutor<'_>, org: OrgId, id: ApiKeyId) -> StoreResult<ApiKeyRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = $1 AND id = $2")))
        .bind(org)
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(StoreError::NotFound("API key"))
}

pub async fn list_api_keys(db: impl PgExecutor<'_>, org: OrgId) -> StoreResult<Vec<ApiKeyRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = $1 ORDER BY created_at DESC, id DESC"
    )))
    .bind(org)
    .fetch_all(db)
    .await?)
}

/// Revokes a key; revoking a revoked key changes nothing. `NotFound` outside the org.
pub async fn revoke_api_key(db: impl PgExecutor<'_>, org: OrgId, id: ApiKeyId) -> StoreResult<()> {
    let res = sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE org_id = $1 AND id = $2")
        .bind(org)
        .bind(id)
        .execute(db)
        .await?;
    if res.rows_affected() == 0 {
        return Err(StoreError::NotFound("API key"));
    }
    Ok(())
}
