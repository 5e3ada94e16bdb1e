"""A POS user's password checked against the hash the downloaded configuration carries.

Users come down in the `configuracion` topic with a hash, never a password
(schemas/records.py `User.password_hash`). The one format checked here is scrypt:

* the back office's (cajasync/samples/seed.py `scrypt_hash`):
  `$scrypt$n=16384,r=8,p=1$<salt>$<hash>`, salt and hash in unpadded base64;
* passlib's: `$scrypt$ln=14,r=8,p=1$<salt>$<hash>` (`ln` = log2 of n), in its base64
  alphabet (`.` for `+`).

The key is derived with `hashlib.scrypt` at the length of the stored hash and compared in
constant time (`hmac.compare_digest`). An argon2 hash (`$argon2id$...`) is refused with
one line: cajasync ships no argon2 implementation (argon2-cffi is not a dependency), so
a user whose back office stores argon2 hashes cannot be checked on a till.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import Final

from cajasync.errors import NotAuthorised

_SCRYPT: Final = re.compile(
    r"^\$scrypt\$(?P<params>[^$]+)\$(?P<salt>[A-Za-z0-9+/.]+=*)\$(?P<hash>[A-Za-z0-9+/.]+=*)\Z"
)
MAX_MEMORY: Final = 256 * 1024 * 1024  # bytes scrypt may take for one check (128 * n * r)
MAX_PARALLEL: Final = 16


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches the `stored` hash; NotAuthorised (one line saying why)
    for a hash that cannot be checked: argon2, malformed, or parameters out of reason."""
    if stored.startswith("$argon2"):
        raise NotAuthorised(
            "argon2 password hashes cannot be checked on this till (cajasync checks scrypt "
            "hashes only): store the user's password as scrypt in the back office"
        )
    match = _SCRYPT.match(stored)
    if match is None:
        raise NotAuthorised("the stored password hash is malformed (expected $scrypt$...)")
    n, r, p = _parameters(match["params"])
    salt, expected = _unb64(match["salt"]), _unb64(match["hash"])
    if not expected:
        raise NotAuthorised("the stored password hash is malformed (an empty hash)")
    computed = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=2 * MAX_MEMORY, dklen=len(expected)
    )
    return hmac.compare_digest(computed, expected)


def _parameters(text: str) -> tuple[int, int, int]:
    """n, r, p of `n=16384,r=8,p=1` or `ln=14,r=8,p=1`; NotAuthorised when out of reason."""
    try:
        fields = dict(part.split("=", 1) for part in text.split(","))
        values = {name: int(value) for name, value in fields.items()}
    except ValueError:
        raise NotAuthorised(
            f"the stored password hash has unreadable parameters {text!r}"
        ) from None
    if "ln" in values and "n" not in values and 1 <= values["ln"] <= 30:
        values["n"] = 2 ** values.pop("ln")
    if set(values) != {"n", "r", "p"}:
        raise NotAuthorised(f"the stored password hash has unreadable parameters {text!r}")
    n, r, p = values["n"], values["r"], values["p"]
    if n < 2 or n & (n - 1) or r < 1 or not 1 <= p <= MAX_PARALLEL or 128 * n * r > MAX_MEMORY:
        raise NotAuthorised(f"the stored password hash has parameters out of range ({text})")
    return n, r, p


def _unb64(text: str) -> bytes:
    """Standard or passlib base64, padded or not."""
    plain = text.rstrip("=").replace(".", "+")
    try:
        return base64.b64decode(plain + "=" * (-len(plain) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise NotAuthorised("the stored password hash is malformed (bad base64)") from None
