"""Client TLS contexts for the sinks that open their own connections (HTTP, syslog)."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Literal

from govbus.errors import ConfigError

__all__ = ["TlsVersion", "client_context"]

TlsVersion = Literal["1.2", "1.3"]
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_log = logging.getLogger("govbus.consumers.sinks")


def client_context(
    *,
    env_prefix: str,
    ca_file: Path | None,
    verify: bool,
    cert_file: Path | None,
    key_file: Path | None,
    min_version: TlsVersion,
) -> ssl.SSLContext:
    """A client context: the system trust store (or ``ca_file``), optional client certificate.

    ``env_prefix`` names the option variables in errors (``GOVBUS_SINK__OPTIONS__TLS_``).
    """
    try:
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(env_prefix + "CA_FILE", f"cannot load CA certificates from {ca_file}: {exc}") from None
    ctx.minimum_version = _VERSIONS[min_version]
    if not verify:
        # Loud, because it silently turns TLS into encryption with an unknown party.
        _log.warning("TLS certificate verification is OFF (%sVERIFY=false): use only for tests", env_prefix)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert_file is not None:
        try:
            ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
        except (OSError, ssl.SSLError) as exc:
            # The message names files, never their contents (the key file holds a secret).
            raise ConfigError(
                env_prefix + "CLIENT_CERT", f"cannot load client certificate {cert_file} / key {key_file}: {exc}"
            ) from None
    elif key_file is not None:
        raise ConfigError(env_prefix + "CLIENT_KEY", "a client key needs a client certificate (..._CLIENT_CERT)")
    return ctx
