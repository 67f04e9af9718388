"""Alembic environment of the catalog: migrations run on the connection the catalog hands over."""

from alembic import context

from reduction_assets.catalog.models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("catalog migrations run through reduction_assets.catalog.db.Catalog.create()")
    context.configure(
        connection=connection, target_metadata=target_metadata, render_as_batch=True, compare_type=True
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("catalog migrations run online only")
run_migrations_online()
