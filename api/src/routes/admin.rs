//! Administration of users and API keys: admin role only.

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;

use super::{ApiTags, parse_id};
use crate::auth::ApiKey;
use crate::error::ApiError;
use crate::models::{ApiKeyInfo, User};
use crate::state::AppState;
use crewkit_jobs::domain::Role;
use crewkit_jobs::ids::{ApiKeyId, UserId};
use crewkit_jobs::store::orgs;

pub struct AdminApi;

/// A new user.
#[derive(Debug, Object, Deserialize)]
pub struct CreateUser {
    /// Email, unique in the organisation.
    pub email: String,
    /// Display name.
    #[oai(skip_serializing_if_is_none)]
    pub name: Option<String>,
    /// `admin`, `manager` or `member` (default `member`).
    #[oai(skip_serializing_if_is_none)]
    pub role: Option<String>,
}

#[derive(ApiResponse)]
pub enum CreateUserResponse {
    /// Created.
    #[oai(status = 201)]
    Created(Json<User>),
}

/// The organisation's users.
#[derive(Debug, Object)]
pub struct UserList {
    /// The users, oldest first.
    pub data: Vec<User>,
}

/// A new API key.
#[derive(Debug, Default, Object, Deserialize)]
pub struct CreateApiKey {
    /// The user the key acts as (`usr_…`); default: the caller.
    #[oai(skip_serializing_if_is_none)]
    pub user_id: Option<String>,
    /// A name for the key.
    #[oai(skip_serializing_if_is_none)]
    pub name: Option<String>,
}

/// A created key: the secret is shown here once and never again.
#[derive(Debug, Object)]
pub struct CreatedApiKey {
    /// The key.
    #[oai(flatten)]
    pub key: ApiKeyInfo,
    /// The secret, for `Authorization: Bearer …`. Store it now: it cannot be shown again.
    pub api_key: String,
}

#[derive(ApiResponse)]
pub enum CreateKeyResponse {
    /// Created.
    #[oai(status = 201)]
    Created(Json<CreatedApiKey>),
}

/// The organisation's API keys (never their secrets).
#[derive(Debug, Object)]
pub struct ApiKeyList {
    /// The keys, newest first.
    pub data: Vec<ApiKeyInfo>,
}

#[derive(ApiResponse)]
pub enum RevokeResponse {
    /// Revoked: every API process refuses it from now on.
    #[oai(status = 204)]
    Revoked,
}

fn valid_email(e: &str) -> bool {
    let e = e.trim();
    e.len() <= 320
        && e.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !e.contains(char::is_whitespace))
}

#[OpenApi(tag = "ApiTags::Admin")]
impl AdminApi {
    /// Create user
    ///
    /// Adds a user to the organisation. Admin only. An email already taken is 409.
    #[oai(path = "/:org_id/users", method = "post", operation_id = "create_user")]
    async fn create_user(
        &self,
        state: Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        body: crate::body::JsonBody<CreateUser>,
    ) -> Result<CreateUserResponse, ApiError> {
        let p = auth.require_role(&org_id, Role::Admin)?;
        let b = body.0;
        if !valid_email(&b.email) {
            return Err(ApiError::invalid("email", "invalid_email", "not an email address"));
        }
        let role: Role =
            b.role.as_deref().unwrap_or("member").parse().map_err(|e: crewkit_jobs::domain::role::RoleError| {
                ApiError::invalid("role", "invalid_role", e.to_string())
            })?;
        let user = orgs::create_user(&state.db, p.org_id, b.email.trim(), b.name.as_deref(), role).await?;
        Ok(CreateUserResponse::Created(Json(user.into())))
    }

    /// List users
    ///
    /// The organisation's users. Admin only.
    #[oai(path = "/:org_id/users", method = "get", operation_id = "list_users")]
    async fn list_users(
        &self,
        state: Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
    ) -> Result<Json<UserList>, ApiError> {
        let p = auth.require_role(&org_id, Role::Admin)?;
        let users = orgs::list_users(&state.db, p.org_id).await?;
        Ok(Json(UserList { data: users.into_iter().map(User::from).collect() }))
    }

    /// Create API key
    ///
    /// Creates a key for a user of the organisation (default: the caller). The secret is in this
    /// response only. Admin only.
    #[oai(path = "/:org_id/api-keys", method = "post", operation_id = "create_api_key")]
    async fn create_key(
        &self,
        state: Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        body: crate::body::OptionalJsonBody<CreateApiKey>,
    ) -> Result<CreateKeyResponse, ApiError> {
        let p = auth.require_role(&org_id, Role::Admin)?;
        let b = body.0;
        let user: UserId = match b.user_id.as_deref() {
            Some(u) => parse_id("user_id", u)?,
            None => p.user_id,
        };
        if !orgs::user_exists(&state.db, p.org_id, user).await? {
            return Err(ApiError::not_found("user"));
        }
        let (id, secret) = orgs::create_api_key(&state.db, p.org_id, user, b.name.as_deref()).await?;
        let key = orgs::get_api_key(&state.db, p.org_id, id).await?;
        Ok(CreateKeyResponse::Created(Json(CreatedApiKey { key: key.into(), api_key: secret.expose().to_string() })))
    }

    /// List API keys
    ///
    /// The organisation's keys, without their secrets. Admin only.
    #[oai(path = "/:org_id/api-keys", method = "get", operation_id = "list_api_keys")]
    async fn list_keys(
        &self,
        state: Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
    ) -> Result<Json<ApiKeyList>, ApiError> {
        let p = auth.require_role(&org_id, Role::Admin)?;
        let keys = orgs::list_api_keys(&state.db, p.org_id).await?;
        Ok(Json(ApiKeyList { data: keys.into_iter().map(ApiKeyInfo::from).collect() }))
    }

    /// Revoke API key
    ///
    /// Revokes a key. Every API process refuses it at once (the revocation is broadcast through
    /// Redis; a process that missed the broadcast refuses it when its cache entry expires).
    /// Admin only.
    #[oai(path = "/:org_id/api-keys/:id", method = "delete", operation_id = "revoke_api_key")]
    async fn revoke_key(
        &self,
        state: Data<&AppState>,
        auth: ApiKey,
        /// Organisation id (`org_…`) or slug.
        org_id: Path<String>,
        /// API key id (`key_…`).
        id: Path<String>,
    ) -> Result<RevokeResponse, ApiError> {
        let p = auth.require_role(&org_id, Role::Admin)?;
        let id: ApiKeyId = parse_id("id", &id)?;
        orgs::revoke_api_key(&state.db, p.org_id, id).await?;
        crate::revocation::announce(&state, id).await;
        Ok(RevokeResponse::Revoked)
    }
}
