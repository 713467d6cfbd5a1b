"""alembic env.py of this owner's migrations: see services/infrastructure/schema_migrations.py."""

from alembic import context

from services.infrastructure.schema_migrations import run_env

run_env(context)
