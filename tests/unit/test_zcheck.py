"""A Z close against the sales held: the pure rules of inbox/zcheck.py (no I/O)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import msgspec

from cajasync.samples.simulate import TicketMaker
from inbox import zcheck
from schemas.ops import Sale, ZClose

NOW = dt.datetime(2026, 12, 1, 20, 0, tzinfo=dt.UTC)
LABEL = "Z 7 of T001"


def day(count: int = 10, *, seed: int = 7) -> tuple[list[Sale], ZClose]:
    """`count` sales numbered from 1 and the Z the simulator closes them with."""
    maker = TicketMaker(seed=seed)
    sales = maker.sales(count)
    return sales, maker.make_z(7, sales)


def voided(sale: Sale) -> Sale:
    return msgspec.structs.replace(sale, voided=True)


def decide(result: zcheck.Check, **overrides: object) -> zcheck.Decision:
    arguments: dict[str, object] = {
        "now": NOW,
        "received_at": NOW,
        "asked": 0,
        "asked_at": None,
        "caught_up": True,
        "wait_s": 300.0,
        "recheck_s": 5.0,
    }
    return zcheck.decide(LABEL, result, **(arguments | overrides))  # type: ignore[arg-type]


def test_a_z_the_simulator_closes_adds_up_with_its_sales() -> None:
    sales, z = day()
    result = zcheck.check(z, sales)
    assert result.adds_up
    assert result.found == zcheck.expected(z)
    assert decide(result).state == "reconciled"


def test_a_voided_sale_counts_in_the_range_but_not_in_the_totals() -> None:
    maker = TicketMaker(seed=3)
    sales = maker.sales(6)
    sales[2] = voided(sales[2])
    z = maker.make_z(1, sales)
    assert z.sale_count == 5
    assert zcheck.check(z, sales).adds_up
    without = [s for s in sales if s.number != 3]
    assert zcheck.check(z, without).missing == [3]


def test_a_return_counts_as_a_sale_with_its_negative_total() -> None:
    sales, z = day(4)
    original = sales[0]
    lines = [msgspec.structs.replace(line, quantity=-line.quantity) for line in original.lines]
    totals = type(original.totals).of(lines)
    refund = msgspec.structs.replace(
        original,
        number=5,
        kind="return",
        lines=lines,
        totals=totals,
        payments=[msgspec.structs.replace(original.payments[0], amount=totals.total)],
    )
    z_with_return = TicketMaker(seed=7).make_z(7, [*sales, refund])
    result = zcheck.check(z_with_return, [*sales, refund])
    assert result.adds_up
    assert result.found.count == 5
    assert result.found.total == z.total + totals.total


def test_missing_numbers_are_those_of_the_range_with_no_sale_held() -> None:
    sales, z = day(10)
    held = [s for s in sales if s.number not in (4, 9)]
    result = zcheck.check(z, held)
    assert result.missing == [4, 9]
    assert not result.adds_up


def test_sales_outside_the_range_or_the_period_are_not_the_zs() -> None:
    sales, z = day(5)
    later = msgspec.structs.replace(sales[0], number=6)
    earlier = msgspec.structs.replace(sales[1], date=z.period_start - dt.timedelta(seconds=1))
    result = zcheck.check(z, [*sales, later, earlier])
    assert result.adds_up  # sale 6 is past the range, the earlier copy of 2 before the period
    assert zcheck.check(z, [*sales[:1], earlier, *sales[2:]]).missing == [2]


def test_an_empty_day_names_no_receipt() -> None:
    z = TicketMaker(seed=1).make_z(3, [])
    result = zcheck.check(z, [])
    assert result.missing == []
    assert result.adds_up


def test_a_differing_total_is_described_in_words_with_the_difference() -> None:
    sales, z = day(3)
    z = msgspec.structs.replace(z, total=z.total + Decimal("4.50"))
    result = zcheck.check(z, sales)
    assert result.missing == []
    decision = decide(result)
    assert decision.state == "discrepancy"
    found = sum((s.totals.total for s in sales), Decimal(0))
    assert decision.difference == (
        f"{LABEL}: total {z.total:,.2f} but the 3 sales held add up to {found:,.2f} (-4.50)"
    )


def test_a_differing_method_and_count_are_each_named() -> None:
    sales, z = day(3)
    methods = [msgspec.structs.replace(m, amount=m.amount + 1) for m in z.totals_by_method[:1]]
    z = msgspec.structs.replace(z, sale_count=4, totals_by_method=methods + z.totals_by_method[1:])
    differences = zcheck.check(z, sales).differences
    assert "4 sales but 3 held" in differences
    assert any(d.startswith(f"paid by {methods[0].method} ") for d in differences)


def test_figures_that_differ_wait_while_the_till_has_earlier_seqs_in_flight() -> None:
    sales, z = day(3)
    z = msgspec.structs.replace(z, total=z.total + 1)
    decision = decide(zcheck.check(z, sales), caught_up=False)
    assert decision.state == "waiting"
    assert decision.ask is False
    assert decision.next_check_at == NOW + dt.timedelta(seconds=5)


def test_missing_sales_are_asked_for_at_once_then_again_after_a_third_of_the_wait() -> None:
    sales, z = day(5)
    result = zcheck.check(z, sales[1:])
    first = decide(result)
    assert (first.state, first.ask) == ("waiting", True)
    assert first.next_check_at == NOW + dt.timedelta(seconds=100)
    soon = decide(result, now=NOW + dt.timedelta(seconds=50), asked=1, asked_at=NOW)
    assert (soon.state, soon.ask) == ("waiting", False)
    again = decide(result, now=NOW + dt.timedelta(seconds=100), asked=1, asked_at=NOW)
    assert again.ask is True


def test_a_z_still_missing_sales_after_the_wait_is_a_discrepancy_naming_them() -> None:
    sales, z = day(5)
    late = NOW + dt.timedelta(seconds=300)
    decision = decide(
        zcheck.check(z, sales[1:]), now=late, asked=3, asked_at=late - dt.timedelta(seconds=100)
    )
    assert decision.state == "discrepancy"
    assert decision.difference.startswith(
        f"{LABEL}: sales 1 never arrived (the till was asked 3 times); total "
    )


def test_a_sale_the_till_says_it_never_had_is_a_discrepancy_at_once() -> None:
    sales, z = day(5)
    decision = decide(zcheck.check(z, sales[:-1]), asked=1, asked_at=NOW, absent=[5])
    assert decision.state == "discrepancy"
    assert decision.difference.startswith(f"{LABEL}: the till has no sale numbered 5; ")


def test_asks_stop_at_the_bound_and_the_next_check_is_the_deadline() -> None:
    sales, z = day(5)
    asked_at = NOW + dt.timedelta(seconds=200)
    decision = decide(
        zcheck.check(z, sales[1:]),
        now=NOW + dt.timedelta(seconds=250),
        asked=3,
        asked_at=asked_at,
    )
    assert (decision.state, decision.ask) == ("waiting", False)
    assert decision.next_check_at == NOW + dt.timedelta(seconds=300)
