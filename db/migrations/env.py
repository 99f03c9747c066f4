"""Alembic environment: runs on a connection handed in by db.migrate, or offline (--sql)."""

from alembic import context

from db.schema import Base

if context.is_offline_mode():  # render SQL for a DBA, e.g. for PostgreSQL
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = context.config.attributes.get("connection")
    if connection is None:  # `alembic` run by hand: open the catalog named by CURATOR_DB
        from db.engine import database_url, make_engine

        connection = make_engine(database_url()).connect()
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
