"""One frozen settings object, read from CAJASYNC_* environment variables.

Every field is checked when Settings are made, so a value out of range (a confirm window
of 0, a negative interval) stops the command at once with one line naming its variable,
instead of a relay that publishes nothing.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Final
from urllib.parse import urlsplit

from cajasync.errors import ConfigError

DEFAULT_BROKER_URL = "amqp://guest:guest@localhost:5672/%2F"
ENV_PREFIX = "CAJASYNC_"


@dataclass(frozen=True)
class Settings:
    """Tunables shared by the library and the CLI (`CAJASYNC_<FIELD>` overrides each)."""

    # one URL, or every node of a cluster separated by commas or spaces: each connection
    # tries them in order, so it fails over to the next node when one is down
    broker_url: str = DEFAULT_BROKER_URL
    # likewise one management API URL or one per node, tried in order
    management_url: str = "http://localhost:15672"
    # amqps:// only: a CA file to verify the broker, a client certificate and its key (PEM)
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # the server accepts messages published as the shared broker user (guest) and from
    # unregistered terminals; `cajasync server run` sets it False unless --allow-shared-user
    allow_shared_user: bool = True
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
    # a seq missing at or below where a rebuilt till restarted is recorded lost after this
    lost_after_s: float = 3600.0
    # a Z close still missing sales this long after it arrived is a discrepancy (the till
    # is asked for them up to 3 times meanwhile: inbox/zreconcile.py)
    z_replay_wait_s: float = 300.0
    # how long a server loop waits for its database to come back before it stops
    store_give_up_s: float = 300.0
    # feed relay: every stream's head seq, so a till notices a lost last change (0: off)
    head_interval_s: float = 30.0
    # server run: compact the change log this often (0: off; outbox/compaction.py), keeping
    # the latest `changelog_keep` changes of each stream, those younger than
    # `changelog_keep_s`, and what every till that reported within `changelog_hold_s` holds
    compact_interval_s: float = 3600.0
    changelog_keep: int = 1000
    changelog_keep_s: float = 7 * 86_400.0
    changelog_hold_s: float = 35 * 86_400.0
    # terminal run: a status to the server this often, and when pending counts change (0: off)
    status_interval_s: float = 60.0
    # backoff for reconnects
    retry_initial_s: float = 0.5
    retry_max_s: float = 10.0
    # time zone dates in filters are read in (IANA name); empty: the configuration's
    # `timezone` setting when the till has one, else this machine's zone
    timezone: str = ""

    def __post_init__(self) -> None:
        check_settings(self)

    def with_overrides(self, **overrides: Any) -> Settings:
        """Return a copy with the given non-None fields replaced."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


# Ranges, checked whenever Settings are made (from the environment, overrides or code).
AT_LEAST_ONE: Final = ("publish_window", "claim_batch", "prefetch", "ingest_batch")
POSITIVE_SECONDS: Final = (
    "resend_after_s",
    "poll_interval_s",
    "ingest_flush_s",
    "retry_initial_s",
    "retry_max_s",
    "store_give_up_s",
    "lost_after_s",
    "z_replay_wait_s",
)
TLS_FILES: Final = ("tls_ca_file", "tls_cert_file", "tls_key_file")
NON_NEGATIVE_SECONDS: Final = (  # 0: off, or none kept
    "gap_grace_s",
    "head_interval_s",
    "status_interval_s",
    "compact_interval_s",
    "changelog_keep_s",
    "changelog_hold_s",
)
NON_NEGATIVE_INTS: Final = ("changelog_keep",)
BOOLEANS: Final = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
URL_SCHEMES: Final = {"broker_url": ("amqp", "amqps"), "management_url": ("http", "https")}


def variable(name: str) -> str:
    """The environment variable of a Settings field: `publish_window` -> CAJASYNC_PUBLISH_WINDOW."""
    return ENV_PREFIX + name.upper()


def check_settings(settings: Settings) -> None:
    """Raise ConfigError naming the variable of the first setting out of its range."""
    for name in AT_LEAST_ONE:
        value = getattr(settings, name)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{variable(name)}={value!r} is out of range: it must be 1 or more")
    for name in NON_NEGATIVE_INTS:
        value = getattr(settings, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{variable(name)}={value!r} is out of range: it must be 0 or more")
    for name in POSITIVE_SECONDS + NON_NEGATIVE_SECONDS:
        value = getattr(settings, name)
        positive = name in POSITIVE_SECONDS
        if not _seconds(value) or value < 0 or (positive and value == 0):
            least = "above 0" if positive else "0 or more"
            raise ConfigError(
                f"{variable(name)}={value!r} is out of range: it must be {least} seconds"
            )
    if settings.retry_initial_s > settings.retry_max_s:
        raise ConfigError(
            f"{variable('retry_initial_s')}={settings.retry_initial_s!r} is above "
            f"{variable('retry_max_s')}={settings.retry_max_s!r}: the first reconnect wait "
            "cannot be longer than the longest"
        )
    for name, schemes in URL_SCHEMES.items():
        _check_urls(name, getattr(settings, name), schemes)
    tls = [name for name in TLS_FILES if getattr(settings, name)]
    if tls and urlsplit(first_url(settings.broker_url)).scheme != "amqps":
        raise ConfigError(
            f"{variable(tls[0])} is set but CAJASYNC_BROKER_URL is not amqps://: "
            "TLS options apply to amqps:// URLs only"
        )
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise ConfigError(
            f"{variable('tls_cert_file')} and {variable('tls_key_file')} go together: "
            "a client certificate needs its key"
        )


def url_list(value: str) -> tuple[str, ...]:
    """The URLs of a setting that names one or several (a cluster's nodes), in order:
    separated by commas or whitespace."""
    return tuple(part for part in re.split(r"[\s,]+", value) if part)


def first_url(value: str) -> str:
    """The first URL of a setting: where the user, password and vhost are read from (every
    node of a cluster shares them)."""
    urls = url_list(value)
    return urls[0] if urls else value


def _check_urls(name: str, value: object, schemes: tuple[str, ...]) -> None:
    urls = url_list(value) if isinstance(value, str) else ()
    if not urls:
        found = type(value).__name__ if not isinstance(value, str) else ""
        raise ConfigError(f"{variable(name)} must name a URL (it is {found or 'empty'})")
    for url in urls:
        scheme = urlsplit(url).scheme
        if scheme not in schemes:  # the URL itself is not shown: it may hold a password
            allowed = " or ".join(f"{s}://" for s in schemes)
            raise ConfigError(
                f"{variable(name)} must be a URL starting {allowed} (it starts {scheme!r})"
            )
    if len({urlsplit(url).scheme for url in urls}) > 1:
        raise ConfigError(f"{variable(name)} mixes schemes: every node is reached the same way")


def _seconds(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from CAJASYNC_* variables, then explicit overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in fields(Settings):
        key = variable(field.name)
        raw = env.get(key)
        if raw is None or raw == "":
            continue
        values[field.name] = _parse(key, raw, field.type)
    values |= {name: value for name, value in overrides.items() if value is not None}
    return Settings(**values)


def _parse(key: str, raw: str, kind: object) -> object:
    if kind in (bool, "bool"):
        lowered = raw.strip().lower()
        if lowered not in BOOLEANS:
            raise ConfigError(f"{key}={raw!r} is not a valid bool (use 1/0, true/false, yes/no)")
        return BOOLEANS[lowered]
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{key}={raw!r} is not a valid {kind}") from exc
    return raw
