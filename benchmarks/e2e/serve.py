"""Serve app.py (or picows' own echo server) in this very process, so its PID is the server's.

    python serve.py SERVER PORT      SERVER: uvicorn | uvicorn-wsproto | uvicorn-turbows | hypercorn | granian
                                             | picows | picows-broadcast

``granian``: this process becomes granian's CLI (``granian --interface asgi
--ws --loop uvloop``, one worker), which serves app.py from a worker process
of its own: the server's figures are that process tree's.

``picows-broadcast``: picows' own broadcast server, no ASGI (the fan-out ceiling):
every message any connection sends goes to every connection, one ``send`` each.

``BENCH_WS`` picks the WebSocket class (see app.py). ``BENCH_PROFILE=path``
runs the server under cProfile and writes the stats to ``path`` on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def serve_uvicorn(port: int, ws: str) -> None:
    import uvicorn

    from app import app

    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", ws=ws,
        log_level="warning", access_log=False, lifespan="off", ws_max_size=16 * 1024 * 1024,
    )
    uvicorn.Server(config).run()


def native_protocol() -> type:
    """turbows' compiled uvicorn protocol, also when BENCH_WS=pure: there TURBOWS_NO_EXTENSIONS
    picks the app's WebSocket core, and turbows.uvicorn would fall back to uvicorn's sansio protocol."""
    from turbows import _protocol_c

    class WebSocketProtocol(_protocol_c.WebSocketProtocol, asyncio.Protocol):
        pass

    return WebSocketProtocol


def serve_hypercorn(port: int) -> None:
    import uvloop
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from app import app

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    config.accesslog = None
    config.websocket_max_message_size = 16 * 1024 * 1024
    stop = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(app, config, shutdown_trigger=stop.wait)

    uvloop.run(main())


#: granian's options here (the whole path's granian row quotes them): the command of issue 15, one
#: worker (as every other server here), a backlog as deep as uvicorn's for the idle test, no logging.
GRANIAN_OPTIONS = ("--interface", "asgi", "--ws", "--loop", "uvloop", "--workers", "1", "--backlog", "2048",
                   "--log-level", "warning", "--no-access-log")


def serve_granian(port: int) -> None:
    """exec granian's CLI in this process (the PID run.py holds): its worker is a child of it."""
    argv = [sys.executable, "-m", "granian", *GRANIAN_OPTIONS, "--host", "127.0.0.1", "--port", str(port),
            "--working-dir", os.path.dirname(os.path.abspath(__file__)), "app:app"]
    os.execv(sys.executable, argv)


def raise_open_file_limit() -> None:
    """The soft RLIMIT_NOFILE up to the hard one: the idle test holds thousands of connections."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _run_picows(listener_factory, port: int) -> None:
    """picows' own server on ``port`` with ``listener_factory``, under uvloop, until SIGTERM or SIGINT."""
    import uvloop
    from picows import ws_create_server

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = await ws_create_server(listener_factory, "127.0.0.1", port, backlog=2048)
        await stop.wait()
        server.close()

    uvloop.run(main())


def serve_picows(port: int) -> None:
    from picows import WSListener, WSMsgType

    class Echo(WSListener):
        def on_ws_frame(self, transport, frame) -> None:
            if frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY):
                transport.send(frame.msg_type, frame.get_payload_as_memoryview())
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()

    _run_picows(lambda request: Echo(), port)


def serve_picows_broadcast(port: int) -> None:
    from picows import WSListener, WSMsgType

    members: set = set()

    class Broadcast(WSListener):
        def on_ws_connected(self, transport) -> None:
            members.add(transport)

        def on_ws_disconnected(self, transport) -> None:
            members.discard(transport)

        def on_ws_frame(self, transport, frame) -> None:
            if frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY):
                payload = frame.get_payload_as_bytes()
                for member in members:
                    member.send(frame.msg_type, payload)
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()

    _run_picows(lambda request: Broadcast(), port)


def main() -> None:
    server, port = sys.argv[1], int(sys.argv[2])
    raise_open_file_limit()
    if os.environ.get("BENCH_WS") == "pure":
        os.environ["TURBOWS_NO_EXTENSIONS"] = "1"
    run = {
        "uvicorn": lambda: serve_uvicorn(port, "auto"),
        "uvicorn-wsproto": lambda: serve_uvicorn(port, "wsproto"),
        "uvicorn-turbows": lambda: serve_uvicorn(port, native_protocol()),
        "hypercorn": lambda: serve_hypercorn(port),
        "granian": lambda: serve_granian(port),
        "picows": lambda: serve_picows(port),
        "picows-broadcast": lambda: serve_picows_broadcast(port),
    }[server]
    profile_path = os.environ.get("BENCH_PROFILE")
    if not profile_path:
        try:
            run()
        except KeyboardInterrupt:  # uvicorn re-raises the SIGINT that stopped it
            pass
        return
    import cProfile

    profiler = cProfile.Profile()  # wall clock: cheap; the loop's idle wait lands in runners.run, which profile_server.py sets apart
    profiler.enable()
    try:
        run()
    except KeyboardInterrupt:
        pass
    finally:
        profiler.disable()
        profiler.dump_stats(profile_path)


if __name__ == "__main__":
    main()
