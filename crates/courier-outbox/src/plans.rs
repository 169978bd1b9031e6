//! The relay's and operators' PostgreSQL statements by name, for the plan test
//! (`tests/postgres_claim_plan.rs`), which EXPLAINs them on a large table. Not part of the API.

use crate::error::InvalidOption;
use crate::postgres::{validate_schema, Statements};

/// `(name, SQL)` of every statement whose plan matters, for tables in `schema`.
pub fn postgres(schema: &str) -> Result<Vec<(&'static str, String)>, InvalidOption> {
    validate_schema(schema)?;
    let sql = Statements::new(schema);
    Ok(vec![
        ("claim", sql.claim),
        ("renew", sql.renew),
        ("publish_keep", sql.publish_keep),
        ("publish_delete", sql.publish_delete),
        ("retry", sql.retry),
        ("delete_published", sql.delete_published),
        ("list_failed", sql.list_failed),
        ("retry_failed", sql.retry_failed),
    ])
}
