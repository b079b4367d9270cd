"""``python -m deploy serve``: a local search service (JSON API and a web page).

    python -m deploy serve --index INDEX --encoder ART/encoder.onnx            # 127.0.0.1:8000
    python -m deploy serve --index INDEX --encoder ART/encoder.onnx --port 0 --json
    YNET_SERVE_TOKEN=... python -m deploy serve ... --host 0.0.0.0            # needs a token

The index and encoder are opened once, before the port is taken, so a bad file is one
``error:`` line and nothing listens. The service listens on loopback by default; any other
address needs a token (``--token`` or ``$YNET_SERVE_TOKEN``, at least 16 characters), and
then every API request must carry ``Authorization: Bearer TOKEN``: the answers are about
patients. With ``--json`` the address is printed as one JSON document once the service
accepts connections (``--port 0`` takes a free port, so a script learns it there).

uvicorn runs the Starlette app of :mod:`deploy.serve_app`, in one process: the index lives
in its memory, and writes serialise on the index's writer lock with every other writer.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import sys

from deploy.cli import TOKEN_ENV
from deploy.errors import printable

MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def service_token(args) -> str | None:
    """The token from ``--token`` or the environment; refuses a non-loopback ``--host``
    without one, and a token too short to guess at."""
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(args.host):
        raise ValueError(
            f"--host {args.host} is not loopback: other machines could search and change "
            f"the index, so a token is needed (--token or ${TOKEN_ENV}); every API request "
            "must then carry 'Authorization: Bearer TOKEN'"
        )
    if token is not None and (len(token) < MIN_TOKEN_CHARS or not token.isprintable()):
        raise ValueError(
            f"the token must be at least {MIN_TOKEN_CHARS} printable characters, got "
            f"{len(token)}; e.g. python -c 'import secrets; print(secrets.token_urlsafe())'"
        )
    return token


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (one error line when it cannot be had)."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be 0 to 65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise ValueError(f"--host {host}: {err.strerror or err}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def cmd_serve(args) -> int:
    import uvicorn

    from deploy.search_service import SearchService
    from deploy.serve_app import create_app

    token = service_token(args)  # before anything is opened: a usage problem
    if args.max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be > 0, got {args.max_upload_mb:g}")
    service = SearchService(
        args.index, args.encoder, args.store, threads=args.threads, lock_timeout=args.lock_timeout
    )
    app = create_app(service, token, max_upload_bytes=int(args.max_upload_mb * 2**20))
    sock = listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    ready = {
        "url": f"http://{shown}:{port}/",
        "host": host,
        "port": port,
        "index": str(args.index),
        "items": len(service.index()),
        "token_required": token is not None,
    }

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started:  # accepting connections now
                if args.json:
                    print(json.dumps(ready), flush=True)
                else:
                    print(
                        f"serving {printable(args.index)} ({ready['items']} items) at "
                        f"{ready['url']} (Ctrl-C stops)",
                        flush=True,
                    )

    config = uvicorn.Config(
        app,
        log_level="debug" if args.debug else "warning",
        access_log=args.debug,
        log_config=None,  # uvicorn's own logging config prints access lines on stdout
        timeout_graceful_shutdown=5,
        # Longer than the usual client pools keep an idle connection (httpx and browsers:
        # 5 s or more): with equal timeouts the server may close a connection just as a
        # client reuses it, and that request fails with "connection reset".
        timeout_keep_alive=30,
    )
    server = Server(config)
    # uvicorn shuts down gracefully on SIGINT / SIGTERM, then raises the signal again for
    # the handler that was there before it: Ctrl-C and `kill` are the normal way to stop
    # a service, so both end here, quietly, with exit status 0.
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        with sock:
            server.run(sockets=[sock])
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started:
        print("error: the service did not start (rerun with --debug)", file=sys.stderr)
        return 1
    return 0


class _Stopped(Exception):
    """SIGTERM arrived (after uvicorn's graceful shutdown)."""


def _stopped(signum, frame):
    raise _Stopped()
