"""``partition_graph``: group each op with the elementwise ops that can run in its loop nest.

Rule: an elementwise op (one that has an expression emitter, see ``lowering.emitters``) joins
the group of the producer of one of its inputs when

1. that producer's output has exactly one consumer and is not a model output,
2. the elementwise op's output has the same shape as that input (no broadcasting *up*), and
3. the producer's group ends with that producer and its kernel writes through an epilogue
   (``fusable_anchor``; views and multi-output ops do not).

The group's kernel then computes the whole chain before one store: conv + bias + ReLU +
FakeQuantize becomes one loop nest.  Constants, Parameters and Results form no group.

An elementwise op that joins no group is *inlined* instead of stored when its output has one
consumer, that consumer is elementwise with an output of the same shape, and the output is not
a model output: the consumer's kernel recomputes it where it would have loaded it (each element
is still computed once).  So the residual branch of ``conv -> Add(., Dequantize(q)) -> ReLU ->
Quantize`` reads the u8 ``q`` inside the conv's epilogue instead of a stored f32 tensor.

A stand-alone ``Quantize`` is also inlined into the integer convolution that is its only
consumer (``quantizes_conv_input``) when that convolution's kernel reads each input element
about once: its blocked copy (``lowering.ops.lowp_conv``) computes the level index from the
f32 input instead of copying a stored u8 tensor, so one kernel and the u8 round trip go away.
Depthwise convolutions (which read the input once per tap) and pointwise ones (whose image
is regrouped through views of a stored input) keep the stored tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from lpjit.graph import Constant, Graph, Node, Parameter, Result, Value
from lpjit.ops.lowp import QConvolution, Quantize


@attrs.frozen(eq=False)
class Group:
    """``anchor`` followed by ``chain``; ``ports[k]`` is the input of ``chain[k]`` fed by the
    previous node's output."""

    anchor: Node
    chain: tuple[Node, ...] = ()
    ports: tuple[int, ...] = ()
    inlined: tuple[Node, ...] = ()

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.anchor, *self.chain)

    @property
    def layers(self) -> tuple[Node, ...]:
        """Every node the group's kernel computes: its nodes and the ones inlined into it."""
        return (*self.nodes, *self.inlined)

    @property
    def output(self) -> Value:
        """The value the group stores (its last node's output)."""
        return self.nodes[-1].outputs[0]


def partition_graph(graph: Graph, is_elementwise: Callable[[Node], bool],
                    fusable_anchor: Callable[[Node], bool]) -> tuple[Group, ...]:
    """Groups in topological order (see the module docstring for the rule)."""
    model_outputs = {r.inputs[0] for r in graph.results}
    groups: list[Group] = []
    group_of: dict[int, int] = {}          # id(node) -> index into groups
    pending: dict[int, tuple[Node, ...]] = {}  # id(consumer) -> the nodes inlined into it
    ready: dict[int, int] = {}             # id(inlined node) -> the last group it reads
    for node in graph.nodes:
        if isinstance(node, (Constant, Parameter, Result)):
            continue
        inlined = pending.pop(id(node), ())
        target = _fusion_target(graph, node, model_outputs, is_elementwise, group_of, groups,
                                fusable_anchor, ready)
        if target is None and _inlinable(graph, node, model_outputs, is_elementwise):
            consumer = graph.consumers[node.outputs[0]][0][0]
            pending[id(consumer)] = (*pending.get(id(consumer), ()), *inlined, node)
            # computable once its inputs are: only a group after theirs may inline it
            ready[id(node)] = max((ready.get(id(v.node), group_of.get(id(v.node), -1))
                                   for v in node.inputs), default=-1)
            continue
        if target is None:
            group_of[id(node)] = len(groups)
            groups.append(Group(node, inlined=inlined))
            continue
        index, port = target
        group = groups[index]
        groups[index] = Group(group.anchor, (*group.chain, node), (*group.ports, port),
                              (*group.inlined, *inlined))
        group_of[id(node)] = index
    return tuple(groups)


def _inlinable(graph: Graph, node: Node, model_outputs: set[Value],
               is_elementwise: Callable[[Node], bool]) -> bool:
    """``node`` may be computed inside its single consumer's kernel (module docstring)."""
    if not is_elementwise(node) or len(node.outputs) != 1:
        return False
    value = node.outputs[0]
    consumers = graph.consumers.get(value, ())
    if value in model_outputs or len(consumers) != 1:
        return False
    consumer, port = consumers[0]
    if quantizes_conv_input(node, consumer, port):
        return True
    if isinstance(consumer, Result) or not is_elementwise(consumer):
        return False
    if len(consumer.outputs) != 1 or sum(v == value for v in consumer.inputs) != 1:
        return False
    return consumer.outputs[0].shape == value.shape


def quantizes_conv_input(node: Node, consumer: Node, port: int) -> bool:
    """``node`` is an f32 -> u8 ``Quantize`` feeding the data input (port 0) of a
    ``QConvolution`` that reads it through its blocked copy, each element about once: not
    depthwise (read per tap) and not pointwise (1x1, strides 1, no pads: regrouped rows)."""
    if not isinstance(node, Quantize) or not isinstance(consumer, QConvolution) or port != 0:
        return False
    if node.input_type(0).dtype.name != "f32":
        return False
    groups, group_out, group_in, *kernel = consumer.input_type(1).shape
    if groups > 1 and group_out == 1 and group_in == 1:
        return False
    pointwise = all(k == 1 for k in kernel) and all(s == 1 for s in consumer.strides) \
        and not any(consumer.pads_begin) and not any(consumer.pads_end)
    return not pointwise


def _fusion_target(graph: Graph, node: Node, model_outputs: set[Value],
                   is_elementwise: Callable[[Node], bool], group_of: dict[int, int],
                   groups: list[Group], fusable_anchor: Callable[[Node], bool],
                   ready: dict[int, int]) -> tuple[int, int] | None:
    if not is_elementwise(node) or len(node.output_types) != 1:
        return None
    for port, value in enumerate(node.inputs):
        producer = value.node
        index = group_of.get(id(producer))
        if index is None or groups[index].nodes[-1] is not producer:
            continue
        if len(producer.output_types) != 1 or value in model_outputs:
            continue
        if len(graph.consumers.get(value, ())) != 1:
            continue
        if value.shape != node.output_types[0].shape:
            continue
        if not fusable_anchor(groups[index].anchor):
            continue
        if any(ready.get(id(v.node), group_of.get(id(v.node), -1)) > index
               for v in node.inputs):
            continue  # another input is computed after that group's kernel runs
        return index, port
    return None
