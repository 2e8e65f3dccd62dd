//! `crewkit-api admin …`: bootstrap from the command line. Each command runs pending migrations
//! first and prints exactly one JSON object on stdout (logs go to stderr), so scripts can parse it.

use clap::Subcommand;
use serde_json::json;

use crewkit_jobs::Config;
use crewkit_jobs::domain::Role;
use crewkit_jobs::store::{self, orgs};

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an organisation with an admin user and print its first API key.
    CreateOrg {
        /// The organisation's slug (2-63 lowercase letters, digits, dashes).
        #[arg(long)]
        slug: String,
        /// The admin user's email.
        #[arg(long)]
        admin_email: String,
        /// A display name (default: the slug).
        #[arg(long)]
        name: Option<String>,
    },
    /// Rebuild the search index from PostgreSQL, for one organisation or all of them.
    Reindex {
        /// The organisation's slug (default: every organisation).
        #[arg(long)]
        org: Option<String>,
    },
    /// Create an API key for a user of an organisation (creating the user if needed).
    CreateKey {
        /// The organisation's slug.
        #[arg(long)]
        org: String,
        /// The user's email.
        #[arg(long)]
        email: String,
        /// The user's role.
        #[arg(long, default_value = "member")]
        role: String,
    },
}

pub async fn run(config: &Config, cmd: AdminCommand) -> anyhow::Result<serde_json::Value> {
    let db = store::lazy_pool(&config.database_url, 2)?;
    store::migrate(&db).await?;
    let out = match cmd {
        AdminCommand::CreateOrg { slug, admin_email, name } => {
            let mut tx = db.begin().await?;
            let org = orgs::create_org(&mut *tx, &slug, name.as_deref().unwrap_or(&slug)).await?;
            let user = orgs::upsert_user(&mut *tx, org, &admin_email, Role::Admin).await?;
            let (_, secret) = orgs::create_api_key(&mut *tx, org, user, Some("bootstrap")).await?;
            tx.commit().await?;
            json!({"org_id": org.to_string(), "slug": slug, "user_id": user.to_string(), "api_key": secret.expose()})
        }
        AdminCommand::CreateKey { org, email, role } => {
            let role: Role = role.parse()?;
            let mut tx = db.begin().await?;
            let org = orgs::find_org_by_slug(&mut *tx, &org).await?;
            let user = orgs::upsert_user(&mut *tx, org.id, &email, role).await?;
            let (_, secret) = orgs::create_api_key(&mut *tx, org.id, user, None).await?;
            tx.commit().await?;
            json!({"user_id": user.to_string(), "api_key": secret.expose()})
        }
        AdminCommand::Reindex { org } => {
            let org_id = match org {
                Some(slug) => Some(orgs::find_org_by_slug(&db, &slug).await?.id),
                None => None,
            };
            let sessions: Vec<(crewkit_jobs::ids::SessionId, crewkit_jobs::ids::OrgId)> = sqlx::query_as(
                "SELECT id, org_id FROM conversations WHERE $1::uuid IS NULL OR org_id = $1 ORDER BY id",
            )
            .bind(org_id)
            .fetch_all(&db)
            .await?;
            let backend = crewkit_jobs::search_index::SearchBackend::from_config(config)?;
            backend.set_up().await?;
            let indexed = backend.index_sessions(&db, &sessions).await?;
            json!({"indexed": indexed, "engine": backend.engine()})
        }
    };
    Ok(out)
}
