"""``lower_graph_to_loops``: a ``Graph`` becomes a ``Program`` of loop-IR kernels.

1. ``partition_graph`` groups each op with the elementwise ops fused into it.
2. Each group's anchor op is lowered by the function registered for its class in
   ``LOWERINGS`` (``@lowering(Convolution)`` in ``lowering/ops/*.py``).  It receives the
   ``LoweringContext`` (graph value -> program buffer, target, options) and an ``Epilogue``
   that turns the anchor's output element into the group's final value and stores it.
3. A lowering returns the kernels it needs (usually one), or none for a pure view
   (Reshape binds its output to a view of its input buffer).

Lowerings write loops at the element level and mark the innermost independent loop
``vectorized(w)``; ``vectorize_loops`` turns that into vector code later.  Register-tiled
kernels (conv, matmul) write vector code directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import attrs

from lowering import builder as lb
from lowering.emitters import emit, is_elementwise, operand_shape
from lowering.fusion import Group, partition_graph
from lowering.loop_ir import (
    PARALLEL,
    Broadcast,
    Buffer,
    Expr,
    FloatImm,
    IntImm,
    Kernel,
    Load,
    Ramp,
    Stmt,
    Var,
    contiguous_strides,
    from_dtype,
    vectorized,
)
from lowering.program import Program, Step
from lowering.target import Target
from lowering.traversal import allocated_buffers, buffers_used
from lpjit.errors import LoweringError, UnsupportedOpError
from lpjit.graph import Constant, Graph, Node, Origin, Parameter, Result, Value


@attrs.frozen
class LoweringOptions:
    """Options of ``lower_graph_to_loops``.

    ``target``: the CPU (vector width and instruction choices follow it); ``threads``:
    whether kernels may contain parallel loops (``threads != 1``).
    """

    target: Target = attrs.field(factory=Target.host)
    threads: int = 0


Lowering = Callable[["LoweringContext", Node, "Epilogue"], Sequence[Kernel]]
LOWERINGS: dict[type[Node], Lowering] = {}
# Anchors whose kernels store through the epilogue (so elementwise ops can fuse after them).
EPILOGUE_ANCHORS: set[type[Node]] = set()


def lowering(*classes: type[Node], epilogue: bool = True) -> Callable[[Lowering], Lowering]:
    """Register ``fn(ctx, node, epilogue) -> kernels`` as the lowering of ``classes``.

    ``epilogue=False`` marks lowerings that do not call the epilogue (views, multi-output
    ops): nothing is fused after them.
    """

    def decorate(fn: Lowering) -> Lowering:
        for cls in classes:
            LOWERINGS[cls] = fn
            if epilogue:
                EPILOGUE_ANCHORS.add(cls)
        return fn

    return decorate


def _fusable_anchor(node: Node) -> bool:
    return type(node) in EPILOGUE_ANCHORS or is_elementwise(node)


class LoweringContext:
    """Graph values -> program buffers, while a graph is being lowered."""

    def __init__(self, graph: Graph, options: LoweringOptions) -> None:
        self.graph = graph
        self.options = options
        self.buffers: dict[Value, Buffer] = {}
        self.model_outputs = {r.inputs[0]: i for i, r in enumerate(graph.results)}
        self.inlined: dict[Value, Node] = {}   # values computed where they are loaded
        self.order = {id(n): i for i, n in enumerate(graph.nodes)}
        self._names: dict[str, int] = {}

    @property
    def target(self) -> Target:
        return self.options.target

    @property
    def lanes(self) -> int:
        """f32 lanes of one vector register."""
        return self.target.f32_lanes

    def name(self, base: str) -> str:
        """A program-unique identifier made from ``base`` (a layer name)."""
        clean = "".join(c if c.isalnum() else "_" for c in base).strip("_") or "t"
        if clean[0].isdigit():
            clean = "t" + clean
        count = self._names.get(clean, 0)
        self._names[clean] = count + 1
        return clean if count == 0 else f"{clean}_{count}"

    def buffer(self, value: Value) -> Buffer:
        """The buffer holding ``value`` (constants become constant buffers on first use)."""
        if value not in self.buffers:
            node = value.node
            if not isinstance(node, Constant):
                raise LoweringError(f"value {value!r} is used before it is computed",
                                    node.origin)
            self.buffers[value] = self.constant(node.origin.name, node.data)
        return self.buffers[value]

    def constant(self, name: str, data) -> Buffer:
        """A constant buffer holding ``data`` (weights, scales, packed at compile time), of
        ``data``'s own shape: a 0-d array stays 0-d (``np.ascontiguousarray`` would make it
        ``[1]``, which a scalar ``Result`` or operand then indexes with too few indices)."""
        import numpy as np

        data = np.asarray(data, order="C")
        if data.dtype == np.float64:
            data = data.astype(np.float32)
        return lb.KernelBuilder.constant(self.name(name), data)

    def bind(self, value: Value, buffer: Buffer) -> None:
        self.buffers[value] = buffer

    def new_buffer(self, value: Value, name: str | None = None) -> Buffer:
        """A fresh buffer for ``value``: the caller's output array when ``value`` is a model
        output (and not yet bound), else scratch.  Bound to ``value``."""
        role = "output" if value in self.model_outputs and value not in self.buffers else "scratch"
        t = value.type
        buffer = Buffer(self.name(name or value.node.origin.name), from_dtype(t.dtype), t.shape,
                        contiguous_strides(t.shape), role=role, alignment=64)
        self.buffers[value] = buffer
        return buffer

    def load(self, value: Value, indices: Sequence[Expr], lanes: int = 1,
             shape: Sequence[int] | None = None, b: lb.KernelBuilder | None = None) -> Expr:
        """``value`` at output ``indices`` with numpy broadcasting (size-1 dims read index 0,
        missing leading dims are dropped); scalars are broadcast to ``lanes``.  ``shape``
        reads the value as another shape equal to its own but for size-1 dimensions (a
        PReLU slope ``[C]`` as ``[1, C, 1, 1]``).

        An inlined value (``fusion.partition_graph``: same shape as its consumer's output) is
        computed here from loads of its own inputs; with ``b`` its operands are ``let``-bound."""
        node = self.inlined.get(value)
        if node is not None:
            args = [self.load(v, indices, lanes, operand_shape(node, i), b)
                    for i, v in enumerate(node.inputs)]
            return emit(node, [_bound(b, a) for a in args] if b is not None else args)
        buffer = self.buffer(value)
        # (a buffer bound as a view of other shape, e.g. regrouped rows, is read as it is)
        if shape is not None and tuple(shape) not in (buffer.shape, tuple(value.type.shape)):
            buffer = _unit_dims_view(buffer, tuple(shape))
        rank = len(buffer.shape)
        mine = list(indices)[len(indices) - rank:] if rank else []
        fixed = [IntImm(0) if extent == 1 else index for extent, index in zip(buffer.shape, mine)]
        expr: Expr = Load(buffer, tuple(fixed))
        if expr.type.lanes == 1 and lanes > 1:
            expr = Broadcast(expr, lanes)
        return expr


def _unit_dims_view(buffer: Buffer, shape: tuple[int, ...]) -> Buffer:
    """``buffer`` seen as ``shape``: its non-1 dimensions in order, size-1 ones added or
    dropped."""
    strides = iter([s for n, s in zip(buffer.shape, buffer.strides) if n != 1])
    return buffer.view(f"{buffer.name}_as", shape, [next(strides) if n != 1 else 1 for n in shape])


@attrs.frozen(eq=False)
class Epilogue:
    """The fused elementwise chain after an anchor, and the buffer the group stores into."""

    ctx: LoweringContext
    group: Group
    output: Buffer

    def apply(self, b: lb.KernelBuilder, value: Expr, indices: Sequence[Expr]) -> Expr:
        """The group's final value, given the anchor's output ``value`` at ``indices``; each
        intermediate is bound with ``let`` so that emitters may use it more than once."""
        lanes = value.type.lanes
        for node, port in zip(self.group.chain, self.group.ports):
            value = _bound(b, value)
            args = [value if i == port else
                    self.ctx.load(v, indices, lanes, operand_shape(node, i), b)
                    for i, v in enumerate(node.inputs)]
            value = emit(node, args)
        return value

    def store(self, b: lb.KernelBuilder, indices: Sequence[Expr], value: Expr) -> Stmt:
        """Store the group's value for anchor ``value`` at ``indices`` (vector when the last
        index is a ``Ramp``)."""
        return b.store(self.output, tuple(indices), self.apply(b, value, indices))

    @property
    def is_identity(self) -> bool:
        return not self.group.chain


def _bound(b: lb.KernelBuilder, value: Expr) -> Expr:
    """``value`` itself when it is a leaf, else a ``let``-bound variable holding it."""
    if isinstance(value, (Load, IntImm, Var, FloatImm)) or (
            isinstance(value, Broadcast) and isinstance(value.value, (Load, IntImm, FloatImm))):
        return value
    return b.let(value, "v")


def lower_graph_to_loops(graph: Graph, options: LoweringOptions | None = None) -> Program:
    """The whole graph as a ``Program`` (see the module docstring)."""
    import lowering.ops  # noqa: F401  (registers the lowerings)

    options = options or LoweringOptions()
    ctx = LoweringContext(graph, options)
    inputs = []
    for p in graph.parameters:
        t = p.output.type
        buffer = Buffer(ctx.name(p.origin.name), from_dtype(t.dtype), t.shape, role="input",
                        alignment=0)
        ctx.bind(p.output, buffer)
        inputs.append(buffer)
    steps: list[Step] = []
    groups = partition_graph(graph, is_elementwise, _fusable_anchor)
    ctx.inlined.update((node.outputs[0], node) for group in groups for node in group.inlined)
    for group in groups:
        steps.extend(_lower_group(ctx, group))
    outputs, copies = _bind_outputs(ctx, graph)
    steps.extend(copies)
    return Program(graph.name, inputs, outputs, steps)


def _lower_group(ctx: LoweringContext, group: Group) -> list[Step]:
    anchor = group.anchor
    fn = LOWERINGS.get(type(anchor))
    if fn is None and is_elementwise(anchor):
        fn = lower_elementwise
    if fn is None:
        raise UnsupportedOpError(f"{anchor.kind} cannot be compiled yet (no lowering)",
                                 anchor.origin)
    output = None
    if type(anchor) in EPILOGUE_ANCHORS or fn is lower_elementwise:
        output = ctx.new_buffer(group.output)
    epilogue = Epilogue(ctx, group, output)  # type: ignore[arg-type]
    nodes = sorted(group.layers, key=lambda n: ctx.order[id(n)])   # in graph order
    if fn is lower_elementwise:   # named after its first op, inlined or not
        kernels = lower_elementwise(ctx, anchor, epilogue, named=nodes[0])
    else:
        kernels = fn(ctx, anchor, epilogue)
    return [Step(k, tuple(n.origin for n in nodes), anchor.origin) for k in kernels]


def make_kernel(b: lb.KernelBuilder, optimization: str = "full") -> Kernel:
    """Finish a kernel whose body uses program buffers directly: its parameters become the
    root of every buffer it touches except constants, which kernels embed, in first-use order.
    ``optimization``: how much LLVM optimises it (``Kernel.optimization``).

    A view is passed as its root (both executors address a view through its root's memory,
    ``root_offset`` included), so two views of one root never become two aliasing parameters.
    """
    from lowering.verifier import verify_kernel

    kernel = b.build(verify=False)
    allocated = {id(a) for a in allocated_buffers(kernel.body)}
    params: list[Buffer] = []
    for buf in buffers_used(kernel.body):
        root = buf.root
        if root.role != "constant" and id(root) not in allocated and all(
                root is not p for p in params):
            params.append(root)
    return verify_kernel(attrs.evolve(kernel, params=tuple(params), optimization=optimization))


def kernel_builder(ctx: LoweringContext, node: Node, suffix: str = "") -> lb.KernelBuilder:
    return lb.KernelBuilder(ctx.name(node.origin.name + suffix), origin=node.origin)


# A stand-alone elementwise kernel this small runs on one thread: waking the team costs more.
PARALLEL_ELEMENTWISE_MIN = 1 << 16


def lower_elementwise(ctx: LoweringContext, node: Node, epilogue: Epilogue,
                      named: Node | None = None) -> list[Kernel]:
    """A stand-alone elementwise op (plus its fused chain): one loop nest over the output,
    the innermost dimension vectorized, the first outer dimension longer than one in parallel
    when the output has at least ``PARALLEL_ELEMENTWISE_MIN`` elements (``threads != 1``).
    The kernel takes its name and origin from ``named`` (default ``node``)."""
    shape = node.output_types[0].shape
    b = kernel_builder(ctx, named or node)
    indices: list[Expr] = []
    parallel = ctx.options.threads != 1 and math.prod(shape) >= PARALLEL_ELEMENTWISE_MIN
    with loop_nest(b, shape, ctx.lanes, indices, parallel=parallel):
        lanes = 1
        args = [_bound(b, ctx.load(v, indices, lanes, operand_shape(node, i), b))
                for i, v in enumerate(node.inputs)]
        epilogue.store(b, indices, emit(node, args))
    return [make_kernel(b)]


class loop_nest:
    """``with loop_nest(b, shape, lanes, indices):`` opens one loop per dimension (the last
    ``vectorized(lanes)`` when it is long enough; with ``parallel``, the first outer one longer
    than one iteration ``PARALLEL``) and fills ``indices``."""

    def __init__(self, b: lb.KernelBuilder, shape: Sequence[int], lanes: int,
                 indices: list[Expr], parallel: bool = False) -> None:
        self.b, self.shape, self.lanes, self.indices = b, tuple(shape), lanes, indices
        self.parallel = parallel
        self._contexts: list = []

    def __enter__(self) -> list[Expr]:
        parallel = self.parallel
        for axis, extent in enumerate(self.shape):
            last = axis == len(self.shape) - 1
            kind = vectorized(self.lanes) if last and extent >= self.lanes else lb.SERIAL
            if parallel and not last and extent > 1:
                kind, parallel = PARALLEL, False
            cm = self.b.for_range(extent, kind=kind, name="ijklmnop"[axis % 8])
            self.indices.append(cm.__enter__())
            self._contexts.append(cm)
        return self.indices

    def __exit__(self, *exc) -> None:
        for cm in reversed(self._contexts):
            cm.__exit__(*exc)


def _bind_outputs(ctx: LoweringContext, graph: Graph) -> tuple[list[Buffer], list[Step]]:
    """The output buffer of every Result; a copy kernel where the value is not a fresh
    output buffer (a Parameter, a constant, a view, or a value returned twice)."""
    outputs: list[Buffer] = []
    copies: list[Step] = []
    claimed: set[int] = set()
    for result in graph.results:
        value = result.inputs[0]
        buffer = ctx.buffer(value)
        if buffer.role == "output" and buffer.base is None and id(buffer) not in claimed:
            claimed.add(id(buffer))
            outputs.append(buffer)
            continue
        t = value.type
        target = Buffer(ctx.name(result.names[0] + "_out"), from_dtype(t.dtype), t.shape,
                        role="output", alignment=0)
        copies.append(Step(_copy_kernel(ctx, result, buffer, target), (result.origin,)))
        outputs.append(target)
    return outputs, copies


def _copy_kernel(ctx: LoweringContext, result: Result, source: Buffer, target: Buffer) -> Kernel:
    b = lb.KernelBuilder(ctx.name(result.origin.name + "_copy"), origin=result.origin)
    indices: list[Expr] = []
    with loop_nest(b, target.shape, ctx.lanes, indices):
        b.store(target, tuple(indices), Load(source, tuple(indices)))
    return make_kernel(b)


__all__ = [
    "LOWERINGS",
    "Epilogue",
    "LoweringContext",
    "LoweringOptions",
    "Origin",
    "Parameter",
    "Ramp",
    "kernel_builder",
    "lower_elementwise",
    "lower_graph_to_loops",
    "lowering",
    "make_kernel",
]
