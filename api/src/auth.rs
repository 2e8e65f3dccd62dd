//! Authentication: `Authorization: Bearer <api key>` fixes the organisation, user and role.
//! Lookups are cached per process (see `AppState::principals`); only the key's hash is ever
//! used as a cache or database key.

use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;

use crate::error::ApiError;
use crate::ratelimit;
use crate::state::AppState;
use crewkit_jobs::domain::{ApiKeySecret, Role};
use crewkit_jobs::store::orgs::{self, Principal};

/// An API key, sent as `Authorization: Bearer ck_…`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "authenticate")]
pub struct ApiKey(pub Principal);

async fn authenticate(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    let state = req.data::<AppState>().expect("AppState is installed");
    let p = principal(state, bearer.token.trim()).await?;
    let limit = state.config.rate_limit_per_minute;
    if limit > 0 {
        let verdict = state.limiter.check(state, &p.key_id.to_string(), limit).await;
        if let Some(slot) = req.extensions().get::<ratelimit::Slot>() {
            slot.set(verdict);
        }
        if !verdict.allowed {
            return Err(ratelimit::refused(verdict).into());
        }
    }
    Ok(p)
}

async fn principal(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    let secret = ApiKeySecret::from_presented(token);
    let hash = secret.hash();
    if let Some(p) = state.principals.get(&hash).await {
        return Ok(p);
    }
    match orgs::principal_for_key(&state.db, &secret).await? {
        Some(p) => {
            state.principals.insert(hash, p.clone()).await;
            Ok(p)
        }
        None => Err(ApiError::unauthorized("unknown or revoked API key")),
    }
}

impl ApiKey {
    /// The principal, if the path's org (id or slug) is the key's own. Another org's path is a
    /// 404, not a 403: whether that org exists is not the caller's business.
    pub fn for_org(&self, org: &str) -> Result<&Principal, ApiError> {
        let p = &self.0;
        if org == p.org_slug || org == p.org_id.to_string() { Ok(p) } else { Err(ApiError::not_found("organisation")) }
    }

    pub fn require_role(&self, org: &str, role: Role) -> Result<&Principal, ApiError> {
        let p = self.for_org(org)?;
        if p.role.at_least(role) {
            Ok(p)
        } else {
            Err(ApiError::forbidden(&format!("this needs the {role} role; the key's user is {}", p.role)))
        }
    }
}
