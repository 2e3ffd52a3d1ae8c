"""Real models through read_ir -> write_ir: OpenVINO runs the copy with identical outputs.

This exercises every op's ``to_ir`` (the inverse of ``from_ir``) on IRs written by OpenVINO
and NNCF: CNNs, a transformer encoder, INT8-quantized and INT4 weight-compressed models.
"""

from __future__ import annotations

from pathlib import Path

import nncf
import numpy as np
import openvino as ov
import oracle
import pytest
from models import builders, nncf_models

import lpjit

pytestmark = pytest.mark.oracle


def _assert_round_trip(model: ov.Model, tmp_path: Path, seed: int, **save_options) -> None:
    xml = oracle.save(model, tmp_path / "original", **save_options)
    graph = lpjit.read_ir(xml)
    copy = lpjit.write_ir(graph, tmp_path / "copy" / "model.xml")
    inputs = oracle.random_inputs(model, seed=seed)
    for rewritten, original in zip(oracle.ov_run(copy, inputs), oracle.ov_run(xml, inputs),
                                   strict=True):
        np.testing.assert_array_equal(rewritten, original)
    reread = lpjit.read_ir(copy)
    assert [n.kind for n in reread.nodes] == [n.kind for n in graph.nodes]
    for old, new in zip(graph.nodes, reread.nodes):
        if old.kind == "Constant":
            np.testing.assert_array_equal(new.data, old.data)
            assert new.element_type == old.element_type
        else:
            assert new.attributes() == old.attributes(), old.origin.describe()


@pytest.mark.parametrize("build", [
    lambda: builders.resnet_like(channels=(8, 16), image=16, seed=1),
    lambda: builders.mobilenet_v2_like(channels=(8, 16), image=16, seed=2),
    lambda: builders.bert_like(layers=1, hidden=32, heads=2, seq=8, seed=3),
], ids=["resnet", "mobilenet", "bert"])
@pytest.mark.parametrize("compress", [False, True], ids=["f32", "f16-weights"])
def test_float_models(tmp_path, build, compress):
    _assert_round_trip(build(), tmp_path, seed=4, compress_to_fp16=compress)


def test_int8_quantized_cnn(tmp_path):
    model = nncf_models.quantize(builders.resnet_like(channels=(8, 16), image=16, seed=5),
                                 samples=2, seed=6)
    _assert_round_trip(model, tmp_path, seed=7)


@pytest.mark.parametrize("mode", [nncf.CompressWeightsMode.INT4_ASYM,
                                  nncf.CompressWeightsMode.INT4_SYM])
def test_int4_weight_compressed_mlp(tmp_path, mode):
    """u4/i4 grouped weights with zero points: packed constants re-encoded exactly."""
    model = nncf_models.compress_weights(builders.mlp((32, 64, 16), seed=8), mode,
                                         group_size=16, all_layers=True)
    _assert_round_trip(model, tmp_path, seed=9)


def test_int8_weight_compressed_mlp(tmp_path):
    model = nncf_models.compress_weights(builders.mlp((32, 64, 16), seed=10),
                                         nncf.CompressWeightsMode.INT8_ASYM)
    _assert_round_trip(model, tmp_path, seed=11)
