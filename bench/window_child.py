"""One start of `cajasync window` for bench/window.py, in a fresh process: what a technician
typing `cajasync window --db caja.db` waits for. Nothing is imported before the window's
own modules (the parent's clock started before this interpreter did), and the moments
printed are `time.monotonic()`, one clock for every process on the machine."""

from __future__ import annotations

import sys


def main(db: str, broker_url: str, width: int, height: int) -> None:
    import asyncio
    import json
    import os
    import time

    started_cpu = time.process_time()
    from cajasync.core.settings import load_settings
    from cli.window.app import SyncWindow
    from cli.window.command import window_context

    async def measure() -> dict[str, float]:
        with window_context(db, load_settings(broker_url=broker_url), None) as ctx:
            app = SyncWindow(ctx)
            async with app.run_test(headless=True, size=(width, height)) as pilot:
                while app.first_paint_at is None:
                    await pilot.pause(0.005)
                paint_cpu = time.process_time()
                while app.counted_at is None:
                    await pilot.pause(0.005)
                figures = {
                    "first_paint_at": app.first_paint_at,
                    "counted_at": app.counted_at,
                    "first_paint_cpu_s": round(paint_cpu - started_cpu, 4),
                    "counted_cpu_s": round(time.process_time() - started_cpu, 4),
                    "load_1min": os.getloadavg()[0],
                }
                app.exit()
            return figures

    print(json.dumps(asyncio.run(measure())), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
