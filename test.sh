#!/usr/bin/env bash
# Set up and run the test suite: a virtual environment in .venv, turbows
# built and installed into it (not run from the source tree, so the tests see
# the compiled core a user gets), then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet --force-reinstall --no-deps .
.venv/bin/python -m pip install --quiet ".[test,valkey]"
exec .venv/bin/python -m pytest "$@"
