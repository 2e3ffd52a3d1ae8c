"""Shape helpers shared by op classes: numpy broadcasting, axis normalisation, checks."""

from __future__ import annotations

from collections.abc import Sequence

from lpjit.errors import ShapeError
from lpjit.graph import Node, Shape


def broadcast_shapes(node: Node, *shapes: Shape) -> Shape:
    """Numpy broadcast of ``shapes``; ``ShapeError`` naming ``node`` when incompatible."""
    rank = max((len(s) for s in shapes), default=0)
    out = [1] * rank
    for shape in shapes:
        for i, d in enumerate(shape, start=rank - len(shape)):
            if d == out[i] or d == 1:
                continue
            if out[i] == 1:
                out[i] = d
                continue
            shown = " and ".join(str(tuple(s)) for s in shapes)
            raise ShapeError(f"input shapes {shown} do not broadcast (numpy rules)", node.origin)
    return tuple(out)


def normalize_axis(node: Node, axis: int, rank: int, what: str = "axis") -> int:
    """``axis`` in ``[-rank, rank)`` mapped to ``[0, rank)``."""
    if not -rank <= axis < rank:
        raise ShapeError(f"{what} {axis} is out of range for rank {rank}; expected "
                         f"{-rank}..{rank - 1}", node.origin)
    return axis + rank if axis < 0 else axis


def normalize_axes(node: Node, axes: Sequence[int], rank: int, what: str = "axes"
                   ) -> tuple[int, ...]:
    out = tuple(normalize_axis(node, int(a), rank, what) for a in axes)
    if len(set(out)) != len(out):
        raise ShapeError(f"{what} {tuple(axes)} repeat an axis", node.origin)
    return out


def require_float(node: Node, index: int = 0) -> None:
    t = node.input_type(index)
    if not t.dtype.is_float:
        raise ShapeError(f"input {index} has element type {t.dtype}; expected a float type",
                         node.origin)


def require_same_dtype(node: Node) -> None:
    types = {v.dtype for v in node.inputs}
    if len(types) > 1:
        shown = ", ".join(str(v.dtype) for v in node.inputs)
        raise ShapeError(f"inputs have element types {shown}; expected one type", node.origin)


def format_float(value: float) -> str:
    """A float attribute as OpenVINO's serializer writes it: ``%.17g``.

    ``0.001`` stays ``0.001``; ``0.1`` becomes ``0.10000000000000001``.
    """
    return f"{value:.17g}"


def broadcasts_to(shape: Shape, target: Shape) -> bool:
    """True if ``shape`` broadcasts to exactly ``target`` (numpy rules, one direction)."""
    if len(shape) > len(target):
        return False
    return all(d in (1, t) for d, t in zip(reversed(shape), reversed(target)))
