//! Customers: the billed parties, identified by the organization's own
//! `externalId` (unique per organization).

use entity::{customer, organization};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    Set,
};

use crate::audit::{self, AuditEntry, snapshot};
use crate::clock::{Clock, org_now};
use crate::error::{WorkflowError, WorkflowResult};
use crate::ids::new_id;
use crate::pagination::{self, Page};
use crate::text::{MAX_EMAIL_CHARS, MAX_NAME_CHARS, check_length, check_required, quoted};

#[derive(Clone, Debug)]
pub struct CustomerSpec {
    pub external_id: String,
    pub name: String,
    pub email: Option<String>,
}

pub async fn create_customer(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    org: &organization::Model,
    actor: &str,
    spec: CustomerSpec,
) -> WorkflowResult<customer::Model> {
    check_required("externalId", &spec.external_id, MAX_NAME_CHARS)?;
    check_length("name", &spec.name, MAX_NAME_CHARS)?;
    if let Some(email) = &spec.email {
        check_length("email", email, MAX_EMAIL_CHARS)?;
        if !email.contains('@') {
            return Err(WorkflowError::bad_input(format!(
                "email {} is not an email address",
                quoted(email)
            )));
        }
    }
    let txn = crate::txn::begin_write(db).await?;
    let exists = customer::Entity::find()
        .filter(customer::Column::OrganizationId.eq(&org.id))
        .filter(customer::Column::ExternalId.eq(&spec.external_id))
        .one(&txn)
        .await?;
    if exists.is_some() {
        return Err(WorkflowError::conflict(format!(
            "a customer with externalId {:?} already exists",
            spec.external_id
        )));
    }
    let now = org_now(org, clock);
    let model = customer::ActiveModel {
        id: Set(new_id()),
        organization_id: Set(org.id.clone()),
        external_id: Set(spec.external_id),
        name: Set(spec.name),
        email: Set(spec.email),
        created_at: Set(now),
    }
    .insert(&txn)
    .await?;
    audit::append(
        &txn,
        &org.id,
        actor,
        AuditEntry {
            action: "customer.created",
            entity_type: "customer",
            entity_id: &model.id,
            before: None,
            after: snapshot(&model),
        },
        now,
    )
    .await?;
    txn.commit().await?;
    Ok(model)
}

pub async fn get_customer<C: ConnectionTrait>(
    db: &C,
    org: &str,
    id: &str,
) -> WorkflowResult<Option<customer::Model>> {
    Ok(customer::Entity::find_by_id(id.to_string())
        .filter(customer::Column::OrganizationId.eq(org))
        .one(db)
        .await?)
}

pub async fn customers_by_ids<C: ConnectionTrait>(
    db: &C,
    org: &str,
    ids: Vec<String>,
) -> WorkflowResult<Vec<customer::Model>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(customer::Entity::find()
        .filter(customer::Column::OrganizationId.eq(org))
        .filter(customer::Column::Id.is_in(ids))
        .all(db)
        .await?)
}

pub async fn list_customers<C: ConnectionTrait>(
    db: &C,
    org: &str,
    first: u64,
    after: Option<String>,
) -> WorkflowResult<Page<customer::Model>> {
    let select = customer::Entity::find().filter(customer::Column::OrganizationId.eq(org));
    Ok(pagination::page(db, select, customer::Column::Id, first, after).await?)
}
