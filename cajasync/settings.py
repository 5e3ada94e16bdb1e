"""One frozen settings object, read from CAJASYNC_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from cajasync.errors import ConfigError

DEFAULT_BROKER_URL = "amqp://guest:guest@localhost:5672/%2F"
ENV_PREFIX = "CAJASYNC_"


@dataclass(frozen=True)
class Settings:
    """Tunables shared by the library and the CLI (`CAJASYNC_<FIELD>` overrides each)."""

    broker_url: str = DEFAULT_BROKER_URL
    management_url: str = "http://localhost:15672"
    # relay
    publish_window: int = 1000
    claim_batch: int = 2000
    resend_after_s: float = 30.0
    poll_interval_s: float = 0.05
    # server ingest
    prefetch: int = 1000
    ingest_batch: int = 500
    ingest_flush_s: float = 0.02
    gap_grace_s: float = 5.0
    # feed relay: every stream's head seq, so a till notices a lost last change (0: off)
    head_interval_s: float = 30.0
    # backoff for reconnects
    retry_initial_s: float = 0.5
    retry_max_s: float = 10.0

    def with_overrides(self, **overrides: Any) -> Settings:
        """Return a copy with the given non-None fields replaced."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from CAJASYNC_* variables, then explicit overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in fields(Settings):
        key = ENV_PREFIX + field.name.upper()
        raw = env.get(key)
        if raw is None or raw == "":
            continue
        values[field.name] = _parse(key, raw, field.type)
    return Settings(**values).with_overrides(**overrides)


def _parse(key: str, raw: str, kind: object) -> object:
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{key}={raw!r} is not a valid {kind}") from exc
    return raw
