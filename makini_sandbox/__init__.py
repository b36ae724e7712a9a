"""A Makini-compatible HTTP sandbox: deterministic data, the v1 list/sync-status API, faults.

Importing has no side effects; start a server with :class:`SandboxServer`.
"""

from .admin import SandboxAdmin, SandboxAdminError
from .config import ConnectionConfig, SandboxConfig, default_connections
from .server import SandboxServer

__all__ = [
    "ConnectionConfig",
    "SandboxAdmin",
    "SandboxAdminError",
    "SandboxConfig",
    "SandboxServer",
    "default_connections",
]
