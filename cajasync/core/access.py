"""Who may do what on a till: the rules, on the users and permissions of the configuration.

A user may do a guarded thing (`tools.delete-synced`: delete synced operations) when they
are in the downloaded configuration, active, give their password, and either their role
always may (MASTER or ADMIN), their own `permissions` list the permission, or a
Permission record of that key (or name) lists their role. Each refusal is one line saying
which rule failed; the password is checked before the role, so a wrong password says
nothing about what the user may do.

Pure: the records are given (inbox/users.py reads them from the replica).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from cajasync.core.passwords import verify_password
from cajasync.errors import NotAuthorised
from schemas.records import Permission, User

DELETE_SYNCED: Final = "tools.delete-synced"
ALWAYS: Final[tuple[str, ...]] = ("MASTER", "ADMIN")  # roles that may every guarded thing


@dataclass(frozen=True, slots=True)
class Grant:
    """A user allowed to do `permission`, and the role they did it with."""

    user: str
    role: str
    permission: str


def authorise(
    user: User | None,
    name: str,
    password: str,
    permissions: Iterable[Permission],
    permission: str,
) -> Grant:
    """The grant of `user` (looked up as `name`) for `permission`; NotAuthorised otherwise."""
    if user is None:
        raise NotAuthorised(f"unknown user {name!r}: not in this till's configuration")
    if not user.active:
        raise NotAuthorised(f"user {name} is inactive")
    try:
        matches = verify_password(password, user.password_hash)
    except NotAuthorised as exc:
        raise NotAuthorised(f"user {name}: {exc}") from None
    if not matches:
        raise NotAuthorised(f"wrong password for user {name}")
    if not may(user, permissions, permission):
        raise NotAuthorised(
            f"user {name} ({user.role}) may not {permission}: it takes the role MASTER or "
            f"ADMIN, or the {permission} permission"
        )
    return Grant(user=user.key, role=user.role, permission=permission)


def may(user: User, permissions: Iterable[Permission], permission: str) -> bool:
    """True when `user`'s role or permissions allow `permission` (no password involved)."""
    if user.role in ALWAYS or permission in user.permissions:
        return True
    return any(
        permission in (record.key, record.name) and user.role in record.roles
        for record in permissions
    )
