"""``govbus dev tls issue``: a certificate (and the CA's certificate) into a directory, for one consumer.

Made for the secure compose variant (deploy/compose/secure.yml): one-shot containers write the
broker's PEM keystore into the broker's volume and the admin's certificate into the admin
tools' volume, each owned by the user of the container that reads it. Every file is 0600 (keys
and certificates alike, as :mod:`._tls` writes them); the CA's key stays in ``--ca-dir``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from govbus.errors import ConfigError

from ._tls import CertificateAuthority, write_private


def register(tools: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tls = tools.add_parser("tls", help="a throwaway CA and certificates (PEM, keys 0600)")
    actions = tls.add_subparsers(dest="tls_command", metavar="ACTION", required=True)
    issue = actions.add_parser(
        "issue",
        help="copy the CA certificate (made on first use) into --dir and, with --name, issue one certificate there",
        description="Writes <dir>/ca.pem and, with --name N, <dir>/N.pem, N-key.pem and N-bundle.pem "
        "(key + chain: a PEM keystore for Kafka). Every file 0600. Existing certificates are kept.",
    )
    issue.add_argument("--ca-dir", type=Path, required=True, help="where the CA's certificate and key live")
    issue.add_argument("--dir", type=Path, required=True, help="where to write")
    issue.add_argument("--name", help="the certificate's CN (the principal User:<name>)")
    issue.add_argument(
        "--server-host",
        action="append",
        default=[],
        metavar="HOST",
        help="a server certificate valid for HOST (repeatable)",
    )
    issue.add_argument("--owner", metavar="UID:GID", help="chown what is written (needs root)")
    issue.set_defaults(func=_issue)


def _owner(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    uid, sep, gid = text.partition(":")
    if not (sep and uid.isdigit() and gid.isdigit()):
        raise ConfigError("--owner", f"expected UID:GID (numbers), got {text!r}")
    return int(uid), int(gid)


def _issue(args: argparse.Namespace) -> int:
    owner = _owner(args.owner)
    if args.server_host and not args.name:
        raise ConfigError("--server-host", "needs --name")
    ca = CertificateAuthority(args.ca_dir)
    out: Path = args.dir
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = [out / "ca.pem"]
    if ca.cert_path.resolve() != written[0].resolve():
        write_private(written[0], ca.cert_path.read_bytes())
    if args.name:
        names = [out / f"{args.name}{suffix}.pem" for suffix in ("", "-key", "-bundle")]
        if not all(p.exists() for p in names):
            ca.issue(args.name, server=bool(args.server_host), directory=out, hosts=tuple(args.server_host))
        written += names
    if owner is not None:
        for path in (out, *written):
            os.chown(path, *owner)
    for path in written:
        print(f"{path} ({oct(path.stat().st_mode & 0o777)})")
    return 0
