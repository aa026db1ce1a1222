"""A kernel process for the crash tests: emits events and reports each one after emit() returned.

    python producer_kernel.py BOOTSTRAP TOPIC SPOOL_DIR COUNT DURABILITY

Prints ``ready``, then one event id per line, each written only after ``emit()`` returned for
that event; then ``done`` and waits (to be killed).
"""

from __future__ import annotations

import signal
import sys
import time

from govbus._sample import sample_events
from govbus._settings import load_settings
from govbus.producer import Bus


def main() -> None:
    bootstrap, topic, spool_dir, count, durability = sys.argv[1:6]
    settings = load_settings(
        topic=topic,
        kafka={"bootstrap_servers": bootstrap},
        producer={"spool_dir": spool_dir, "durability": durability},
    )
    bus = Bus(settings)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for i, event in enumerate(sample_events(int(count), agents=6, seed=int(time.time()))):
        bus.emit(event)
        out.write(event.event_id + "\n")
        if i % 16 == 0:
            out.flush()
            time.sleep(0.0005)  # ~20k events/s: the kill lands in the middle of the stream
    out.write("done\n")
    out.flush()
    signal.pause()  # alive until the test's SIGKILL


if __name__ == "__main__":
    main()
