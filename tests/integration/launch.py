"""Serve an ASGI app on 127.0.0.1 with one of the real servers; a subprocess entry point.

    python launch.py SERVER [--app module:attribute] [--app-dir DIR]

Binds 127.0.0.1 on an ephemeral port itself and hands the listening socket
to the server (Daphne binds port 0 itself), then prints ``LISTENING <port>``
on stdout, so the port is never raced. SERVER is one of ``SERVERS``. ``TURBOWS_NO_EXTENSIONS=1`` in the
environment selects turbows' pure core, as it does anywhere.
"""

from __future__ import annotations

import argparse
import importlib
import os
import resource
import socket
import sys

SERVERS = (
    "uvicorn",
    "uvicorn-wsproto",
    "uvicorn-legacy",
    "uvicorn-turbows",
    "hypercorn",
    "hypercorn-trio",
    "daphne",
    "granian",
    "granian-asyncio",
    "granian-rloop",
)

#: Large enough for the 1 MiB messages, both ways.
MAX_MESSAGE = 16 * 1024 * 1024


def _raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _load(spec: str, app_dir: str) -> object:
    sys.path.insert(0, app_dir)
    module_name, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module_name), attribute or "app")


def _serve_uvicorn(app: object, sock: socket.socket, ws: str) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        ws=ws,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_level="warning",
        ws_max_size=MAX_MESSAGE,
        backlog=2048,
    )
    uvicorn.Server(config).run(sockets=[sock])


def _hypercorn_config(sock: socket.socket) -> object:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.websocket_max_message_size = MAX_MESSAGE
    config.backlog = 2048
    config.loglevel = "WARNING"
    config.accesslog = None
    return config


def _announce(port: int) -> None:
    print(f"LISTENING {port}", flush=True)


def _serve_daphne(app: object) -> None:
    """Daphne (Twisted) binds port 0 itself and says which port it got once it listens."""
    from daphne.server import Server

    class AnnouncingServer(Server):
        def listen_success(self, port: object) -> None:
            super().listen_success(port)
            _announce(port.getHost().port)  # type: ignore[attr-defined]

    AnnouncingServer(
        application=app,
        endpoints=["tcp:port=0:interface=127.0.0.1:backlog=2048"],
        signal_handlers=True,
        websocket_max_message_size=MAX_MESSAGE,
        websocket_max_frame_size=MAX_MESSAGE,
        verbosity=0,
    ).run()


def _serve_granian(app: object, sock: socket.socket, loop: str) -> None:
    """Granian's ASGI interface (``--interface asgi --ws``) on ``loop`` (``--loop``: uvloop, rloop or
    asyncio), as its embedded server.

    The embedded server runs granian's Rust worker (the same ``ASGIWorker`` as
    ``granian --interface asgi --ws --loop uvloop``, whose HTTP and websocket
    handling is all in Rust) on this process's event loop, so there is one
    process to start, signal and stop, as for the other servers. Its CLI binds
    the port itself (per worker, on Linux), so the one hook here hands it our
    socket instead: a ``SocketHolder`` over its descriptor, which is how
    granian shares a socket with its workers where it does not re-bind.
    """
    import asyncio
    import signal

    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.net import SocketHolder
    from granian.server.embed import Server

    class OnOurSocket(Server):
        def _init_shared_socket(self) -> None:
            self._shd = SocketHolder(sock.detach(), False, 2048)
            self._sfd = self._shd.get_fd()
            self._ssp = None

    server = OnOurSocket(
        app,
        interface=Interfaces.ASGI,  # with lifespan, as `--interface asgi`; the Starlette app answers it
        websockets=True,
        backlog=2048,
        log_level=LogLevels.warning,
    )

    async def serve() -> None:
        running = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            running.add_signal_handler(signum, server.stop)
        await server.serve()

    if loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    elif loop == "rloop":
        import rloop

        loop_factory = rloop.new_event_loop
    else:
        loop_factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("server", choices=SERVERS)
    parser.add_argument("--app", default="wsapp:app")
    parser.add_argument("--app-dir", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()

    _raise_open_files_limit()
    os.environ["TURBOWS_IT_SERVER"] = args.server
    if args.server == "uvicorn":
        # uvicorn's default websocket protocol ("auto"): websockets-sansio where websockets is installed.
        from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

        os.environ["TURBOWS_IT_PROTOCOL"] = getattr(AutoWebSocketsProtocol, "__name__", "")
    elif args.server == "uvicorn-wsproto":
        os.environ["TURBOWS_IT_PROTOCOL"] = "WSProtocol"
    elif args.server == "uvicorn-legacy":
        os.environ["TURBOWS_IT_PROTOCOL"] = "WebSocketProtocol"
    elif args.server == "uvicorn-turbows":
        # turbows' native protocol (served by its import string, as a user would name it);
        # the app reports whether it is the compiled one or the sansio fallback.
        import turbows.uvicorn

        os.environ["TURBOWS_IT_PROTOCOL"] = "native" if turbows.uvicorn.NATIVE else "sansio-fallback"
    app = _load(args.app, args.app_dir)

    if args.server == "daphne":
        _serve_daphne(app)
        return

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.set_inheritable(True)
    _announce(sock.getsockname()[1])

    if args.server == "uvicorn":
        _serve_uvicorn(app, sock, "auto")
    elif args.server == "uvicorn-wsproto":
        _serve_uvicorn(app, sock, "wsproto")
    elif args.server == "uvicorn-turbows":
        _serve_uvicorn(app, sock, "turbows.uvicorn:WebSocketProtocol")
    elif args.server == "uvicorn-legacy":
        import warnings

        # uvicorn's ws="websockets": built on websockets.legacy, deprecated but still shipped
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="websockets")
        _serve_uvicorn(app, sock, "websockets")
    elif args.server == "granian":
        _serve_granian(app, sock, "uvloop")
    elif args.server == "granian-rloop":
        _serve_granian(app, sock, "rloop")
    elif args.server == "granian-asyncio":
        _serve_granian(app, sock, "asyncio")
    elif args.server == "hypercorn":
        import asyncio

        from hypercorn.asyncio import serve

        asyncio.run(serve(app, _hypercorn_config(sock)))  # type: ignore[arg-type]
    else:  # hypercorn-trio
        import trio
        from hypercorn.trio import serve as trio_serve

        trio.run(trio_serve, app, _hypercorn_config(sock))


if __name__ == "__main__":
    main()
