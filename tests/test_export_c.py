"""End to end: XML -> ``lib<name>.so`` -> a C program compiled by the system C compiler.

The C program (written here, built against the generated header with ``-Wall -Wextra
-pedantic -Werror``, the header also compiled as C++) describes every input and output through
the C API, reads the inputs from files, runs the model and writes the outputs; with
``--misalign`` its arrays start 4 bytes past a 64-byte boundary (the runtime copies them),
with ``--workers K`` K threads each run their own context at the same time and must agree.
It also checks the API's error codes (index out of range, NULL arguments).

* A float ResNet-like IR (serial) and its NNCF INT8 IR (parallel): the C outputs are
  bit-identical to ``lpjit.compile``'s on the same inputs, and the library's ``NEEDED``
  entries are libc and libm, plus libgomp for the parallel one.
* A library built for a CPU feature this host lacks (``avx512fp16``: Zen 4 has AVX-512 but
  not FP16) makes ``create`` return ``LPJIT_ERROR_CPU_FEATURES`` and ``check_cpu`` name the
  feature: no SIGILL.
"""

from __future__ import annotations

import pickle
import subprocess
from pathlib import Path

import numpy as np
import oracle
import pytest
from models import builders, nncf_models

import lpjit
from runtime.aot import ExportTarget, needed_libraries

pytestmark = pytest.mark.oracle

C_PROGRAM = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef API(context) context;

#define CHECK(call)                                                                 \
    do {                                                                            \
        lpjit_status status_ = (call);                                              \
        if (status_ != LPJIT_OK) {                                                  \
            fprintf(stderr, "%s: %s\n", #call, API(strerror)(status_));             \
            return 10 + (int)status_;                                               \
        }                                                                           \
    } while (0)

#define EXPECT(call, expected)                                                      \
    do {                                                                            \
        if ((call) != (expected)) {                                                 \
            fprintf(stderr, "%s did not return %s\n", #call, #expected);            \
            return 5;                                                               \
        }                                                                           \
    } while (0)

typedef struct {
    const void** inputs;
    void** outputs;
    lpjit_status status;
} job;

static void* run_job(void* arg) {
    job* j = (job*)arg;
    context* ctx = NULL;
    j->status = API(create)(&ctx);
    if (j->status == LPJIT_OK) j->status = API(run)(ctx, j->inputs, (void* const*)j->outputs);
    API(destroy)(ctx);
    return NULL;
}

/* nbytes of memory starting offset bytes past a 64-byte boundary (the block leaks). */
static char* buffer(size_t nbytes, size_t offset) {
    char* block = (char*)aligned_alloc(64, (nbytes + offset + 63) / 64 * 64 + 64);
    return block == NULL ? NULL : block + offset;
}

static void describe(const char* kind, size_t index, const char* name, lpjit_dtype dtype,
                     const int64_t* shape, size_t rank, size_t nbytes) {
    size_t d;
    printf("%s %zu %s dtype=%d nbytes=%zu shape=", kind, index, name, (int)dtype, nbytes);
    for (d = 0; d < rank; ++d) printf(d ? ",%lld" : "%lld", (long long)shape[d]);
    printf("\n");
}

int main(int argc, char** argv) {
    size_t n_in = 0, n_out = 0, i, offset = 0, rank, nbytes;
    int workers = 1, arg = 1, w;
    const char* name;
    const char* missing = NULL;
    const int64_t* shape;
    lpjit_dtype dtype;
    lpjit_status status;
    context* ctx = NULL;
    const void* inputs[64];
    void* outputs[8][64];
    size_t out_bytes[64];
    job jobs[8];
    pthread_t tids[8];

    for (; arg < argc && argv[arg][0] == '-'; ++arg) {
        if (strcmp(argv[arg], "--misalign") == 0) offset = 4;
        else if (strcmp(argv[arg], "--workers") == 0) workers = atoi(argv[++arg]);
    }
    status = API(check_cpu)(&missing);
    printf("check_cpu %d %s\n", (int)status, missing ? missing : "-");
    status = API(create)(&ctx);
    if (status != LPJIT_OK) {
        printf("create %d %s\n", (int)status, API(strerror)(status));
        return 3;
    }
    CHECK(API(num_inputs)(&n_in));
    CHECK(API(num_outputs)(&n_out));
    if ((size_t)(argc - arg) != n_in + n_out || workers < 1 || workers > 8) return 2;
    for (i = 0; i < n_in; ++i) {
        FILE* f;
        char* data;
        CHECK(API(input_name)(i, &name));
        CHECK(API(input_dtype)(i, &dtype));
        CHECK(API(input_shape)(i, &shape, &rank));
        CHECK(API(input_nbytes)(i, &nbytes));
        describe("input", i, name, dtype, shape, rank, nbytes);
        data = buffer(nbytes, offset);
        f = fopen(argv[arg + i], "rb");
        if (data == NULL || f == NULL || fread(data, 1, nbytes, f) != nbytes) return 6;
        fclose(f);
        inputs[i] = data;
    }
    for (i = 0; i < n_out; ++i) {
        CHECK(API(output_name)(i, &name));
        CHECK(API(output_dtype)(i, &dtype));
        CHECK(API(output_shape)(i, &shape, &rank));
        CHECK(API(output_nbytes)(i, &out_bytes[i]));
        describe("output", i, name, dtype, shape, rank, out_bytes[i]);
        for (w = 0; w < workers; ++w) outputs[w][i] = buffer(out_bytes[i], offset);
    }
    CHECK(API(run)(ctx, inputs, (void* const*)outputs[0]));
    for (w = 1; w < workers; ++w) {
        jobs[w].inputs = inputs;
        jobs[w].outputs = outputs[w];
        pthread_create(&tids[w], NULL, run_job, &jobs[w]);
    }
    for (w = 1; w < workers; ++w) {
        pthread_join(tids[w], NULL);
        CHECK(jobs[w].status);
        for (i = 0; i < n_out; ++i) {
            if (memcmp(outputs[w][i], outputs[0][i], out_bytes[i]) != 0) return 4;
        }
    }
    for (i = 0; i < n_out; ++i) {
        FILE* f = fopen(argv[arg + n_in + i], "wb");
        if (f == NULL || fwrite(outputs[0][i], 1, out_bytes[i], f) != out_bytes[i]) return 7;
        fclose(f);
    }
    EXPECT(API(input_name)(n_in, &name), LPJIT_ERROR_INDEX);
    EXPECT(API(output_shape)(n_out, &shape, &rank), LPJIT_ERROR_INDEX);
    EXPECT(API(create)(NULL), LPJIT_ERROR_INVALID_ARGUMENT);
    EXPECT(API(run)(NULL, inputs, (void* const*)outputs[0]), LPJIT_ERROR_INVALID_ARGUMENT);
    EXPECT(API(run)(ctx, inputs, NULL), LPJIT_ERROR_INVALID_ARGUMENT);
    EXPECT(API(set_threads)(ctx, -1), LPJIT_ERROR_INVALID_ARGUMENT);
    CHECK(API(destroy)(ctx));
    CHECK(API(destroy)(NULL));
    printf("ok\n");
    return 0;
}
"""


def build_program(export: lpjit.ExportedLibrary, directory: Path) -> Path:
    """The C program compiled and linked against ``lib<name>.so``."""
    source = directory / "main.c"
    name = export.name
    source.write_text(f'#include "{name}.h"\n#define API(f) lpjit_{name}_##f\n' + C_PROGRAM)
    program = directory / "main"
    lib_dir = str(export.directory.resolve())
    subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-pedantic", "-Werror", "-O1",
                    "-I", lib_dir, str(source), "-L", lib_dir, f"-l{name}",
                    f"-Wl,-rpath,{lib_dir}", "-lpthread", "-o", str(program)],
                   check=True, capture_output=True, text=True)
    return program


def run_program(program: Path, export: lpjit.ExportedLibrary, inputs: list[np.ndarray],
                directory: Path, *flags: str) -> tuple[list[np.ndarray], str]:
    """Run the C program on ``inputs``; its outputs (dtype and shape from the manifest) and
    what it printed."""
    paths_in = [directory / f"in{i}.bin" for i in range(len(inputs))]
    for path, array in zip(paths_in, inputs):
        np.ascontiguousarray(array).tofile(path)
    specs = export.manifest["outputs"]
    paths_out = [directory / f"out{i}.bin" for i in range(len(specs))]
    done = subprocess.run([str(program), *flags, *map(str, paths_in), *map(str, paths_out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    outputs = [np.fromfile(path, spec["dtype"]).reshape(spec["shape"])
               for path, spec in zip(paths_out, specs)]
    return outputs, done.stdout


def assert_bit_identical(actual: list[np.ndarray], expected) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.dtype == e.dtype and a.shape == e.shape
        assert a.tobytes() == e.tobytes()


SMALL_RESNET = {"channels": (8, 16), "image": 16}


def image(seed: int) -> np.ndarray:
    shape = (1, 3, SMALL_RESNET["image"], SMALL_RESNET["image"])
    return np.random.default_rng(seed).uniform(-2, 2, shape).astype(np.float32)


@pytest.fixture(scope="module")
def float_ir(tmp_path_factory) -> Path:
    return oracle.save(builders.resnet_like(**SMALL_RESNET),
                       tmp_path_factory.mktemp("float"), "resnet_float")


@pytest.fixture(scope="module")
def float_export(float_ir, tmp_path_factory) -> lpjit.ExportedLibrary:
    """The float IR as a serial library."""
    return lpjit.export(float_ir, tmp_path_factory.mktemp("float_lib"), name="resnet_float",
                        threads=1)


@pytest.fixture(scope="module")
def float_program(float_export, tmp_path_factory) -> Path:
    return build_program(float_export, tmp_path_factory.mktemp("float_program"))


@pytest.mark.parametrize("flags", [(), ("--misalign", "--workers", "3")])
def test_float_ir_from_c_is_bit_identical_to_the_jit(float_ir, float_export, float_program,
                                                     tmp_path, flags):
    """A serial float library: C outputs == JIT outputs, bit for bit, from aligned and
    misaligned arrays and from three threads at once."""
    x = image(1)
    outputs, printed = run_program(float_program, float_export, [x], tmp_path, *flags)
    jit = lpjit.compile(float_ir, threads=1)
    assert_bit_identical(outputs, list(jit(x)))
    assert "input 0 input dtype=1 nbytes=3072 shape=1,3,16,16" in printed
    assert "output 0 output dtype=1 nbytes=40 shape=1,10" in printed
    assert printed.startswith("check_cpu 0 -") and printed.endswith("ok\n")


def test_serial_library_needs_only_libc_and_libm(float_export):
    """readelf -d: NEEDED is libc (and libm when the code calls it), nothing else: no
    libgomp, libgcc_s or libstdc++."""
    assert "libc.so.6" in float_export.needed
    assert set(float_export.needed) <= {"libc.so.6", "libm.so.6"}
    assert needed_libraries(float_export.library) == float_export.needed
    assert float_export.manifest["openmp"] is False
    assert float_export.manifest["needed"] == list(float_export.needed)


def test_int8_ir_from_c_is_bit_identical_to_the_jit(tmp_path):
    """An NNCF INT8 library (integer convolutions), parallel: C outputs == JIT outputs;
    NEEDED adds libgomp only; the JIT model pickled (its code linked with OpenMP) agrees."""
    model = nncf_models.quantize(builders.resnet_like(**SMALL_RESNET))
    int8_ir = oracle.save(model, tmp_path / "ir", "resnet_int8")
    export = lpjit.export(int8_ir, tmp_path / "lib", name="resnet_int8", threads=2)
    assert set(export.needed) - {"libm.so.6"} == {"libc.so.6", "libgomp.so.1"}
    assert export.manifest["openmp"] is True and export.manifest["threads"] == 2
    program = build_program(export, tmp_path)
    x = image(2)
    outputs, _ = run_program(program, export, [x], tmp_path, "--workers", "2")
    jit = lpjit.compile(int8_ir, threads=2)
    assert any("x i8" in layer.precision for layer in jit.precision_report().layers)
    assert_bit_identical(outputs, list(jit(x)))
    assert_bit_identical(list(export.load()(x)), list(jit(x)))
    assert_bit_identical(list(pickle.loads(pickle.dumps(jit))(x)), list(jit(x)))


def test_missing_cpu_feature_is_an_error_code_not_sigill(tmp_path):
    """Built for x86-64-v4 + avx512fp16 (absent on this host): create returns
    LPJIT_ERROR_CPU_FEATURES (4), check_cpu names the feature; the program exits cleanly."""
    ir = oracle.save(builders.mlp((16, 8)), tmp_path / "ir", "mlp")
    target = ExportTarget.named("x86-64-v4").with_features(["avx512fp16"])
    export = lpjit.export(ir, tmp_path / "lib", name="fp16", target=target, threads=1)
    assert "avx512fp16" in export.manifest["required_cpu_features"]
    program = build_program(export, tmp_path)
    done = subprocess.run([str(program)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "check_cpu 4 avx512fp16",
        ("create 4 this CPU lacks an instruction set extension the library was compiled for "
         "(see check_cpu)")]


def test_header_compiles_as_cpp(float_export, tmp_path):
    """The header is valid C++ too (extern "C", no C-only constructs)."""
    source = tmp_path / "use.cpp"
    source.write_text('#include "resnet_float.h"\nint main() { size_t n = 0; '
                      'return lpjit_resnet_float_num_inputs(&n) == LPJIT_OK ? 0 : 1; }\n')
    subprocess.run(["c++", "-std=c++17", "-Wall", "-Wextra", "-pedantic", "-Werror",
                    "-fsyntax-only", "-I", str(float_export.directory), str(source)],
                   check=True)
