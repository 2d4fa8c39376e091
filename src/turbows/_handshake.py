"""The opening handshake of turbows' native uvicorn protocol (``turbows._protocol_c``).

Cold code, run once per connection, so plain Python: parsing the upgrade
request, RFC 6455 section 4.2.1's checks with websockets' status codes and
messages, permessage-deflate negotiation (RFC 7692) as websockets'
``ServerPerMessageDeflateFactory`` does it with uvicorn's settings, the ASGI
scope, and the HTTP responses the protocol writes (the 101, refusals and
denial responses).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

__all__ = [
    "DeflateParameters",
    "Refused",
    "accept_response",
    "check_handshake",
    "checked_headers",
    "checked_subprotocol",
    "denial_head",
    "get_all",
    "http_response",
    "negotiate_deflate",
    "parse_extensions",
    "parse_request",
    "reject",
    "websocket_scope",
]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: Headers as the handshake handles them: (name, value) latin-1 str pairs, in order.
Headers = list[tuple[str, str]]
#: (remote_no_context_takeover, local_no_context_takeover, remote_max_window_bits, local_max_window_bits)
DeflateParameters = tuple[bool, bool, int, int]


class Refused(Exception):
    """The upgrade request is not a valid websocket handshake (RFC 6455 section 4.2.1)."""

    def __init__(self, status: int, text: str, headers: Headers | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or []


# -- the request ---------------------------------------------------------------

_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _is_token(value: str) -> bool:
    return bool(value) and all(c in _TCHAR for c in value)


def _fail_text(message: str) -> str:
    return f"Failed to open a WebSocket connection: {message}.\n"


def _tokens(values: Iterable[str]) -> list[str]:
    """Comma-separated header values, stripped, lower-cased, empty items dropped."""
    return [token.strip().lower() for value in values for token in value.split(",") if token.strip()]


def get_all(headers: Headers, lname: str) -> list[str]:
    """Every value of the header named ``lname`` (lower case), in order."""
    return [value for name, value in headers if name.lower() == lname]


def parse_request(data: bytes) -> tuple[str, str, str, Headers]:
    """``(method, target, version, headers)`` from an HTTP/1.1 request head.
    Raises ``Refused`` (400) on malformed input."""
    head = data.decode("latin-1")
    lines = head.split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise Refused(400, _fail_text("invalid request line")) from None
    if not target.isascii():
        # RFC 9112 3.2: a request target is ASCII (uvicorn's HTTP parsers refuse it before us).
        raise Refused(400, _fail_text("invalid request target"))
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not _is_token(name):
            raise Refused(400, _fail_text("invalid HTTP header line"))
        headers.append((name, value.strip(" \t")))
    return method, target, version, headers


def check_handshake(method: str, version: str, headers: Headers) -> str:
    """RFC 6455 section 4.2.1, with websockets' status codes; returns the
    Sec-WebSocket-Accept value or raises ``Refused``."""
    if method != "GET":
        raise Refused(405, _fail_text(f"invalid HTTP method; expected GET; got {method}"), [("Allow", "GET")])
    if version != "HTTP/1.1":
        raise Refused(505, _fail_text(f"unsupported protocol; expected HTTP/1.1: {version}"))
    upgrade_help = "\nYou cannot access a WebSocket server directly with a browser. You need a WebSocket client.\n"
    connection = _tokens(get_all(headers, "connection"))
    if "upgrade" not in connection:
        value = ", ".join(get_all(headers, "connection"))
        raise Refused(
            426,
            _fail_text(f"invalid Connection header: {value}" if value else "missing Connection header") + upgrade_help,
            [("Upgrade", "websocket")],
        )
    upgrade = _tokens(get_all(headers, "upgrade"))
    if upgrade != ["websocket"]:
        value = ", ".join(get_all(headers, "upgrade"))
        raise Refused(
            426,
            _fail_text(f"invalid Upgrade header: {value}" if value else "missing Upgrade header") + upgrade_help,
            [("Upgrade", "websocket")],
        )
    hosts = get_all(headers, "host")
    if len(hosts) != 1 or not hosts[0]:
        raise Refused(400, _fail_text("missing Host header" if not hosts else "invalid Host header"))
    keys = get_all(headers, "sec-websocket-key")
    if len(keys) != 1:
        raise Refused(
            400,
            _fail_text(
                "missing Sec-WebSocket-Key header" if not keys else "invalid Sec-WebSocket-Key header: multiple values"
            ),
        )
    key = keys[0]
    try:
        raw_key = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise Refused(400, _fail_text(f"invalid Sec-WebSocket-Key header: {key}")) from None
    if len(raw_key) != 16:
        raise Refused(400, _fail_text(f"invalid Sec-WebSocket-Key header: {key}"))
    versions = get_all(headers, "sec-websocket-version")
    if len(versions) != 1:
        raise Refused(
            400,
            _fail_text(
                "missing Sec-WebSocket-Version header"
                if not versions
                else "invalid Sec-WebSocket-Version header: multiple values"
            ),
        )
    if versions[0] != "13":
        raise Refused(
            400, _fail_text(f"invalid Sec-WebSocket-Version header: {versions[0]}"), [("Sec-WebSocket-Version", "13")]
        )
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + GUID).digest()).decode("ascii")


# -- permessage-deflate (RFC 7692): negotiated as websockets' ServerPerMessageDeflateFactory
# with uvicorn's settings (server_max_window_bits=12, client_max_window_bits=12; memLevel=5
# is the compressor's, in turbows._deflate_c).

_SERVER_MAX_WINDOW_BITS = 12
_CLIENT_MAX_WINDOW_BITS = 12
_WINDOW_BITS = frozenset(str(bits) for bits in range(8, 16))


def parse_extensions(values: list[str]) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Sec-WebSocket-Extensions values: ``[(name, [(param, value or None), ...]), ...]``.
    Raises ``Refused`` (400) where the header does not parse."""
    offers = []
    for header in values:
        for item in header.split(","):
            item = item.strip()
            if not item:
                continue
            parts = [part.strip() for part in item.split(";")]
            name = parts[0]
            if not _is_token(name):
                raise Refused(400, _fail_text(f"invalid Sec-WebSocket-Extensions header: {header}"))
            params: list[tuple[str, str | None]] = []
            for part in parts[1:]:
                pname, sep, pvalue = part.partition("=")
                pname = pname.strip()
                if not _is_token(pname):
                    raise Refused(400, _fail_text(f"invalid Sec-WebSocket-Extensions header: {header}"))
                if sep:
                    pvalue = pvalue.strip()
                    if len(pvalue) >= 2 and pvalue.startswith('"') and pvalue.endswith('"'):
                        pvalue = pvalue[1 : len(pvalue) - 1]
                    if not _is_token(pvalue):
                        raise Refused(400, _fail_text(f"invalid Sec-WebSocket-Extensions header: {header}"))
                    params.append((pname, pvalue))
                else:
                    params.append((pname, None))
            offers.append((name, params))
    return offers


def negotiate_deflate(
    offers: list[tuple[str, list[tuple[str, str | None]]]],
) -> tuple[str, DeflateParameters] | None:
    """The first acceptable permessage-deflate offer: ``(response header value,
    DeflateParameters)``, or None."""
    for name, params in offers:
        if name != "permessage-deflate":
            continue
        server_nct = client_nct = False
        server_bits: int | None = None
        client_bits: int | bool | None = None
        ok = True
        for pname, value in params:
            if pname == "server_no_context_takeover" and not server_nct and value is None:
                server_nct = True
            elif pname == "client_no_context_takeover" and not client_nct and value is None:
                client_nct = True
            elif pname == "server_max_window_bits" and server_bits is None and value in _WINDOW_BITS:
                server_bits = int(value)  # type: ignore[arg-type]
            elif pname == "client_max_window_bits" and client_bits is None and (value is None or value in _WINDOW_BITS):
                client_bits = True if value is None else int(value)
            else:
                ok = False  # unknown, duplicate or invalid parameter: decline this offer
                break
        if not ok:
            continue
        if server_bits is None or server_bits > _SERVER_MAX_WINDOW_BITS:
            server_bits = _SERVER_MAX_WINDOW_BITS
        if server_bits == 8:
            continue  # zlib cannot compress with an 8-bit window
        if client_bits is True:
            client_bits = _CLIENT_MAX_WINDOW_BITS
        elif client_bits is not None and client_bits > _CLIENT_MAX_WINDOW_BITS:
            client_bits = _CLIENT_MAX_WINDOW_BITS
        response = ["permessage-deflate"]
        if server_nct:
            response.append("server_no_context_takeover")
        if client_nct:
            response.append("client_no_context_takeover")
        response.append(f"server_max_window_bits={server_bits}")
        if client_bits is not None:
            response.append(f"client_max_window_bits={client_bits}")
        return "; ".join(response), (client_nct, server_nct, int(client_bits or 15), server_bits)
    return None


# -- the scope -------------------------------------------------------------------


#: Header names, and the values of the headers below, as the scope's bytes: shared
#: by every connection that sends the same ones rather than a copy each, as an idle
#: connection's memory is mostly its scope. The values of other headers (keys,
#: cookies) rarely repeat, so they are never kept. Bounded: a client choosing
#: names can fill it to _SHARED_MAX entries, never beyond.
_SHARED_VALUES = frozenset({
    "host", "upgrade", "connection", "sec-websocket-version", "sec-websocket-extensions",
    "origin", "user-agent", "accept-encoding", "accept-language", "cache-control", "pragma",
})
_SHARED_MAX = 1024
_shared: dict[str, bytes] = {}


def _shared_bytes(text: str) -> bytes:
    """``text`` as latin-1 (ASCII for names, which are tokens), one object per distinct text."""
    data = _shared.get(text)
    if data is None:
        data = text.encode("latin-1")
        if len(_shared) < _SHARED_MAX and len(text) <= 256:
            _shared[text] = data
    return data


def _scope_headers(headers: Headers) -> list[tuple[bytes, bytes]]:
    return [
        (_shared_bytes(name), _shared_bytes(value) if name.lower() in _SHARED_VALUES else value.encode("latin-1"))
        for name, value in headers
    ]


def websocket_scope(
    target: str,
    headers: Headers,
    *,
    scheme: str,
    server: Any,
    client: Any,
    root_path: str,
    asgi_version: str,
    state: dict[str, Any],
) -> dict[str, Any]:
    """The ASGI websocket scope, as uvicorn's websockets-sansio protocol builds it."""
    raw_path, _, query_string = target.partition("?")
    subprotocols = []
    for value in get_all(headers, "sec-websocket-protocol"):
        subprotocols.extend([token.strip() for token in value.split(",")])
    return {
        "type": "websocket",
        "asgi": {"version": asgi_version, "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": scheme,
        "server": server,
        "client": client,
        "root_path": root_path,
        "path": root_path + unquote(raw_path),
        "raw_path": root_path.encode("ascii") + raw_path.encode("ascii"),
        "query_string": query_string.encode("ascii"),
        "headers": _scope_headers(headers),
        "subprotocols": subprotocols,
        "state": state,
        "extensions": {"websocket.http.response": {}},
    }


# -- responses -------------------------------------------------------------------


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def http_response(status: int, headers: Headers, body: bytes) -> bytes:
    """An HTTP/1.1 response; ``headers`` as (str, str) pairs, written as latin-1."""
    lines = [f"HTTP/1.1 {status} {_status_phrase(status)}\r\n".encode("latin-1")]
    for name, value in headers:
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


def reject(status: int, text: str, extra: Headers | None = None) -> bytes:
    """websockets' ``ServerProtocol.reject``: a plain-text response that closes the connection."""
    body = text.encode()
    headers = [
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Length", str(len(body))),
        ("Content-Type", "text/plain; charset=utf-8"),
    ]
    if extra:
        headers.extend(extra)
    return http_response(status, headers, body)


# -- what the app asks us to write --------------------------------------------------

#: ASGI header pairs, checked: (name, value) bytes.
RawHeaders = list[tuple[bytes, bytes]]

_TCHAR_BYTES = frozenset(ord(c) for c in _TCHAR)


def checked_headers(headers: Iterable[tuple[Any, Any]], message_type: str) -> RawHeaders:
    """The app's headers, each name an HTTP token and no value holding CR, LF or
    NUL (which would end the header, or the head, early: header injection).
    Raises ``ValueError`` (``TypeError`` for values that are not bytes), naming
    the header and the message, as h11 refuses them in uvicorn's other protocols."""
    checked = []
    for name, value in headers:
        if not isinstance(name, (bytes, bytearray, memoryview)) or not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"header names and values in '{message_type}' must be bytes, got ({name!r}, {value!r})")
        name, value = bytes(name), bytes(value)
        if not name or not _TCHAR_BYTES.issuperset(name):
            raise ValueError(f"invalid header name {name!r} in '{message_type}': not an HTTP token")
        if b"\r" in value or b"\n" in value or b"\0" in value:
            raise ValueError(f"invalid value for header {name!r} in '{message_type}': it contains CR, LF or NUL")
        checked.append((name, value))
    return checked


def checked_subprotocol(subprotocol: Any) -> str | None:
    """The subprotocol of ``websocket.accept``: None, or a str with no CR, LF or NUL."""
    if subprotocol is None:
        return None
    if not isinstance(subprotocol, str):
        raise TypeError(f"the subprotocol in 'websocket.accept' must be a str, got {subprotocol!r}")
    if "\r" in subprotocol or "\n" in subprotocol or "\0" in subprotocol:
        raise ValueError(f"invalid subprotocol {subprotocol!r} in 'websocket.accept': it contains CR, LF or NUL")
    return subprotocol


def denial_head(status: int, headers: RawHeaders, content_length: int | None) -> bytes:
    """The head of the app's denial response (the ASGI websocket.http.response
    extension): its headers, then sansio's defaults for those it leaves out
    (Date, Connection: close, Content-Type, and Content-Length where known)."""
    present = {name.lower() for name, _ in headers}
    lines = [f"HTTP/1.1 {status} {_status_phrase(status)}\r\n".encode("latin-1")]
    for name, value in headers:
        lines += [name, b": ", value, b"\r\n"]
    defaults = [
        (b"Date", email.utils.formatdate(usegmt=True).encode("ascii")),
        (b"Connection", b"close"),
        (b"Content-Type", b"text/plain; charset=utf-8"),
    ]
    if content_length is not None:
        defaults.insert(2, (b"Content-Length", str(content_length).encode("ascii")))
    for name, value in defaults:
        if name.lower() not in present:
            lines += [name, b": ", value, b"\r\n"]
    lines.append(b"\r\n")
    return b"".join(lines)


def accept_response(
    accept_key: str,
    extension_header: str | None,
    default_headers: Iterable[tuple[bytes, bytes]],
    headers: RawHeaders,
    subprotocol: str | None,
) -> bytes:
    """The 101 response: uvicorn's default headers, then the app's (checked), names lower-cased."""
    lines = [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
        accept_key.encode("ascii"),
        b"\r\n",
    ]
    if extension_header is not None:
        lines += [b"Sec-WebSocket-Extensions: ", extension_header.encode("ascii"), b"\r\n"]
    for name, value in default_headers:
        lines += [name.lower(), b": ", value, b"\r\n"]
    for name, value in headers:
        lines += [name.lower(), b": ", value, b"\r\n"]
    if subprotocol:
        lines += [b"Sec-WebSocket-Protocol: ", subprotocol.encode("latin-1"), b"\r\n"]
    lines.append(b"\r\n")
    return b"".join(lines)
