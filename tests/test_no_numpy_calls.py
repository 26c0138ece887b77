"""No engine module hard-codes NumPy where the input's namespace belongs (../shared/scale.md §6).

``np.zeros(...)`` without an array argument makes a *host* array even when the layer's input
lives on a GPU: CuPy then refuses to mix the two (or, worse, a silent copy per step).  The array
path asks ``xp_of(x)`` instead.  This AST lint walks ops/, layers/, losses.py, optim.py and
workspace.py and fails on any ``np.<function>(`` call (``import numpy as np``, ``import numpy``,
``from numpy import ...`` alike) that is not on the allowlist below, each entry with its reason.
The fake device of test_device_generic.py proves the same at run time for every registered
kind; this lint also covers paths no example reaches.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "convscope"
ENGINE = sorted([*ROOT.glob("ops/*.py"), *ROOT.glob("layers/*.py"),
                 *(ROOT / name for name in ("losses.py", "optim.py", "workspace.py"))])

#: dtype and type queries: no array is made.
TYPE_QUERIES = {"dtype", "issubdtype", "result_type", "promote_types", "can_cast", "finfo",
                "iinfo", "shape", "ndim", "isscalar", "broadcast_shapes"}
#: Functions that run on the host only: building and initialising parameters, reading and
#: writing formats (ONNX, torch, JSON), shapes and costs, the CPU generator of Dropout.
HOST_ONLY = {"__init__", "build", "build_virtual", "reset_parameters", "_create", "adopt",
             "from_onnx", "to_onnx", "from_torch", "to_torch", "from_spec", "to_spec", "example",
             "explain", "param_formula", "macs", "output_shape", "rng_state", "set_rng_state",
             "kept_bytes", "virtual_array", "_free_refcount", "load_state_dict"}
#: (module, function): NumPy-only code behind a type check, with the reason.
GUARDED = {
    ("ops/norm.py", "_einsum_c"): "reached only for type(a) is np.ndarray (_channel_views)",
    ("ops/conv_rows.py", "strided"): "np.ndarray(buffer=...) under type(a) is np.ndarray",
    ("workspace.py", "empty"): "np.empty only when xp is np: the pool holds NumPy arrays",
}
#: Modules that are NumPy by design.
NUMPY_MODULES = {
    "ops/conv_reference.py": "the lecture's loops in reading order, element by element: the "
                             "oracle the fast path is tested against, never run on a device",
    "ops/jit.py": "CPU kernels compiled by numba, reached only for NumPy arrays (through "
                  "norm._channel_views, which checks type(a) is np.ndarray)",
    "ops/jit_pool.py": "CPU kernels compiled by numba, reached only for NumPy arrays (through "
                       "_memory_view, which checks type(a) is np.ndarray)",
    "ops/jit_conv.py": "CPU kernels compiled by numba, reached only for NumPy arrays (each "
                       "wrapper checks type(a) is np.ndarray first)",
    "ops/direct.py": "the compiled direct convolution, reached only for NumPy arrays (conv's "
                     "plan takes it where direct.usable checks type(x) is np.ndarray)",
    "ops/direct_lanes.py": "the compiled direct convolution for few filters, reached only for "
                           "NumPy arrays (conv's plan takes it where direct.usable checks "
                           "type(x) is np.ndarray)",
    "ops/jit_direct.py": "CPU kernels compiled by numba, called only from ops/direct.py and "
                         "ops/direct_lanes.py",
}


def numpy_names(tree: ast.Module) -> tuple[set[str], dict[str, str]]:
    """Names bound to the numpy module, and names imported from it (local -> NumPy's)."""
    modules: set[str] = set()
    functions: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name == "numpy"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "numpy":
            functions.update({a.asname or a.name: a.name for a in node.names})
    return modules, functions


def _is_shape_arithmetic(call: ast.Call) -> bool:
    """np.prod(x.shape[1:]) and the like: a product of ints, computed on the host."""
    return bool(call.args) and "shape" in ast.unparse(call.args[0])


def violations(source: str, module: str) -> list[str]:
    """'module:line in function: np.name(...)' for every call not allowed (see the module)."""
    if module in NUMPY_MODULES:
        return []
    tree = ast.parse(source)
    modules, functions = numpy_names(tree)
    out: list[str] = []

    def visit(node: ast.AST, func: str | None) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            func = node.name
        if isinstance(node, ast.Call):
            chain, f = [], node.func
            while isinstance(f, ast.Attribute):
                chain.append(f.attr)
                f = f.value
            name = None
            if isinstance(f, ast.Name) and f.id in modules and chain:
                name = ".".join(reversed(chain))
            elif isinstance(f, ast.Name) and f.id in functions and not chain:
                name = functions[f.id]
            if name is not None and not allowed(name, node, module, func):
                out.append(f"{module}:{node.lineno} in {func or '<module>'}: np.{name}(...)")
        for child in ast.iter_child_nodes(node):
            visit(child, func)

    visit(tree, None)
    return out


def allowed(name: str, call: ast.Call, module: str, func: str | None) -> bool:
    if name in TYPE_QUERIES or func in HOST_ONLY or (module, func) in GUARDED:
        return True
    if func is None:  # module level: constants made once at import
        return True
    return name == "prod" and _is_shape_arithmetic(call)


@pytest.mark.parametrize("path", ENGINE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_engine_module_hard_codes_numpy(path: Path) -> None:
    module = str(path.relative_to(ROOT))
    found = violations(path.read_text(encoding="utf-8"), module)
    assert not found, ("NumPy called where the input's namespace belongs (use xp_of(x)); or "
                       "add the call to an allowlist with its reason:\n" + "\n".join(found))


def test_the_lint_finds_what_it_must() -> None:
    """Negative controls: the calls the engine must not make are caught, however spelled."""
    bad = '''
import numpy as np
import numpy
from numpy import zeros as z

class Drop:
    def forward(self, x):
        keep = np.random.default_rng(0).random(x.shape) >= 0.5
        a = np.zeros(x.shape) + numpy.ones_like(x) + z(3)
        np.add.at(a, [0], 1)
        return np.prod(x) * a

    def build(self, shape):
        return np.zeros(shape)              # host-only: allowed
'''
    found = violations(bad, "layers/bad.py")
    assert [f.split(": ", 1)[1] for f in found] == [
        "np.random.default_rng(...)", "np.zeros(...)", "np.ones_like(...)", "np.zeros(...)",
        "np.add.at(...)", "np.prod(...)"], found
    assert violations(bad, "ops/conv_reference.py") == []


def test_the_engine_modules_are_found() -> None:
    names = {str(p.relative_to(ROOT)) for p in ENGINE}
    assert {"ops/conv.py", "layers/linear.py", "losses.py", "optim.py", "workspace.py"} <= names
