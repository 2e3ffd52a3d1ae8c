"""Exported libraries under concurrency: one context per thread, no shared scratch.

A C program (built against the generated header) starts 4 pthreads; each creates its own
context and runs the model 200 times on its own input, comparing every output with the JIT's
output for that input, byte for byte (outputs are poisoned before each run).  The bundled
float example is exported serial, the bundled INT8 example with an OpenMP team of 2 (each
pthread then forks its own team).  The same library loaded in Python is called from 4 Python
threads as well.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

import lpjit

EXAMPLES = Path(lpjit.__file__).parent / "examples"
THREADS, ITERATIONS = 4, 200

C_PROGRAM = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 4

typedef struct {
    int iterations;
    const void* input;
    const unsigned char* expected;
    size_t nbytes;
    int runs;
    int mismatches;
    lpjit_status status;
} job;

static void* work(void* arg) {
    job* j = (job*)arg;
    API(context)* ctx = NULL;
    const void* inputs[1];
    void* outputs[1];
    unsigned char* out = (unsigned char*)aligned_alloc(64, (j->nbytes + 63) / 64 * 64);
    int i;
    if (out == NULL) {
        j->status = LPJIT_ERROR_OUT_OF_MEMORY;
        return NULL;
    }
    inputs[0] = j->input;
    outputs[0] = out;
    j->status = API(create)(&ctx);
    for (i = 0; i < j->iterations && j->status == LPJIT_OK; ++i) {
        memset(out, 0xA5 ^ i, j->nbytes);
        j->status = API(run)(ctx, inputs, (void* const*)outputs);
        j->runs += j->status == LPJIT_OK;
        if (memcmp(out, j->expected, j->nbytes) != 0) j->mismatches++;
    }
    API(destroy)(ctx);
    free(out);
    return NULL;
}

static void* slurp(const char* path, size_t nbytes) {
    void* data = aligned_alloc(64, (nbytes + 63) / 64 * 64);
    FILE* f = fopen(path, "rb");
    if (data == NULL || f == NULL || fread(data, 1, nbytes, f) != nbytes) return NULL;
    fclose(f);
    return data;
}

/* main ITERATIONS INPUT0 EXPECTED0 ... INPUT3 EXPECTED3 */
int main(int argc, char** argv) {
    size_t n_in = 0, n_out = 0, in_bytes = 0, out_bytes = 0;
    job jobs[THREADS];
    pthread_t tids[THREADS];
    int k, failed = 0;
    if (argc != 2 + 2 * THREADS) return 2;
    if (API(num_inputs)(&n_in) != LPJIT_OK || API(num_outputs)(&n_out) != LPJIT_OK
        || n_in != 1 || n_out != 1) return 3;
    API(input_nbytes)(0, &in_bytes);
    API(output_nbytes)(0, &out_bytes);
    for (k = 0; k < THREADS; ++k) {
        memset(&jobs[k], 0, sizeof jobs[k]);
        jobs[k].iterations = atoi(argv[1]);
        jobs[k].input = slurp(argv[2 + 2 * k], in_bytes);
        jobs[k].expected = (const unsigned char*)slurp(argv[3 + 2 * k], out_bytes);
        jobs[k].nbytes = out_bytes;
        if (jobs[k].input == NULL || jobs[k].expected == NULL) return 4;
    }
    for (k = 0; k < THREADS; ++k) pthread_create(&tids[k], NULL, work, &jobs[k]);
    for (k = 0; k < THREADS; ++k) {
        pthread_join(tids[k], NULL);
        printf("thread %d runs %d mismatches %d status %d\n", k, jobs[k].runs,
               jobs[k].mismatches, (int)jobs[k].status);
        failed |= jobs[k].status != LPJIT_OK || jobs[k].mismatches != 0;
    }
    return failed;
}
"""


def build_program(export: lpjit.ExportedLibrary, directory: Path) -> Path:
    source = directory / "threads.c"
    source.write_text(f'#include "{export.name}.h"\n#define API(f) lpjit_{export.name}_##f\n'
                      + C_PROGRAM)
    program = directory / "threads"
    lib_dir = str(export.directory.resolve())
    subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-pedantic", "-Werror", "-O1",
                    "-I", lib_dir, str(source), "-L", lib_dir, f"-l{export.name}",
                    f"-Wl,-rpath,{lib_dir}", "-lpthread", "-o", str(program)],
                   check=True, capture_output=True, text=True)
    return program


@pytest.fixture(scope="module", params=[("resnet_tiny_fp32", 1), ("resnet_tiny_int8", 2)],
                ids=["float-serial", "int8-openmp2"])
def exported(request, tmp_path_factory):
    """(library, JIT model, inputs, JIT outputs): 4 different inputs per model."""
    example, team = request.param
    ir = EXAMPLES / f"{example}.xml"
    export = lpjit.export(ir, tmp_path_factory.mktemp("lib"), name=example, threads=team)
    jit = lpjit.compile(ir, threads=team, cache=False)
    rng = np.random.default_rng(42)
    inputs = [rng.uniform(-2, 2, jit.inputs[0].shape).astype(np.float32)
              for _ in range(THREADS)]
    outputs = [jit(x)[0] for x in inputs]
    assert len({o.tobytes() for o in outputs}) == THREADS        # the inputs tell apart
    return export, jit, inputs, outputs


def test_four_pthreads_with_their_own_contexts_agree_with_the_jit(exported, tmp_path):
    export, _, inputs, outputs = exported
    program = build_program(export, tmp_path)
    files: list[str] = []
    for k, (x, y) in enumerate(zip(inputs, outputs)):
        x.tofile(tmp_path / f"in{k}.bin")
        y.tofile(tmp_path / f"out{k}.bin")
        files += [str(tmp_path / f"in{k}.bin"), str(tmp_path / f"out{k}.bin")]
    done = subprocess.run([str(program), str(ITERATIONS), *files], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [f"thread {k} runs {ITERATIONS} mismatches 0 status 0"
                                        for k in range(THREADS)]


def test_the_loaded_library_from_four_python_threads(exported):
    export, _, inputs, outputs = exported
    loaded = export.load()
    failures: list[str] = []
    barrier = threading.Barrier(THREADS)

    def worker(k: int) -> None:
        barrier.wait()
        for i in range(ITERATIONS // 2):
            if not np.array_equal(loaded(inputs[k])[0], outputs[k]):
                failures.append(f"thread {k}, call {i}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
