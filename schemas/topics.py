"""Topic slugs, the user-facing vocabulary, and their English aliases."""

from __future__ import annotations

from typing import Final

from cajasync.errors import ConfigError

SALES: Final = "ventas"
CASH_PAYMENTS: Final = "pagos"
Z_CLOSES: Final = "cierres-z"
WEEKLY_FILES: Final = "archivos-semanales"

UP_TOPICS: Final[tuple[str, ...]] = (SALES, CASH_PAYMENTS, Z_CLOSES, WEEKLY_FILES)

UP_ALIASES: Final[dict[str, str]] = {
    "sales": SALES,
    "payments": CASH_PAYMENTS,
    "z-closes": Z_CLOSES,
    "weekly-files": WEEKLY_FILES,
}


def up_topic(name: str) -> str:
    """Return the slug for an up topic given by slug or English alias."""
    slug = UP_ALIASES.get(name, name)
    if slug not in UP_TOPICS:
        known = ", ".join(f"{s} ({a})" for a, s in UP_ALIASES.items())
        raise ConfigError(f"unknown topic {name!r}; expected one of: {known}")
    return slug


# Down topics (server -> terminal) and the scope each is published to.
DOWN_TOPIC_SCOPES: Final[dict[str, str]] = {
    "configuracion": "all",
    "productos": "all",
    "clientes": "all",
    "plan-de-cuentas": "all",
    "formas-de-pago": "pos",
    "bancos-tarjetas": "all",
    "proveedores": "all",
    "talonarios": "pos",
    "vendedores": "all",
    "stock": "loc",
    "combos": "all",
    "ofertas": "all",
    "noticias": "all",
    "mesas": "all",
}
TABLE_TOPICS: Final = frozenset({"mesas"})
TABLE_KINDS: Final = frozenset({"restaurant", "hotel"})
TERMINAL_KINDS: Final[tuple[str, ...]] = ("retail", "restaurant", "hotel")

DOWN_TOPICS: Final[tuple[str, ...]] = tuple(DOWN_TOPIC_SCOPES)

DOWN_ALIASES: Final[dict[str, str]] = {
    "config": "configuracion",
    "products": "productos",
    "customers": "clientes",
    "accounts": "plan-de-cuentas",
    "payment-methods": "formas-de-pago",
    "banks-cards": "bancos-tarjetas",
    "suppliers": "proveedores",
    "receipt-books": "talonarios",
    "sellers": "vendedores",
    "stock": "stock",
    "combos": "combos",
    "offers": "ofertas",
    "news": "noticias",
    "tables": "mesas",
}


def down_topic(name: str) -> str:
    """Return the slug for a down topic given by slug or English alias."""
    slug = DOWN_ALIASES.get(name, name)
    if slug not in DOWN_TOPIC_SCOPES:
        known = ", ".join(s if s == a else f"{s} ({a})" for a, s in DOWN_ALIASES.items())
        raise ConfigError(f"unknown topic {name!r}; expected one of: {known}")
    return slug
