"""MVN-2/-6, NormalizeL2-1 and BatchNormInference-1/-5 against the OpenVINO CPU plugin.

Large eps values (0.05 .. 0.5) make inside/outside sqrt and add/max visibly different, so a
swapped mode fails.  rtol 1e-4, atol 1e-5.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import openvino as ov
import oracle
import pytest
from openvino import opset1, opset2, opset5, opset6

import lpjit
from lpjit.graph import Node
from lpjit.ops import normalization as norm

pytestmark = pytest.mark.oracle

SHAPE = (2, 3, 4, 5)


def layer_data(xml: Path, layer_id: str) -> dict[str, str]:
    """The ``<data>`` attributes of layer ``layer_id`` in the saved IR."""
    layer = ET.parse(xml).getroot().find(f"./layers/layer[@id='{layer_id}']")
    assert layer is not None
    data = layer.find("data")
    return dict(data.attrib) if data is not None else {}


def check(tmp_path: Path, output: ov.Node, x: ov.Node, cls: type[Node], version: int = 11
          ) -> Node:
    """Compare one op with OpenVINO; it must read back as one ``cls`` with matching to_ir."""
    model = ov.Model([opset1.result(output)], [x], "norm")
    oracle.compare_with_openvino(model, tmp_path, version=version)
    xml = tmp_path / "model.xml"
    (node,) = [n for n in lpjit.read_ir(xml).nodes if type(n) is cls]
    assert node.to_ir() == layer_data(xml, node.origin.layer_id)
    return node


def parameter(shape: tuple[int, ...] = SHAPE) -> ov.Node:
    return opset1.parameter(list(shape), np.float32, name="x")


@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("normalize_variance", [True, False])
@pytest.mark.parametrize("eps", [1e-9, 0.5])
@pytest.mark.parametrize("version", [11, 10])
def test_mvn2(tmp_path, across, normalize_variance, eps, version):
    x = parameter()
    node = check(tmp_path, opset2.mvn(x, across, normalize_variance, eps), x, norm.MVNV2,
                 version)
    assert node.axes == ((1, 2, 3) if across else (2, 3))


@pytest.mark.parametrize("across, reduction_axes, expected_axes", [
    ("false", "1, 2, 3", (1, 2, 3)), ("true", "2, 3", (2, 3)), ("false", "3", (2, 3)),
    ("true", None, (1, 2, 3)),
])
def test_mvn2_reduction_axes_decide_across_channels(tmp_path, across, reduction_axes,
                                                    expected_axes):
    """Hand-edited XML where reduction_axes and across_channels disagree: OpenVINO normalizes
    over 1.. when reduction_axes holds axis 1, else over 2.. (a partial list such as "3" is
    not honoured); without reduction_axes, across_channels decides."""
    x = parameter()
    model = ov.Model([opset1.result(opset2.mvn(x, True, True, 0.5))], [x], "mvn")
    xml = oracle.save(model, tmp_path)
    text = xml.read_text()
    text = re.sub(r'across_channels="\w+"', f'across_channels="{across}"', text)
    replacement = "" if reduction_axes is None else f' reduction_axes="{reduction_axes}"'
    xml.write_text(re.sub(r' reduction_axes="[^"]*"', replacement, text))
    inputs = oracle.random_inputs(model, seed=6)
    expected = oracle.ov_run(xml, inputs)[0]
    np.testing.assert_allclose(oracle.lpjit_reference(xml, inputs)[0], expected, rtol=1e-4,
                               atol=1e-5)
    (node,) = [n for n in lpjit.read_ir(xml).nodes if isinstance(n, norm.MVNV2)]
    assert node.axes == expected_axes
    assert node.to_ir() == layer_data(xml, node.origin.layer_id)


def test_mvn2_rank3(tmp_path):
    x = parameter((2, 3, 7))
    check(tmp_path, opset2.mvn(x, False, True, 0.1), x, norm.MVNV2)


@pytest.mark.parametrize("axes", [[2, 3], [1, 2, 3], [-1], [3], [-2, -1], [1], [0, 1]])
@pytest.mark.parametrize("eps_mode", ["inside_sqrt", "outside_sqrt"])
def test_mvn6(tmp_path, axes, eps_mode):
    x = parameter()
    mvn = opset6.mvn(x, opset1.constant(np.array(axes, np.int64)), True, 0.3, eps_mode)
    check(tmp_path, mvn, x, norm.MVNV6)


@pytest.mark.parametrize("axes_dtype", [np.int32, np.int64])
def test_mvn6_without_variance(tmp_path, axes_dtype):
    x = parameter()
    mvn = opset6.mvn(x, opset1.constant(np.array([-2, -1], axes_dtype)), False, 1e-5,
                     "inside_sqrt")
    check(tmp_path, mvn, x, norm.MVNV6)


@pytest.mark.parametrize("axes", [[1], [1, 2, 3], [-1], [2, 3], [0]])
@pytest.mark.parametrize("eps_mode, eps", [("add", 1e-6), ("max", 1e-6), ("add", 0.5),
                                           ("max", 5.0)])
def test_normalize_l2(tmp_path, axes, eps_mode, eps):
    x = parameter()
    l2 = opset1.normalize_l2(x, opset1.constant(np.array(axes, np.int64)), eps, eps_mode)
    check(tmp_path, l2, x, norm.NormalizeL2)


def test_normalize_l2_over_no_axes(tmp_path):
    """Empty axes: each element divided by itself, 0 where it is 0 (CPU and reference agree)."""
    x = parameter()
    empty = ov.op.Constant(ov.Type.i64, ov.Shape([0]), [])
    model = ov.Model([opset1.result(opset1.normalize_l2(x, empty, 1e-6, "add"))], [x], "l2")
    inputs = oracle.random_inputs(model, seed=4)
    inputs[0][0, 1, :2] = 0.0
    actual = oracle.compare_with_openvino(model, tmp_path, inputs=inputs)
    assert set(np.unique(actual[0])) == {0.0, 1.0}


def _bn_constants(channels: int, seed: int) -> list[ov.Node]:
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.5, 2.0, channels)
    beta = rng.uniform(-1.0, 1.0, channels)
    mean = rng.uniform(-0.5, 0.5, channels)
    variance = rng.uniform(0.05, 2.0, channels)
    return [opset1.constant(v.astype(np.float32)) for v in (gamma, beta, mean, variance)]


@pytest.mark.parametrize("opset, cls", [(opset1, norm.BatchNormInferenceV1),
                                        (opset5, norm.BatchNormInferenceV5)])
@pytest.mark.parametrize("shape", [SHAPE, (2, 3), (1, 3, 6)])
def test_batch_norm_inference(tmp_path, opset, cls, shape):
    """The Python API takes data first for both versions; v1's XML puts it on port 2.
    The rank-3 case is saved as IR v10."""
    x = parameter(shape)
    gamma, beta, mean, variance = _bn_constants(3, len(shape))
    bn = opset.batch_norm_inference(x, gamma, beta, mean, variance, 0.05)
    node = check(tmp_path, bn, x, cls, version=10 if len(shape) == 3 else 11)
    assert node.inputs[node.port("data")].node.origin.name == "x"
