"""The console's web application: server-rendered pages (Starlette + Jinja2) over the collector's
snapshot, a small script that swaps each page's live part every refresh, and the two actions.

Every request is answered from the cache; no handler talks to Kafka except an action the operator
confirmed. Errors are pages that say what was wrong, never a traceback.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import itertools
import logging
import secrets
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from govbus.console._collector import GATE_ACTION, Collector, EventRow, Snapshot
from govbus.console._plot import line_chart
from govbus.console._settings import ConsoleSettings
from govbus.event import EventKind

__all__ = ["MAX_SEARCH_CHARS", "create_app"]

log = logging.getLogger("govbus.console")
_HERE = Path(__file__).parent
MAX_SEARCH_CHARS = 200  # longer search text is refused with a message, not searched
_MAX_ROWS = 200  # rows of the events page
_COOKIE = "govbus_console"
_MAX_SESSIONS = 1000
_PAGES = (
    ("/", "Topology"),
    ("/lag", "Lag"),
    ("/throughput", "Throughput"),
    ("/dead-letters", "Dead letters"),
    ("/gate", "Gate"),
    ("/signatures", "Signatures"),
    ("/events", "Events"),
    ("/audit", "Audit ledger"),
)


class _PageError(Exception):
    """A request the console answers with a message page (unknown id, bad input, unavailable data)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


class Console:
    """The state behind the routes: settings, the collector, templates, the action secret."""

    def __init__(self, collector: Collector, console: ConsoleSettings) -> None:
        self.collector = collector
        self.settings = console
        self.env = Environment(
            loader=FileSystemLoader(_HERE / "_templates"), autoescape=select_autoescape(["html"]), auto_reload=False
        )
        self.env.filters["ms_time"] = _ms_time
        self.env.filters["dt"] = _dt
        self._secret = secrets.token_bytes(32)  # per process: confirmations and sessions die with it
        # Session cookies of ?token= logins, oldest first; bounded so logins cannot grow memory.
        self._sessions: collections.OrderedDict[str, None] = collections.OrderedDict()

    # -- rendering ----------------------------------------------------------------------------

    def page(self, request: Request, template: str, title: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        snap = self.collector.snapshot
        ctx = {"snap": snap, "console": self.settings, "request": request, "title": title, "live": True, **ctx}
        content = self.env.get_template("_banner.html").render(**ctx) + self.env.get_template(template).render(**ctx)
        if request.query_params.get("fragment") == "1":
            return HTMLResponse(content, status_code=status, headers={"Cache-Control": "no-store"})
        html = self.env.get_template("base.html").render(
            content=content,
            pages=_PAGES,
            path=request.url.path,
            refresh_ms=int(self.settings.refresh_s * 1000),
            **ctx,
        )
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def error(self, request: Request, status: int, title: str, message: str) -> HTMLResponse:
        return self.page(request, "error.html", title, status=status, message=message, live=False)

    # -- auth and confirmations ---------------------------------------------------------------

    def authorized(self, request: Request) -> bool:
        s = self.settings
        if s.token is not None:
            token = s.token.get_secret_value().encode()
            header = request.headers.get("authorization", "")
            if header.lower().startswith("bearer ") and hmac.compare_digest(header[7:].strip().encode(), token):
                return True
        if s.basic_password is not None and s.basic_user is not None:
            header = request.headers.get("authorization", "")
            if header.lower().startswith("basic "):
                try:
                    user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    return False
                ok_user = hmac.compare_digest(user.encode(), s.basic_user.encode())
                ok_pass = hmac.compare_digest(password.encode(), s.basic_password.get_secret_value().encode())
                if ok_user and ok_pass:
                    return True
        return request.cookies.get(_COOKIE, "") in self._sessions

    def token_login(self, request: Request) -> Response | None:
        """``?token=`` once: a session cookie, and the token leaves the address bar (and history)."""
        given = request.query_params.get("token")
        if given is None or self.settings.token is None:
            return None
        if not hmac.compare_digest(given.encode(), self.settings.token.get_secret_value().encode()):
            return None
        query = urllib.parse.urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
        response = RedirectResponse(request.url.path + (f"?{query}" if query else ""), status_code=303)
        session = secrets.token_urlsafe(32)
        self._sessions[session] = None
        while len(self._sessions) > _MAX_SESSIONS:
            self._sessions.popitem(last=False)
        response.set_cookie(_COOKIE, session, httponly=True, samesite="strict")
        return response

    def confirmation(self, *parts: str) -> str:
        return hmac.new(self._secret, "\x00".join(parts).encode(), hashlib.sha256).hexdigest()

    def check_confirmation(self, given: str, *parts: str) -> bool:
        return hmac.compare_digest(given.encode(), self.confirmation(*parts).encode())


class _Auth(BaseHTTPMiddleware):
    def __init__(self, app: Any, console: Console) -> None:
        super().__init__(app)
        self.console = console

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        c = self.console
        if not c.settings.auth_required or request.url.path == "/healthz":
            return await call_next(request)
        login = c.token_login(request)
        if login is not None:
            return login
        if c.authorized(request):
            return await call_next(request)
        headers = {"WWW-Authenticate": 'Basic realm="govbus console"'} if c.settings.basic_password else {}
        body = (
            "<!doctype html><title>govbus console: sign in</title><h1>Authentication required</h1>"
            "<p>Open the console with <code>?token=&lt;GOVBUS_CONSOLE__TOKEN&gt;</code> once, send "
            "<code>Authorization: Bearer</code>, or sign in with the basic-auth credentials.</p>"
        )
        return HTMLResponse(body, status_code=401, headers=headers)


def _ms_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _dt(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def _search_arg(request: Request, name: str) -> str:
    value = request.query_params.get(name, "").strip()
    if len(value) > MAX_SEARCH_CHARS:
        raise _PageError(
            400,
            "Search text too long",
            f"The {name} search is {len(value)} characters long; the console searches at most "
            f"{MAX_SEARCH_CHARS}. Shorten it and search again.",
        )
    return value


def _int_arg(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _PageError(404, f"Unknown {what}", f"{what} {value[:40]!r} is not a number.") from None


def create_app(collector: Collector, console: ConsoleSettings) -> Starlette:
    """The ASGI application over ``collector`` (which the caller starts and closes)."""
    c = Console(collector, console)

    async def overview(request: Request) -> Response:
        snap = collector.snapshot
        producers: Counter[tuple[str, str, str]] = Counter()
        last_seen: dict[tuple[str, str, str], str] = {}
        for e in snap.events:
            if e.error is None:
                key = (e.producer or "?", e.producer_host, e.producer_instance)
                producers[key] += 1
                last_seen[key] = e.time
        rows = [(k, n, last_seen[k]) for k, n in sorted(producers.items())]
        return c.page(request, "overview.html", "Topology", producers=rows)

    async def lag(request: Request) -> Response:
        snap = collector.snapshot
        charts = []
        totals: dict[str, list[tuple[float, float]]] = {}
        for s in snap.sinks:
            per_partition: dict[str, list[tuple[float, float]]] = {}
            for sample in snap.history:
                parts = sample.lag.get(s.name)
                if parts is None:
                    continue
                totals.setdefault(s.name, []).append((sample.t, float(sum(parts.values()))))
                for p, v in sorted(parts.items()):
                    per_partition.setdefault(f"p{p}", []).append((sample.t, float(v)))
            charts.append(
                (
                    s,
                    line_chart(
                        per_partition, title=f"{s.name}: lag per partition", unit="records", chart_id=f"lag-{s.name}"
                    ),
                )
            )
        total_chart = line_chart(totals, title="Lag per sink", unit="records", chart_id="lag-total")
        return c.page(request, "lag.html", "Lag", charts=charts, total_chart=total_chart)

    async def throughput(request: Request) -> Response:
        snap = collector.snapshot
        series: dict[str, list[tuple[float, float]]] = {}
        h = snap.history
        for a, b in itertools.pairwise(h):
            dt = b.t - a.t
            if dt <= 0:
                continue
            series.setdefault("topic", []).append((b.t, max(0.0, (b.topic_end - a.topic_end) / dt)))
            for name, committed in b.committed.items():
                if name in a.committed:
                    series.setdefault(name, []).append((b.t, max(0.0, (committed - a.committed[name]) / dt)))
        chart = line_chart(series, title="Records per second", unit="records/s", chart_id="throughput")
        return c.page(request, "throughput.html", "Throughput", chart=chart)

    async def dead_letters(request: Request) -> Response:
        snap = collector.snapshot
        reasons = {s.name: Counter((dl.reason or "?") for dl in snap.dead_letters.get(s.name, ())) for s in snap.sinks}
        return c.page(request, "dead_letters.html", "Dead letters", reasons=reasons, kept=console.dead_letters_kept)

    async def dead_letter(request: Request) -> Response:
        snap = collector.snapshot
        sink = request.path_params["sink"]
        partition = _int_arg(request.path_params["partition"], "partition")
        offset = _int_arg(request.path_params["offset"], "offset")
        view = snap.sink(sink)
        if view is None:
            raise _PageError(404, "Unknown sink", f"No sink named {sink[:100]!r} is known to the console.")
        found = next(
            (dl for dl in snap.dead_letters.get(sink, ()) if dl.partition == partition and dl.offset == offset), None
        )
        if found is None:
            raise _PageError(
                404,
                "Unknown dead letter",
                f"No dead letter at {view.dlq_topic}[{partition}]@{offset} among the latest "
                f"{console.dead_letters_kept} the console keeps for sink {sink}.",
            )
        return c.page(request, "dead_letter.html", "Dead letter", sink=view, dl=found, live=False)

    async def replay(request: Request) -> Response:
        if not console.actions_enabled:
            raise _PageError(
                403, "Actions are disabled", "Set GOVBUS_CONSOLE__ACTIONS_ENABLED=true to replay dead letters."
            )
        if request.method == "GET":
            args = {k: request.query_params.get(k, "") for k in ("sink", "partition", "offset")}
        else:
            form = urllib.parse.parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
            args = {k: form.get(k, [""])[0] for k in ("sink", "partition", "offset", "confirm")}
        sink, partition, offset = args["sink"], args["partition"], args["offset"]
        snap = collector.snapshot
        found = next(
            (
                dl
                for dl in snap.dead_letters.get(sink, ())
                if str(dl.partition) == partition and str(dl.offset) == offset
            ),
            None,
        )
        if found is None:
            raise _PageError(
                404,
                "Unknown dead letter",
                f"No dead letter {sink[:100]}[{partition[:20]}]@{offset[:20]} is in the console's cache.",
            )
        target = collector.settings.sink.replay_topic(collector.topic, sink)
        if request.method == "GET":
            confirm = c.confirmation("replay", sink, partition, offset)
            return c.page(
                request,
                "confirm_replay.html",
                "Replay?",
                live=False,
                dl=found,
                sink=sink,
                target=target,
                confirm=confirm,
            )
        if not c.check_confirmation(args["confirm"], "replay", sink, partition, offset):
            raise _PageError(
                400, "Not confirmed", "The replay was not confirmed; open the dead letter and confirm again."
            )
        from govbus.console._actions import read_one, replay_one
        from govbus.errors import GovbusError

        try:
            # The cache keeps a dead letter's first bytes only: replay what the topic holds.
            full = await run_in_threadpool(
                read_one, collector.conf, found.topic, found.partition, found.offset, console.timeout_s
            )
            await run_in_threadpool(replay_one, collector.conf, full, target, console.timeout_s)
        except GovbusError as exc:
            raise _PageError(503, "Replay failed", str(exc)) from None
        log.info(
            "console: replayed dead letter %s[%s]@%s of sink %s to %s", found.topic, partition, offset, sink, target
        )
        return c.page(
            request,
            "done.html",
            "Replayed",
            live=False,
            message=f"Replayed {found.topic}[{partition}]@{offset} to {target}; only sink {sink} reads it.",
        )

    async def control(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ("pause", "resume"):
            raise _PageError(404, "Unknown action", f"There is no action {action[:40]!r}.")
        if not console.actions_enabled:
            raise _PageError(
                403, "Actions are disabled", "Set GOVBUS_CONSOLE__ACTIONS_ENABLED=true to pause or resume sinks."
            )
        sink = request.query_params.get("sink", "")
        url = console.sink_health_urls.get(sink)
        if url is None:
            raise _PageError(
                404,
                "Unknown sink",
                f"No health URL is configured for sink {sink[:100]!r} (GOVBUS_CONSOLE__SINK_HEALTH_URLS).",
            )
        if request.method == "GET":
            confirm = c.confirmation(action, sink)
            return c.page(
                request,
                "confirm_control.html",
                f"{action.title()} {sink}",
                live=False,
                action=action,
                sink=sink,
                confirm=confirm,
            )
        form = urllib.parse.parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
        if not c.check_confirmation(form.get("confirm", [""])[0], action, sink):
            raise _PageError(
                400, "Not confirmed", f"The {action} was not confirmed; open the sink's action page and confirm again."
            )
        from govbus.console._actions import control_sink

        try:
            answer = await run_in_threadpool(control_sink, url, action, console.timeout_s)
        except (OSError, ValueError) as exc:
            raise _PageError(
                503, f"{action.title()} failed", f"Sink {sink}'s health server at {url} did not accept it: {exc}"
            ) from None
        log.info("console: %s sink %s", action, sink)
        return c.page(
            request,
            "done.html",
            f"{action.title()}d",
            live=False,
            message=f"Sink {sink}: {action} accepted ({answer}).",
        )

    async def gate(request: Request) -> Response:
        snap = collector.snapshot
        decisions = [e for e in reversed(snap.events) if e.action == GATE_ACTION][:50]
        return c.page(request, "gate.html", "Gate", decisions=decisions)

    async def signatures(request: Request) -> Response:
        snap = collector.snapshot
        verdicts: Counter[str] = Counter()
        per_sink = []
        for s in snap.sinks:
            if s.health is not None and s.health.reachable:
                verdicts.update(s.health.verdicts)
                per_sink.append((s.name, s.health.verdicts))
        return c.page(
            request, "signatures.html", "Signatures", verdicts=dict(sorted(verdicts.items())), per_sink=per_sink
        )

    async def events(request: Request) -> Response:
        snap = collector.snapshot
        agent = _search_arg(request, "agent")
        session = _search_arg(request, "session")
        kind = _search_arg(request, "kind")
        if kind and kind not in {k.value for k in EventKind}:
            raise _PageError(400, "Unknown kind", f"{kind[:60]!r} is not an event kind; pick one from the list.")
        rows: list[EventRow] = []
        for e in reversed(snap.events):
            if agent and agent not in e.agent_id:
                continue
            if session and session not in e.session_id:
                continue
            if kind and e.kind != kind:
                continue
            rows.append(e)
            if len(rows) >= _MAX_ROWS:
                break
        return c.page(
            request,
            "events.html",
            "Events",
            rows=rows,
            agent=agent,
            session=session,
            kind=kind,
            kinds=[k.value for k in EventKind],
            kept=len(snap.events),
        )

    async def audit(request: Request) -> Response:
        return c.page(request, "audit.html", "Audit ledger")

    async def healthz(request: Request) -> Response:
        snap = collector.snapshot
        return JSONResponse(
            {
                "ok": snap.broker_error is None and snap.taken_at is not None,
                "taken_at": _dt(snap.taken_at),
                "error": snap.broker_error,
            }
        )

    async def page_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, _PageError)
        return c.error(request, exc.status, exc.title, exc.message)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return c.error(request, 404, "Not found", f"The console has no page at {request.url.path[:200]!r}.")
        return c.error(request, exc.status_code, "Request refused", str(exc.detail))

    async def internal_error(request: Request, exc: Exception) -> Response:
        # A defect in the console, not the operator's doing: log it, answer without the trace.
        log.exception("console page %s failed", request.url.path)
        return HTMLResponse(
            "<!doctype html><title>govbus console: error</title><h1>The console could not render this page</h1>"
            "<p>The error is in the console's log. The bus is not affected.</p>",
            status_code=500,
        )

    routes = [
        Route("/", overview),
        Route("/lag", lag),
        Route("/throughput", throughput),
        Route("/dead-letters", dead_letters),
        Route("/dead-letters/{sink}/{partition}/{offset}", dead_letter),
        Route("/actions/replay", replay, methods=["GET", "POST"]),
        Route("/actions/{action}", control, methods=["GET", "POST"]),
        Route("/gate", gate),
        Route("/signatures", signatures),
        Route("/events", events),
        Route("/audit", audit),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=_HERE / "_static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_Auth, console=c)],
        exception_handlers={_PageError: page_error, HTTPException: http_error, Exception: internal_error},
    )
    app.state.console = c
    app.state.started = time.time()
    return app


def snapshot_age(snap: Snapshot) -> float | None:
    if snap.taken_at is None:
        return None
    return (datetime.now(UTC) - snap.taken_at).total_seconds()
