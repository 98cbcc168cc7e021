"""Settings from arguments, then `PROTEGE_*` environment variables, then defaults.

The project dir (default `.protege/` in the working directory) holds the SQLite store, datasets, adapters and
the converted base-model cache; everything protege writes to disk lives under it unless told otherwise. It is made
absolute when the settings are built, so the paths stored under it (a student's weights) read the same from any
working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TEACHER = "anthropic:claude-opus-4-5"
DEFAULT_REPLAY = "anthropic:claude-haiku-4-5"
DEFAULT_STUDENT_BASE = "smollm2-135m"


class Settings(BaseSettings):
    """protege's configuration; every field can be set as PROTEGE_<FIELD> (e.g. PROTEGE_DB)."""

    model_config = SettingsConfigDict(env_prefix="PROTEGE_", extra="ignore")

    project_dir: Path = Field(default=Path(".protege"), description="where the store and artifacts live")
    db: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite under project_dir")
    teacher: str = DEFAULT_TEACHER
    replay: str = DEFAULT_REPLAY
    student_base: str = DEFAULT_STUDENT_BASE
    cache_dir: Path | None = Field(default=None, description="converted base models; default project_dir/cache")
    prices: Path | None = Field(default=None, description="JSON/TOML file of price overrides per model")
    local_cost_per_hour: float | None = Field(
        default=None,
        description="USD per hour of the machine local models run on; default a 2-vCPU cloud "
        "instance ($0.0893, AWS c7i.large), or a GPU one ($0.805, AWS g6.xlarge) when they run on CUDA",
    )
    teacher_budget_usd_per_day: float | None = Field(default=None, description="cap on teacher spend per day")
    app: str | None = Field(default=None, description="'module:attr' of the Protege app for the CLI/TUI")
    otel_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP collector URL to export spans to (needs protege[otel])"
    )
    auto_distill_config: dict | None = Field(
        default=None, description="TrainConfig fields (JSON) for distills started by Policy(auto_distill=True)"
    )
    drain_timeout_s: float = Field(
        default=60.0,
        ge=0,
        description="seconds close() and interpreter exit wait for background work; what is "
        "left then stays pending in the store for the next process",
    )

    @field_validator("project_dir", "cache_dir")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        # abspath, not resolve(): a project dir reached through a symlink keeps the name it was given
        return Path(os.path.abspath(path.expanduser())) if path is not None else None

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{self.project_dir / 'protege.db'}"

    @property
    def model_cache_dir(self) -> Path:
        return self.cache_dir or self.project_dir / "cache"
