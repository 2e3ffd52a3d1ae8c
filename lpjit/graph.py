"""The graph IR: typed tensors, identity-compared op nodes, and the ``Graph`` that holds them.

Design (see ``shared/STYLE.md``):

* ``TensorType`` and ``Origin`` are small frozen values with structural equality.
* ``Node`` subclasses are ``@attrs.frozen(eq=False, kw_only=True)``: one class per op kind with
  typed fields.  A node's output types are inferred when it is built (``infer``), so a node
  that exists is well typed; inference errors name the IR layer through ``origin``.
* A ``Value`` is one output of a node: ``(node, index)``.
* A ``Graph`` is its Parameters (inputs, in order) and Results (outputs, in order); its
  ``nodes`` are every node reachable from the Results, in topological order.
* Graphs are immutable.  Passes build new nodes with ``attrs.evolve`` / ``rebuild``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import attrs
import numpy as np

from lpjit import dtypes
from lpjit.dtypes import DType
from lpjit.errors import GraphError, ShapeError

Shape = tuple[int, ...]

# Limits every inferred tensor must respect: numpy's maximum number of dimensions, and a byte
# size whose offsets fit int64 (so no size or index computation downstream can overflow).
MAX_RANK = 64
MAX_TENSOR_BYTES = 2 ** 63 - 1


@attrs.frozen
class TensorType:
    """Element type and static shape of a tensor."""

    dtype: DType
    shape: Shape = attrs.field(converter=tuple)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __repr__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"

    __str__ = __repr__


def check_rank(rank: int, origin: Origin) -> None:
    """A tensor has at most ``MAX_RANK`` dimensions; else ShapeError."""
    if rank > MAX_RANK:
        raise ShapeError(f"a tensor of rank {rank} is not supported; lpjit supports at most "
                         f"{MAX_RANK} dimensions", origin)


def check_tensor_size(t: TensorType, origin: Origin) -> None:
    """A tensor has at most ``MAX_RANK`` dims and ``MAX_TENSOR_BYTES`` bytes; else ShapeError."""
    check_rank(len(t.shape), origin)
    count = 1
    for d in t.shape:
        count *= int(d)
    if count * max(t.dtype.bits, 8) // 8 > MAX_TENSOR_BYTES:
        raise ShapeError(f"a {t.dtype} tensor of shape {list(t.shape)} would take "
                         f"{count * max(t.dtype.bits, 8) // 8} bytes; lpjit supports tensors of "
                         "at most 2^63 - 1 bytes", origin)


@attrs.frozen
class Origin:
    """Where a node came from: the IR layer the user knows (or the pass that made it)."""

    layer_id: str
    name: str
    type: str
    version: str = ""

    def describe(self) -> str:
        """``Convolution 'conv1' (layer 17)``: the form used in every error message."""
        return f"{self.type} '{self.name}' (layer {self.layer_id})"

    def derived(self, suffix: str, type: str | None = None) -> Origin:
        """An origin for a node a pass creates from this layer."""
        return Origin(self.layer_id, f"{self.name}/{suffix}", type or self.type, self.version)


@attrs.frozen
class Value:
    """Output ``index`` of ``node``."""

    node: Node
    index: int = 0

    @property
    def type(self) -> TensorType:
        return self.node.output_types[self.index]

    @property
    def shape(self) -> Shape:
        return self.type.shape

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def names(self) -> tuple[str, ...]:
        """Tensor names of this output (from the IR port's ``names``)."""
        names = self.node.tensor_names
        return names[self.index] if self.index < len(names) else ()

    def __repr__(self) -> str:
        suffix = f":{self.index}" if len(self.node.output_types) > 1 else ""
        return f"%{self.node.origin.name}{suffix}"


def opclass(cls: type) -> type:
    """Decorator for node classes: frozen, identity equality, keyword-only, ``Node.__repr__``."""
    return attrs.frozen(cls, eq=False, kw_only=True, repr=False)


def _tuple_of_tuples(x: Sequence[Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(names) for names in x)


@opclass
class Node:
    """Base class of every graph op.

    Subclasses declare typed fields, ``arity`` (min, max number of inputs; max ``None`` =
    variadic) and implement ``infer``.  ``from_ir`` turns the layer's ``<data>`` attributes
    into those fields (see ``lpjit.attributes.Attributes``).
    """

    origin: Origin
    inputs: tuple[Value, ...] = attrs.field(converter=tuple)
    tensor_names: tuple[tuple[str, ...], ...] = attrs.field(default=(), converter=_tuple_of_tuples)
    output_types: tuple[TensorType, ...] = attrs.field(init=False, repr=False)

    arity: ClassVar[tuple[int, int | None]] = (0, 0)

    def __attrs_post_init__(self) -> None:
        low, high = self.arity
        n = len(self.inputs)
        if n < low or (high is not None and n > high):
            expected = f"{low}" if low == high else f"{low}..{'' if high is None else high}"
            raise GraphError(f"has {n} inputs; expected {expected}", self.origin)
        types = tuple(self.infer())
        for t in types:
            check_tensor_size(t, self.origin)
        object.__setattr__(self, "output_types", types)

    # --- to be provided by subclasses -------------------------------------------------
    @classmethod
    def from_ir(cls, attributes: Any) -> dict[str, Any]:
        """Typed field values from the layer's ``<data>`` attributes (default: none)."""
        return {}

    def to_ir(self) -> dict[str, str]:
        """The ``<data>`` attributes the IR writer emits: the inverse of ``from_ir``."""
        return {}

    def infer(self) -> Sequence[TensorType]:
        """Output types from input types and attributes; raise ``ShapeError`` when invalid."""
        raise NotImplementedError(type(self).__name__)

    # --- helpers ------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return type(self).__name__

    @property
    def output(self) -> Value:
        """The single output of a one-output node."""
        assert len(self.output_types) == 1, f"{self.kind} has {len(self.output_types)} outputs"
        return Value(self, 0)

    @property
    def outputs(self) -> tuple[Value, ...]:
        return tuple(Value(self, i) for i in range(len(self.output_types)))

    def input_type(self, i: int) -> TensorType:
        return self.inputs[i].type

    def error(self, message: str, cls: type[Exception] = ShapeError) -> Exception:
        """An exception of ``cls`` that names this node's layer."""
        return cls(message, self.origin)  # type: ignore[call-arg]

    def attributes(self) -> dict[str, Any]:
        """The op-specific fields (everything but origin/inputs/names/types)."""
        skip = {"origin", "inputs", "tensor_names", "output_types"}
        return {f.name: getattr(self, f.name) for f in attrs.fields(type(self))
                if f.name not in skip}

    def __repr__(self) -> str:
        args = ", ".join(repr(v) for v in self.inputs)
        fields = ", ".join(f"{k}={v!r}" for k, v in self.attributes().items()
                           if not isinstance(v, np.ndarray))
        outs = ", ".join(map(str, self.output_types))
        return f"{self.kind}({args}{'; ' if fields and args else ''}{fields}) -> {outs}"


# ------------------------------------------------------------------------------------------
# Core ops that the graph itself needs to know about.


@opclass
class Parameter(Node):
    """A model input with a static shape."""

    element_type: DType
    shape: Shape = attrs.field(converter=tuple)

    def infer(self) -> Sequence[TensorType]:
        if any(d < 0 for d in self.shape):
            raise ShapeError(f"shape {self.shape} has a dynamic dimension", self.origin)
        return [TensorType(self.element_type, self.shape)]


@opclass
class Result(Node):
    """A model output; it has no outputs of its own."""

    arity: ClassVar = (1, 1)

    def infer(self) -> Sequence[TensorType]:
        return []

    @property
    def names(self) -> tuple[str, ...]:
        """Output tensor names: the Result's own (IR v11 ``output_names``), else the producer
        port's names, else the Result layer's name."""
        if self.tensor_names and self.tensor_names[0]:
            return self.tensor_names[0]
        return self.inputs[0].names or (self.origin.name,)


def _readonly(array: np.ndarray) -> np.ndarray:
    if array.flags.writeable:
        array = array.view()
        array.flags.writeable = False
    return array


@opclass
class Constant(Node):
    """A constant tensor.  ``data`` is read-only (often a view into the memory-mapped .bin).

    ``element_type`` is the IR type; ``data`` holds it decoded: sub-byte types one element per
    byte (i4 as int8, u4/u1 as uint8), bf16 as float32.
    """

    element_type: DType
    data: np.ndarray = attrs.field(converter=_readonly)

    def infer(self) -> Sequence[TensorType]:
        return [TensorType(self.element_type, self.data.shape)]

    @property
    def shape(self) -> Shape:
        return tuple(self.data.shape)

    @classmethod
    def of(cls, array: Any, origin: Origin, element_type: DType | None = None) -> Constant:
        """A constant from a numpy array (or scalar); dtype inferred when not given."""
        array = np.asarray(array)
        element_type = element_type or dtypes.from_numpy(array.dtype)
        return cls(origin=origin, inputs=(), element_type=element_type,
                   data=np.ascontiguousarray(array, dtype=element_type.numpy).reshape(array.shape))


def constant_value(value: Value) -> np.ndarray | None:
    """The data of ``value`` if it is produced by a ``Constant``, else ``None``."""
    node = value.node
    return node.data if isinstance(node, Constant) else None


# ------------------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class Graph:
    """A model: its inputs (Parameters, in order) and outputs (Results, in order)."""

    name: str
    parameters: tuple[Parameter, ...] = attrs.field(converter=tuple)
    results: tuple[Result, ...] = attrs.field(converter=tuple)

    @functools.cached_property
    def nodes(self) -> tuple[Node, ...]:
        """Parameters first, then every node reachable from a Result, in topological order."""
        return topological_order(self.parameters, self.results)

    @functools.cached_property
    def consumers(self) -> dict[Value, list[tuple[Node, int]]]:
        """For every value, the (node, input index) pairs that read it."""
        users: dict[Value, list[tuple[Node, int]]] = {}
        for node in self.nodes:
            for i, value in enumerate(node.inputs):
                users.setdefault(value, []).append((node, i))
        return users

    def parameter(self, name: str) -> Parameter:
        """The Parameter with tensor name or layer name ``name``."""
        for p in self.parameters:
            if name == p.origin.name or name in p.output.names:
                return p
        known = ", ".join(p.origin.name for p in self.parameters)
        raise KeyError(f"no input named '{name}'; inputs are: {known}")

    def __repr__(self) -> str:
        ins = ", ".join(f"{p.origin.name}: {p.output.type}" for p in self.parameters)
        outs = ", ".join(f"{r.names[0]}: {r.inputs[0].type}" for r in self.results)
        return f"<Graph '{self.name}' ({ins}) -> ({outs}), {len(self.nodes)} nodes>"


def topological_order(parameters: Sequence[Node], results: Sequence[Node]) -> tuple[Node, ...]:
    """Post-order DFS from ``results`` (iterative; raises ``GraphError`` on a cycle)."""
    order: list[Node] = list(parameters)
    done: set[int] = {id(p) for p in parameters}
    active: set[int] = set()
    for root in results:
        stack: list[tuple[Node, Iterator[Value]]] = [(root, iter(root.inputs))]
        if id(root) in done:
            continue
        active.add(id(root))
        while stack:
            node, pending = stack[-1]
            child = next(pending, None)
            if child is None:
                stack.pop()
                active.discard(id(node))
                if id(node) not in done:
                    done.add(id(node))
                    order.append(node)
                continue
            producer = child.node
            if id(producer) in done:
                continue
            if id(producer) in active:
                raise GraphError("is part of a cycle", producer.origin)
            active.add(id(producer))
            stack.append((producer, iter(producer.inputs)))
    return tuple(order)


Rewrite = Callable[[Node], "Node | Value | None"]


def rebuild(graph: Graph, rewrite: Rewrite) -> Graph:
    """Rebuild ``graph`` bottom-up, applying ``rewrite`` to every node.

    Each node first gets its inputs remapped to the rebuilt producers; ``rewrite`` then sees
    that node and returns a replacement node, a ``Value`` that replaces its single output, or
    ``None`` to keep it.  Returns ``graph`` itself when nothing changed.
    """
    mapping: dict[Value, Value] = {}
    changed = False
    new_parameters: list[Parameter] = []
    new_results: list[Result] = []
    for node in graph.nodes:
        inputs = tuple(mapping.get(v, v) for v in node.inputs)
        current = node if inputs == node.inputs else attrs.evolve(node, inputs=inputs)
        replacement = rewrite(current)
        if isinstance(replacement, Value):
            assert len(node.output_types) == 1
            mapping[node.output] = replacement
        else:
            current = replacement if replacement is not None else current
            for i in range(len(node.output_types)):
                mapping[Value(node, i)] = Value(current, i)
        changed |= current is not node or isinstance(replacement, Value)
        if isinstance(node, Parameter):
            assert isinstance(current, Parameter), "a Parameter can only become a Parameter"
            new_parameters.append(current)
        elif isinstance(node, Result):
            assert isinstance(current, Result), "a Result can only become a Result"
            new_results.append(current)
    if not changed:
        return graph
    # Results keep their model order (topological order may differ).
    position = {id(r): i for i, r in enumerate(graph.results)}
    results_by_old = dict(zip([n for n in graph.nodes if isinstance(n, Result)], new_results))
    ordered = [results_by_old[r] for r in sorted(results_by_old, key=lambda r: position[id(r)])]
    return Graph(graph.name, new_parameters, ordered)
