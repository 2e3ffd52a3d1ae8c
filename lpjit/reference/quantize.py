"""Reference semantics of FakeQuantize-1: the spec, in float32, in OpenVINO's order of operations.

This is the definition every compiled FakeQuantize is checked against.  It follows
``fake_quantize_details::quantize`` in OpenVINO's core reference (``fake_quantize.hpp``), not
the CPU plugin, which differs in degenerate cases (``il > ih``, ``il == ih``, NaN) and, by one
quantization step, at near-ties (it evaluates ``x * scale + shift`` with an FMA).
"""

from __future__ import annotations

import numpy as np

from lpjit.ops.quantize import FakeQuantize
from lpjit.reference import evaluator


def fake_quantize(x: np.ndarray, input_low: np.ndarray, input_high: np.ndarray,
                  output_low: np.ndarray, output_high: np.ndarray, levels: int) -> np.ndarray:
    """Quantize ``x`` to ``levels`` values between ``output_low`` and ``output_high``.

    All arithmetic is float32, each operation rounded to float32 in this order:

    1. Broadcast each of the four range tensors to ``x`` independently (numpy rules).
    2. ``lo = min(il, ih)``, ``hi = max(il, ih)`` (elementwise; ``il > ih`` is allowed).
    3. ``x <= lo``  ->  ``ol``.
    4. ``x > hi``   ->  ``oh``.  (So ``-inf`` -> ``ol`` and ``+inf`` -> ``oh``.)
    5. Otherwise ``t = (x - il) / (ih - il) * (levels - 1)``;
       ``q = round_half_to_even(t)`` (``np.rint``, as ``std::nearbyint`` in the default
       rounding mode); ``y = q / (levels - 1) * (oh - ol) + ol``.

    Consequences the tests pin: with ``il == ih`` every finite ``x`` is caught by step 3 or 4,
    so the result is a step function and step 5's division by zero is never used; ``NaN``
    fails both comparisons and stays ``NaN`` through step 5; ``il > ih`` mirrors the bins;
    ``ol > oh`` inverts the output range.
    """
    x = np.asarray(x, np.float32)
    il, ih, ol, oh = (np.broadcast_to(np.asarray(r, np.float32), x.shape)
                      for r in (input_low, input_high, output_low, output_high))
    steps = np.float32(levels - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (x - il) / (ih - il) * steps
        q = np.rint(t)
        y = q / steps * (oh - ol) + ol
    y = np.where(x > np.maximum(il, ih), oh, y)
    return np.where(x <= np.minimum(il, ih), ol, y)


@evaluator(FakeQuantize)
def _fake_quantize(node: FakeQuantize, x: np.ndarray, input_low: np.ndarray,
                   input_high: np.ndarray, output_low: np.ndarray,
                   output_high: np.ndarray) -> np.ndarray:
    return fake_quantize(x, input_low, input_high, output_low, output_high, node.levels)
