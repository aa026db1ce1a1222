"""``govbus watch``: the watchdog process (exit 0 on SIGTERM/SIGINT, 2 on a configuration error)."""

from __future__ import annotations

import argparse
import signal
from types import FrameType

from govbus._settings import load_settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    watch = sub.add_parser(
        "watch", help="the watchdog: alerts on silent producers, lost tails, stalled or vanished sinks"
    )
    watch.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from govbus.watch._runner import WatchRunner

    runner = WatchRunner(load_settings())

    def stop(_signum: int, _frame: FrameType | None) -> None:
        runner.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner.run()
    return 0
