"""install()/uninstall() themselves: what they touch, round trips, idempotency,
import order (in a fresh interpreter), frameworks that are not installed."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import starlette.websockets
from starlette.websockets import WebSocket as StarletteWebSocket

import turbows
from turbows import _install
from turbows._install import CONSTRUCTION_SITES, FRAMEWORK_MODULES

# Modules binding the class only to check against it or to annotate with it:
# they keep Starlette's class.
CHECK_SITES = [
    ("starlette.authentication", "WebSocket"),
    ("starlette._exception_handler", "WebSocket"),
    ("fastapi", "WebSocket"),
    ("fastapi.websockets", "WebSocket"),
    ("fastapi.dependencies.utils", "WebSocket"),
    ("fastapi.exception_handlers", "WebSocket"),
]


@pytest.fixture(autouse=True)
def _uninstall_at_teardown() -> Any:
    yield
    turbows.uninstall()


def installed_sites() -> list[tuple[str, str]]:
    """The construction sites of the frameworks installed here."""
    sites = []
    for module_name, attribute in CONSTRUCTION_SITES:
        try:
            importlib.import_module(module_name)
        except ImportError:
            continue
        sites.append((module_name, attribute))
    return sites


def snapshot(sites: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    return {(m, a): getattr(sys.modules[m], a) for m, a in sites if m in sys.modules}


def test_every_construction_site_exists_and_holds_starlettes_class() -> None:
    # A framework release moving its construction elsewhere fails here, not silently.
    sites = installed_sites()
    assert ("starlette.routing", "WebSocket") in sites
    for module_name, attribute in sites:
        assert getattr(sys.modules[module_name], attribute) is StarletteWebSocket, module_name


def test_round_trip_restores_identical_objects(websocket_class: type) -> None:
    sites = installed_sites()
    checks = [(m, a) for m, a in CHECK_SITES if importlib.util.find_spec(m.split(".")[0])]
    for module_name, _ in checks:
        importlib.import_module(module_name)
    before = snapshot(sites + checks)
    request_types = getattr(sys.modules.get("responder.routes"), "_REQUEST_TYPES", None)

    turbows.install(websocket_class=websocket_class)
    for module_name, attribute in sites:
        assert getattr(sys.modules[module_name], attribute) is websocket_class, module_name
    assert snapshot(checks) == {site: StarletteWebSocket for site in checks}
    assert getattr(sys.modules.get("responder.routes"), "_REQUEST_TYPES", None) is request_types

    turbows.uninstall()
    after = snapshot(sites + checks)
    assert after.keys() == before.keys()
    for site, original in before.items():
        assert after[site] is original, site


def test_install_and_uninstall_are_idempotent(websocket_class: type) -> None:
    sites = installed_sites()
    before = snapshot(sites)
    turbows.uninstall()  # never installed: a no-op
    assert snapshot(sites) == before
    for _ in range(3):
        turbows.install(websocket_class=websocket_class)
        assert set(snapshot(sites).values()) == {websocket_class}
        assert len(_install._replaced) == len(sites)
    for _ in range(2):
        turbows.uninstall()
        assert all(after is before[site] for site, after in snapshot(sites).items())


def test_install_defaults_to_turbows_websocket() -> None:
    turbows.install()
    assert starlette.websockets.WebSocket is turbows.WebSocket
    assert sys.modules["starlette.routing"].WebSocket is turbows.WebSocket
    turbows.uninstall()
    assert starlette.websockets.WebSocket is StarletteWebSocket


def test_install_again_with_another_class_moves_every_site(websocket_class: type) -> None:
    class Subclass(websocket_class):  # type: ignore[misc, valid-type]
        pass

    sites = installed_sites()
    before = snapshot(sites)
    turbows.install(websocket_class=websocket_class)
    turbows.install(websocket_class=Subclass)
    assert set(snapshot(sites).values()) == {Subclass}
    turbows.uninstall()
    assert all(after is before[site] for site, after in snapshot(sites).items())


def test_names_imported_after_install(websocket_class: type) -> None:
    turbows.install(websocket_class=websocket_class)
    from starlette.websockets import WebSocket

    assert WebSocket is websocket_class
    assert issubclass(WebSocket, StarletteWebSocket)
    turbows.uninstall()
    from starlette.websockets import WebSocket as Again

    assert Again is StarletteWebSocket


@pytest.mark.parametrize("not_a_websocket", [object, int, "turbows.WebSocket", None.__class__])
def test_install_refuses_other_classes(not_a_websocket: Any) -> None:
    with pytest.raises(TypeError, match="must subclass starlette.websockets.WebSocket"):
        turbows.install(websocket_class=not_a_websocket)
    assert starlette.websockets.WebSocket is StarletteWebSocket


def test_someone_elses_patch_is_left_alone(websocket_class: type) -> None:
    import starlette.endpoints
    import starlette.routing

    class Theirs(StarletteWebSocket):
        pass

    try:
        starlette.endpoints.WebSocket = Theirs  # patched before install()
        turbows.install(websocket_class=websocket_class)
        assert starlette.endpoints.WebSocket is Theirs
        assert starlette.routing.WebSocket is websocket_class
        starlette.routing.WebSocket = Theirs  # patched while installed
        turbows.uninstall()
        assert starlette.endpoints.WebSocket is Theirs
        assert starlette.routing.WebSocket is Theirs
        assert starlette.websockets.WebSocket is StarletteWebSocket
    finally:
        starlette.endpoints.WebSocket = starlette.routing.WebSocket = StarletteWebSocket


def test_framework_modules_cover_the_construction_sites() -> None:
    listed = {name for modules in FRAMEWORK_MODULES.values() for name in modules}
    assert {module_name for module_name, _ in CONSTRUCTION_SITES} <= listed


def run_fresh(core: str, code: str) -> str:
    """Run ``code`` in a new interpreter loading ``core``; return its stdout."""
    env = dict(os.environ)
    env.pop("TURBOWS_NO_EXTENSIONS", None)
    if core == "pure":
        env["TURBOWS_NO_EXTENSIONS"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), core],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_install_before_the_frameworks_are_imported(core: str) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("responder")
    out = run_fresh(
        core,
        """
        import sys
        from starlette.websockets import WebSocket as Before  # a user module imported early
        import turbows
        assert turbows.IMPLEMENTATION == sys.argv[1], turbows.IMPLEMENTATION
        assert "fastapi" not in sys.modules and "responder" not in sys.modules

        turbows.install()

        import fastapi.dependencies.utils
        import fastapi.routing
        import responder
        import responder.routes
        from fastapi import FastAPI, WebSocket as FastAPIName
        from starlette.testclient import TestClient
        from starlette.websockets import WebSocket as After

        T = turbows.WebSocket
        assert After is T and fastapi.routing.WebSocket is T and responder.routes.WebSocket is T
        assert fastapi.dependencies.utils.WebSocket is Before
        assert FastAPIName is Before and responder.routes._REQUEST_TYPES[1] is Before

        seen = []
        app = FastAPI()

        def route(path, annotation):
            @app.websocket(path)
            async def endpoint(websocket: annotation, q: str = "-"):
                seen.append(type(websocket))
                await websocket.accept()
                await websocket.send_text(path + q)
                await websocket.close()

        route("/before", Before)
        route("/after", After)
        route("/fastapi", FastAPIName)

        api = responder.API(sessions=False)

        @api.dependency()
        async def caller(connection: Before):  # injected by annotation: _REQUEST_TYPES
            return connection.url.path

        @api.route("/ws", websocket=True)
        async def echo(ws, caller):
            seen.append(type(ws))
            await ws.accept()
            await ws.send_text(caller + " " + await ws.receive_text())
            await ws.close()

        with TestClient(app) as client:
            for path in ("/before", "/after", "/fastapi"):
                with client.websocket_connect(path + "?q=!") as ws:
                    assert ws.receive_text() == path + "!"
        with TestClient(api) as client, client.websocket_connect("/ws") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "/ws hi"
        assert seen == [T, T, T, T], seen

        turbows.uninstall()
        assert After is T  # the user's own binding is theirs
        import starlette.websockets
        assert starlette.websockets.WebSocket is Before
        assert fastapi.routing.WebSocket is Before and responder.routes.WebSocket is Before
        print("ok", turbows.IMPLEMENTATION)
        """,
    )
    assert out.split() == ["ok", core]


def test_frameworks_not_installed_are_skipped(core: str) -> None:
    out = run_fresh(
        core,
        """
        import sys
        sys.modules["fastapi"] = None  # what an interpreter without them sees: ImportError
        sys.modules["responder"] = None
        import starlette.routing
        from starlette.websockets import WebSocket as Before
        import turbows

        turbows.install()
        turbows.install()
        assert sys.modules["fastapi"] is None and sys.modules["responder"] is None
        assert starlette.routing.WebSocket is turbows.WebSocket
        assert sys.modules["starlette.websockets"].WebSocket is turbows.WebSocket
        turbows.uninstall()
        assert starlette.routing.WebSocket is Before
        assert sys.modules["starlette.websockets"].WebSocket is Before
        print("ok")
        """,
    )
    assert out.split() == ["ok"]
