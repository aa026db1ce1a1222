"""The secure local broker: what it listens on, who it trusts, and how an administrator reaches it.

Listeners (all on 127.0.0.1, none anonymous):

* ``SASL_SSL`` — TLS, then SASL SCRAM-SHA-512 (users are created with the Admin API);
* ``MTLS`` — TLS with ``ssl.client.auth=required``: the client certificate's ``CN`` is the
  principal (``User:<CN>``); also the inter-broker listener;
* ``CONTROLLER`` — the KRaft controller, TLS with client certificates too (only the broker's
  own certificate is a principal allowed there).

Authorisation is KRaft's ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``:
a principal may do exactly what an ACL grants it. ``User:broker`` (the broker itself) and
``User:admin`` (a client certificate for tests and operators) are super users.

The TLS material (a throwaway CA, the broker's and the admin's certificates, all keys 0600) lives
in ``<data_dir>/tls`` and is kept across restarts of the same data directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._config import HOST, free_port, port_is_free
from ._tls import CertificateAuthority, Identity, write_private

SASL_LISTENER = "SASL_SSL"
MTLS_LISTENER = "MTLS"
CONTROLLER_LISTENER = "CONTROLLER"
SCRAM_MECHANISM = "SCRAM-SHA-512"
BROKER_PRINCIPAL = "broker"
ADMIN_PRINCIPAL = "admin"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
_PORTS = "ports.json"


@dataclass(frozen=True)
class SecureInfo:
    """How clients reach a secure local broker. ``admin`` is a super user's client certificate."""

    sasl_bootstrap: str
    mtls_bootstrap: str
    ca: Path
    admin: Identity
    tls_dir: Path

    def mtls_config(self, identity: Identity) -> dict[str, Any]:
        """librdkafka settings for ``identity`` on the mTLS listener."""
        return {
            "bootstrap.servers": self.mtls_bootstrap,
            "security.protocol": "SSL",
            "ssl.ca.location": str(self.ca),
            "ssl.certificate.location": str(identity.cert),
            "ssl.key.location": str(identity.key),
        }

    def scram_config(self, username: str, password: str) -> dict[str, Any]:
        """librdkafka settings for a SCRAM user on the SASL_SSL listener."""
        return {
            "bootstrap.servers": self.sasl_bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": SCRAM_MECHANISM,
            "sasl.username": username,
            "sasl.password": password,
            "ssl.ca.location": str(self.ca),
        }

    def admin_config(self) -> dict[str, Any]:
        """The super user's librdkafka settings (mTLS)."""
        return self.mtls_config(self.admin)


@dataclass(frozen=True)
class SecureSetup:
    info: SecureInfo
    broker_config: dict[str, str]


def prepare(data_dir: Path, *, sasl_port: int, controller_port: int) -> SecureSetup:
    """Make (or reuse) the TLS material and an mTLS port; return the server.properties entries."""
    tls = data_dir / "tls"
    tls.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = CertificateAuthority(tls)
    broker = _identity(ca, tls, BROKER_PRINCIPAL, server=True)
    admin = _identity(ca, tls, ADMIN_PRINCIPAL, server=False)
    mtls_port = _mtls_port(tls, taken=(sasl_port, controller_port))
    config = broker_config(
        sasl_port=sasl_port,
        mtls_port=mtls_port,
        controller_port=controller_port,
        keystore=broker.bundle,
        truststore=ca.cert_path,
    )
    info = SecureInfo(
        sasl_bootstrap=f"{HOST}:{sasl_port}",
        mtls_bootstrap=f"{HOST}:{mtls_port}",
        ca=ca.cert_path,
        admin=admin,
        tls_dir=tls,
    )
    return SecureSetup(info, config)


def broker_config(
    *, sasl_port: int, mtls_port: int, controller_port: int, keystore: Path, truststore: Path
) -> dict[str, str]:
    """server.properties entries (over the plaintext defaults of ``_config.server_properties``)."""
    sasl, mtls, controller = (name.lower() for name in (SASL_LISTENER, MTLS_LISTENER, CONTROLLER_LISTENER))
    return {
        "listeners": (
            f"{SASL_LISTENER}://{HOST}:{sasl_port},{MTLS_LISTENER}://{HOST}:{mtls_port},"
            f"{CONTROLLER_LISTENER}://{HOST}:{controller_port}"
        ),
        "advertised.listeners": f"{SASL_LISTENER}://{HOST}:{sasl_port},{MTLS_LISTENER}://{HOST}:{mtls_port}",
        "listener.security.protocol.map": f"{SASL_LISTENER}:SASL_SSL,{MTLS_LISTENER}:SSL,{CONTROLLER_LISTENER}:SSL",
        "inter.broker.listener.name": MTLS_LISTENER,
        # One keystore and truststore for every TLS listener, and for the broker's own client side.
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(truststore),
        "ssl.client.auth": "none",  # SASL_SSL authenticates with SCRAM, not certificates
        f"listener.name.{mtls}.ssl.client.auth": "required",
        f"listener.name.{controller}.ssl.client.auth": "required",
        # A certificate's principal is its CN: "CN=alice" → User:alice.
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
        f"listener.name.{sasl}.sasl.enabled.mechanisms": SCRAM_MECHANISM,
        f"listener.name.{sasl}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "authorizer.class.name": AUTHORIZER,
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{BROKER_PRINCIPAL};User:{ADMIN_PRINCIPAL}",
    }


def _identity(ca: CertificateAuthority, tls: Path, name: str, *, server: bool) -> Identity:
    existing = Identity(name, tls / f"{name}.pem", tls / f"{name}-key.pem", tls / f"{name}-bundle.pem")
    if all(p.exists() for p in (existing.cert, existing.key, existing.bundle)):
        return existing
    return ca.issue(name, server=server, directory=tls)


def _mtls_port(tls: Path, taken: tuple[int, ...]) -> int:
    """The mTLS listener's port: the one this data directory had if still free, else a free one."""
    path = tls / _PORTS
    try:
        saved = json.loads(path.read_text()).get("mtls_port")
    except (OSError, ValueError, AttributeError):
        saved = None
    if isinstance(saved, int) and saved not in taken and port_is_free(saved):
        return saved
    port = free_port()
    while port in taken:
        port = free_port()
    write_private(path, json.dumps({"mtls_port": port}).encode())
    return port
