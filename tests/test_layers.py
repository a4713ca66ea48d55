"""The layering contract: import-linter's contracts (pyproject.toml) hold, and no module
hides a project import inside a function (only optional heavy packages are imported lazily)."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [ROOT / d for d in ("gen", "rtl", "sim", "boards")] + [ROOT / "src" / "insitu" / "cli"]
LAZY_ALLOWED = {"torch", "onnx", "onnxruntime", "matplotlib", "serial", "dask", "distributed",
                "sklearn"}


def _local_imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom):
                    yield sub.lineno, ("." * sub.level) + (sub.module or "")
                elif isinstance(sub, ast.Import):
                    for alias in sub.names:
                        yield sub.lineno, alias.name


def test_import_contracts_hold():
    exe = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_no_function_local_project_imports():
    bad = []
    for pkg in PACKAGES:
        for path in sorted(pkg.rglob("*.py")):
            if path.name.startswith("tb_"):       # cocotb benches run inside the simulator
                continue
            for line, name in _local_imports(path):
                top = name.lstrip(".").split(".")[0]
                if name.startswith(".") or top == "insitu" or top not in LAZY_ALLOWED and top in (
                        "gen", "rtl", "sim", "boards", "cli"):
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {name} inside a function")
    assert bad == []


def test_a_planted_upward_import_breaks_the_contract(tmp_path):
    """The contract can fail: a copy of the tree where gen imports rtl is rejected."""
    import shutil
    work = tmp_path / "tree"
    shutil.copytree(ROOT, work, symlinks=True,
                    ignore=shutil.ignore_patterns(".venv", "build", ".git", "__pycache__"))
    util = work / "gen" / "util.py"
    util.write_text(util.read_text() + "\nfrom ..rtl import engine  # planted\n")
    exe = Path(sys.executable).with_name("lint-imports")
    code = ("import sys; sys.path.insert(0, 'src'); "
            "from importlinter.cli import lint_imports_command; lint_imports_command()")
    out = subprocess.run([sys.executable, "-c", code, "--no-cache"], cwd=work, capture_output=True,
                         text=True)
    assert exe.exists()
    assert out.returncode != 0
    assert "insitu.gen.util -> insitu.rtl.engine" in out.stdout


def test_atomic_writes_get_the_users_permissions(tmp_path):
    """Output files and folders get 0666/0777 less the umask, not mkstemp's 0600/0700."""
    import os

    from insitu.gen.util import atomic_dir, write_atomic
    old = os.umask(0o022)
    try:
        f = write_atomic(tmp_path / "a" / "x.json", "{}\n")
        with atomic_dir(tmp_path / "d") as d:
            (d / "inner.txt").write_text("x")
    finally:
        os.umask(old)
    assert f.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "d" / "inner.txt").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "d"]     # no temporaries left
