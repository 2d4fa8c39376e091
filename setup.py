"""Build turbows: the pure package, plus its compiled core where it can be built.

The compiled core shares its state machine with the pure one:
``src/turbows/_state_py.py`` compiled by Cython with the declarations in
``_speedups/_state_c.pxd``. Both are copied into ``build/cython/turbows/`` as
``_state_c.py`` and ``_state_c.pxd``, where Cython finds the .pxd by the
module's name and applies it to the .py (aiohttp's pattern), so the two cores
share every check. The rest of ``_speedups/`` is hand-written Cython.

Environment switches, read at build time:

- ``TURBOWS_NO_EXTENSIONS=1``: build the pure package only, compile nothing.
- ``TURBOWS_REQUIRE_EXTENSIONS=1``: the compiled core must build; a failure
  fails the build (wheel builds set this, so no platform wheel ships pure).
- neither: try to compile; where that fails (no compiler, no Cython), build
  the pure package and say so loudly.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent.resolve()
# One source, two modules: the pure module and the compiled one built from it.
SHARED_SOURCES = {HERE / "src" / "turbows" / "_state_py.py": "_state_c"}
SPEEDUPS = HERE / "_speedups"
# Where the copies are compiled; a package folder, so Cython names the modules turbows.<name>.
CYTHON_TREE = HERE / "build" / "cython"


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


NO_EXTENSIONS = _flag("TURBOWS_NO_EXTENSIONS")
REQUIRE_EXTENSIONS = _flag("TURBOWS_REQUIRE_EXTENSIONS")
if NO_EXTENSIONS and REQUIRE_EXTENSIONS:
    sys.exit("turbows: TURBOWS_NO_EXTENSIONS and TURBOWS_REQUIRE_EXTENSIONS contradict each other")

# Chosen, not defaulted.
COMPILER_DIRECTIVES = {
    "language_level": 3,
    # No module keeps mutable global state after import but _calls_c's
    # per-class cache, a dict (thread-safe on free-threaded builds too); a
    # WebSocket and a protocol are driven by one event loop's thread, as in
    # Starlette and uvicorn.
    "freethreading_compatible": True,
    "embedsignature": True,
    # Indexing is on a 4-tuple with states the setters validate; keep the
    # checks anyway, they cost nothing measurable.
    "boundscheck": True,
    "wraparound": False,
}


def _say(message: str) -> None:
    print(f"turbows build: {message}", file=sys.stderr, flush=True)


def _extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        _say("TURBOWS_NO_EXTENSIONS is set: building the pure-Python core only")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRE_EXTENSIONS:
            raise
        _say("Cython is not installed: building the pure-Python core only")
        return []
    package = CYTHON_TREE / "turbows"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.pxd").touch()
    # One source, compiled beside its augmenting .pxd.
    shared = []
    for source, name in SHARED_SOURCES.items():
        shutil.copyfile(source, package / f"{name}.py")
        shared.append(package / f"{name}.py")
    # The rest hand-written where measurements demanded it (see each file's
    # docstring): orjson with its exactness checks, the awaitables that drive
    # the server's calls, the native uvicorn protocol.
    # C headers beside them: the generated C includes them from its own directory.
    for source in sorted(SPEEDUPS.glob("*.pyx")) + sorted(SPEEDUPS.glob("*.pxd")) + sorted(SPEEDUPS.glob("*.h")):
        shutil.copyfile(source, package / source.name)
    sources = [*shared, *(package / source.name for source in sorted(SPEEDUPS.glob("*.pyx")))]
    extensions = [Extension(f"turbows.{source.stem}", [str(source.relative_to(HERE))]) for source in sources]
    return cythonize(extensions, compiler_directives=COMPILER_DIRECTIVES, include_path=[str(CYTHON_TREE)])


def _dependencies() -> list[str]:
    """Per wheel: orjson publishes no free-threaded wheels and its source build
    refuses a free-threaded interpreter, so a 3.14t wheel leaves it out and
    turbows uses the standard library there, as it does wherever orjson is missing."""
    dependencies = ["starlette>=1.7,<2"]
    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        dependencies.append("orjson>=3.9")
    return dependencies


class OptionalBuildExt(build_ext):
    """Compile the core if possible; fall back to pure unless compiling is required."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # a missing compiler surfaces as several error types
            self._fall_back(error)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as error:
            self._fall_back(error)
        else:
            _say(f"compiled {ext.name}")

    def _fall_back(self, error: Exception) -> None:
        if REQUIRE_EXTENSIONS:
            raise
        _say(f"could not compile the speedups ({error!r}); this install uses the pure-Python core")


setup(
    install_requires=_dependencies(),
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
)
