"""A Z close against the sales the server holds: the pure comparison (no I/O).

Which sales belong to a Z: the terminal's sales (any book) numbered `first_receipt..
last_receipt` whose date lies in `period_start..period_end` (both inclusive; a date
without a zone is taken as UTC). A Z with no sales (`sale_count` 0 and receipts 0..0)
names no receipt.

How they count:
* every number of the range must be held, voided sales included: a voided ticket used its
  number, so a hole in the range is a missing sale;
* a voided sale (its current version says `voided`) counts in neither the sale count nor
  any total;
* a return (`kind="return"`) counts as one sale and adds its (negative) totals: the Z's
  figures are net of returns;
* figures compared: the sale count, the total, per tax rate the net and tax (when the Z
  lists them) and per payment method the amount (when the Z lists them).

What becomes of a Z (`decide`): reconciled when nothing differs; waiting while numbers are
missing (the till is asked for them, up to `asks` times over `wait_s`) or while figures
differ but the server does not yet hold every seq the till sent before the Z; a
discrepancy, with the difference in words, when figures differ with nothing left to
arrive, when the till says it has no sale for a missing number, or when `wait_s` passed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from schemas.ops import Sale, ZClose

ZERO: Final = Decimal(0)
ASKS: Final = 3  # replay requests for a Z's missing sales before it is a discrepancy


@dataclass(frozen=True, slots=True)
class Figures:
    """What a Z says, or what the sales held add up to."""

    count: int = 0
    total: Decimal = ZERO
    by_tax: dict[Decimal, tuple[Decimal, Decimal]] = field(default_factory=dict)  # net, tax
    by_method: dict[str, Decimal] = field(default_factory=dict)

    def to_builtins(self) -> dict[str, Any]:
        """JSON-ready: amounts as strings."""
        return {
            "count": self.count,
            "total": str(self.total),
            "by_tax": {
                str(rate): {"net": str(net), "tax": str(tax)}
                for rate, (net, tax) in sorted(self.by_tax.items())
            },
            "by_method": {method: str(a) for method, a in sorted(self.by_method.items())},
        }


@dataclass(frozen=True, slots=True)
class Check:
    """A Z compared with the sales held: numbers missing, figures found, differences."""

    missing: list[int]
    found: Figures
    differences: list[str]

    @property
    def adds_up(self) -> bool:
        return not self.missing and not self.differences


@dataclass(frozen=True, slots=True)
class Decision:
    """The state a check leads to; `ask`: send the till a replay request for `missing`."""

    state: str  # waiting | reconciled | discrepancy
    difference: str = ""
    ask: bool = False
    next_check_at: dt.datetime | None = None


def expected(z: ZClose) -> Figures:
    """The figures a Z close states."""
    return Figures(
        count=z.sale_count,
        total=z.total,
        by_tax={t.rate: (t.net, t.tax) for t in z.totals_by_tax},
        by_method={m.method: m.amount for m in z.totals_by_method},
    )


def receipt_numbers(z: ZClose) -> range:
    """The sale numbers a Z names (none for an empty day: no sales, receipts 0..0)."""
    if z.sale_count == 0 and z.first_receipt == 0 and z.last_receipt == 0:
        return range(0)
    return range(z.first_receipt, z.last_receipt + 1)


def sales_of(z: ZClose, sales: Iterable[Sale]) -> list[Sale]:
    """The sales among `sales` that belong to the Z: number in its range, date in its period."""
    numbers = receipt_numbers(z)
    start, end = utc(z.period_start), utc(z.period_end)
    return [s for s in sales if s.number in numbers and start <= utc(s.date) <= end]


def held(sales: Iterable[Sale]) -> Figures:
    """What the sales add up to: voided ones count in nothing."""
    count, total = 0, ZERO
    by_tax: dict[Decimal, tuple[Decimal, Decimal]] = {}
    by_method: dict[str, Decimal] = {}
    for sale in sales:
        if sale.voided:
            continue
        count += 1
        total += sale.totals.total
        for line in sale.lines:
            net, tax = by_tax.get(line.tax_rate, (ZERO, ZERO))
            by_tax[line.tax_rate] = (net + line.net, tax + line.tax)
        for payment in sale.payments:
            by_method[payment.method] = by_method.get(payment.method, ZERO) + payment.amount
    return Figures(count, total, by_tax, by_method)


def check(z: ZClose, sales: Iterable[Sale]) -> Check:
    """Compare a Z with the terminal's sales (any superset: those of the Z are picked)."""
    mine = sales_of(z, sales)
    have = {s.number for s in mine}
    missing = [n for n in receipt_numbers(z) if n not in have]
    found = held(mine)
    return Check(missing, found, differences(expected(z), found))


def differences(want: Figures, found: Figures) -> list[str]:
    """Each figure that differs, in words (empty when all agree)."""
    out: list[str] = []
    if want.total != found.total:
        out.append(
            f"total {money(want.total)} but the {found.count} sales held add up to "
            f"{money(found.total)} ({signed(found.total - want.total)})"
        )
    if want.count != found.count:
        out.append(f"{want.count} sales but {found.count} held")
    if want.by_tax:
        for rate in sorted(set(want.by_tax) | set(found.by_tax)):
            w, f = want.by_tax.get(rate, (ZERO, ZERO)), found.by_tax.get(rate, (ZERO, ZERO))
            if w != f:
                out.append(
                    f"tax rate {rate}%: net {money(w[0])}, tax {money(w[1])} but the sales "
                    f"held have net {money(f[0])}, tax {money(f[1])}"
                )
    if want.by_method:
        for method in sorted(set(want.by_method) | set(found.by_method)):
            w_amount, f_amount = want.by_method.get(method, ZERO), found.by_method.get(method, ZERO)
            if w_amount != f_amount:
                out.append(
                    f"paid by {method} {money(w_amount)} but the sales held "
                    f"{money(f_amount)} ({signed(f_amount - w_amount)})"
                )
    return out


def decide(
    label: str,
    result: Check,
    *,
    now: dt.datetime,
    received_at: dt.datetime,
    asked: int,
    asked_at: dt.datetime | None,
    absent: Sequence[int] = (),
    caught_up: bool,
    wait_s: float,
    recheck_s: float,
    asks: int = ASKS,
) -> Decision:
    """What becomes of a Z (called `label`, e.g. "Z 12 of T001") after a check."""
    if result.adds_up:
        return Decision("reconciled")
    deadline = received_at + dt.timedelta(seconds=wait_s)
    gone = sorted(set(result.missing) & set(absent))
    if gone:
        why = f"the till has no sale numbered {numbers(gone)}"
        return Decision("discrepancy", describe(label, why, result))
    if not result.missing:
        if caught_up or now >= deadline:
            return Decision("discrepancy", describe(label, "", result))
        return Decision("waiting", next_check_at=min(now + _seconds(recheck_s), deadline))
    if now >= deadline:
        times = "once" if asked == 1 else f"{asked} times"
        why = f"sales {numbers(result.missing)} never arrived (the till was asked {times})"
        return Decision("discrepancy", describe(label, why, result))
    interval = _seconds(wait_s / asks)
    ask = asked < asks and (asked_at is None or now >= asked_at + interval)
    last = now if ask or asked_at is None else asked_at
    nxt = min(last + interval, deadline) if asked + int(ask) < asks else deadline
    return Decision("waiting", ask=ask, next_check_at=nxt)


def describe(label: str, why: str, result: Check) -> str:
    """The difference in words: `Z 12 of T001: <why>; <each figure that differs>`."""
    parts = ([why] if why else []) + result.differences
    return f"{label}: " + "; ".join(parts)


def money(amount: Decimal) -> str:
    return f"{amount:,.2f}"


def signed(amount: Decimal) -> str:
    return f"{amount:+,.2f}"


def numbers(values: Sequence[int]) -> str:
    return ", ".join(str(n) for n in values)


def utc(moment: dt.datetime) -> dt.datetime:
    """`moment` in UTC; a naive one is taken as UTC (as SQLite gives them back)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def _seconds(value: float) -> dt.timedelta:
    return dt.timedelta(seconds=value)
