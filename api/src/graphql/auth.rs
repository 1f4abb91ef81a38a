//! Who is calling: `Authorization: Bearer <key>` resolved once per request.
//!
//! API keys are looked up by their SHA-256 (`api::secret::hash_token`): the
//! database compares hashes, so lookup timing says nothing useful about the
//! secret. The bootstrap token is compared in constant time.

use async_graphql::Context;
use entity::{ApiKeyRole, organization};
use sea_orm::DatabaseConnection;

use super::error::{ApiError, ApiResult};
use crate::state::AppState;

/// An authenticated API key.
#[derive(Clone, Debug)]
pub struct Caller {
    pub organization_id: String,
    pub role: ApiKeyRole,
    pub key_id: String,
}

impl Caller {
    /// The audit actor of this caller.
    pub fn actor(&self) -> String {
        format!("key:{}", self.key_id)
    }
}

/// What the request presented, put into the request data by the HTTP layer.
#[derive(Clone, Debug, Default)]
pub enum Auth {
    /// No `Authorization` header.
    #[default]
    Anonymous,
    /// A bearer token: an API key (then `caller` is set) or maybe the bootstrap token.
    Bearer {
        token: String,
        caller: Option<Caller>,
    },
}

/// Resolves the `Authorization` header value.
pub async fn resolve(db: &DatabaseConnection, header: Option<&str>) -> Result<Auth, ApiError> {
    let Some(value) = header else {
        return Ok(Auth::Anonymous);
    };
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .unwrap_or("")
        .trim()
        .to_string();
    let caller = if token.is_empty() {
        None
    } else {
        let hash = crate::secret::hash_token(&token);
        workflows::tenancy::authenticate(db, &hash)
            .await?
            .map(|(key, org)| Caller {
                organization_id: org.id,
                role: key.role,
                key_id: key.id,
            })
    };
    Ok(Auth::Bearer { token, caller })
}

/// Who may do what.
pub mod roles {
    use entity::ApiKeyRole::{self, *};
    /// Queries.
    pub const READ: &[ApiKeyRole] = &[Admin, Operator, ReadOnly];
    /// `organization` (every key may see whose it is).
    pub const ANY: &[ApiKeyRole] = &[Admin, Operator, Ingest, ReadOnly];
    /// Catalog, customers, subscriptions, keys, test clocks.
    pub const ADMIN: &[ApiKeyRole] = &[Admin];
    /// Invoice actions (and job operations).
    pub const OPERATE: &[ApiKeyRole] = &[Admin, Operator];
    /// `ingestUsage`.
    pub const INGEST: &[ApiKeyRole] = &[Admin, Ingest];
}

pub fn state<'a>(ctx: &Context<'a>) -> &'a AppState {
    ctx.data_unchecked::<AppState>()
}

/// The caller, if its role is among `allowed`; UNAUTHENTICATED / FORBIDDEN otherwise.
pub fn require<'a>(ctx: &Context<'a>, allowed: &[ApiKeyRole]) -> ApiResult<&'a Caller> {
    match ctx.data_opt::<Auth>() {
        None | Some(Auth::Anonymous) => Err(ApiError::unauthenticated(
            "missing Authorization: Bearer <api key>",
        )),
        Some(Auth::Bearer { caller: None, .. }) => {
            Err(ApiError::unauthenticated("invalid or revoked API key"))
        }
        Some(Auth::Bearer {
            caller: Some(caller),
            ..
        }) => {
            if allowed.contains(&caller.role) {
                Ok(caller)
            } else {
                Err(ApiError::forbidden(format!(
                    "an API key with role {} may not do this",
                    caller.role
                )))
            }
        }
    }
}

/// The caller and its organization, freshly loaded (its clock may have moved).
pub async fn require_org<'a>(
    ctx: &Context<'a>,
    allowed: &[ApiKeyRole],
) -> ApiResult<(&'a Caller, organization::Model)> {
    let caller = require(ctx, allowed)?;
    let org = workflows::tenancy::load_org(&state(ctx).db, &caller.organization_id).await?;
    Ok((caller, org))
}

/// Is the presented bearer token the server's bootstrap token? Both sides
/// are hashed first and the digests compared without early exit.
pub fn is_bootstrap(ctx: &Context<'_>) -> bool {
    let Some(Auth::Bearer { token, .. }) = ctx.data_opt::<Auth>() else {
        return false;
    };
    let Some(admin) = state(ctx).config.admin_token.as_deref() else {
        return false;
    };
    let a = crate::secret::hash_token(token);
    let b = crate::secret::hash_token(admin);
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
