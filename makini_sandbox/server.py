"""Run the sandbox app in a background thread (like moto's server mode)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING

import uvicorn

from .admin import SandboxAdmin
from .app import build_app
from .config import SandboxConfig
from .models import Store

if TYPE_CHECKING:
    from typing_extensions import Self


class SandboxServer:
    """A Makini-compatible HTTP server on a background thread.

    The state (:attr:`store`) lives in this process; tests may use the HTTP admin endpoints
    (:attr:`admin`) or the store directly.

    Args:
        config: the sandbox config; ``None`` uses the defaults (three connections).
        host: address to bind.
        port: port to bind; 0 picks a free port (see :attr:`url` after :meth:`start`).
        log_level: uvicorn log level.
        prefetch: read ahead the next page's records while the client is busy.

    Example::

        with SandboxServer(SandboxConfig(seed=1)) as server:
            httpx.get(f"{server.url}/api/v1/vendors",
                      headers={"Authorization": f"Bearer {server.tokens['acme']}"})
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        prefetch: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.store = Store(config)
        self.app = build_app(self.store, prefetch=prefetch)
        self.log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def config(self) -> SandboxConfig:
        """The current config (changes after ``POST /_admin/reset`` with a body)."""
        return self.store.config

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (the bound port once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def tokens(self) -> dict[str, str]:
        """Connection name -> bearer token."""
        return self.store.tokens

    @property
    def admin(self) -> SandboxAdmin:
        """A new :class:`SandboxAdmin` client for this server."""
        return SandboxAdmin(self.url)

    @property
    def running(self) -> bool:
        """Whether the server thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 30.0) -> Self:
        """Bind, start serving on a background thread and wait until connections are accepted.

        Raises:
            RuntimeError: already started, or the server did not come up in time.
        """
        if self._thread is not None:
            raise RuntimeError("server already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP; without it every response waits ~40 ms (Nagle + delayed ACK).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(2048)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._sock = sock
        config = uvicorn.Config(
            self.app,
            log_level=self.log_level,
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"makini-sandbox:{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("sandbox server failed to start")
            time.sleep(0.005)
        with socket.create_connection((self.host, self.port), timeout=timeout):
            pass
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread to end (idempotent)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
        self._server = None
        self._thread = None
        self._sock = None

    def serve_forever(self) -> None:
        """Block until interrupted (Ctrl-C), then stop."""
        try:
            while self.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
