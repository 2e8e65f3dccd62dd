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
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
            "an organisation with slug `{slug}` exists"
        ))),
        Err(e) if is_check_violation(&e) => Err(StoreError::Conflict(format!(
            "slug `{slug}` must be 2 to 63 lowercase letters, digits or dashes"
        ))),
        Err(e) => Err(e.into()),
    }
}

pub async fn find_org_by_slug(db: impl PgExecutor<'_>, slug: &str) -> StoreResult<Org> {
    let row: Option<(OrgId, String, String)> =
        sqlx::query_as("SELECT id, slug, name FROM orgs WHERE slug = $1")
            .bind(slug)
            .fetch_optional(db)
            .await?;
    row.map(|(id, slug, name)| Org { id, slug, name })
        .ok_or(StoreError::NotFound("organisation"))
}

/// Creates the user, or returns the existing one with that email (its role is then updated).
pub async fn upsert_user(
    db: impl PgExecutor<'_>,
    org: OrgId,
    email: &str,
    role: Role,
) -> StoreResult<UserId> {
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
    sqlx::query("INSERT INTO api_keys (id, org_id, user_id, key_hash, key_prefix, name) VALUES ($1, $2, $3, $4, $5, $6)")
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
pub async fn principal_for_key(
    db: impl PgExecutor<'_>,
    secret: &ApiKeySecret,
) -> StoreResult<Option<Principal>> {
    let row: Option<(OrgId, String, UserId, String, ApiKeyId)> = sqlx::query_as(
        "SELECT o.id, o.slug, u.id, u.role, k.id
           FROM api_keys k JOIN users u ON u.id = k.user_id JOIN orgs o ON o.id = k.org_id
          WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
    )
    .bind(secret.hash())
    .fetch_optional(db)
    .await?;
    Ok(
        row.map(|(org_id, org_slug, user_id, role, key_id)| Principal {
            org_id,
            org_slug,
            user_id,
            role: role.parse().unwrap_or(Role::Member),
            key_id,
        }),
    )
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.code().as_deref() == Some("23505"))
}

fn is_check_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.code().as_deref() == Some("23514"))
}
