"""The package layout shows the architecture: no import cycle, small modules, no hidden imports."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _layout():
    spec = importlib.util.spec_from_file_location("layout", ROOT / "scripts" / "layout.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["layout"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod, mod.analyse(ROOT)


def test_no_import_cycle_counting_imports_inside_functions():
    _, lay = _layout()
    assert lay.cycles() == []


def test_no_module_over_400_lines():
    mod, lay = _layout()
    assert lay.long_modules(mod.MAX_LINES) == {}


def test_convscope_imports_inside_functions_only_for_the_command_table():
    """Deferred internal imports hide the architecture; only the CLI's lazy command table (for
    start-up time) may use them, and it goes through importlib, which this check cannot see."""
    _, lay = _layout()
    assert lay.deferred == []


def test_the_checker_finds_a_cycle(tmp_path):
    """A negative control: two modules importing each other inside functions are a cycle."""
    pkg = tmp_path / "convscope"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "b.py").write_text("from .a import f\n" + "x = 1\n" * 401)
    mod, _ = _layout()
    lay = mod.analyse(tmp_path)
    assert lay.cycles() == [["convscope.a", "convscope.b"]]
    assert lay.deferred == [("convscope.a", 2, "convscope.b")]
    assert list(lay.long_modules(mod.MAX_LINES)) == ["convscope.b"]


def test_import_convscope_imports_no_optional_library():
    code = ("import sys, convscope\n"
            "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'matplotlib', 'PIL', "
            "'safetensors', 'mpi4py', 'cupy', 'numba') if m in sys.modules]\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_readme_custom_layer_runs_as_written(tmp_path):
    """The README's 'Your own layer' example, run as a script: it explains and saves."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Your own layer", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) < 30
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "[1] Swish(): 26×26×4 → 26×26×4; no parameters" in out.stdout
    assert (tmp_path / "swish.safetensors").stat().st_size > 27_000 * 4
