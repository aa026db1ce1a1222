"""``govbus keys`` and the signing settings."""

from __future__ import annotations

import argparse
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from govbus.errors import GovbusError
from govbus.signing import (
    InsecureKeyFileError,
    Keyring,
    KeyStatus,
    Signer,
    SigningError,
    SigningSettings,
    load_private_key,
)
from govbus.signing import _cli as keys_cli

Run = Callable[..., tuple[int, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """Parse and run ``govbus keys ...`` the way govbus._cli.main does (GovbusError -> exit 2)."""
    parser = argparse.ArgumentParser(prog="govbus")
    sub = parser.add_subparsers(dest="command", required=True)
    keys_cli.register(sub)

    def invoke(*argv: str) -> tuple[int, str]:
        args = parser.parse_args(["keys", *argv])
        try:
            code: int = args.func(args)
        except GovbusError as exc:
            return 2, str(exc)
        return code, capsys.readouterr().out

    return invoke


@pytest.fixture
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    ring, key_dir = tmp_path / "keyring.json", tmp_path / "keys"
    monkeypatch.setenv(keys_cli.ENV_KEYRING, str(ring))
    monkeypatch.setenv(keys_cli.ENV_KEY_DIR, str(key_dir))
    return ring, key_dir


def test_generate_writes_a_0600_key_and_an_active_public_entry(run: Run, paths: tuple[Path, Path]) -> None:
    ring, key_dir = paths
    code, out = run("generate", "--kid", "k1", "--not-after", "+30d")
    assert code == 0
    assert "generated kid k1" in out
    key_file = key_dir / "k1.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    entry = Keyring.load(ring)["k1"]
    assert entry.status is KeyStatus.ACTIVE
    assert entry.not_after is not None
    assert entry.created_at is not None
    assert entry.public_key == load_private_key(key_file).public_bytes
    assert "PRIVATE KEY" not in out
    assert "PRIVATE KEY" not in ring.read_text()


def test_generate_with_default_kid_and_jwk_format(run: Run, paths: tuple[Path, Path]) -> None:
    ring, key_dir = paths
    assert run("generate", "--format", "jwk")[0] == 0
    (kid,) = [e.kid for e in Keyring.load(ring)]
    assert len(kid) == 16
    assert load_private_key(key_dir / f"{kid}.jwk").kid == kid


def test_generate_refuses_a_duplicate_kid(run: Run, paths: tuple[Path, Path]) -> None:
    assert run("generate", "--kid", "k1")[0] == 0
    code, message = run("generate", "--kid", "k1")
    assert code == 2
    assert "already holds kid 'k1'" in message


def test_rotate_retires_the_active_keys(run: Run, paths: tuple[Path, Path]) -> None:
    ring, _ = paths
    run("generate", "--kid", "old")
    code, out = run("rotate", "--kid", "new", "--retired-not-after", "+7d")
    assert code == 0
    assert "retired kid old" in out
    assert "GOVBUS_SIGNING__KID=new" in out
    keyring = Keyring.load(ring)
    assert keyring["new"].status is KeyStatus.ACTIVE
    assert keyring["old"].status is KeyStatus.RETIRED
    assert keyring["old"].retired_at is not None
    assert keyring["old"].not_after is not None
    assert run("rotate", "--retire", "absent")[0] == 2


def test_revoke_with_an_explicit_time(run: Run, paths: tuple[Path, Path]) -> None:
    ring, key_dir = paths
    run("generate", "--kid", "k1")
    code, out = run("revoke", "k1", "--at", "2025-11-26T15:00:00+01:00")
    assert code == 0
    assert "revoked kid k1 at 2025-11-26T14:00:00Z" in out
    assert f"delete its private key file: {key_dir / 'k1.pem'}" in out
    entry = Keyring.load(ring)["k1"]
    assert entry.status is KeyStatus.REVOKED
    assert entry.revoked_at is not None
    assert run("revoke", "nope")[0] == 2


def test_list_table_and_json(run: Run, paths: tuple[Path, Path]) -> None:
    run("generate", "--kid", "k1")
    run("rotate", "--kid", "k2")
    code, out = run("list")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["KID", "STATUS", "CREATED", "NOT_BEFORE", "NOT_AFTER", "RETIRED", "REVOKED", "PRIVATE"]
    assert lines[1].split()[:2] == ["k1", "retired"]
    assert lines[1].split()[-1] == "yes"
    assert lines[2].split()[:2] == ["k2", "active"]
    code, out = run("list", "--json")
    rows = json.loads(out)
    assert [r["kid"] for r in rows] == ["k1", "k2"]
    assert rows[0]["private_key_file"] == "yes"
    assert all("d" not in r for r in rows)


def test_export_public_is_a_clean_jwks(run: Run, paths: tuple[Path, Path], tmp_path: Path) -> None:
    run("generate", "--kid", "k1")
    run("generate", "--kid", "k2")
    run("revoke", "k2")
    code, out = run("export-public")
    doc = json.loads(out)
    assert [k["kid"] for k in doc["keys"]] == ["k1", "k2"]  # revoked keys are exported too
    assert all(set(k) >= {"kty", "crv", "x", "kid", "status"} and "d" not in k for k in doc["keys"])
    target = tmp_path / "public.json"
    code, out = run("export-public", "--kid", "k1", "-o", str(target))
    assert code == 0
    assert [e.kid for e in Keyring.load(target)] == ["k1"]
    assert run("export-public", "--kid", "nope")[0] == 2


def test_missing_locations_are_named(run: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(keys_cli.ENV_KEYRING, raising=False)
    monkeypatch.delenv(keys_cli.ENV_KEY_DIR, raising=False)
    code, message = run("list")
    assert code == 2
    assert "--keyring" in message
    assert "GOVBUS_SIGNING__KEYRING" in message
    code, message = run("generate", "--keyring", str(tmp_path / "r.json"))
    assert code == 2
    assert "GOVBUS_SIGNING__KEY_DIR" in message


def test_options_override_the_environment(run: Run, paths: tuple[Path, Path], tmp_path: Path) -> None:
    other_ring, other_dir = tmp_path / "other.json", tmp_path / "other-keys"
    assert run("generate", "--kid", "k9", "--keyring", str(other_ring), "--key-dir", str(other_dir))[0] == 0
    assert (other_dir / "k9.pem").exists()
    assert "k9" in Keyring.load(other_ring)
    assert not paths[0].exists()


def test_bad_times_are_argument_errors(run: Run, paths: tuple[Path, Path]) -> None:
    with pytest.raises(SystemExit):
        run("generate", "--not-after", "tomorrow")
    with pytest.raises(SystemExit):
        run("generate", "--not-after", "2025-01-01T00:00:00")  # no offset


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_key_file_readable_by_others_is_refused_by_the_producer(run: Run, paths: tuple[Path, Path]) -> None:
    ring, key_dir = paths
    run("generate", "--kid", "k1")
    os.chmod(key_dir / "k1.pem", 0o644)
    settings = SigningSettings(private_key_path=key_dir / "k1.pem", keyring_path=ring)
    with pytest.raises(InsecureKeyFileError, match=r"chmod 600 .*k1\.pem"):
        Signer.from_settings(settings)


def test_the_keys_command_is_registered_with_govbus_cli() -> None:
    source = Path(__file__).parents[2].joinpath("govbus", "_cli.py").read_text()
    assert '"govbus.signing._cli"' in source


# --- settings ------------------------------------------------------------------------------------


class _Root(BaseSettings):
    """Stands in for the top-level settings, which nests SigningSettings as `signing`."""

    model_config = SettingsConfigDict(env_prefix="GOVBUS_", env_nested_delimiter="__", case_sensitive=False)
    signing: SigningSettings = SigningSettings()


def test_settings_defaults() -> None:
    s = SigningSettings()
    assert (s.mode, s.batch_max_records, s.batch_max_delay_ms, s.root_cache_size) == ("batch", 512, 5, 1024)
    assert s.kid is None
    assert s.private_key_path is None
    assert s.keyring_path is None


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVBUS_SIGNING__MODE", "per-event")
    monkeypatch.setenv("GOVBUS_SIGNING__KID", "k1")
    monkeypatch.setenv("GOVBUS_SIGNING__PRIVATE_KEY_PATH", "/keys/k1.pem")
    monkeypatch.setenv("GOVBUS_SIGNING__KEYRING", "/etc/govbus/keyring.json")
    monkeypatch.setenv("GOVBUS_SIGNING__KEY_DIR", "/keys")
    monkeypatch.setenv("GOVBUS_SIGNING__BATCH_MAX_RECORDS", "256")
    s = _Root().signing
    assert s.mode == "per-event"
    assert s.kid == "k1"
    assert s.private_key_path == Path("/keys/k1.pem")
    assert s.keyring_path == Path("/etc/govbus/keyring.json")
    assert s.key_dir == Path("/keys")
    assert s.batch_max_records == 256
    monkeypatch.delenv("GOVBUS_SIGNING__KEYRING")
    monkeypatch.setenv("GOVBUS_SIGNING__KEYRING_PATH", "/other.json")
    assert _Root().signing.keyring_path == Path("/other.json")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mode", "sometimes"),
        ("kid", "bad kid"),
        ("batch_max_records", 0),
        ("batch_max_records", 70000),
        ("root_cache_size", -1),
        ("unknown", 1),
    ],
)
def test_invalid_settings_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        SigningSettings.model_validate({field: value})
    assert info.value.errors()[0]["loc"][0] == field


def test_signing_errors_are_govbus_errors() -> None:
    assert issubclass(SigningError, GovbusError)
