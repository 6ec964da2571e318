"""Settings, read from environment variables (and a `.env` file when present)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# In a source checkout and in the container image alike, migrations sit next to the package.
DEFAULT_MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "supabase" / "migrations"


class DatabaseSettings(BaseSettings):
    """How to reach the database directly (migrations, self-hosted deployments)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = Field(
        description="PostgreSQL connection string, e.g. postgresql://postgres:...@db.<ref>.supabase.co:5432/postgres",
    )
    migrations_dir: Path = Field(default=DEFAULT_MIGRATIONS_DIR)
