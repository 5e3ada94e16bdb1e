"""Passwords against the configuration's hashes, and who may delete synced operations."""

from __future__ import annotations

import base64
import hashlib

import pytest

from cajasync.core.access import DELETE_SYNCED, Grant, authorise, may
from cajasync.core.passwords import verify_password
from cajasync.errors import NotAuthorised
from cajasync.samples.seed import scrypt_hash
from schemas.records import Permission, Role, User

SALT = b"0123456789abcdef"
FAST = {"n": 16, "r": 1, "p": 1}  # tiny cost: these tests check the format, not the strength


def _user(
    key: str = "laura",
    role: Role = "ADMIN",
    password: str = "secreto",
    *,
    permissions: list[str] | None = None,
    active: bool = True,
) -> User:
    return User(
        key=key,
        name=key.title(),
        role=role,
        password_hash=scrypt_hash(password, SALT, **FAST),
        permissions=permissions or [],
        active=active,
    )


def _passlib(password: str, ln: int = 4) -> str:
    """passlib's format: ln = log2(n), its base64 alphabet ("." for "+"), no padding."""
    digest = hashlib.scrypt(password.encode(), salt=SALT, n=2**ln, r=8, p=1, dklen=32)

    def ab64(data: bytes) -> str:
        return base64.b64encode(data).decode().rstrip("=").replace("+", ".")

    return f"$scrypt$ln={ln},r=8,p=1${ab64(SALT)}${ab64(digest)}"


# -- passwords -----------------------------------------------------------------------------


def test_the_seeds_scrypt_hash_accepts_its_password_and_refuses_another() -> None:
    stored = scrypt_hash("admin", SALT)  # the back office's cost: n=16384, r=8, p=1

    assert verify_password("admin", stored) is True
    assert verify_password("Admin", stored) is False
    assert verify_password("", stored) is False


def test_a_passlib_scrypt_hash_is_checked_too() -> None:
    stored = _passlib("clave+segura")

    assert verify_password("clave+segura", stored) is True
    assert verify_password("clave segura", stored) is False


def test_an_argon2_hash_is_refused_with_a_line_saying_why() -> None:
    stored = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"

    with pytest.raises(NotAuthorised, match=r"^argon2 password hashes cannot be checked"):
        verify_password("secreto", stored)


@pytest.mark.parametrize(
    ("stored", "why"),
    [
        ("$scrypt$n=16,r=1,p=1$c2FsdA", "malformed"),
        ("$scrypt$n=16,r=1,p=1$c2FsdA$", "malformed"),
        ("$scrypt$n=16,r=1,p=1$c2F!sdA$aGFzaA", "malformed"),
        ("$scrypt$n=16,r=1,p=1$c2FsdA$a", "bad base64"),
        ("$scrypt$n=abc,r=1,p=1$c2FsdA$aGFzaA", "unreadable parameters"),
        ("$scrypt$n=16,r=1$c2FsdA$aGFzaA", "unreadable parameters"),
        ("$scrypt$n=15,r=1,p=1$c2FsdA$aGFzaA", "out of range"),
        ("$scrypt$n=1073741824,r=8,p=1$c2FsdA$aGFzaA", "out of range"),
        ("plaintext", "malformed"),
    ],
)
def test_a_malformed_hash_is_refused_in_one_line_not_an_exception_of_hashlib(
    stored: str, why: str
) -> None:
    with pytest.raises(NotAuthorised, match=why):
        verify_password("secreto", stored)


# -- who may delete synced operations ------------------------------------------------------


@pytest.mark.parametrize("role", ["MASTER", "ADMIN"])
def test_master_and_admin_may_delete_synced_operations_with_their_password(role: Role) -> None:
    user = _user(role=role)

    grant = authorise(user, "laura", "secreto", [], DELETE_SYNCED)

    assert grant == Grant(user="laura", role=role, permission=DELETE_SYNCED)


def test_a_cashier_is_refused_even_with_the_right_password() -> None:
    user = _user("ana", "CASHIER")

    with pytest.raises(NotAuthorised) as refused:
        authorise(user, "ana", "secreto", [], DELETE_SYNCED)

    assert str(refused.value) == (
        "user ana (CASHIER) may not tools.delete-synced: it takes the role MASTER or ADMIN, "
        "or the tools.delete-synced permission"
    )


def test_a_wrong_password_is_refused_before_the_role_is_looked_at() -> None:
    roles: tuple[Role, ...] = ("ADMIN", "CASHIER")
    for role in roles:
        with pytest.raises(NotAuthorised, match=r"^wrong password for user laura$"):
            authorise(_user(role=role), "laura", "otra", [], DELETE_SYNCED)


def test_an_unknown_user_is_refused_by_name() -> None:
    with pytest.raises(NotAuthorised, match=r"^unknown user 'nadie'"):
        authorise(None, "nadie", "secreto", [], DELETE_SYNCED)


def test_an_inactive_admin_is_refused() -> None:
    with pytest.raises(NotAuthorised, match=r"^user laura is inactive$"):
        authorise(_user(active=False), "laura", "secreto", [], DELETE_SYNCED)


def test_a_user_with_an_unreadable_hash_is_refused_naming_the_user() -> None:
    user = User(key="laura", name="L", role="ADMIN", password_hash="$argon2id$v=19$x$y$z")

    with pytest.raises(NotAuthorised, match=r"^user laura: argon2 password hashes"):
        authorise(user, "laura", "secreto", [], DELETE_SYNCED)


def test_a_supervisor_may_with_the_permission_in_their_own_list() -> None:
    supervisor = _user("carlos", "SUPERVISOR", permissions=[DELETE_SYNCED])

    assert authorise(supervisor, "carlos", "secreto", [], DELETE_SYNCED).role == "SUPERVISOR"


def test_a_permission_record_listing_the_role_grants_it() -> None:
    supervisor = _user("carlos", "SUPERVISOR")
    by_key = Permission(key=DELETE_SYNCED, name="Delete synced", roles=["SUPERVISOR"])
    by_name = Permission(key="p7", name=DELETE_SYNCED, roles=["SUPERVISOR"])
    other_roles = Permission(key=DELETE_SYNCED, name="Delete synced", roles=["MASTER"])
    other_permission = Permission(key="sync.pull", name="Pull", roles=["SUPERVISOR"])

    assert may(supervisor, [by_key], DELETE_SYNCED)
    assert may(supervisor, [by_name], DELETE_SYNCED)
    assert not may(supervisor, [other_roles, other_permission], DELETE_SYNCED)
    assert not may(_user("ana", "CASHIER"), [by_key], DELETE_SYNCED)
