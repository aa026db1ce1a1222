"""Who a Kafka client is, and what a refusal means, for error messages (core: the admin commands,
the sink runtime, ``lag`` and the gate name a missing ACL with it; ``govbus acl`` plans them)."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError

__all__ = ["missing_acl", "principal_of"]

log = logging.getLogger("govbus.acl")


def principal_of(conf: dict[str, Any]) -> str:
    """The principal a client with librdkafka configuration ``conf`` authenticates as, for error
    messages: ``User:<sasl.username>``, or ``User:<CN>`` of its certificate (the broker's
    ``ssl.principal.mapping.rules`` may map it otherwise). Never reads a secret."""
    protocol = str(conf.get("security.protocol", "PLAINTEXT")).upper()
    user = conf.get("sasl.username")
    if user and protocol.startswith("SASL"):
        return f"User:{user}"
    cert = conf.get("ssl.certificate.location")
    if cert and protocol == "SSL":
        try:
            from cryptography import x509
            from cryptography.x509.oid import NameOID

            with open(cert, "rb") as fh:
                subject = x509.load_pem_x509_certificate(fh.read()).subject
            names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if names:
                return f"User:{names[0].value!s} (CN of GOVBUS_KAFKA__SSL_CERTIFICATE_LOCATION)"
        except Exception as exc:  # an unreadable certificate must not hide the refusal being reported
            log.debug("cannot read the certificate's CN: %s", exc)
        return "the principal of the certificate in GOVBUS_KAFKA__SSL_CERTIFICATE_LOCATION"
    return "this client's principal (User:ANONYMOUS without authentication)"


def missing_acl(err: KafkaError, operation: str, resource: str, conf: dict[str, Any], role: str = "") -> str:
    """``<ERROR>: User:x lacks the ACL operation READ on GROUP g; grant it …``: what a refusal means."""
    hint = f" (govbus acl plan --role {role} lists the role's ACLs)" if role else ""
    return f"{err.name()}: {principal_of(conf)} lacks the ACL operation {operation} on {resource}; grant it{hint}"
