"""A throwaway certificate authority and the certificates of a local secure broker and its clients.

Everything is PEM (what librdkafka reads, and what Kafka reads with ``ssl.keystore.type=PEM``).
Private keys are unencrypted PKCS#8 in files created 0600; they exist for tests and development
on one machine and are never meant to leave it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from govbus.errors import BrokerError

_VALID_DAYS = 365
_HOST_NAMES = ("localhost",)
_HOST_IPS = ("127.0.0.1",)


@dataclass(frozen=True)
class Identity:
    """One certificate and its key. ``bundle`` holds key + certificate chain (a PEM keystore)."""

    name: str
    cert: Path
    key: Path
    bundle: Path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (0600 from creation, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing scratch file keeps its mode otherwise
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(scratch, path)


class CertificateAuthority:
    """A self-signed CA in ``directory`` (``ca.pem``, ``ca-key.pem``), made on first use."""

    def __init__(self, directory: Path, name: str = "govbus local CA") -> None:
        self.directory = directory
        self.cert_path = directory / "ca.pem"
        self._key_path = directory / "ca-key.pem"
        if self.cert_path.exists() and self._key_path.exists():
            self._cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            key = serialization.load_pem_private_key(self._key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise BrokerError(f"{self._key_path} is not the EC key this CA was made with")
            self._key = key
            return
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        write_private(self._key_path, _key_pem(self._key))
        write_private(self.cert_path, self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        *,
        server: bool = False,
        directory: Path | None = None,
        expired: bool = False,
        hosts: tuple[str, ...] = (),
    ) -> Identity:
        """A certificate with ``CN=<name>`` (the principal ``User:<name>`` once the broker maps it).

        ``server``: also valid for TLS servers on localhost/127.0.0.1 (the broker's own).
        ``expired``: valid only until yesterday (to test that the broker refuses it).
        ``hosts``: more DNS names the server certificate is valid for (e.g. ``kafka`` in compose)."""
        if not name or any(c in name for c in ',=+"\\<>;/'):
            raise BrokerError(f"certificate name {name!r}: use letters, digits, '.', '-', '_'")
        where = directory or self.directory
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now() - datetime.timedelta(days=_VALID_DAYS + 1) if expired else _now()
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        if server:
            alt: list[x509.GeneralName] = [x509.DNSName(h) for h in (*_HOST_NAMES, *hosts)]
            alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in _HOST_IPS]
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = _key_pem(key)
        identity = Identity(name, where / f"{name}.pem", where / f"{name}-key.pem", where / f"{name}-bundle.pem")
        write_private(identity.key, key_pem)
        write_private(identity.cert, cert_pem)
        # Kafka's PEM keystore file: the private key followed by the certificate chain.
        write_private(identity.bundle, key_pem + cert_pem + self._cert.public_bytes(serialization.Encoding.PEM))
        return identity


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
