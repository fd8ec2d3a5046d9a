"""One rule for "this host is on this machine", where plain http is tolerated.

Plain http carries credentials (a registry password, a storage signature or token) in clear, so
Slipway speaks it only to loopback: a local registry, Azurite. Every other host is https only.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """``localhost``, ``127.0.0.0/8`` or ``[::1]`` (brackets and case ignored)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
