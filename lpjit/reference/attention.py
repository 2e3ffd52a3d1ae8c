"""Reference semantics of ScaledDotProductAttention-13 (float64 accumulation)."""

from __future__ import annotations

import numpy as np

from lpjit.ops import attention as ops
from lpjit.reference import evaluator


def attention_bias(node: ops.ScaledDotProductAttention, length: int, source_length: int,
                   mask: np.ndarray | None) -> np.ndarray | float:
    """``-inf`` above the diagonal when causal; else from the mask (bool: keep True; float: add).

    The causal mask is aligned top-left: query ``i`` sees keys ``0..i``.
    """
    if node.causal:
        return np.triu(np.full((length, source_length), -np.inf), k=1)
    if mask is None:
        return 0.0
    if mask.dtype == np.bool_:
        return np.where(mask, 0.0, -np.inf)
    return mask.astype(np.float64)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (max-subtracted)."""
    shifted = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=-1, keepdims=True)


@evaluator(ops.ScaledDotProductAttention)
def _sdpa(node: ops.ScaledDotProductAttention, q: np.ndarray, k: np.ndarray, v: np.ndarray,
          *optional: np.ndarray) -> np.ndarray:
    """``softmax(q @ k^T * scale + bias) @ v``; scale defaults to ``1/sqrt(E)``."""
    mask = optional[0] if node.has_mask else None
    if node.has_scale:
        scale = float(np.asarray(optional[1]).reshape(()))
    else:
        scale = 1.0 / np.sqrt(q.shape[-1])
    q64, k64, v64 = (a.astype(np.float64) for a in (q, k, v))
    logits = np.matmul(q64, np.swapaxes(k64, -1, -2)) * scale
    logits = logits + attention_bias(node, q.shape[-2], k.shape[-2], mask)
    with np.errstate(invalid="ignore"):
        return np.matmul(softmax(logits), v64)
