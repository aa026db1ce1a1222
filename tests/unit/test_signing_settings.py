"""A producer configured for signing but without a private key refuses to start (robustness issue,
defect 10); verify-only processes (sinks) with the same settings are not affected."""

from __future__ import annotations

from pathlib import Path

import pytest
from _await import closed_port

from govbus._settings import load_settings
from govbus.consumers._verify import build_verification
from govbus.errors import ConfigError
from govbus.producer import Bus
from govbus.signing import Keyring, SigningSettings


def _start_bus(tmp_path: Path) -> None:
    bus = Bus(kafka={"bootstrap_servers": closed_port()}, producer={"spool_dir": str(tmp_path / "spool")})
    bus.close(timeout=0.1)  # reached only when the Bus wrongly started


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"GOVBUS_SIGNING__KEYRING": "keyring.json", "GOVBUS_SIGNING__KEY_DIR": "keys"},
            ["GOVBUS_SIGNING__KEYRING", "GOVBUS_SIGNING__KEY_DIR"],
        ),
        ({"GOVBUS_SIGNING__KEYRING_PATH": "keyring.json"}, ["GOVBUS_SIGNING__KEYRING"]),
        ({"GOVBUS_SIGNING__KID": "k1"}, ["GOVBUS_SIGNING__KID"]),
        ({"GOVBUS_SIGNING__MODE": "per-event"}, ["GOVBUS_SIGNING__MODE"]),
    ],
)
def test_a_producer_configured_for_signing_without_a_key_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], named: list[str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, str(tmp_path / value) if "KEY" in name.rpartition("__")[2] else value)
    with pytest.raises(ConfigError) as info:
        _start_bus(tmp_path)
    assert info.value.setting == "GOVBUS_SIGNING__PRIVATE_KEY_PATH"
    for name in named:
        assert name in info.value.message


def test_no_signing_setting_publishes_unsigned_as_before() -> None:
    assert SigningSettings().producer_signs() is False
    # The verifier's own sizes are not signing settings.
    assert SigningSettings(replay_window=10, root_cache_size=0, max_streams=5).producer_signs() is False
    assert SigningSettings(private_key_path=Path("k.pem")).producer_signs() is True


def test_a_verify_only_process_may_have_a_keyring_without_a_private_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    Keyring([]).save(tmp_path / "keyring.json")
    monkeypatch.setenv("GOVBUS_SIGNING__KEYRING", str(tmp_path / "keyring.json"))
    settings = load_settings()  # the sinks, the gate and the CLIs load settings as before
    assert build_verification(settings.sink, settings.signing) is not None
