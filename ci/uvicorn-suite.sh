#!/usr/bin/env bash
# uvicorn's own websocket suite on turbows' native protocol. Run by .ci/run after
# the main suite, in the environment ./test.sh set up (.venv).
#
# It fetches the sdist of the uvicorn installed there from PyPI (nothing of
# uvicorn's is kept in this repository), points the suite's ws_protocol_cls
# fixture at turbows.uvicorn:WebSocketProtocol and changes nothing else, and
# runs tests/protocols/test_websocket.py with uvicorn's own pytest settings
# (warnings are errors) under each of uvicorn's HTTP protocols. Deselected:
# only the tests that assert uvicorn's own implementation, each named below
# with its reason and the turbows test that holds the property instead.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$PWD/.venv/bin/python}"
case "$PYTHON" in */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;; esac
WORK="$PWD/build/uvicorn-suite"
VERSION="$("$PYTHON" -c 'import uvicorn; print(uvicorn.__version__)')"

DESELECT=(
    # `assert isinstance(protocol, (WSProtocol, WebSocketsSansIOProtocol))`: uvicorn's classes.
    # The property (an answered keepalive keeps the connection open):
    # tests/protocol/test_real_server.py::test_keepalive_answered_keeps_the_connection
    "test_server_keepalive_ping_pong"
    # The same isinstance. The property (no keepalive ping with ws_ping_interval=None):
    # tests/protocol/test_real_server.py::test_keepalive_disabled_sends_no_ping
    "test_server_keepalive_disabled"
    # Asserts sansio's pause of reading after every message (turbows pauses at ws_max_queue
    # messages or 1 MiB). The property (closing resumes paused reads, so the peer's close
    # gets through): tests/protocol/test_real_server.py::
    # test_closing_resumes_reads_paused_by_a_full_queue_so_the_peer_close_gets_through
    "test_close_resumes_reads_paused_on_an_unconsumed_message"
)

rm -rf "$WORK"
mkdir -p "$WORK"
"$PYTHON" -m pip download --quiet --no-binary :all: --no-deps "uvicorn==$VERSION" -d "$WORK"
tar -xzf "$WORK/uvicorn-$VERSION.tar.gz" -C "$WORK"
SUITE="$WORK/uvicorn-$VERSION"
# What that test file needs beyond turbows' test extra (from uvicorn's dev dependencies):
# its HTTP client, and zttp, the third HTTP protocol its fixtures run under.
"$PYTHON" -m pip install --quiet httpx2 "zttp>=0.0.34"

# Point the fixture at turbows' protocol: its params list, and nothing else, is replaced.
"$PYTHON" - "$SUITE" "${DESELECT[@]}" <<'PY'
import pathlib
import re
import sys

suite = pathlib.Path(sys.argv[1])
conftest = suite / "tests" / "conftest.py"
source = conftest.read_text()
fixture = re.compile(r"@pytest\.fixture\(\n    params=\[\n(?:(?!\n\)\n).)*?\n\)\ndef ws_protocol_cls\(", re.S)
patched, count = fixture.subn(
    '@pytest.fixture(params=[pytest.param("turbows.uvicorn:WebSocketProtocol", id="turbows")])\n'
    "def ws_protocol_cls(",
    source,
)
if count != 1:
    sys.exit(f"uvicorn-suite: the ws_protocol_cls fixture of {conftest} is not where expected")
conftest.write_text(patched)
tests = (suite / "tests" / "protocols" / "test_websocket.py").read_text()
missing = [name for name in sys.argv[2:] if f"async def {name}(" not in tests]
if missing:
    sys.exit(f"uvicorn-suite: deselected tests no longer in uvicorn {suite.name}: {missing}")
PY

args=()
for name in "${DESELECT[@]}"; do
    args+=(--deselect "tests/protocols/test_websocket.py::$name[")
done
echo "uvicorn $VERSION's websocket suite on turbows.uvicorn:WebSocketProtocol (${#DESELECT[@]} tests deselected)"
# uvicorn's pytest settings, but its addopts' "-n 8" (pytest-xdist) left out.
cd "$SUITE"
"$PYTHON" -m pytest -o addopts="-rxXs --strict-config --strict-markers" -p no:cacheprovider -q \
    tests/protocols/test_websocket.py "${args[@]}"
