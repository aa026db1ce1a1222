"""Sink processes as their health servers describe them: ``/status`` and ``/metrics``, with timeouts."""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.error
import urllib.request
from typing import Any

__all__ = ["SinkHealth", "parse_prometheus", "post_control", "scrape"]

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_MAX_BODY = 4 << 20  # a metrics page is a few kB; never read an unbounded answer


@dataclasses.dataclass(frozen=True)
class SinkHealth:
    sink: str
    url: str
    reachable: bool
    error: str | None = None
    status: dict[str, Any] = dataclasses.field(default_factory=dict)
    consumed: float = 0.0
    delivered: float = 0.0
    # Verification verdicts by code (gap, replay, bad-signature…), from the flagged, skipped and
    # dead-lettered counters' verdict/reason labels.
    verdicts: dict[str, float] = dataclasses.field(default_factory=dict)
    dead_lettered: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def state(self) -> str:
        if not self.reachable:
            return "unreachable"
        if self.status.get("operator_paused"):
            return "paused"
        if self.status.get("paused"):
            return "backpressure"  # the runtime paused itself: in-flight budget full or sink backing off
        return "ready" if self.status.get("ready") else "not ready"


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    out: list[tuple[str, dict[str, str], float]] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line.strip())
        if m is None:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(m.group(2) or "")}
        out.append((m.group(1), labels, value))
    return out


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (the operator's configured URL)
        body: bytes = resp.read(_MAX_BODY)
        return body


def scrape(sink: str, url: str, timeout: float) -> SinkHealth:
    """One sink's health; any failure is an answer (``reachable=False`` with the reason)."""
    try:
        try:
            status = json.loads(_get(url + "/status", timeout))
        except urllib.error.HTTPError as exc:  # 503 still carries the JSON body
            status = json.loads(exc.read(_MAX_BODY))
        metrics = parse_prometheus(_get(url + "/metrics", timeout).decode("utf-8", "replace"))
    except (OSError, ValueError) as exc:
        return SinkHealth(sink, url, False, error=f"{type(exc).__name__}: {exc}")
    verdicts: dict[str, float] = {}
    dead: dict[str, float] = {}
    consumed = delivered = 0.0
    for name, labels, value in metrics:
        if name == "govbus_sink_records_consumed_total":
            consumed += value
        elif name == "govbus_sink_records_delivered_total":
            delivered += value
        elif name == "govbus_sink_records_flagged_total":
            verdict = labels.get("verdict", "?")
            verdicts[verdict] = verdicts.get(verdict, 0.0) + value
        elif name in ("govbus_sink_records_skipped_total", "govbus_sink_records_dead_lettered_total"):
            reason = labels.get("reason", "?")
            if reason.startswith("verify:"):
                verdict = reason.removeprefix("verify:")
                verdicts[verdict] = verdicts.get(verdict, 0.0) + value
            if name == "govbus_sink_records_dead_lettered_total":
                dead[reason] = dead.get(reason, 0.0) + value
    return SinkHealth(
        sink,
        url,
        True,
        status=status if isinstance(status, dict) else {},
        consumed=consumed,
        delivered=delivered,
        verdicts=verdicts,
        dead_lettered=dead,
    )


def post_control(url: str, action: str, timeout: float) -> dict[str, Any]:
    """POSTs ``/control/<action>`` to a sink's health server; raises OSError/ValueError on failure."""
    req = urllib.request.Request(f"{url}/control/{action}", data=b"", method="POST")  # noqa: S310
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
        answer = json.loads(resp.read(_MAX_BODY))
    return answer if isinstance(answer, dict) else {}
