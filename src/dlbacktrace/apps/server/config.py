"""What the server listens on and accepts, checked before it starts."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from dlbacktrace.engine.errors import DLBacktraceError

__all__ = ["ServerConfig", "ServerConfigError", "is_loopback"]


class ServerConfigError(DLBacktraceError, ValueError):
    """The server would be unsafe or cannot start with these settings."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only.

    Parameters
    ----------
    host
        A host name or IP address.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerConfig:
    """Where the server listens and what it accepts."""

    host: str = "127.0.0.1"
    token: str | None = None
    max_body: int = 10 * 2**20

    def check(self) -> None:
        """Refuse unsafe settings: another interface without a token, a short token."""
        if not is_loopback(self.host) and not self.token:
            raise ServerConfigError(
                f"binding {self.host!r} exposes the model beyond this machine; set a bearer "
                "token (--token or DLBACKTRACE_TOKEN) or bind 127.0.0.1"
            )
        if self.token is not None and len(self.token) < 16:
            raise ServerConfigError("the bearer token must be at least 16 characters long")
        if self.max_body < 1024:
            raise ServerConfigError("max_body must be at least 1 KiB")
