"""A till's own broker URL (`cajasync server terminal add` makes it; `cajasync terminal init
--credentials FILE` keeps it): in a file beside the terminal database, `<db>.broker`, mode
0600, out of the POS's own tables. Terminal commands use it when no --broker-url (or
CAJASYNC_BROKER_URL) is given.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy.engine import make_url

from cajasync.core.settings import url_list
from cajasync.errors import ConfigError

SUFFIX = ".broker"


def credentials_path(db_target: str) -> Path:
    """Where the broker URL of the terminal database `db_target` (a path or sqlite URL) is."""
    path = db_target
    if "://" in db_target:
        url = make_url(db_target)
        if url.get_backend_name() != "sqlite" or not url.database:
            raise ConfigError(
                "broker credentials are kept beside a SQLite terminal database; pass "
                "--broker-url (or CAJASYNC_BROKER_URL) instead for this database"
            )
        path = url.database
    return Path(path + SUFFIX)


def read_credentials(file: Path, terminal: str) -> str:
    """The broker URL in `file` (as `server terminal add` wrote it), checked to be
    terminal's own user."""
    try:
        url = file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read credentials file {file}: {exc.strerror}") from exc
    for one in url_list(url) or ("",):  # one URL, or one per node of a cluster
        parts = urlsplit(one)
        if parts.scheme not in ("amqp", "amqps") or not parts.password:
            raise ConfigError(f"{file} does not hold a broker URL with a user and password")
        user = unquote(parts.username or "")
        if user != terminal:
            raise ConfigError(f"{file} holds the broker user {user!r}, not terminal {terminal}'s")
    return url


def save_credentials(db_target: str, broker_url: str) -> Path:
    """Keep `broker_url` beside the terminal database (mode 0600); the file's path."""
    path = credentials_path(db_target)
    write_private(path, broker_url)
    return path


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by its owner only (mode 0600, an existing file too)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, (text + "\n").encode())
    finally:
        os.close(descriptor)


def stored_broker_url(db_target: str) -> str | None:
    """The broker URL kept beside the terminal database, or None."""
    try:
        path = credentials_path(db_target)
    except ConfigError:
        return None
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the till's broker URL in {path}: {exc.strerror}") from exc
