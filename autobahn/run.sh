#!/usr/bin/env bash
# Autobahn|Testsuite fuzzingclient against uvicorn + a turbows echo app.
#
#   autobahn/run.sh [WS] [CASES]
#
# WS: the uvicorn websocket protocol (default turbows.uvicorn:WebSocketProtocol;
#     "websockets-sansio" is uvicorn's own, the baseline). CASES: a JSON list of
#     case patterns (default ["*"], all 517). Installs the suite into
#     build/autobahn (Python 2.7 from pyenv) if absent; prints the counts by
#     behavior; exits non-zero on any case that is not OK, NON-STRICT,
#     INFORMATIONAL (or UNIMPLEMENTED), or whose closing behavior is not OK.
set -euo pipefail
cd "$(dirname "$0")/.."
WS="${1:-turbows.uvicorn:WebSocketProtocol}"
CASES="${2:-[\"*\"]}"
# The environment ./test.sh sets up, else whatever python3 has turbows and uvicorn.
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
PY2="${PY2:-$(pyenv root 2>/dev/null)/versions/2.7.18/bin/python2.7}"
SITE=build/autobahn/site
if [ ! -d "$SITE/autobahntestsuite" ]; then
    "$PY2" -m pip install --quiet --target "$SITE" autobahntestsuite==25.10.1
fi
OUT=build/autobahn/reports/$(echo "$WS" | tr ':/' '__')
rm -rf "$OUT"; mkdir -p "$OUT"
PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$PYTHON" autobahn/serve.py "$PORT" "$WS" > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
    sleep 0.1
done
cat > "$OUT/spec.json" <<JSON
{
  "outdir": ".",
  "servers": [{"agent": "uvicorn+$WS", "url": "ws://127.0.0.1:$PORT"}],
  "cases": $CASES,
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON
(cd "$OUT" && AUTOBAHN_SITE="$PWD/../../site" timeout 3000 "$PY2" ../../../../autobahn/wstest.py -m fuzzingclient -s spec.json > wstest.log 2>&1) || {
    echo "wstest failed; see $OUT/wstest.log"; tail -20 "$OUT/wstest.log"; exit 2; }
"$PYTHON" autobahn/summary.py "$OUT/index.json"
