"""A DAG of operations back into blocks: nested Sequential, Residual and Concat.

Both graph readers (ONNX, ``formats/onnx/read.py``; torch.fx, ``formats/torch/fx.py``) reduce a
network to a :class:`Graph`: node 0 is the input, every other node reads earlier nodes and is
either a layer (one input) or a merge ("add": two inputs, "concat": k inputs along the
channels).  :func:`decompose` recovers the structure, pure bookkeeping on plain data:

- a node read by one path continues the chain;
- at a fork (a node read by several paths) the branches meet again at its *immediate
  post-dominator* m, the first node every path from the fork passes through;  m must be a merge
  whose inputs all start from the fork.  The path to each input of m is a chain again (recurse);
  an input that *is* the fork is the empty path.  Add of one empty and one non-empty path is
  ``Residual(block)``, of two non-empty paths ``Residual(block, shortcut)`` (block: Add's first
  input); Concat of k paths is ``Concat(*branches)``.

A graph that is not built this way (a path read from inside another block, a merge of paths from
different forks, two branches sharing a node) is one :class:`ValueError` naming the node: never
a wrong model.  :func:`assemble` turns the structure into convscope layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..layers.base import Layer
from ..layers.registry import lookup

__all__ = ["Node", "Graph", "Merge", "decompose", "assemble", "PATTERNS"]

#: What the structure recovery understands, for error messages.
PATTERNS = ("chains of layers; Add of two paths from one fork (Residual: y = block(x) + "
            "shortcut(x), one path may be empty); Concat of paths from one fork along the "
            "channels (Concat)")


@dataclass
class Node:
    """One operation: ``inputs`` are indices of earlier nodes; ``item`` the layer it becomes
    (None for the input and for merges); ``merge`` '', 'add' or 'concat'; ``where`` names it in
    errors ('import_onnx: node 12 (/layer1/Add, Add)')."""

    where: str
    inputs: tuple[int, ...] = ()
    item: Any = None
    merge: str = ""


@dataclass
class Merge:
    """A merge in the recovered structure: ``kind`` 'add' or 'concat', one chain per input of
    the merge node (a list of items, [] for the empty path), in the node's input order."""

    kind: str
    branches: list[list[Any]]
    node: Node = field(repr=False)


class Graph:
    """Nodes in topological order (node 0: the input) and the index of the output node.

    Nodes that do not lead to the output are dead and left out.
    """

    def __init__(self, nodes: Sequence[Node], output: int) -> None:
        self.nodes = list(nodes)
        self.output = int(output)
        for i, n in enumerate(self.nodes):
            bad = [j for j in n.inputs if not 0 <= j < i]
            if bad:
                raise ValueError(f"{n.where}: reads node {bad[0]}, which does not come before it "
                                 "(the graph must be in topological order)")
        live = self._reach(self.output, back=True)
        self.succ: list[list[int]] = [[] for _ in self.nodes]  # one entry per edge (slot)
        for i in sorted(live):
            for j in self.nodes[i].inputs:
                self.succ[j].append(i)
        if 0 not in live:
            raise ValueError(f"{self.nodes[self.output].where}: the output does not depend on "
                             "the input")

    def _reach(self, start: int, back: bool, within: set[int] | None = None) -> set[int]:
        """Nodes reachable from ``start`` (``back``: nodes it is reachable from), itself included."""
        seen, todo = {start}, [start]
        while todo:
            n = todo.pop()
            for m in (self.nodes[n].inputs if back else self.succ[n]):
                if m not in seen and (within is None or m in within):
                    seen.add(m)
                    todo.append(m)
        return seen

    def region(self, src: int, dst: int) -> set[int]:
        """The nodes after ``src`` on paths from ``src`` to ``dst`` (``dst`` included)."""
        ahead = {n for n in self._reach(src, back=False) if n <= dst}
        return (self._reach(dst, back=True) & ahead) - {src}

    def ipdom(self, node: int, region: set[int], dst: int) -> int:
        """The immediate post-dominator of ``node`` within ``region`` (paths end at ``dst``)."""
        pdom: dict[int, set[int]] = {dst: {dst}}
        for n in sorted(region | {node}, reverse=True):
            if n == dst:
                continue
            succ = [s for s in self.succ[n] if s in region]
            common = set.intersection(*(pdom[s] for s in succ))
            pdom[n] = common | {n}
        return min(pdom[node] - {node})


def decompose(graph: Graph) -> list[Any]:
    """The graph as one chain: a list whose items are the nodes' ``item``s and :class:`Merge`s."""
    return _chain(graph, 0, graph.output, graph.region(0, graph.output))


def _chain(g: Graph, src: int, dst: int, region: set[int]) -> list[Any]:
    items: list[Any] = []
    cur = src
    while cur != dst:
        inside = [c for c in g.succ[cur] if c in region]
        if cur != src:  # inside a chain a result is read by that chain only
            outside = [c for c in g.succ[cur] if c not in region]
            if outside:
                raise _pattern(g.nodes[outside[0]], f"it reads the result of "
                               f"{_short(g.nodes[cur])} from inside another block")
        if len(inside) == 1:
            node = g.nodes[inside[0]]
            if node.merge:
                others = [_short(g.nodes[i]) for i in node.inputs if i != cur]
                raise _pattern(node, f"it merges paths that do not start from one fork (it "
                               f"also reads {', '.join(others)})")
            items.append(node.item)
            cur = inside[0]
            continue
        m = g.ipdom(cur, region, dst)
        node = g.nodes[m]
        if not node.merge:  # pragma: no cover - a one-input node never post-dominates a fork
            raise _pattern(node, "the paths from a fork meet in a node that is not a merge")
        between = g.region(cur, m)
        strays = [i for i in node.inputs if i != cur and i not in between]
        if strays:
            raise _pattern(node, f"it merges {_short(g.nodes[strays[0]])}, which does not start "
                           f"from the fork at {_short(g.nodes[cur])}")
        branches, seen = [], set()
        for i in node.inputs:
            if i == cur:
                branches.append([])
                continue
            sub = g.region(cur, i)
            if sub & seen:
                raise _pattern(node, f"two of its paths share {_short(g.nodes[min(sub & seen)])}")
            seen |= sub
            branches.append(_chain(g, cur, i, sub))
        items.append(Merge(node.merge, branches, node))
        cur = m
    return items


def _short(node: Node) -> str:
    """'node 12 (/layer1/Add, Add)' from 'import_onnx: node 12 (/layer1/Add, Add)'."""
    return node.where.split(": ", 1)[-1]


def _pattern(node: Node, why: str) -> ValueError:
    return ValueError(f"{node.where}: {why}; convscope reads {PATTERNS}")


# ---------------------------------------------------------------------------------------------
# the structure as convscope layers


def assemble(items: Sequence[Any], input_shape: Sequence[int] | None = None) -> Layer:
    """A Sequential of the chain (:func:`decompose`), each branch a Sequential; Add is
    ``Residual(block, shortcut)``, Concat ``Concat(*branches)``."""
    seq = lookup("sequential").cls
    layers = [_layer(item) for item in items]
    return seq(*layers) if input_shape is None else seq(*layers, input_shape=tuple(input_shape))


def _path(items: list[Any]) -> Layer:
    """A branch: always a Sequential (Residual and Concat keep every branch as one, so the
    state-dict keys are 'block.0.weight' whether it holds one layer or several)."""
    return lookup("sequential").cls(*[_layer(item) for item in items])


def _layer(item: Any) -> Layer:
    if not isinstance(item, Merge):
        return item
    branches = item.branches
    if item.kind == "add":
        if len(branches) != 2 or not any(branches):
            raise _pattern(item.node, f"Add of {len(branches)} paths, "
                           f"{sum(not b for b in branches)} of them empty; a Residual adds one "
                           "block to its shortcut")
        block, shortcut = (branches[1], branches[0]) if not branches[0] else branches
        return lookup("residual").cls(_path(block), _path(shortcut) if shortcut else None)
    if item.kind == "concat":  # an empty path is the identity branch: concat(x, f(x))
        return lookup("concat").cls(*[_path(b) for b in branches])
    raise ValueError(f"{item.node.where}: unknown merge {item.kind!r}")  # pragma: no cover
