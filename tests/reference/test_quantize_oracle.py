"""FakeQuantize-1 against the OpenVINO CPU plugin, executed as-is (LPT off, f32).

The CPU plugin evaluates ``round(x * scale + shift)`` with an FMA where the reference divides,
so inputs within float rounding of a bin midpoint may land one quantization step apart
(facts sheet 2.3).  The inputs here are random but moved a quarter bin away from any midpoint
closer than 1e-3 bin, so the comparison needs no step tolerance: rtol 1e-4, atol 1e-5.
The degenerate cases where the CPU deviates from the spec (il > ih, il == ih, NaN) are
pinned against the spec in ``test_quantize.py`` instead.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import openvino as ov
import oracle
import pytest
from openvino import opset1

import lpjit
from lpjit.ops.quantize import FakeQuantize

pytestmark = pytest.mark.oracle


def layer_data(xml: Path, layer_id: str) -> dict[str, str]:
    """The ``<data>`` attributes of layer ``layer_id`` in the saved IR."""
    layer = ET.parse(xml).getroot().find(f"./layers/layer[@id='{layer_id}']")
    assert layer is not None
    data = layer.find("data")
    return dict(data.attrib) if data is not None else {}


def ranges(rng: np.random.Generator, shapes: tuple[tuple[int, ...], ...], inverted: bool
           ) -> list[np.ndarray]:
    """il < ih and ol < oh (ol > oh when ``inverted``), each of its own shape."""
    il = rng.uniform(-2.0, -0.2, shapes[0])
    ih = rng.uniform(0.3, 2.5, shapes[1])
    ol = rng.uniform(-1.0, 0.0, shapes[2])
    oh = rng.uniform(0.5, 3.0, shapes[3])
    if inverted:
        ol, oh = oh, ol
    return [np.asarray(r, np.float32) for r in (il, ih, ol, oh)]


def avoid_ties(x: np.ndarray, il: np.ndarray, ih: np.ndarray, levels: int) -> np.ndarray:
    """``x`` with every element closer than 1e-3 bin to a bin midpoint moved a quarter bin."""
    low, high = (np.broadcast_to(r, x.shape).astype(np.float64) for r in (il, ih))
    t = (x - low) / (high - low) * (levels - 1)
    near_tie = np.abs(t - np.floor(t) - 0.5) < 1e-3
    bin_width = (high - low) / (levels - 1)
    return np.where(near_tie, x + 0.25 * bin_width, x).astype(np.float32)


SHAPES = {
    "per_tensor_scalars": ((), (), (), ()),
    "per_tensor_1111": ((1, 1, 1, 1),) * 4,
    "per_channel_input_ranges": ((1, 3, 1, 1), (1, 3, 1, 1), (), ()),
    "per_channel_mixed_ranks": ((1, 3, 1, 1), (3, 1, 1), (1, 1, 1, 1), ()),
    "per_channel_output_ranges": ((), (1,), (1, 3, 1, 1), (3, 1, 1)),
    "per_channel_all": ((1, 3, 1, 1),) * 4,
}


@pytest.mark.parametrize("levels", [256, 255, 16])
@pytest.mark.parametrize("case", list(SHAPES))
@pytest.mark.parametrize("inverted", [False, True], ids=["ol<oh", "ol>oh"])
def test_fake_quantize_activation_ranges(tmp_path, levels, case, inverted):
    rng = np.random.default_rng(levels + len(case))
    x_shape = (2, 3, 4, 5)
    il, ih, ol, oh = ranges(rng, SHAPES[case], inverted)
    # wider than the input range, so that both clipping branches are exercised
    x = avoid_ties(rng.uniform(-3.0, 3.5, x_shape).astype(np.float32), il, ih, levels)
    check_fq(tmp_path, x, [il, ih, ol, oh], levels)


@pytest.mark.parametrize("levels", [256, 255, 16])
def test_fake_quantize_weight_ranges_along_axis_0(tmp_path, levels):
    """Weights layout [OC, IC, kh, kw] with per-output-channel ranges [OC, 1, 1, 1]."""
    rng = np.random.default_rng(100 + levels)
    x_shape = (4, 3, 2, 2)
    il, ih, ol, oh = ranges(rng, ((4, 1, 1, 1),) * 4, inverted=False)
    x = avoid_ties(rng.uniform(-3.0, 3.0, x_shape).astype(np.float32), il, ih, levels)
    check_fq(tmp_path, x, [il, ih, ol, oh], levels)


def check_fq(tmp_path: Path, x: np.ndarray, range_values: list[np.ndarray], levels: int
             ) -> None:
    data = opset1.parameter(list(x.shape), np.float32, name="x")
    consts = [opset1.constant(r) for r in range_values]
    fq = opset1.fake_quantize(data, *consts, levels)
    model = ov.Model([opset1.result(fq)], [data], "fq")
    actual = oracle.compare_with_openvino(model, tmp_path, inputs=[x],
                                          config=oracle.FQ_AS_IS_CONFIG)
    # both clipping branches and several inner bins are hit
    low = np.minimum(*np.broadcast_arrays(range_values[2], range_values[3]))
    assert np.any(np.isclose(actual[0], np.broadcast_to(low, x.shape)))
    assert len(np.unique(actual[0])) > min(levels, 8)
    xml = tmp_path / "model.xml"
    (node,) = [n for n in lpjit.read_ir(xml).nodes if isinstance(n, FakeQuantize)]
    assert node.levels == levels
    assert node.to_ir() == layer_data(xml, node.origin.layer_id)
