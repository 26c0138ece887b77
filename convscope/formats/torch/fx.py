"""Any module torch.fx can trace, as a graph of convscope layers and merges.

:func:`trace_graph` traces ``forward`` symbolically (``torch.fx.symbolic_trace``; nothing is
computed, the module is left as it was) and turns each node into a node of
:class:`~convscope.formats.graph.Graph`, the per-image shapes following from convscope's layers
(``x.size(0)`` is the batch, kept symbolic):

- ``call_module``: the layer the kind reading that ``torch.nn`` class makes (its ``from_torch``
  hook, through :class:`~convscope.formats.torch.convert.TorchKit`; ``nn.Identity`` vanishes);
- ``call_function`` / ``call_method``: ``x + y`` / ``torch.add`` of two tensors (a merge: Add),
  ``torch.cat(..., 1)`` (a merge: Concat), ``torch.flatten`` / ``.view`` / ``.reshape`` that
  keep the batch axis and flatten the rest, and the functional forms of layers (``F.relu``,
  ``F.relu6``, ``F.leaky_relu``, ``torch.sigmoid``, ``F.adaptive_avg_pool2d``, ``F.max_pool2d``,
  ``F.avg_pool2d``, ``F.dropout``, ...), each made into its ``torch.nn`` module first so that the
  same hook converts it.

Anything else is one error naming the node and what is supported.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ...errors import ShapeError, UnsupportedLayer
from ...layers.registry import supported
from ..graph import Graph, Node

__all__ = ["trace_graph", "FUNCTIONS", "METHODS"]

# positional parameter names of the functional forms convscope reads (the tensor first)
_SIG = {
    "relu": ("input", "inplace"), "relu6": ("input", "inplace"),
    "hardtanh": ("input", "min_val", "max_val", "inplace"),
    "leaky_relu": ("input", "negative_slope", "inplace"), "sigmoid": ("input",),
    "tanh": ("input",), "adaptive_avg_pool2d": ("input", "output_size"),
    "max_pool2d": ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                   "return_indices"),
    "avg_pool2d": ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                   "divisor_override"),
    "dropout": ("input", "p", "training", "inplace"), "softmax": ("input", "dim"),
    "add": ("input", "other", "alpha"), "cat": ("tensors", "dim"),
    "flatten": ("input", "start_dim", "end_dim"),
}


def _modules(nn: Any) -> dict[str, Callable[[dict], Any]]:
    """Functional form -> the torch.nn module computing it, from its arguments."""
    def pool(cls: Any, keys: Sequence[str]) -> Callable[[dict], Any]:
        def make(a: dict) -> Any:
            kw = {k: a[k] for k in keys if k in a and a[k] is not None}
            return cls(**kw)
        return make

    return {
        "relu": lambda a: nn.ReLU(), "relu6": lambda a: nn.ReLU6(),
        "hardtanh": lambda a: (nn.ReLU6() if (a.get("min_val", -1.0), a.get("max_val", 1.0))
                               == (0.0, 6.0) else nn.Hardtanh(a.get("min_val", -1.0),
                                                              a.get("max_val", 1.0))),
        "leaky_relu": lambda a: nn.LeakyReLU(a.get("negative_slope", 0.01)),
        "sigmoid": lambda a: nn.Sigmoid(), "tanh": lambda a: nn.Tanh(),
        "adaptive_avg_pool2d": lambda a: nn.AdaptiveAvgPool2d(a["output_size"]),
        "max_pool2d": pool(nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation",
                                          "ceil_mode", "return_indices")),
        "avg_pool2d": pool(nn.AvgPool2d, ("kernel_size", "stride", "padding", "ceil_mode",
                                          "count_include_pad", "divisor_override")),
        "dropout": lambda a: nn.Dropout(a.get("p", 0.5)),
    }


#: call_function names (torch.*, torch.nn.functional.*, operator.*) and call_method names read.
FUNCTIONS = ("add", "iadd", "cat", "concat", "flatten", "relu", "relu6", "hardtanh", "leaky_relu",
             "sigmoid", "tanh", "adaptive_avg_pool2d", "max_pool2d", "avg_pool2d", "dropout",
             "softmax (a final one, with final_softmax='drop')")
METHODS = ("add", "add_", "flatten", "view", "reshape", "relu", "relu_", "sigmoid", "tanh",
           "contiguous", "softmax (final)")
_VIEWS = ("flatten", "view", "reshape")


_ALIASES = {"_max_pool2d": "max_pool2d", "concat": "cat", "concatenate": "cat", "iadd": "add",
            "add_": "add", "relu_": "relu"}


def _name(target: Any) -> str:
    """A call's function or method name, spellings of one operation made one."""
    name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    return _ALIASES.get(name, name)


class _Batch:
    """The batch size, unknown while tracing: what ``x.size(0)`` stands for."""

    def __repr__(self) -> str:
        return "N"


BATCH = _Batch()


class _Tracer:
    def __init__(self, module: Any, input_shape: tuple[int, ...], kit: Any,
                 final_softmax: str) -> None:
        import torch  # noqa: PLC0415 - optional; the converter checked it is there
        import torch.fx  # noqa: PLC0415

        self.torch, self.kit, self.final_softmax = torch, kit, final_softmax
        try:
            self.gm = torch.fx.symbolic_trace(module)
        except Exception as e:  # noqa: BLE001 - fx raises many kinds: one line naming it
            raise UnsupportedLayer(f"from_torch: torch.fx cannot trace {type(module).__name__} "
                                   f"({type(e).__name__}: {' '.join(str(e).split())[:300]}); "
                                   "convscope reads modules whose forward has no "
                                   "data-dependent control flow") from None
        self.input_shape = input_shape
        self.nodes: list[Node] = []
        self.shapes: list[tuple[int, ...]] = []  # per-image shape of each graph node
        self.index: dict[str, int] = {}          # fx node name -> graph node (tensors)
        self.sizes: dict[str, Any] = {}          # fx node name -> a size: int, BATCH, tuple
        self.called: dict[str, str] = {}         # module target -> fx node that called it
        self.make = _modules(torch.nn)

    def run(self) -> Graph:
        output = None
        for n in self.gm.graph.nodes:
            where = f"from_torch: node {n.name} ({n.op} {_name(n.target)})"
            if n.op == "placeholder":
                if self.nodes:
                    raise UnsupportedLayer(f"{where}: a second input; convscope models take one")
                self._put(n, Node("from_torch: the input"), self.input_shape)
            elif n.op == "output":
                output = self._tensor(n.args[0], where)
            elif n.op == "get_attr":
                continue  # a parameter read directly: an error where a layer uses it
            else:
                self._node(n, where)
        return Graph(self.nodes, output)

    def _put(self, n: Any, node: Node, shape: tuple[int, ...]) -> None:
        self.nodes.append(node)
        self.shapes.append(tuple(shape))
        self.index[n.name] = len(self.nodes) - 1

    def _tensor(self, arg: Any, where: str) -> int:
        """The graph node computing fx value ``arg`` (a tensor computed from the input)."""
        name = getattr(arg, "name", None)
        if name not in self.index:
            what = (f"{arg.op} {_name(arg.target)}" if hasattr(arg, "op") else repr(arg))
            raise UnsupportedLayer(f"{where}: reads {what}, which is not a tensor computed from "
                                   "the input by supported operations")
        return self.index[name]

    def _is_tensor(self, arg: Any) -> bool:
        return getattr(arg, "name", None) in self.index

    def _size(self, n: Any, name: str) -> bool:
        """x.size(), x.size(d), x.shape, and indexing them: sizes with the batch as BATCH."""
        args = n.args
        if name == "size" and self._is_tensor(args[0]) or \
                name == "getattr" and self._is_tensor(args[0]) and args[1] == "shape":
            full = (BATCH, *self.shapes[self.index[args[0].name]])
            self.sizes[n.name] = full[args[1]] if name == "size" and len(args) > 1 else full
            return True
        if name == "getitem" and getattr(args[0], "name", None) in self.sizes:
            self.sizes[n.name] = self.sizes[args[0].name][args[1]]
            return True
        return False

    def _node(self, n: Any, where: str) -> None:
        if n.op == "call_module":
            return self._module(n, where)
        name = _name(n.target)
        if self._size(n, name):
            return None
        a = dict(zip(_SIG.get(name, ()), n.args))  # a method's self is the function's input
        a.update(n.kwargs)
        tensors = [x for x in n.args if self._is_tensor(x)]
        if name == "add" and len(tensors) == 2 and a.get("alpha", 1) == 1:
            ids = tuple(self._tensor(t, where) for t in tensors)
            if self.shapes[ids[0]] != self.shapes[ids[1]]:
                raise ShapeError(f"{where}: adds {_text(self.shapes[ids[0]])} and "
                                 f"{_text(self.shapes[ids[1]])}; a Residual adds two results of "
                                 "one shape")
            return self._put(n, Node(where, ids, merge="add"), self.shapes[ids[0]])
        if name == "cat":
            return self._cat(n, where, a)
        if name in _VIEWS:
            return self._view(n, where, name)
        if name == "contiguous":
            self.index[n.name] = self._tensor(n.args[0], where)
            return None
        if name == "softmax" and self.final_softmax == "drop" and \
                all(u.op == "output" for u in n.users) and a.get("dim") in (1, -1) and \
                len(self.shapes[self._tensor(a["input"], where)]) == 1:
            self.index[n.name] = self._tensor(a["input"], where)
            return None
        if name == "add":
            raise UnsupportedLayer(f"{where}: adds a constant or {len(tensors)} tensors; convscope "
                                   "adds two computed tensors (a Residual) only")
        if name not in self.make:
            hint = (" (a final softmax: from_torch(..., final_softmax='drop') reads the model "
                    "without it; convscope's losses and predict apply softmax themselves)"
                    if name == "softmax" else "")
            raise UnsupportedLayer(f"{where}: {name} is not supported{hint}; supported "
                                   f"functions: {', '.join(FUNCTIONS)}; methods: "
                                   f"{', '.join(METHODS)}; and modules: {supported('torch')}")
        if len(tensors) != 1 or not self._is_tensor(a.get("input")):
            raise UnsupportedLayer(f"{where}: {name} of {len(tensors)} computed tensors; "
                                   "convscope reads it on one input")
        try:
            module = self.make[name](a)
        except (TypeError, ValueError) as e:
            raise UnsupportedLayer(f"{where}: {e}") from None
        self._layer(n, where, module, a["input"])

    def _cat(self, n: Any, where: str, a: dict) -> None:
        ids = [self._tensor(t, where) for t in a.get("tensors", ())]
        shapes = [self.shapes[i] for i in ids]
        dim = a.get("dim", 0)
        rank = len(shapes[0]) + 1 if shapes else 1
        if not isinstance(dim, int) or dim % rank != 1:
            raise UnsupportedLayer(f"{where}: torch.cat along dim {dim}; convscope's Concat "
                                   "joins the channels (dim 1)")
        if len({s[1:] for s in shapes}) != 1 or len({len(s) for s in shapes}) != 1:
            raise ShapeError(f"{where}: torch.cat of {', '.join(_text(s) for s in shapes)}: the "
                             "branches must agree in every axis but the channels")
        shape = (sum(s[0] for s in shapes), *shapes[0][1:])
        self._put(n, Node(where, tuple(ids), merge="concat"), shape)

    def _view(self, n: Any, where: str, name: str) -> None:
        """torch.flatten(x, 1), x.view(x.size(0), -1), x.reshape(-1, C·H·W), ...: Flatten."""
        x, rest = n.args[0], list(n.args[1:])
        shape = self.shapes[self._tensor(x, where)]
        flat = int(np.prod(shape))
        if name == "flatten":
            a = dict(zip(("start_dim", "end_dim"), rest)) | dict(n.kwargs)
            ok = a.get("start_dim", 0) == 1 and a.get("end_dim", -1) in (-1, len(shape))
            target: Any = f"start_dim={a.get('start_dim', 0)}, end_dim={a.get('end_dim', -1)}"
        else:
            if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
                rest = list(rest[0])
            target = [self.sizes.get(getattr(v, "name", None), v) if hasattr(v, "name") else v
                      for v in rest]
            ok = len(target) == 2 and (target[0] is BATCH and target[1] in (-1, flat)
                                       or target[0] == -1 and target[1] == flat)
        if not ok:
            raise UnsupportedLayer(f"{where}: {name} to {target} on (N, {', '.join(map(str, shape))})"
                                   "; convscope reads flattening to (N, -1) only")
        self._layer(n, where, self.torch.nn.Flatten(), x)

    def _module(self, n: Any, where: str) -> None:
        sub = self.gm.get_submodule(n.target)
        where = f"from_torch: node {n.name} (call_module {n.target}: {type(sub).__name__})"
        if isinstance(sub, self.torch.nn.Identity):
            self.index[n.name] = self._tensor(n.args[0], where)
            return
        if len(n.args) != 1 or n.kwargs:
            raise UnsupportedLayer(f"{where}: called with {len(n.args)} arguments; convscope "
                                   "layers take one tensor")
        if n.target in self.called and any(True for _ in sub.parameters(recurse=False)):
            raise UnsupportedLayer(f"{where}: the module is called twice (also by node "
                                   f"{self.called[n.target]}); convscope layers do not share "
                                   "weights")
        self.called[n.target] = n.name
        self._layer(n, where, sub, n.args[0])

    def _layer(self, n: Any, where: str, module: Any, x: Any) -> None:
        src = self._tensor(x, where)
        try:
            layer = self.kit.layer_for(module)
            shape = layer.output_shape(self.shapes[src])
        except (TypeError, ValueError) as e:  # UnsupportedLayer is a TypeError
            msg = str(e).removeprefix("from_torch: ")
            raise type(e)(f"{where}: {msg}") from None
        self._put(n, Node(where, (src,), item=layer), shape)


def _text(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, (*shape[1:], shape[0]) if len(shape) == 3 else shape))


def trace_graph(module: Any, input_shape: Sequence[int], kit: Any,
                final_softmax: str = "error") -> Graph:
    """The fx graph of ``module`` on per-image ``input_shape`` as a Graph of convscope layers
    (weights copied) and merges; ``kit`` is the converter's TorchKit."""
    return _Tracer(module, tuple(int(s) for s in input_shape), kit, final_softmax).run()
