"""The ``govbus`` command line.

Each command lives beside the code it drives and exposes ``register(subparsers)``; this
module only assembles them. Handlers return the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from govbus.errors import GovbusError

# Modules that contribute subcommands, in the order they appear in --help.
_COMMAND_MODULES = (
    "govbus.localkafka._cli",
    "govbus._admin",
    "govbus._acl",
    "govbus._schemas_cli",
    "govbus._demo",
    "govbus._kernel",
    "govbus.consumers._cli",
    "govbus.gate._cli",
    "govbus.signing._cli",
    "govbus.consumers.sinks._audit_cli",
    "govbus.console._cli",
    "govbus.watch._cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="govbus", description="Kafka bus for AI-agent governance events.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()} (native core: {_native()})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _version() -> str:
    import govbus

    return govbus.__version__


def _native() -> str:
    from govbus import _accel as native

    return "yes" if native.active() else "no"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.func(args)
    except GovbusError as exc:
        print(f"govbus: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
