"""``govbus console``: the operator console in a browser (docs/console.md)."""

from __future__ import annotations

import argparse
import contextlib

from govbus.errors import ConfigError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "console",
        help="serve the operator console (topology, lag, dead letters, gate, signatures, events, audit) in a browser",
        description="Settings come from GOVBUS_CONSOLE__* (host 127.0.0.1 by default; any other host needs "
        "GOVBUS_CONSOLE__TOKEN or basic-auth credentials). See docs/console.md.",
    )
    p.add_argument("--host", help="address to bind (default GOVBUS_CONSOLE__HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default GOVBUS_CONSOLE__PORT, 8470; 0 picks a free one)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from govbus._settings import config_error, load_settings
    from govbus.console._collector import settings_console
    from govbus.console._server import ConsoleServer
    from govbus.console._settings import ConsoleSettings

    settings = load_settings()
    console = settings_console(settings)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        try:
            console = ConsoleSettings.model_validate({**console.model_dump(), **overrides})
        except ValidationError as exc:
            err = config_error(exc)
            raise ConfigError(f"--{err.setting.removeprefix('GOVBUS_').lower()}", err.message) from None
    server = ConsoleServer(settings, console)
    print(
        f"govbus console at {server.url} (topic {settings.topic}; actions {'enabled' if console.actions_enabled else 'disabled'})",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0
