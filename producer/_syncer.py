"""The syncer thread (``govbus-syncer``): fdatasyncs the spool every ``fsync_interval_ms`` (disk
mode; every second otherwise) and keeps a spare segment ready, which is also the probe that
notices a full filesystem has room again."""

from __future__ import annotations

import logging
import threading

from govbus.producer._spool import Spool

log = logging.getLogger("govbus.producer")


class Syncer:
    def __init__(self, spool: Spool, *, disk: bool, fsync_interval_ms: int) -> None:
        self._spool = spool
        self._disk = disk
        self._interval = fsync_interval_ms / 1000 if disk and fsync_interval_ms else 1.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="govbus-syncer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def run(self) -> None:
        spool = self._spool
        while not self._stop.wait(self._interval):
            try:
                spool.sync()
                if self._disk or spool.no_space is not None:
                    spool.prepare()  # also the probe that notices a full disk has room again
            except Exception:
                log.exception("spool sync failed")
        spool.sync()
