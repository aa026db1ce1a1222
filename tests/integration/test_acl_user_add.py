"""``govbus acl user add`` on the secure local broker, and a client logging in with the password
from ``GOVBUS_KAFKA__SASL_PASSWORD_FILE`` (how the secure compose variant wires every service)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from _kafka import SecureKafka
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from govbus._settings import load_settings


def _admin_env(secure: SecureKafka) -> dict[str, str]:
    conf = secure.admin_config()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVBUS_")}
    env.update(
        {
            "GOVBUS_KAFKA__BOOTSTRAP_SERVERS": conf["bootstrap.servers"],
            "GOVBUS_KAFKA__SECURITY_PROTOCOL": "SSL",
            "GOVBUS_KAFKA__SSL_CA_LOCATION": conf["ssl.ca.location"],
            "GOVBUS_KAFKA__SSL_CERTIFICATE_LOCATION": conf["ssl.certificate.location"],
            "GOVBUS_KAFKA__SSL_KEY_LOCATION": conf["ssl.key.location"],
        }
    )
    return env


def _logs_in(secure: SecureKafka, user: str, password_file: Path, monkeypatch: pytest.MonkeyPatch) -> bool:
    for name in [n for n in os.environ if n.startswith("GOVBUS_")]:
        monkeypatch.delenv(name)
    conf = load_settings(
        kafka={
            "bootstrap_servers": secure.sasl_bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": user,
            "sasl_password_file": str(password_file),
            "ssl_ca_location": str(secure.ca),
        }
    ).kafka.librdkafka()
    try:
        AdminClient(conf).list_topics(timeout=10)
    except KafkaException:  # a refused login surfaces as a transport or authentication error
        return False
    return True


def test_user_add_then_login_with_the_password_file(
    secure_kafka: SecureKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    secret = tmp_path / "pw"
    secret.write_text(f"{uuid.uuid4().hex}\n", encoding="utf-8")  # a final newline, as editors write
    wrong = tmp_path / "wrong"
    wrong.write_text("not-it\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "govbus", "acl", "user", "add", "--user", f"{user}:{secret}"],
        env=_admin_env(secure_kafka),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"SCRAM-SHA-512 user {user}: set" in result.stdout
    assert secret.read_text(encoding="utf-8").strip() not in result.stdout + result.stderr
    assert _logs_in(secure_kafka, user, secret, monkeypatch)
    assert not _logs_in(secure_kafka, user, wrong, monkeypatch)
