"""``govbus keys``: generate, rotate, revoke, list and export signing keys.

Private keys go to ``--key-dir`` (``GOVBUS_SIGNING__KEY_DIR``) as ``<kid>.pem`` or ``<kid>.jwk``,
mode 0600, never overwritten; public keys go to the keyring ``--keyring``
(``GOVBUS_SIGNING__KEYRING``), a JWKS file every consumer can read. Nothing here prints a
private key.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import stat
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from govbus.signing._errors import SigningError
from govbus.signing._keyring import KeyEntry, Keyring, KeyStatus, format_time, parse_time
from govbus.signing._keys import KeyFormat, SigningKey, write_private_key

_log = logging.getLogger(__name__)

ENV_KEYRING = "GOVBUS_SIGNING__KEYRING"
ENV_KEY_DIR = "GOVBUS_SIGNING__KEY_DIR"
_RELATIVE = re.compile(r"\+(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser(
        "keys",
        help="manage event signing keys (Ed25519)",
        description="Manage the Ed25519 keys that sign governance events, and the public keyring "
        "(JWKS) verifiers trust. See docs/signing.md.",
    )
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--keyring", type=Path, help=f"public keyring (JWKS) file [env {ENV_KEYRING}]")
    where.add_argument("--key-dir", type=Path, help=f"directory of private key files [env {ENV_KEY_DIR}]")

    new_key = argparse.ArgumentParser(add_help=False)
    new_key.add_argument("--kid", help="key id (default: derived from the public key, RFC 7638)")
    new_key.add_argument("--format", choices=("pem", "jwk"), default="pem", help="private key file format")
    new_key.add_argument("--not-before", type=_when, help="key valid from (RFC 3339, 'now' or +N[smhd])")
    new_key.add_argument("--not-after", type=_when, help="key valid until (RFC 3339, 'now' or +N[smhd])")

    p = actions.add_parser("generate", parents=[where, new_key], help="create a key pair; add the public key as active")
    p.set_defaults(func=_generate)

    p = actions.add_parser(
        "rotate",
        parents=[where, new_key],
        help="create a new active key and retire the active ones (they keep verifying)",
    )
    p.add_argument("--retire", metavar="KID", action="append", help="retire only this kid (repeatable)")
    p.add_argument(
        "--retired-not-after",
        type=_when,
        metavar="TIME",
        help="also stop accepting signatures the retired keys make after TIME",
    )
    p.set_defaults(func=_rotate)

    p = actions.add_parser("revoke", parents=[where], help="reject what a key signed from a given time on")
    p.add_argument("kid")
    p.add_argument(
        "--at",
        type=_when,
        metavar="TIME",
        help="revocation time: the earliest moment the key may have been compromised (default now)",
    )
    p.set_defaults(func=_revoke)

    p = actions.add_parser("list", parents=[where], help="show the keyring")
    p.add_argument("--json", action="store_true", help="print the keyring as JSON")
    p.set_defaults(func=_list)

    p = actions.add_parser("export-public", parents=[where], help="write the public JWKS for verifiers")
    p.add_argument("--kid", action="append", help="export only this kid (repeatable; default all)")
    p.add_argument("-o", "--output", type=Path, help="file to write (default stdout)")
    p.set_defaults(func=_export)


def _when(text: str) -> datetime:
    """argparse type: RFC 3339, 'now', or '+N' followed by s, m, h or d (from now)."""
    now = datetime.now(UTC)
    if text == "now":
        return now
    rel = _RELATIVE.fullmatch(text)
    if rel:
        return now + timedelta(**{_UNITS[rel.group(2)]: int(rel.group(1))})
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _keyring_path(args: argparse.Namespace) -> Path:
    path = args.keyring or os.environ.get(ENV_KEYRING)
    if not path:
        raise SigningError(f"no keyring: pass --keyring PATH or set {ENV_KEYRING}")
    return Path(path)


def _key_dir(args: argparse.Namespace, *, required: bool) -> Path | None:
    path = args.key_dir or os.environ.get(ENV_KEY_DIR)
    if not path:
        if required:
            raise SigningError(f"no key directory: pass --key-dir DIR or set {ENV_KEY_DIR}")
        return None
    return Path(path)


def _load_or_new(path: Path) -> Keyring:
    return Keyring.load(path) if path.exists() else Keyring()


def _new_key(args: argparse.Namespace, keyring: Keyring, key_dir: Path) -> tuple[SigningKey, Path]:
    """Create the key file first (O_EXCL), so a kid collision never leaves a keyring entry without a key."""
    key = SigningKey.generate(args.kid)
    if key.kid in keyring:
        raise SigningError(f"the keyring already holds kid {key.kid!r}; choose another --kid")
    if key_dir.exists():
        mode = stat.S_IMODE(key_dir.stat().st_mode)
        if os.name == "posix" and mode & 0o077:
            _log.warning("key directory %s is accessible by group/others (mode %04o); chmod 700 it", key_dir, mode)
    else:
        key_dir.mkdir(mode=0o700, parents=True)
    fmt: KeyFormat = args.format
    path = write_private_key(key, key_dir / f"{key.kid}.{fmt}", fmt=fmt)
    entry = KeyEntry(
        kid=key.kid,
        public_key=key.public_bytes,
        status=KeyStatus.ACTIVE,
        created_at=datetime.now(UTC),
        not_before=args.not_before,
        not_after=args.not_after,
    )
    keyring.add(entry)
    return key, path


def _generate(args: argparse.Namespace) -> int:
    ring_path = _keyring_path(args)
    key_dir = _key_dir(args, required=True)
    assert key_dir is not None
    keyring = _load_or_new(ring_path)
    key, path = _new_key(args, keyring, key_dir)
    keyring.save(ring_path)
    print(f"generated kid {key.kid}")
    print(f"  private key: {path} (mode 0600; keep it on the producer only)")
    print(f"  public key:  added to {ring_path} as active")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    ring_path = _keyring_path(args)
    key_dir = _key_dir(args, required=True)
    assert key_dir is not None
    keyring = Keyring.load(ring_path)
    targets = args.retire or [e.kid for e in keyring.active()]
    for kid in targets:  # fail on an unknown kid before creating anything
        if kid not in keyring:
            raise SigningError(f"no key {kid!r} in {ring_path}")
    key, path = _new_key(args, keyring, key_dir)
    now = datetime.now(UTC)
    for kid in targets:
        keyring.retire(kid, at=now, not_after=args.retired_not_after)
    keyring.save(ring_path)
    print(f"generated kid {key.kid} (active), private key {path}")
    for kid in targets:
        print(f"retired kid {kid}: signs nothing new, still verifies what it signed")
    print(
        f"next: ship {ring_path} to consumers, then point producers at the new key "
        f"(GOVBUS_SIGNING__KID={key.kid}, GOVBUS_SIGNING__PRIVATE_KEY_PATH={path})"
    )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    ring_path = _keyring_path(args)
    keyring = Keyring.load(ring_path)
    entry = keyring.revoke(args.kid, at=args.at)
    keyring.save(ring_path)
    assert entry.revoked_at is not None
    print(
        f"revoked kid {entry.kid} at {format_time(entry.revoked_at)}: batches it signed from then on "
        "are rejected; earlier ones still verify"
    )
    key_dir = _key_dir(args, required=False)
    if key_dir is not None:
        for suffix in ("pem", "jwk"):
            if (key_dir / f"{entry.kid}.{suffix}").exists():
                print(f"delete its private key file: {key_dir / f'{entry.kid}.{suffix}'}")
    return 0


def _private_file(key_dir: Path | None, kid: str) -> str:
    if key_dir is None:
        return "?"
    return "yes" if any((key_dir / f"{kid}.{s}").exists() for s in ("pem", "jwk")) else "no"


def _list(args: argparse.Namespace) -> int:
    keyring = Keyring.load(_keyring_path(args))
    key_dir = _key_dir(args, required=False)
    if args.json:
        rows = [{**e.to_jwk(), "private_key_file": _private_file(key_dir, e.kid)} for e in keyring]
        print(json.dumps(rows, indent=2))
        return 0
    columns = ("KID", "STATUS", "CREATED", "NOT_BEFORE", "NOT_AFTER", "RETIRED", "REVOKED", "PRIVATE")
    table: list[tuple[str, ...]] = [columns]
    for e in keyring:
        times = (e.created_at, e.not_before, e.not_after, e.retired_at, e.revoked_at)
        table.append(
            (e.kid, e.status.value, *(format_time(t) if t else "-" for t in times), _private_file(key_dir, e.kid))
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _export(args: argparse.Namespace) -> int:
    keyring = Keyring.load(_keyring_path(args))
    wanted = args.kid or [e.kid for e in keyring]
    # Revoked and retired keys are exported too: verifiers need them to judge what those keys
    # signed before their revocation / retirement.
    exported = Keyring(keyring[kid] for kid in wanted)
    if args.output is None:
        json.dump(exported.to_jwks(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        exported.save(args.output)
        print(f"wrote {len(exported)} public key(s) to {args.output}")
    return 0
