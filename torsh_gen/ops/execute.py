"""Reference execution of a Graph with the ops' numpy kernels.

This is the interpreter behind ``torsh-gen run``, the ONNX backend API, constant folding
and the test oracle. Values live in an environment keyed by Value identity; nested graphs
see their parents' values through a chain of environments, as ONNX outer-scope reads do.
Each value is dropped after its last reader so that peak memory follows the live set.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from torsh_gen.errors import ExecutionError, InputError, TorshGenError
from torsh_gen.ir.graph import Graph, Node, Value, outer_reads
from torsh_gen.ir.types import TensorType
from torsh_gen.ops.registry import Attrs, OpSpec, RunContext, lookup


class _Env:
    """Values of one graph invocation, falling back to the enclosing invocation's."""

    __slots__ = ("local", "parent")

    def __init__(self, parent: _Env | None = None) -> None:
        self.local: dict[int, Any] = {}
        self.parent = parent

    def get(self, v: Value) -> Any:
        env: _Env | None = self
        key = id(v)
        while env is not None:
            if key in env.local:
                return env.local[key]
            env = env.parent
        raise KeyError(v.name)


class Executor:
    """Runs graphs; holds the opsets of the model and a seeded RNG for random ops."""

    def __init__(self, opsets: Mapping[str, int] | None = None, seed: int = 0) -> None:
        self.opsets = dict(opsets or {"": 0})
        self.rng = np.random.default_rng(seed)

    def run(self, graph: Graph, feeds: Mapping[str, Any]) -> list[Any]:
        """Run a top-level graph on inputs named by graph-input names; outputs in order."""
        env = _Env()
        for v in graph.inputs:
            if v.name in feeds:
                env.local[id(v)] = feeds[v.name]
            elif v.const is not None:  # an input with a default (initializer of the same name)
                env.local[id(v)] = v.const
            else:
                raise InputError(f"missing input '{v.name}'; the model's inputs are {[i.name for i in graph.inputs]}")
        return self._run(graph, env)

    def run_subgraph(self, graph: Graph, args: Sequence[Any], parent: _Env) -> list[Any]:
        """Run a nested graph with positional ``args`` bound to its inputs."""
        env = _Env(parent)
        for v, a in zip(graph.inputs, args):
            env.local[id(v)] = a
        return self._run(graph, env)

    # ------------------------------------------------------------------ internals
    def _run(self, graph: Graph, env: _Env) -> list[Any]:
        for v in graph.initializers:
            env.local.setdefault(id(v), v.const)
        last_use = _last_uses(graph)
        keep = {id(v) for v in graph.outputs}
        for index, node in enumerate(graph.nodes):
            self._run_node(node, env)
            for v in last_use.get(index, ()):
                if id(v) not in keep:
                    env.local.pop(id(v), None)
        try:
            return [env.get(v) for v in graph.outputs]
        except KeyError as e:
            raise ExecutionError(f"graph output '{e.args[0]}' of graph '{graph.name}' was never computed") from None

    def _run_node(self, node: Node, env: _Env) -> None:
        spec = lookup(node.op_type, node.domain, self.opsets.get(node.domain, self.opsets.get("", 0)))
        try:
            args = [None if v is None else env.get(v) for v in node.inputs]
        except KeyError as e:
            raise ExecutionError(f"node '{_label(node)}' reads '{e.args[0]}', which is not defined") from None
        _check_output_sizes(node)
        ctx = RunContext(
            node=node,
            attrs=spec.resolve_attrs(node),
            opset=self.opsets.get(node.domain, 0),
            n_outputs=len(node.outputs),
            run_graph=lambda g, a: self.run_subgraph(g, a, env),
            rng=self.rng,
        )
        try:
            result = spec.run(ctx, *args)
        except TorshGenError:
            raise
        except Exception as e:  # a kernel failing on its inputs: name the node
            raise ExecutionError(f"node '{_label(node)}' failed: {type(e).__name__}: {e}") from e
        # Convention: a tuple is several outputs; anything else (a list = a sequence) is one.
        outs = list(result) if isinstance(result, tuple) else [result]
        for i, v in enumerate(node.outputs):
            if not v.name:
                continue
            if i >= len(outs):
                raise ExecutionError(f"node '{_label(node)}' produced {len(outs)} outputs, {len(node.outputs)} expected")
            out = outs[i]
            if isinstance(out, np.generic):
                out = np.asarray(out)
            env.local[id(v)] = out


#: Largest tensor a node may produce (bytes); guards against crafted shapes. Env-configurable.
MAX_TENSOR_BYTES = int(os.environ.get("TORSH_GEN_MAX_TENSOR_BYTES", 16 << 30))


def _check_output_sizes(node: Node) -> None:
    """Refuse to run a node whose inferred static output would exceed MAX_TENSOR_BYTES."""
    for v in node.outputs:
        t = v.type
        nbytes = t.nbytes() if isinstance(t, TensorType) else None
        if nbytes is not None and nbytes > MAX_TENSOR_BYTES:
            raise ExecutionError(
                f"node '{_label(node)}' would produce '{v.name}' of shape {list(t.shape)} "
                f"({nbytes} bytes), over the {MAX_TENSOR_BYTES}-byte limit; check the model's "
                "shapes or raise TORSH_GEN_MAX_TENSOR_BYTES"
            )


def _label(node: Node) -> str:
    return f"{node.name} ({node.op_type})" if node.name else node.op_type


def _last_uses(graph: Graph) -> dict[int, list[Value]]:
    """Node index → values of this graph whose last reader is that node."""
    last: dict[int, tuple[int, Value]] = {}
    for idx, node in enumerate(graph.nodes):
        reads = [v for v in node.inputs if v is not None]
        for sg in node.subgraphs():
            reads.extend(outer_reads(sg))
        for v in reads:
            last[id(v)] = (idx, v)
    by_node: dict[int, list[Value]] = {}
    for idx, v in last.values():
        by_node.setdefault(idx, []).append(v)
    return by_node


def evaluate_node(spec: OpSpec, node: Node, attrs: Attrs, opset: int, args: Sequence[Any]) -> list[Any] | None:
    """One node's kernel on compile-time values (constant folding and value propagation).

    Numpy scalars come back as 0-d arrays. None when the kernel fails: the error is left to
    run time, where it names the node.
    """
    ctx = RunContext(node, attrs, opset, len(node.outputs), lambda g, a: [], np.random.default_rng(0))
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            result = spec.run(ctx, *args)
    except Exception:
        return None
    outs = list(result) if isinstance(result, tuple) else [result]
    return [np.asarray(o) if isinstance(o, np.generic) else o for o in outs]


def run_graph(graph: Graph, feeds: Mapping[str, Any], seed: int = 0) -> list[Any]:
    """Run ``graph`` with the reference kernels and return its outputs in order."""
    opsets = graph.info.opset_imports if graph.info else {"": 0}
    return Executor(opsets, seed).run(graph, feeds)
