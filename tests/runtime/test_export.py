"""lpjit.export, lpjit.load_library and pickling, on a small two-input, two-output graph.

The graph multiplies by a 128 KiB weight matrix (above the 64 KiB embedding threshold, so it
reaches the library as linked data through ``.incbin``) and adds a small embedded bias.
Checked here: the files and the manifest; a ``LoadedModel`` behaves like the ``CompiledModel``
(calling conventions, outputs bit for bit, the same input errors, threads); targets
(x86-64-v3 runs here and uses no AVX-512 register, aarch64 writes an AArch64 object); errors;
pickling (a ``CompiledModel`` run in a spawned worker process); the CLI; and the pieces:
feature table, C literals, weights assembly.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import pickle
import subprocess
import threading

import numpy as np
import pytest

import lpjit
from lpjit import cli, dtypes
from lpjit.errors import ExportError, InputError
from lpjit.graph import Constant, Graph, Origin, Parameter, Result
from lpjit.ops import activations as act
from lpjit.ops import elementwise as ew
from lpjit.ops import nn
from runtime.aot import ExportTarget, write_weights
from runtime.c_library import c_identifier, c_string
from runtime.cpu_features import CPUID_BITS, ISA_LEVELS, X86_64_V3, X86_64_V4

K, N = 64, 512
SEED = 7


def weights() -> np.ndarray:
    return np.random.default_rng(SEED).standard_normal((K, N)).astype(np.float32) / 8


def dense_graph() -> Graph:
    """``hidden = relu(x @ W + y + b)`` (names ``hidden``, ``h``), ``gate = sigmoid(hidden)``."""
    x = Parameter(origin=Origin("0", "x", "Parameter"), inputs=(), element_type=dtypes.f32,
                  shape=(4, K), tensor_names=(("x", "input_x"),))
    y = Parameter(origin=Origin("1", "y", "Parameter"), inputs=(), element_type=dtypes.f32,
                  shape=(1, N), tensor_names=(("y",),))
    w = Constant.of(weights(), Origin("2", "w", "Const"))
    b = Constant.of(np.linspace(-1, 1, N, dtype=np.float32), Origin("3", "b", "Const"))
    product = nn.MatMul(origin=Origin("4", "matmul", "MatMul"), inputs=(x.output, w.output))
    shifted = ew.Add(origin=Origin("5", "add_y", "Add"), inputs=(product.output, y.output))
    biased = ew.Add(origin=Origin("6", "add_b", "Add"), inputs=(shifted.output, b.output))
    hidden = act.Relu(origin=Origin("7", "relu", "ReLU"), inputs=(biased.output,),
                      tensor_names=(("hidden", "h"),))
    gate = act.Sigmoid(origin=Origin("8", "sigmoid", "Sigmoid"), inputs=(hidden.output,),
                       tensor_names=(("gate",),))
    results = [Result(origin=Origin("9", "hidden_result", "Result"), inputs=(hidden.output,)),
               Result(origin=Origin("10", "gate_result", "Result"), inputs=(gate.output,))]
    return Graph("dense-model", [x, y], results)


def random_inputs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-2, 2, (4, K)).astype(np.float32),
            rng.uniform(-1, 1, (1, N)).astype(np.float32))


def assert_bit_identical(actual, expected) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.dtype == e.dtype and a.shape == e.shape and a.tobytes() == e.tobytes()


@pytest.fixture(scope="module")
def compiled() -> lpjit.CompiledModel:
    return lpjit.compile(dense_graph(), threads=1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> lpjit.ExportedLibrary:
    return lpjit.export(dense_graph(), tmp_path_factory.mktemp("native"), threads=1)


@pytest.fixture(scope="module")
def loaded(exported) -> lpjit.LoadedModel:
    return exported.load()


# -- files and manifest --------------------------------------------------------------------


def test_export_writes_library_header_and_manifest(exported, compiled):
    """lib<name>.so, <name>.h, <name>.json; the name is the model's, made an identifier."""
    assert exported.name == "dense_model"
    names = sorted(p.name for p in exported.directory.iterdir())
    assert names == ["dense_model.h", "dense_model.json", "libdense_model.so"]
    manifest = json.loads(exported.manifest_path.read_text())
    assert manifest == exported.manifest
    assert manifest["lpjit_version"] == lpjit.__version__
    assert manifest["target"]["name"] == "native"
    assert manifest["target"]["cpu"] == ExportTarget.named("native").cpu
    assert set(manifest["required_cpu_features"]) <= set(manifest["target"]["features"])
    assert {"sse2", "avx2", "fma"} <= set(manifest["required_cpu_features"])
    assert manifest["openmp"] is False and manifest["threads"] == 1
    assert manifest["arena_bytes"] == compiled.arena_bytes
    assert manifest["inputs"] == [
        {"name": "x", "aliases": ["x", "input_x"], "shape": [4, K], "dtype": "float32",
         "alignment": manifest["inputs"][0]["alignment"]},
        {"name": "y", "aliases": ["y"], "shape": [1, N], "dtype": "float32",
         "alignment": manifest["inputs"][1]["alignment"]}]
    assert [(o["name"], o["aliases"], o["shape"]) for o in manifest["outputs"]] == [
        ("hidden", ["h", "hidden_result"], [4, N]), ("gate", ["gate_result"], [4, N])]
    assert manifest["needed"] == list(exported.needed)
    assert manifest["library_bytes"] == exported.library_bytes


def test_weights_are_embedded_as_data(exported, compiled):
    """Every large constant of the program (the packed weight matrix) is in the library byte
    for byte, and the library is about its size plus code: no second copy, no text form."""
    data = exported.library.read_bytes()
    large = [b.data for b in compiled.program.constants if b.data.nbytes > 1 << 16]
    assert sum(c.nbytes for c in large) >= weights().nbytes
    for constant in large:
        assert np.ascontiguousarray(constant).tobytes() in data
    assert exported.manifest["constant_bytes"] == sum(c.nbytes for c in large)
    assert exported.library_bytes < exported.manifest["constant_bytes"] + 100_000


def test_header_declares_the_api(exported):
    header = exported.header.read_text()
    for suffix in ("create", "run", "destroy", "set_threads", "num_inputs", "input_name",
                   "input_shape", "input_dtype", "input_nbytes", "num_outputs", "output_name",
                   "output_shape", "output_dtype", "output_nbytes", "check_cpu", "manifest",
                   "strerror"):
        assert f"lpjit_dense_model_{suffix}(" in header
    assert "#define LPJIT_DENSE_MODEL_NUM_INPUTS 2" in header
    assert "LPJIT_ERROR_CPU_FEATURES = 4" in header
    assert " *   input 0: x float32[4, 64]" in header


# -- LoadedModel behaves like CompiledModel -----------------------------------------------


def test_loaded_model_gives_the_jit_outputs_bit_for_bit(loaded, compiled):
    for seed in range(3):
        x, y = random_inputs(seed)
        assert_bit_identical(list(loaded(x, y)), list(compiled(x, y)))


def test_loaded_model_calling_conventions(loaded, compiled):
    """Positional, keyword, alias and dict inputs; outputs by index, name and alias."""
    x, y = random_inputs(10)
    expected = compiled(x, y)
    for outputs in (loaded(x, y), loaded(x=x, y=y), loaded(input_x=x, y=y),
                    loaded({"x": x, "y": y}), loaded(x, y=y)):
        assert outputs.names == ("hidden", "gate")
        assert_bit_identical([outputs["hidden"], outputs["h"], outputs[1]],
                             [expected[0], expected[0], expected["gate"]])
    assert [i.name for i in loaded.inputs] == [i.name for i in compiled.inputs]
    assert loaded.inputs == compiled.inputs and loaded.outputs == compiled.outputs


def test_loaded_model_converts_and_copies_inputs_like_compiled(loaded, compiled):
    """int16 -> float32 is converted, a strided view is copied: same results as the JIT."""
    x, y = random_inputs(11)
    wide = np.zeros((4, 2 * K), np.float32)
    wide[:, ::2] = x
    small = (y * 100).astype(np.int16)
    assert_bit_identical(list(loaded(wide[:, ::2], small)), list(compiled(x, small)))


@pytest.mark.parametrize("call", [
    lambda m, x, y: m(x),
    lambda m, x, y: m(x, y, x),
    lambda m, x, y: m(x, z=y),
    lambda m, x, y: m(x, x=x),
    lambda m, x, y: m(x.astype(np.float64), y),
    lambda m, x, y: m(x[:2], y),
])
def test_loaded_model_rejects_inputs_like_compiled(loaded, compiled, call):
    """Missing, extra, unknown, repeated, lossy dtype, wrong shape: the same InputError."""
    x, y = random_inputs(12)
    with pytest.raises(InputError) as from_jit:
        call(compiled, x, y)
    with pytest.raises(InputError, match=".+") as from_library:
        call(loaded, x, y)
    assert str(from_library.value) == str(from_jit.value)


def test_loaded_model_repr(loaded, exported):
    text = repr(loaded)
    assert text.startswith("<LoadedModel 'dense-model' from libdense_model.so")
    assert "inputs:  x: float32[4,64], y: float32[1,512]" in text
    assert "outputs: hidden: float32[4,512], gate: float32[4,512]" in text
    assert f"target:  native ({ExportTarget.named('native').cpu}), threads=1" in text
    assert f"arena={exported.manifest['arena_bytes']} bytes" in text


def test_loaded_model_from_several_threads(loaded, compiled):
    """Each Python thread uses its own context: concurrent calls give the JIT's results."""
    inputs = [random_inputs(20 + k) for k in range(4)]
    results: dict[int, list] = {}

    def work(k: int) -> None:
        for _ in range(5):
            results[k] = list(loaded(*inputs[k]))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        assert_bit_identical(results[k], list(compiled(*inputs[k])))


def test_load_library_from_directory(exported, compiled):
    model = lpjit.load_library(exported.directory)
    x, y = random_inputs(30)
    assert_bit_identical(list(model(x, y)), list(compiled(x, y)))


def test_load_library_errors(tmp_path, exported):
    with pytest.raises(InputError, match="does not exist"):
        lpjit.load_library(tmp_path / "libnothing.so")
    with pytest.raises(InputError, match="holds 0 lib"):
        lpjit.load_library(tmp_path)
    renamed = tmp_path / "model.so"
    renamed.write_bytes(exported.library.read_bytes())
    with pytest.raises(InputError, match="not named lib<name>.so"):
        lpjit.load_library(renamed)
    wrong = tmp_path / "libother.so"
    wrong.write_bytes(exported.library.read_bytes())
    with pytest.raises(ExportError, match="has no function lpjit_other_create"):
        lpjit.load_library(wrong)


# -- pickling --------------------------------------------------------------------------------


def run_in_worker(model, inputs) -> tuple[int, list[np.ndarray]]:
    """Executed in the worker process: its pid and the model's outputs."""
    return os.getpid(), list(model(*inputs))


def test_pickled_compiled_model_runs_in_a_spawned_worker(compiled):
    """The pickle carries the machine code as a shared library: a fresh process (spawn, no
    inherited state) runs it and returns the JIT's outputs bit for bit."""
    inputs = random_inputs(40)
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        pid, outputs = pool.apply(run_in_worker, (compiled, inputs))
    assert pid != os.getpid()
    assert_bit_identical(outputs, list(compiled(*inputs)))


def test_pickled_compiled_model_is_linked_once(compiled):
    first = pickle.dumps(compiled)
    assert pickle.dumps(compiled) == first
    model = pickle.loads(first)
    assert isinstance(model, lpjit.LoadedModel)
    assert model.inputs == compiled.inputs and model.threads == compiled.threads


def test_pickled_loaded_model_round_trip(loaded, compiled):
    """A LoadedModel pickles as its library's bytes; the copy lives in a temporary directory
    that goes away with the model."""
    copy = pickle.loads(pickle.dumps(loaded))
    assert copy.path != loaded.path and copy.path.read_bytes() == loaded.path.read_bytes()
    x, y = random_inputs(41)
    assert_bit_identical(list(copy(x, y)), list(compiled(x, y)))
    directory = copy.path.parent
    del copy
    gc.collect()
    assert not directory.exists()


# -- targets ---------------------------------------------------------------------------------


def test_named_targets():
    assert ExportTarget.named("x86-64-v3").features == X86_64_V3
    assert {"avx2", "fma", "f16c"} <= X86_64_V3 and "avx512f" not in X86_64_V3
    assert {"avx512f", "avx512bw", "avx512vl"} <= ExportTarget.named("x86-64-v4").features
    assert ISA_LEVELS["x86-64-v2"] < ISA_LEVELS["x86-64-v3"] < X86_64_V4
    native = ExportTarget.named("native")
    assert native.lowering_target() == lpjit.api.CompileOptions().target
    assert ExportTarget.named("aarch64-linux-gnu").required_features == ()
    extended = ExportTarget.named("x86-64-v4").with_features(["amx-int8"])
    assert extended.name == "x86-64-v4+amx-int8" and "amx-int8" in extended.required_features
    assert extended.llvm_features.endswith(",+amx-int8")
    with pytest.raises(ExportError, match="unknown export target 'sparc'; expected one of "
                                          "native, x86-64-v2, x86-64-v3, x86-64-v4"):
        ExportTarget.named("sparc")


def test_every_level_feature_has_a_cpuid_bit():
    """The create-time check covers every feature of the ISA levels."""
    assert X86_64_V4 <= set(CPUID_BITS)
    avx512 = [name for name, bit in CPUID_BITS.items() if name.startswith("avx512")]
    assert all(CPUID_BITS[name].os_state == "avx512" for name in avx512)


def test_x86_64_v3_library_runs_here_without_avx512(tmp_path, compiled):
    """Exported through the CLI for x86-64-v3: it runs here, agrees with the JIT (AVX-512
    tiles sum in another order) and its code touches no zmm register."""
    code = cli.main(["export", str(lpjit.write_ir(dense_graph(), tmp_path / "dense.xml")),
                     "-o", str(tmp_path / "v3"), "--name", "dense_v3", "--target",
                     "x86-64-v3", "--threads", "1"])
    assert code == 0
    model = lpjit.load_library(tmp_path / "v3" / "libdense_v3.so")
    assert model.manifest["target"]["name"] == "x86-64-v3"
    assert set(model.manifest["required_cpu_features"]) == X86_64_V3
    x, y = random_inputs(50)
    for actual, expected in zip(model(x, y), compiled(x, y)):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    disassembly = subprocess.run(["objdump", "-d", str(model.path)], capture_output=True,
                                 text=True, check=True).stdout
    assert "%ymm" in disassembly and "%zmm" not in disassembly


def test_aarch64_export_writes_an_object_and_sources(tmp_path):
    export = lpjit.export(dense_graph(), tmp_path, name="dense_arm",
                          target="aarch64-linux-gnu", threads=1)
    assert export.library is None and export.needed == ()
    elf = export.object_file.read_bytes()
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183  # EM_AARCH64
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dense_arm.h", "dense_arm.json", "dense_arm.o", "dense_arm_runtime.c",
        "dense_arm_weights.S", "dense_arm_weights.bin"]
    blob = np.fromfile(tmp_path / "dense_arm_weights.bin", np.float32)  # the packed matrix
    np.testing.assert_array_equal(np.sort(blob), np.sort(weights().reshape(-1)))
    assert export.manifest["link"].startswith("aarch64-linux-gnu-gcc -shared")
    with pytest.raises(InputError, match="no library this machine can load"):
        export.load()


def test_export_argument_errors(tmp_path):
    with pytest.raises(InputError, match="threads=0 is invalid"):
        lpjit.export(dense_graph(), tmp_path, threads=0)
    with pytest.raises(ExportError, match="library name '9lives' is not a C identifier"):
        lpjit.export(dense_graph(), tmp_path, name="9lives", target="x86-64-v2", threads=1)


# -- pieces ----------------------------------------------------------------------------------


def test_c_literals():
    assert c_string('say "hi"\\?\n') == '"say \\042hi\\042\\134\\077\\012"'
    assert c_string("é") == '"\\303\\251"'
    assert c_identifier("resnet-50/int8") == "resnet_50_int8"
    assert c_identifier("3d") == "m_3d" and c_identifier("--") == "model"


def test_weights_assembly(tmp_path):
    """Each constant: 64-byte aligned, hidden, sized, its slice of the blob."""
    a = np.arange(10, dtype=np.int8)
    b = np.linspace(0, 1, 5, dtype=np.float32)
    text = write_weights([("lpjit.const.1.a", a), ("lpjit.const.2.b", b)], tmp_path / "w.bin")
    assert (tmp_path / "w.bin").read_bytes() == a.tobytes() + b.tobytes()
    assert '\t.balign 64\n\t.globl "lpjit.const.2.b"\n\t.hidden "lpjit.const.2.b"' in text
    assert '\t.size "lpjit.const.2.b", 20\n"lpjit.const.2.b":\n\t.incbin "w.bin", 10, 20' in text
    with pytest.raises(ExportError, match="cannot be written in assembly"):
        write_weights([('bad"name', a)], tmp_path / "x.bin")
