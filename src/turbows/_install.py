"""Swap turbows into Starlette, FastAPI and Responder, and back out.

Two ways to use turbows in a framework app:

* ``turbows.install()`` rebinds the name ``WebSocket`` in the few modules
  where the frameworks construct the object handed to an endpoint (see
  ``CONSTRUCTION_SITES``), and ``starlette.websockets.WebSocket`` itself.
  ``turbows.uninstall()`` puts the original objects back.
* Opt in per route or per endpoint, with no global patching:
  ``WebSocketRoute`` (a Starlette route whose function endpoint gets
  turbows) and ``websocket_endpoint`` (a decorator for an endpoint of any
  of the three frameworks, FastAPI's ``@app.websocket`` included).

Why install() imports the frameworks instead of hooking later imports: the
modules that *check* against the class must keep Starlette's, which turbows'
class subclasses, so that annotations naming either class keep working.
Responder injects a dependency's parameter by ``issubclass(annotation,
(Request, WebSocket))``, a tuple built at import; FastAPI tests
``lenient_issubclass(annotation, WebSocket)``; ``starlette.authentication
.requires`` asserts ``isinstance(websocket, WebSocket)``. A module imported
after ``starlette.websockets.WebSocket`` was swapped binds turbows' class
instead, and an annotation naming Starlette's class (imported before
install()) is then no longer recognised (Responder raises
``DependencyResolutionError``). So install() first imports every framework
module it knows, where installed (about 5 ms for Starlette's, 150 ms each
for FastAPI and Responder, paid once), and only then rebinds the
construction sites. The state after install() is the same whichever order
the program imported things in, with no import hook in ``sys.meta_path`` to
interact with other finders, zip imports, frozen apps or reloads; the cost
is importing an installed framework the app may not use.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from types import ModuleType
from typing import Any, ClassVar, TypeVar, overload

from starlette import routing as _starlette_routing
from starlette._exception_handler import wrap_app_handling_exceptions
from starlette.endpoints import WebSocketEndpoint
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket as StarletteWebSocket

__all__ = [
    "CONSTRUCTION_SITES",
    "FRAMEWORK_MODULES",
    "WebSocketRoute",
    "install",
    "uninstall",
    "websocket_endpoint",
    "websocket_session",
]

#: ``(module, attribute)``: where each framework looks up the class it
#: constructs for an endpoint, at call time (a module global), so rebinding
#: it also reaches apps and routes built before install().
CONSTRUCTION_SITES: tuple[tuple[str, str], ...] = (
    # websocket_session(): WebSocketRoute, Router.websocket_route, add_websocket_route
    ("starlette.routing", "WebSocket"),
    # WebSocketEndpoint.dispatch(): class-based endpoints, any encoding
    ("starlette.endpoints", "WebSocket"),
    # ExceptionMiddleware.__call__(): the connection handed to exception
    # handlers when the exception escapes the route (route middleware, mounts)
    ("starlette.middleware.exceptions", "WebSocket"),
    # websocket_session(): APIWebSocketRoute (@app.websocket, APIRouter.websocket,
    # include_router), whose object dependencies and the endpoint receive
    ("fastapi.routing", "WebSocket"),
    # WebSocketRoute.__call__(): the handler, before_request(websocket=True)
    # hooks, per-route hooks and dependencies all get this one object
    ("responder.routes", "WebSocket"),
    # the class itself, for code that imports it after install()
    ("starlette.websockets", "WebSocket"),
)

#: framework -> modules install() imports before rebinding anything: the
#: construction sites, and the modules that check against Starlette's class
#: (``starlette.authentication.requires``, ``fastapi.dependencies.utils``,
#: ``responder.routes._REQUEST_TYPES``) and so must bind it, not turbows'.
#: The first module of each is its package: if it does not import, the
#: framework is skipped.
FRAMEWORK_MODULES: dict[str, tuple[str, ...]] = {
    "starlette": (
        "starlette",
        "starlette.websockets",
        "starlette.routing",
        "starlette.endpoints",
        "starlette.middleware.exceptions",
        "starlette._exception_handler",
        "starlette.authentication",
    ),
    "fastapi": ("fastapi", "fastapi.routing", "fastapi.websockets", "fastapi.dependencies.utils"),
    "responder": ("responder", "responder.routes"),
}

_lock = threading.RLock()
# What install() replaced: (module, attribute, original object), restored by uninstall().
_replaced: list[tuple[ModuleType, str, Any]] = []
# The class install() put there, or None when not installed.
_installed: type[StarletteWebSocket] | None = None


def _default_class() -> type[StarletteWebSocket]:
    import turbows  # the package imports this module: look the class up late

    return turbows.WebSocket


def _checked(websocket_class: type | None) -> type[StarletteWebSocket]:
    cls = _default_class() if websocket_class is None else websocket_class
    if not (isinstance(cls, type) and issubclass(cls, StarletteWebSocket)):
        raise TypeError(f"websocket_class must subclass starlette.websockets.WebSocket, got {cls!r}")
    return cls


def _import_frameworks() -> None:
    for modules in FRAMEWORK_MODULES.values():
        package, *submodules = modules
        try:
            importlib.import_module(package)
        except ImportError:  # not installed (or unusable): nothing to swap there
            continue
        for name in submodules:
            try:
                importlib.import_module(name)
            except ImportError:  # another version's layout: its sites are skipped below
                pass


def install(*, websocket_class: type[StarletteWebSocket] | None = None) -> None:
    """Make Starlette, FastAPI and Responder hand endpoints ``turbows.WebSocket``.

    Rebinds ``WebSocket`` in each module of ``CONSTRUCTION_SITES`` that is
    installed, ``starlette.websockets.WebSocket`` last. It first imports the
    installed frameworks (``FRAMEWORK_MODULES``) so that their type checks
    keep Starlette's class: annotations of ``starlette.websockets.WebSocket``,
    ``fastapi.WebSocket`` or ``turbows.WebSocket``, imported before or after
    install(), all keep working. ``fastapi.WebSocket`` and
    ``fastapi.websockets.WebSocket`` are left as they are (Starlette's class):
    they are names users annotate with, never constructed by FastAPI.

    A site already holding something other than Starlette's class (another
    library's patch) is left alone. Idempotent; calling it again with another
    ``websocket_class`` moves every site it patched to that class.

    ``websocket_class``: the class to install instead of ``turbows.WebSocket``
    (a subclass of it adding methods, or, in tests, the class of one core).
    """
    global _installed
    cls = _checked(websocket_class)
    with _lock:
        _import_frameworks()
        patched = {(id(module), attribute) for module, attribute, _ in _replaced}
        for module_name, attribute in CONSTRUCTION_SITES:
            module = sys.modules.get(module_name)
            if module is None or (id(module), attribute) in patched:
                continue
            if getattr(module, attribute, None) is StarletteWebSocket:
                _replaced.append((module, attribute, StarletteWebSocket))
        for module, attribute, _ in _replaced:
            current = getattr(module, attribute, None)
            if current is StarletteWebSocket or (_installed is not None and current is _installed):
                setattr(module, attribute, cls)
        _installed = cls


def uninstall() -> None:
    """Undo install(): put back the very objects it replaced.

    A site changed by someone else since install() keeps their object.
    Idempotent; a no-op when install() was never called.
    """
    global _installed
    with _lock:
        for module, attribute, original in reversed(_replaced):
            if getattr(module, attribute, None) is _installed:
                setattr(module, attribute, original)
        _replaced.clear()
        _installed = None


# Opt-in, per route or per endpoint: no module is patched.


def websocket_session(
    func: Callable[[Any], Awaitable[None]],
    websocket_class: type[StarletteWebSocket] | None = None,
) -> ASGIApp:
    """Starlette's ``routing.websocket_session`` constructing ``websocket_class``.

    An ASGI app calling ``func(websocket)`` with a ``turbows.WebSocket`` (by
    default), exception handlers applying as they do on Starlette's routes.
    """
    cls = _checked(websocket_class)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        session = cls(scope, receive=receive, send=send)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await func(session)

        await wrap_app_handling_exceptions(app, session)(scope, receive, send)

    return app


class WebSocketRoute(_starlette_routing.WebSocketRoute):
    """``starlette.routing.WebSocketRoute`` whose function endpoint gets turbows.

    A drop-in for Starlette's route, for this route only::

        from turbows.routing import WebSocketRoute

        app = Starlette(routes=[WebSocketRoute("/ws/{room:int}", endpoint)])

    Set ``websocket_class`` on a subclass to construct another class. A
    ``WebSocketEndpoint`` class builds its own ``WebSocket`` (in
    ``starlette.endpoints``), out of this route's reach: it is refused, use
    ``turbows.install()`` for endpoint classes. Other ASGI apps pass through
    as in Starlette. FastAPI's ``include_router`` rebuilds included routes as
    plain Starlette routes; there, decorate the endpoint with
    ``websocket_endpoint`` instead.
    """

    websocket_class: ClassVar[type[StarletteWebSocket] | None] = None

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        name: str | None = None,
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        if isinstance(endpoint, type) and issubclass(endpoint, WebSocketEndpoint):
            raise TypeError(
                f"{endpoint.__name__} is a WebSocketEndpoint, which constructs its own WebSocket: "
                "route it with starlette.routing.WebSocketRoute and call turbows.install()"
            )
        super().__init__(path, endpoint, name=name)
        if self.app is not endpoint:  # Starlette wrapped a function endpoint in its session
            self.app = websocket_session(endpoint, self.websocket_class)
        for cls, args, kwargs in reversed(middleware or ()):
            self.app = cls(self.app, *args, **kwargs)


_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


# The decorated endpoint keeps its signature and its result (functools.wraps):
# for a checker, it is the function it decorates.
@overload
def websocket_endpoint(func: _F, /, *, websocket_class: type[StarletteWebSocket] | None = None) -> _F: ...
@overload
def websocket_endpoint(
    func: None = None, /, *, websocket_class: type[StarletteWebSocket] | None = None
) -> Callable[[_F], _F]: ...


def websocket_endpoint(
    func: _F | None = None, /, *, websocket_class: type[StarletteWebSocket] | None = None
) -> Any:
    """Decorate a websocket endpoint so it receives ``turbows.WebSocket``.

    Works on any framework's endpoint, FastAPI's included (whose route
    classes ``@app.websocket`` and ``include_router`` build themselves)::

        @app.websocket("/ws/{client_id}")
        @turbows.websocket_endpoint
        async def chat(websocket: WebSocket, client_id: int): ...

    The signature is kept (``functools.wraps``), so FastAPI's and Responder's
    parameter injection see the original one. When called, the endpoint
    gets, in place of the framework's ``WebSocket``, a turbows one on the
    same connection (same scope, so ``state``, ``session``, ``user`` and
    path parameters are shared; same ASGI ``receive``/``send``) holding the
    same ``client_state``/``application_state``; those states are copied
    back when the endpoint returns or raises, so the framework's exception
    handlers and teardown see where the connection stands. Dependencies and
    hooks that run before the endpoint get the framework's object. Under
    ``install()`` the framework's object already is turbows' and is passed
    through unchanged.
    """
    if func is None:
        return functools.partial(websocket_endpoint, websocket_class=websocket_class)
    if not inspect.iscoroutinefunction(func):
        raise TypeError(f"websocket endpoints are async functions, got {func!r}")
    target = _checked(websocket_class)

    @functools.wraps(func)
    async def endpoint(*args: Any, **kwargs: Any) -> Any:
        found = [v for v in (*args, *kwargs.values()) if isinstance(v, StarletteWebSocket)]
        if not found or isinstance(found[0], target):
            return await func(*args, **kwargs)
        original = found[0]
        websocket = target(original.scope, receive=original._receive, send=original._send)
        websocket.client_state = original.client_state
        websocket.application_state = original.application_state
        args = tuple(websocket if v is original else v for v in args)
        kwargs = {k: websocket if v is original else v for k, v in kwargs.items()}
        try:
            return await func(*args, **kwargs)
        finally:
            original.client_state = websocket.client_state
            original.application_state = websocket.application_state

    return endpoint
