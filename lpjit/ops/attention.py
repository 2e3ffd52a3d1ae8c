"""ScaledDotProductAttention-13: ``softmax(q @ k^T * scale + bias) @ v``.

Inputs (q, k, v, [attention_mask], [scale]): q is ``[N..., L, E]``, k ``[N..., S, E]``, v
``[N..., S, Ev]``; the batch dims ``N...`` broadcast (numpy rules).  The bias comes from
``causal`` (``-inf`` above the diagonal, and the mask is then ignored) or from the mask: a
boolean mask keeps the True positions, a float mask is added.  The default scale is
``1/sqrt(E)``.  Numpy semantics are in ``lpjit.reference.attention``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from lpjit import dtypes
from lpjit.attributes import Attributes
from lpjit.graph import Node, Shape, TensorType, opclass
from lpjit.ops.common import broadcast_shapes
from lpjit.ops.nn import format_bool
from lpjit.ops.registry import register

QUERY, KEY, VALUE, MASK, SCALE = range(5)


@register("ScaledDotProductAttention", 13)
@opclass
class ScaledDotProductAttention(Node):
    """Attention of q over (k, v); output ``[N..., L, Ev]``."""

    causal: bool = False
    arity: ClassVar = (3, 5)

    @classmethod
    def from_ir(cls, a: Attributes) -> dict[str, Any]:
        return {"causal": a.bool("causal", False)}

    def to_ir(self) -> dict[str, str]:
        return {"causal": format_bool(self.causal)}

    @property
    def has_mask(self) -> bool:
        """True when a mask input is present and used (``causal`` ignores it)."""
        return len(self.inputs) > MASK and not self.causal

    @property
    def has_scale(self) -> bool:
        return len(self.inputs) > SCALE

    def infer(self) -> Sequence[TensorType]:
        q, k, v = (self.input_type(i) for i in (QUERY, KEY, VALUE))
        for name, t in (("query", q), ("key", k), ("value", v)):
            if t.rank < 3:
                raise self.error(f"{name} has shape {t.shape}; expected rank >= 3 "
                                 "([batch..., length, features])")
        if not q.dtype.is_float or k.dtype != q.dtype or v.dtype != q.dtype:
            raise self.error(f"query, key, value have element types {q.dtype}, {k.dtype}, "
                             f"{v.dtype}; expected one float type")
        if q.shape[-1] != k.shape[-1]:
            raise self.error(f"query {q.shape} and key {k.shape} differ in the feature dim "
                             f"({q.shape[-1]} vs {k.shape[-1]})")
        if k.shape[-2] != v.shape[-2]:
            raise self.error(f"key {k.shape} and value {v.shape} differ in the sequence dim "
                             f"({k.shape[-2]} vs {v.shape[-2]})")
        batches = [q.shape[:-2], k.shape[:-2], v.shape[:-2]]
        if self.has_mask:
            batches.append(self.check_mask(q.shape[-2], k.shape[-2]))
        if self.has_scale:
            self.check_scale()
        batch = broadcast_shapes(self, *batches)
        return [TensorType(q.dtype, (*batch, q.shape[-2], v.shape[-1]))]

    def check_mask(self, length: int, source_length: int) -> Shape:
        """The mask is boolean or the query's type, broadcastable to ``[..., L, S]``."""
        mask = self.input_type(MASK)
        if mask.dtype != dtypes.boolean and mask.dtype != self.input_type(QUERY).dtype:
            raise self.error(f"attention_mask has element type {mask.dtype}; expected boolean "
                             f"or {self.input_type(QUERY).dtype}")
        if mask.rank == 0:
            return ()
        if mask.rank < 2 or mask.shape[-2] not in (1, length) or \
                mask.shape[-1] not in (1, source_length):
            raise self.error(f"attention_mask has shape {mask.shape}; expected a scalar or "
                             f"[..., {length} or 1, {source_length} or 1]")
        return mask.shape[:-2]

    def check_scale(self) -> None:
        scale = self.input_type(SCALE)
        if scale.dtype != self.input_type(QUERY).dtype:
            raise self.error(f"scale has element type {scale.dtype}; expected "
                             f"{self.input_type(QUERY).dtype}")
        if scale.shape not in ((), (1,)):
            raise self.error(f"scale has shape {scale.shape}; expected a scalar or one element")
