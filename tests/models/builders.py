"""Deterministic float ``ov.Model`` builders for the real-model tests and the benchmark.

Every builder draws its weights from a ``numpy`` generator seeded by ``seed``, so one call
always returns the same model.  Sizes are parameters: the tests build small versions (32x32
images, hidden 64), the benchmark can build full-size ones from the same code.

Weights are N(0, s^2) with ``s = sqrt(gain / fan_in)`` (He for ReLU-like layers, gain 1 for
linear ones), biases N(0, 0.1^2), so activations stay O(1) through the network and neither
the float comparison nor calibration sees overflow or vanishing signals.

Layers get readable friendly names (``stage1/conv2``, ``layer0/attn/q``) so that per-layer
reports name something a reader can find in the XML.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import openvino as ov
import openvino.opset13 as ops

Output = ov.Output


class _Init:
    """Seeded weight factory: every tensor comes from one generator, in build order."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def normal(self, shape: Sequence[int], fan_in: int, gain: float = 2.0) -> np.ndarray:
        """N(0, gain / fan_in) weights, f32."""
        std = np.sqrt(gain / fan_in)
        return self.rng.normal(0.0, std, tuple(shape)).astype(np.float32)

    def bias(self, shape: Sequence[int]) -> np.ndarray:
        return self.rng.normal(0.0, 0.1, tuple(shape)).astype(np.float32)


def _named(node: ov.Node, name: str) -> Output:
    """Give ``node`` a friendly name and return its first output."""
    node.set_friendly_name(name)
    return node.output(0)


def _const(array: np.ndarray, name: str) -> Output:
    return _named(ops.constant(array), name)


def _finish(output: Output, param: ov.Node, name: str) -> ov.Model:
    """Wrap one input and one output (tensor name ``output``) in a model called ``name``."""
    output.add_names({"output"})
    return ov.Model([ops.result(output)], [param], name)


# --------------------------------------------------------------------------------------
# Convolution building blocks (NCHW)


def _conv(x: Output, init: _Init, out_channels: int, kernel: int, stride: int, name: str,
          *, bias: bool = True) -> Output:
    """Convolution with 'same'-style explicit padding, plus a ``[1,C,1,1]`` bias Add."""
    in_channels = x.get_partial_shape()[1].get_length()
    weights = init.normal((out_channels, in_channels, kernel, kernel),
                          in_channels * kernel * kernel)
    pad = kernel // 2
    y = _named(ops.convolution(x, _const(weights, f"{name}/weights"), [stride, stride],
                               [pad, pad], [pad, pad], [1, 1]), name)
    if bias:
        b = _const(init.bias((1, out_channels, 1, 1)), f"{name}/bias")
        y = _named(ops.add(y, b), f"{name}/add_bias")
    return y


def _depthwise(x: Output, init: _Init, stride: int, name: str) -> Output:
    """Depthwise 3x3 GroupConvolution (weights ``[C,1,1,3,3]``) plus a bias Add."""
    channels = x.get_partial_shape()[1].get_length()
    weights = init.normal((channels, 1, 1, 3, 3), 9)
    y = _named(ops.group_convolution(x, _const(weights, f"{name}/weights"), [stride, stride],
                                     [1, 1], [1, 1], [1, 1]), name)
    b = _const(init.bias((1, channels, 1, 1)), f"{name}/bias")
    return _named(ops.add(y, b), f"{name}/add_bias")


def _relu(x: Output, name: str) -> Output:
    return _named(ops.relu(x), name)


def _relu6(x: Output, name: str) -> Output:
    return _named(ops.clamp(x, 0.0, 6.0), name)


def _linear(x: Output, init: _Init, out_features: int, name: str, *,
            gain: float = 2.0) -> Output:
    """``x @ W^T + b`` with ``W [out, in]`` (MatMul transpose_b=True), as PyTorch exports it."""
    in_features = x.get_partial_shape()[-1].get_length()
    weights = init.normal((out_features, in_features), in_features, gain)
    y = _named(ops.matmul(x, _const(weights, f"{name}/weights"), False, True), name)
    b = _const(init.bias((out_features,)), f"{name}/bias")
    return _named(ops.add(y, b), f"{name}/add_bias")


def _flatten(x: Output, name: str) -> Output:
    """``[N, C, 1, 1] -> [N, C]`` by a Reshape with a constant target shape."""
    channels = x.get_partial_shape()[1].get_length()
    target = _const(np.array([-1, channels], np.int64), f"{name}/shape")
    return _named(ops.reshape(x, target, False), name)


def _head(x: Output, init: _Init, classes: int, softmax: bool) -> Output:
    """Flatten -> Linear(classes) [-> SoftMax]."""
    y = _linear(_flatten(x, "flatten"), init, classes, "fc", gain=1.0)
    if softmax:
        y = _named(ops.softmax(y, -1), "softmax")
    return y


def _image(batch: int, channels: int, image: int) -> ov.Node:
    p = ops.parameter([batch, channels, image, image], np.float32, name="input")
    p.output(0).set_names({"input"})
    return p


# --------------------------------------------------------------------------------------
# CNNs


def _basic_block(x: Output, init: _Init, out_channels: int, stride: int, name: str) -> Output:
    """ResNet basic block: conv3x3(stride)-ReLU-conv3x3, shortcut (1x1 conv when reshaped)."""
    in_channels = x.get_partial_shape()[1].get_length()
    y = _relu(_conv(x, init, out_channels, 3, stride, f"{name}/conv1"), f"{name}/relu1")
    y = _conv(y, init, out_channels, 3, 1, f"{name}/conv2")
    shortcut = x
    if stride != 1 or in_channels != out_channels:
        shortcut = _conv(x, init, out_channels, 1, stride, f"{name}/shortcut")
    return _relu(_named(ops.add(y, shortcut), f"{name}/residual"), f"{name}/relu2")


def resnet_like(channels: Sequence[int] = (16, 32), image: int = 32, classes: int = 10, *,
                in_channels: int = 3, batch: int = 1, softmax: bool = False,
                seed: int = 0) -> ov.Model:
    """A small ResNet: stem conv3x3-ReLU-MaxPool, one basic block per stage, GAP, Linear.

    Stage 0 keeps the resolution (identity residual); every later stage starts with a
    stride-2 conv and a 1x1 stride-2 shortcut.  Global average pooling is ReduceMean over
    H, W with keep_dims, then Reshape to ``[N, C]`` and a MatMul + Add head.
    """
    init = _Init(seed)
    param = _image(batch, in_channels, image)
    x = _relu(_conv(param.output(0), init, channels[0], 3, 1, "stem/conv"), "stem/relu")
    x = _named(ops.max_pool(x, [2, 2], [1, 1], [0, 0], [0, 0], [2, 2]), "stem/maxpool")
    for i, width in enumerate(channels):
        x = _basic_block(x, init, width, 1 if i == 0 else 2, f"stage{i}")
    axes = _const(np.array([2, 3], np.int64), "gap/axes")
    x = _named(ops.reduce_mean(x, axes, True), "gap")
    return _finish(_head(x, init, classes, softmax), param, "resnet_like")


def _inverted_residual(x: Output, init: _Init, out_channels: int, stride: int,
                       expansion: int, name: str) -> Output:
    """MobileNetV2 block: 1x1 expand-ReLU6, dw3x3(stride)-ReLU6, 1x1 project (linear)."""
    in_channels = x.get_partial_shape()[1].get_length()
    hidden = in_channels * expansion
    y = _relu6(_conv(x, init, hidden, 1, 1, f"{name}/expand"), f"{name}/expand_relu6")
    y = _relu6(_depthwise(y, init, stride, f"{name}/dw"), f"{name}/dw_relu6")
    y = _conv(y, init, out_channels, 1, 1, f"{name}/project")
    if stride == 1 and in_channels == out_channels:
        y = _named(ops.add(y, x), f"{name}/residual")
    return y


def mobilenet_v2_like(channels: Sequence[int] = (16, 24, 32), image: int = 32,
                      classes: int = 10, *, expansion: int = 4, in_channels: int = 3,
                      batch: int = 1, softmax: bool = False, seed: int = 0) -> ov.Model:
    """A small MobileNetV2: stem conv3x3/2-ReLU6, two inverted residuals per stage, GAP, Linear.

    Stage 0 has stride 1; later stages start with a stride-2 block.  The second block of every
    stage has a residual Add.  Global average pooling is an AvgPool over the whole map.
    """
    init = _Init(seed)
    param = _image(batch, in_channels, image)
    x = _relu6(_conv(param.output(0), init, channels[0], 3, 2, "stem/conv"), "stem/relu6")
    for i, width in enumerate(channels):
        x = _inverted_residual(x, init, width, 1 if i == 0 else 2, expansion, f"stage{i}/b0")
        x = _inverted_residual(x, init, width, 1, expansion, f"stage{i}/b1")
    size = x.get_partial_shape()[2].get_length()
    x = _named(ops.avg_pool(x, [1, 1], [0, 0], [0, 0], [size, size], True), "gap")
    return _finish(_head(x, init, classes, softmax), param, "mobilenet_v2_like")


# --------------------------------------------------------------------------------------
# Transformer encoder


def _layer_norm(x: Output, init: _Init, name: str) -> Output:
    """MVN-6 over the last axis (eps 1e-5 inside sqrt) times gamma plus beta."""
    hidden = x.get_partial_shape()[-1].get_length()
    axes = _const(np.array([-1], np.int64), f"{name}/axes")
    y = _named(ops.mvn(x, axes, True, 1e-5, "inside_sqrt"), f"{name}/mvn")
    gamma = 1.0 + init.rng.normal(0.0, 0.1, (hidden,)).astype(np.float32)
    y = _named(ops.multiply(y, _const(gamma, f"{name}/gamma")), f"{name}/scale")
    return _named(ops.add(y, _const(init.bias((hidden,)), f"{name}/beta")), name)


def _split_heads(x: Output, heads: int, seq: int, name: str) -> Output:
    """``[1, S, H] -> [1, heads, S, H/heads]`` by Reshape then Transpose(0, 2, 1, 3)."""
    hidden = x.get_partial_shape()[-1].get_length()
    shape = _const(np.array([1, seq, heads, hidden // heads], np.int64), f"{name}/shape")
    y = _named(ops.reshape(x, shape, False), f"{name}/reshape")
    order = _const(np.array([0, 2, 1, 3], np.int64), f"{name}/order")
    return _named(ops.transpose(y, order), f"{name}/transpose")


def _attention(x: Output, init: _Init, heads: int, seq: int, name: str) -> Output:
    """Multi-head self-attention: q/k/v Linear, softmax(q k^T / sqrt(d)) v, output Linear."""
    hidden = x.get_partial_shape()[-1].get_length()
    q, k, v = (_split_heads(_linear(x, init, hidden, f"{name}/{n}", gain=1.0), heads, seq,
                            f"{name}/{n}_heads") for n in "qkv")
    scores = _named(ops.matmul(q, k, False, True), f"{name}/qk")
    scale = _const(np.array(1.0 / np.sqrt(hidden // heads), np.float32), f"{name}/scale")
    scores = _named(ops.multiply(scores, scale), f"{name}/scaled")
    probs = _named(ops.softmax(scores, -1), f"{name}/softmax")
    context = _named(ops.matmul(probs, v, False, False), f"{name}/context")
    order = _const(np.array([0, 2, 1, 3], np.int64), f"{name}/merge/order")
    context = _named(ops.transpose(context, order), f"{name}/merge/transpose")
    shape = _const(np.array([1, seq, hidden], np.int64), f"{name}/merge/shape")
    context = _named(ops.reshape(context, shape, False), f"{name}/merge/reshape")
    return _linear(context, init, hidden, f"{name}/out", gain=1.0)


def _encoder_layer(x: Output, init: _Init, heads: int, seq: int, ffn: int,
                   name: str) -> Output:
    """Post-LN BERT layer: LN(x + attn(x)), then LN(h + W2 gelu(W1 h))."""
    h = _named(ops.add(x, _attention(x, init, heads, seq, f"{name}/attn")),
               f"{name}/attn_residual")
    h = _layer_norm(h, init, f"{name}/ln1")
    f = _linear(h, init, ffn, f"{name}/ffn1", gain=1.0)
    f = _named(ops.gelu(f, "erf"), f"{name}/gelu")
    f = _linear(f, init, h.get_partial_shape()[-1].get_length(), f"{name}/ffn2", gain=1.0)
    out = _named(ops.add(h, f), f"{name}/ffn_residual")
    return _layer_norm(out, init, f"{name}/ln2")


def bert_like(layers: int = 2, hidden: int = 64, heads: int = 4, seq: int = 16, *,
              ffn: int | None = None, seed: int = 0) -> ov.Model:
    """A BERT-style encoder on embeddings: input ``[1, seq, hidden]`` f32, output the same.

    Each layer: q/k/v MatMuls with bias, Reshape/Transpose to heads, Q K^T MatMul times
    1/sqrt(d), SoftMax-8, attn V, merge heads, output projection, residual Add, LayerNorm
    (MVN-6 + gamma/beta), FFN (4*hidden by default) with erf-Gelu, residual, LayerNorm.
    """
    if hidden % heads:
        raise ValueError(f"hidden={hidden} is not divisible by heads={heads}")
    init = _Init(seed)
    param = ops.parameter([1, seq, hidden], np.float32, name="embeddings")
    param.output(0).set_names({"embeddings"})
    x = param.output(0)
    for i in range(layers):
        x = _encoder_layer(x, init, heads, seq, ffn or 4 * hidden, f"layer{i}")
    return _finish(x, param, "bert_like")


# --------------------------------------------------------------------------------------
# MLP


def mlp(sizes: Sequence[int] = (64, 128, 128, 10), *, batch: int = 1,
        seed: int = 0) -> ov.Model:
    """Fully connected layers ``sizes[i] -> sizes[i+1]``: MatMul(transpose_b) + Add, ReLU between."""
    init = _Init(seed)
    param = ops.parameter([batch, sizes[0]], np.float32, name="input")
    param.output(0).set_names({"input"})
    x = param.output(0)
    last = len(sizes) - 2
    for i, width in enumerate(sizes[1:]):
        x = _linear(x, init, width, f"fc{i}", gain=1.0 if i == last else 2.0)
        if i != last:
            x = _relu(x, f"relu{i}")
    return _finish(x, param, "mlp")
