//! Small builders shared by the migrations: string ids, named foreign keys and
//! named indexes (index names are schema-wide on PostgreSQL, hence the
//! `idx_{table}_{columns}` convention).

use sea_orm_migration::{prelude::*, schema::string};

/// A string primary key; the application fills it with UUIDv7 text.
pub fn id<T: IntoIden>(column: T) -> ColumnDef {
    string(column).primary_key().take()
}

/// A foreign key `from_table.from_column → to_table.to_column`.
pub fn foreign_key<F, FC, T, TC>(
    name: &str,
    from: (F, FC),
    to: (T, TC),
) -> ForeignKeyCreateStatement
where
    F: IntoIden,
    FC: IntoIden,
    T: IntoIden,
    TC: IntoIden,
{
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .take()
}

/// A (non-unique) index, created only if missing.
pub fn index<T, C>(
    name: &str,
    table: T,
    columns: impl IntoIterator<Item = C>,
) -> IndexCreateStatement
where
    T: IntoIden,
    C: IntoIndexColumn,
{
    let mut statement = Index::create();
    statement.if_not_exists().name(name).table(table);
    for column in columns {
        statement.col(column);
    }
    statement
}

/// A unique index, created only if missing.
pub fn unique_index<T, C>(
    name: &str,
    table: T,
    columns: impl IntoIterator<Item = C>,
) -> IndexCreateStatement
where
    T: IntoIden,
    C: IntoIndexColumn,
{
    let mut statement = index(name, table, columns);
    statement.unique();
    statement
}

/// Drops tables (if present) in the given order.
pub async fn drop_tables<T: IntoIden>(
    manager: &SchemaManager<'_>,
    tables: impl IntoIterator<Item = T>,
) -> Result<(), DbErr> {
    for table in tables {
        manager
            .drop_table(Table::drop().table(table).if_exists().to_owned())
            .await?;
    }
    Ok(())
}
