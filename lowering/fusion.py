"""``partition_graph``: group each op with the elementwise ops that can run in its loop nest.

Rule: an elementwise op (one that has an expression emitter, see ``lowering.emitters``) joins
the group of the producer of one of its inputs when

1. that producer's output has exactly one consumer and is not a model output,
2. the elementwise op's output has the same shape as that input (no broadcasting *up*), and
3. the producer's group ends with that producer and its kernel writes through an epilogue
   (``fusable_anchor``; views and multi-output ops do not).

The group's kernel then computes the whole chain before one store: conv + bias + ReLU +
FakeQuantize becomes one loop nest.  Constants, Parameters and Results form no group.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from lpjit.graph import Constant, Graph, Node, Parameter, Result, Value


@attrs.frozen(eq=False)
class Group:
    """``anchor`` followed by ``chain``; ``ports[k]`` is the input of ``chain[k]`` fed by the
    previous node's output."""

    anchor: Node
    chain: tuple[Node, ...] = ()
    ports: tuple[int, ...] = ()

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.anchor, *self.chain)

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
    for node in graph.nodes:
        if isinstance(node, (Constant, Parameter, Result)):
            continue
        target = _fusion_target(graph, node, model_outputs, is_elementwise, group_of, groups,
                                fusable_anchor)
        if target is None:
            group_of[id(node)] = len(groups)
            groups.append(Group(node))
            continue
        index, port = target
        group = groups[index]
        groups[index] = Group(group.anchor, (*group.chain, node), (*group.ports, port))
        group_of[id(node)] = index
    return tuple(groups)


def _fusion_target(graph: Graph, node: Node, model_outputs: set[Value],
                   is_elementwise: Callable[[Node], bool], group_of: dict[int, int],
                   groups: list[Group], fusable_anchor: Callable[[Node], bool]
                   ) -> tuple[int, int] | None:
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
        if any(group_of.get(id(v.node), -1) > index for v in node.inputs):
            continue  # another input is computed after that group's kernel runs
        return index, port
    return None
