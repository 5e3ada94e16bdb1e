"""`python -m bench [relay|write_path|e2e ...] [--quick]`: run benchmarks, print a table,
write bench/results/<name>.json. Exit status 1 when a target is missed."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import common

BENCHES = (
    "write_path",
    "relay",
    "e2e",
    "servers",
    "bootstrap",
    "propagation",
    "images",
    "diff",
    "growth",
    "window",
)
ON_REQUEST = ("fleet", "fanout")  # 1,000 quorum queues on a shared broker: only when named
QUICK: dict[str, dict[str, Any]] = {
    "write_path": {"count": 200},
    "relay": {"count": 5_000, "naive_count": 500, "rounds": 1},
    "e2e": {"terminals": 4, "per_terminal": 500, "wide": 8, "steady_rate": 400, "steady_s": 4},
    "servers": {"terminals": 4, "per_terminal": 500},
    "bootstrap": {"products": 5_000},
    "propagation": {"terminals": 4, "rate": 50, "seconds": 4},
    "images": {"products": 500, "changed_ratio": 0.02},
    "diff": {"products": 5_000, "rounds": 1},
    "growth": {"products": 1_000},
    "window": {"products": 5_000, "rounds": 1},
    "fleet": {"sizes": (4, 12), "ops": 1_200, "connected": 8, "changes": 10, "rate": 10},
    "fanout": {"tills": 12, "changes": 5, "rate": 5},
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", choices=[*BENCHES, *ON_REQUEST, []], help="default: all"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run, not the targets"
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="a keyword of the bench's run(), e.g. --param sizes=[1000] --param connected=500",
    )
    args = parser.parse_args()
    params: dict[str, Any] = {}
    for item in args.param:
        key, _, value = item.partition("=")
        parsed = json.loads(value)
        params[key] = tuple(parsed) if isinstance(parsed, list) else parsed
    console = Console()
    if not console.is_terminal:
        console = Console(width=180)
    results = []
    for name in args.names or BENCHES:
        module = __import__(f"bench.{name}", fromlist=["run"])
        console.print(f"[bold]{name}[/bold] running…")
        try:
            result = module.run(**{**(QUICK[name] if args.quick else {}), **params})
        finally:
            common.drop_terminal_queues()
        path = common.write(result)
        console.print(f"  → {path}")
        results.append(result)
    table = Table(title="cajasync benchmarks", title_justify="left")
    for column in ("bench", "measured", "metric", "baselines", "ratios", "targets", "ok"):
        table.add_column(column)
    for r in results:
        table.add_row(
            r.name,
            str(r.value),
            r.metric,
            "\n".join(f"{k}: {v}" for k, v in r.baselines.items()),
            "\n".join(f"{k}: {v}" for k, v in r.ratios.items()),
            "\n".join(f"{k} {v}" for k, v in r.targets.items()),
            "[green]yes[/green]" if r.passed else "[red]NO[/red]",
        )
    console.print(table)
    return 0 if all(r.passed for r in results) or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
