"""Settings, read from environment variables (and a `.env` file when present)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from daemon.crypto import TokenCipher
from daemon.domain.google_budget import BudgetLimits

# In a source checkout and in the container image alike, migrations sit next to the package.
DEFAULT_MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "supabase" / "migrations"
GOOGLE_CALENDAR_ENDPOINT = "https://www.googleapis.com/calendar/v3/"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
GOOGLE_AUTH_URI = "https://accounts.google.com/o/oauth2/auth"
VAPI_API_URL = "https://api.vapi.ai"


def api_key_role(key: str) -> str | None:
    """The role a Supabase API key stands for: `anon` for a publishable key, `service_role` for a secret key, a
    legacy JWT key's `role` claim (read, not verified: the gateway verifies it); None when it cannot tell."""
    key = key.strip()
    if key.startswith("sb_publishable_"):
        return "anon"
    if key.startswith("sb_secret_"):
        return "service_role"
    parts = key.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    role = claims.get("role") if isinstance(claims, dict) else None
    return role if isinstance(role, str) else None


class DatabaseSettings(BaseSettings):
    """How to reach the database directly (migrations, self-hosted deployments)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = Field(
        description="PostgreSQL connection string, e.g. postgresql://postgres:...@db.<ref>.supabase.co:5432/postgres",
    )
    migrations_dir: Path = Field(default=DEFAULT_MIGRATIONS_DIR)


class StoreSettings(BaseSettings):
    """Where the appointments are: Supabase's REST gateway, or PostgreSQL directly. Enough for
    the operator commands that only talk to the database."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    supabase_url: str | None = None
    # The project's secret key (sb_secret_...) or its legacy service_role JWT key: the daemon sees every clinic.
    supabase_service_role_key: SecretStr | None = None
    # The publishable key (sb_publishable_...) or the legacy anon JWT key: what Vapi sends as `apikey`; needed by
    # `vapi-tools` (it goes into the tool definitions) and `verify --round-trip`.
    supabase_anon_key: SecretStr | None = None
    # Realtime is served under SUPABASE_URL; set this only to point it elsewhere (stand-ins).
    supabase_realtime_url: str | None = None
    database_url: SecretStr | None = None
    sync_database: Literal["auto", "supabase", "postgres"] = "auto"

    @field_validator("supabase_service_role_key")
    @classmethod
    def _a_service_role_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and api_key_role(value.get_secret_value()) == "anon":
            raise ValueError(
                "this is the public key (publishable or anon); the daemon needs the project's secret key"
                " (sb_secret_...) or its legacy service_role key"
            )
        return value

    @field_validator("supabase_anon_key")
    @classmethod
    def _a_public_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and api_key_role(value.get_secret_value()) == "service_role":
            raise ValueError(
                "this is a secret key (secret or service_role), which must never reach Vapi's tool definitions;"
                " use the project's publishable key (sb_publishable_...) or its legacy anon key"
            )
        return value

    @model_validator(mode="after")
    def _one_database(self) -> Self:
        backend = self.database_backend
        if backend == "postgres" and self.database_url is None:
            raise ValueError("DATABASE_URL is required when SYNC_DATABASE=postgres")
        if backend == "supabase" and (self.supabase_url is None or self.supabase_service_role_key is None):
            raise ValueError("set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY (or DATABASE_URL for direct PostgreSQL)")
        return self

    @property
    def database_backend(self) -> Literal["supabase", "postgres"]:
        """`auto` means PostgreSQL when DATABASE_URL is set, else Supabase."""
        if self.sync_database != "auto":
            return self.sync_database
        return "postgres" if self.database_url is not None else "supabase"


class VapiSettings(StoreSettings):
    """The database, and Vapi's API: for `vapi-sync`, `rotate-key` of a clinic set up in Vapi, `verify` and the
    daemon's re-syncs."""

    # The organisation's private API key (Vapi dashboard -> API Keys): a secret, never printed or logged.
    vapi_api_key: SecretStr | None = None
    vapi_api_url: str = VAPI_API_URL  # another address only for stand-ins
    vapi_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # How often the daemon looks for clinics whose Vapi tools are stale (each one retried with backoff).
    vapi_sync_interval_seconds: float = Field(default=60.0, gt=0, le=86400)

    @field_validator("vapi_api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("VAPI_API_URL must be an http(s):// address, e.g. https://api.vapi.ai")
        return value.rstrip("/")


class Settings(VapiSettings):
    """Everything the sync daemon needs. See the README for what each setting means."""

    # Google OAuth client and token encryption.
    google_client_id: str
    google_client_secret: SecretStr
    token_encryption_key: SecretStr = Field(
        description="Fernet key(s), comma-separated; the first encrypts, all decrypt (for rotation)",
    )
    google_api_endpoint: str = GOOGLE_CALENDAR_ENDPOINT
    google_token_uri: str = GOOGLE_TOKEN_URI
    google_auth_uri: str = GOOGLE_AUTH_URI

    # Tuning.
    sync_batch_size: int = Field(default=50, ge=1, le=1000)
    sync_per_clinic_batch: int = Field(default=10, ge=1, le=1000)
    # Pushes in flight: with Google answering in ~100 ms, 16 capped a replica near 120/s and queued a steady
    # 100 bookings/s (bench/throughput.py); each worker thread holds its own HTTP client (~0.5 MB).
    sync_workers: int = Field(default=32, ge=1, le=256)
    sync_lease_seconds: int = Field(default=120, ge=5, le=3600)
    # The timer sweep is the backstop; the change feed is what makes pickup immediate.
    sync_poll_seconds: float = Field(default=30.0, gt=0, le=3600)
    feed_enabled: bool = True
    feed_probe_seconds: float = Field(default=15.0, gt=0, le=600)
    feed_probe_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    sync_max_attempts: int = Field(default=12, ge=1, le=100)
    sync_shutdown_grace_seconds: float = Field(default=8.0, ge=0, le=600)  # below `docker stop`'s 10 s
    sync_coalesce_seconds: float = Field(default=0.02, ge=0, le=5)
    sync_backoff_base_seconds: float = Field(default=2.0, gt=0, le=600)
    sync_backoff_cap_seconds: float = Field(default=900.0, gt=0, le=86400)
    # Vapi tool-call answers (kept so a retried call is answered, not repeated) carry patient details.
    vapi_tool_call_retention_days: int = Field(default=30, ge=1, le=3650)
    # Google's quotas: 600 requests a minute per user (each clinic's Google account) and 10,000 per project, on
    # sliding 60 s windows, counting every request. Every replica draws from one budget kept in the database
    # within these. The margins cover what the budget cannot see: a POST httplib2 re-sends by itself when a
    # connection drops, and requests made to the same account by other software under this OAuth client.
    google_requests_per_minute: int = Field(default=500, ge=1, le=100_000)
    google_project_requests_per_minute: int = Field(default=9_000, ge=1, le=10_000_000)
    # After a rate-limit answer from Google, every replica holds that account back this long (doubled while
    # Google keeps refusing, up to 5 minutes).
    google_rate_limit_hold_seconds: float = Field(default=2.0, gt=0, le=300)
    google_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    token_refresh_margin_seconds: int = Field(default=600, ge=60, le=3000)
    token_refresh_interval_seconds: float = Field(default=60.0, gt=0, le=3600)

    # The busy mirror: each connected calendar read back (events.list with a sync token). Without PUBLIC_URL
    # every calendar is listed every MIRROR_INTERVAL_SECONDS; with it, Google notifies each change and a
    # listing every MIRROR_SAFETY_NET_SECONDS catches what a notification may have missed.
    mirror_enabled: bool = True
    mirror_interval_seconds: float = Field(default=30.0, gt=0, le=3600)
    mirror_safety_net_seconds: float = Field(default=3600.0, gt=0, le=86400)
    mirror_page_size: int = Field(default=250, ge=1, le=2500)
    # After pushing to a calendar, wait this long (gathering more pushes) before listing it again.
    mirror_after_push_seconds: float = Field(default=5.0, ge=0, le=600)

    # The daemon's public HTTPS address (behind the operator's TLS terminator), where Google sends push
    # notifications: https://sync.example.com. Served on PUBLIC_HOST:PUBLIC_PORT (plain HTTP, its own port).
    public_url: str | None = None
    public_host: str = "0.0.0.0"
    public_port: int = Field(default=8080, ge=0, le=65535)  # 0: any free port (tests)
    # Push channels: asked for this long (Google may give less), renewed this long before they expire,
    # replaced when Google's first ("sync") message has not come within the confirmation time.
    channel_ttl_seconds: int = Field(default=7 * 86400, ge=60, le=30 * 86400)
    channel_renew_before_seconds: int = Field(default=86400, ge=0, le=30 * 86400)
    channel_confirm_seconds: int = Field(default=120, ge=1, le=3600)
    channel_check_seconds: float = Field(default=60.0, gt=0, le=3600)

    # Observability.
    metrics_enabled: bool = True
    metrics_host: str = "0.0.0.0"  # inside a container the orchestrator probes from outside
    metrics_port: int = Field(default=9108, ge=0, le=65535)  # 0: any free port (tests)
    backlog_metrics_seconds: float = Field(default=15.0, gt=0, le=3600)
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # `verify` compares the database's applied migrations with these files.
    migrations_dir: Path = DEFAULT_MIGRATIONS_DIR

    @property
    def google_budget(self) -> BudgetLimits:
        return BudgetLimits(self.google_requests_per_minute, self.google_project_requests_per_minute)

    @field_validator("public_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("PUBLIC_URL must be the daemon's https:// address (Google notifies HTTPS addresses only)")
        return value.rstrip("/") if value else None

    @property
    def push_enabled(self) -> bool:
        return self.public_url is not None and self.mirror_enabled

    @field_validator("token_encryption_key")
    @classmethod
    def _fernet_keys(cls, value: SecretStr) -> SecretStr:
        TokenCipher(value.get_secret_value())  # refuses anything but Fernet keys, naming the setting
        return value
