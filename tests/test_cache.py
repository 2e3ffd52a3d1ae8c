"""The on-disk compile cache: a hit in a new process, misses on any change, corrupted entries
recompiled, clearing, pruning, and the canonical key."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import lpjit
from lpjit import dtypes
from lpjit.cache import CompileCache, UncacheableError, canonical, graph_digest, ir_digest
from lpjit.cli import main as cli_main
from lpjit.errors import CodegenError
from lpjit.graph import Constant, Graph, Origin, Parameter, Result
from lpjit.ops import activations as act
from lpjit.ops import elementwise as ew
from runtime.object_library import ObjectLibrary

WIDTH = 20000          # 80 KB constants: bound by symbol, so constants.bin is exercised


def scaled_relu(seed: int = 0, width: int = WIDTH) -> Graph:
    """``relu(x * scale + shift)`` with two large constants."""
    rng = np.random.default_rng(seed)
    x = Parameter(origin=Origin("0", "x", "Parameter"), inputs=(), element_type=dtypes.f32,
                  shape=(2, width), tensor_names=(("x",),))
    scale = Constant.of(rng.uniform(0.5, 2, width).astype(np.float32),
                        Origin("1", "scale", "Const"))
    shift = Constant.of(rng.uniform(-1, 1, width).astype(np.float32),
                        Origin("2", "shift", "Const"))
    mul = ew.Multiply(origin=Origin("3", "mul", "Multiply"), inputs=(x.output, scale.output))
    add = ew.Add(origin=Origin("4", "add", "Add"), inputs=(mul.output, shift.output))
    relu = act.Relu(origin=Origin("5", "relu", "ReLU"), inputs=(add.output,),
                    tensor_names=(("y",),))
    return Graph("scaled_relu", [x], [Result(origin=Origin("6", "out", "Result"),
                                             inputs=(relu.output,))])


def expected(graph: Graph, x: np.ndarray) -> np.ndarray:
    scale, shift = (n.data for n in graph.nodes if isinstance(n, Constant))
    return np.maximum(x * scale + shift, 0)


@pytest.fixture
def xml(tmp_path: Path) -> Path:
    return lpjit.write_ir(scaled_relu(), tmp_path / "ir" / "model.xml")


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(7).uniform(-2, 2, (2, WIDTH)).astype(np.float32)


COMPILE_IN_A_NEW_PROCESS = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import lpjit
    from lpjit.cache import compiler_fingerprint
    xml, cache, inputs, outputs = sys.argv[1:]
    start = time.perf_counter()
    compiled = lpjit.compile(xml, threads=1, cache=cache)
    seconds = time.perf_counter() - start
    np.save(outputs, compiled(np.load(inputs))[0])
    print(json.dumps({"from_cache": compiled.from_cache, "seconds": seconds,
                      "entry": str(compiled.cache_entry), "sources": compiler_fingerprint()}))
""")


def compile_in_new_process(xml: Path, cache: Path, x: np.ndarray, tmp_path: Path,
                           tag: str) -> tuple[dict, np.ndarray]:
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / f"{tag}.npy"
    done = subprocess.run([sys.executable, "-c", COMPILE_IN_A_NEW_PROCESS, str(xml),
                           str(cache), str(tmp_path / "x.npy"), str(out)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1]), np.load(out)


def test_second_compile_in_a_new_process_loads_the_code(xml, x, tmp_path) -> None:
    """The second process finds the entry the first one stored, and computes the same."""
    for attempt in range(3):   # again if someone edited lpjit's sources in between
        cache = tmp_path / f"cache{attempt}"
        first, cold = compile_in_new_process(xml, cache, x, tmp_path, "cold")
        second, warm = compile_in_new_process(xml, cache, x, tmp_path, "warm")
        if first["sources"] == second["sources"]:
            break
    print(f"compile: cold {first['seconds']:.3f} s, from the cache {second['seconds']:.3f} s "
          "(both including lpjit's first import)")
    assert not first["from_cache"] and second["from_cache"]
    assert first["entry"] == second["entry"] and Path(first["entry"]).parent == cache
    np.testing.assert_array_equal(warm, cold)
    np.testing.assert_allclose(cold, expected(scaled_relu(), x), rtol=1e-6, atol=1e-6)


def test_a_hit_has_the_interface_reports_and_timings_of_the_compile(xml, x, tmp_path) -> None:
    cache = tmp_path / "cache"
    cold = lpjit.compile(xml, threads=1, cache=cache)
    warm = lpjit.compile(xml, threads=1, cache=cache)
    assert (cold.from_cache, warm.from_cache) == (False, True)
    assert repr(warm) == repr(cold)
    assert warm.timings() == cold.timings()
    assert str(warm.memory_report()) == str(cold.memory_report())
    assert warm.precision_report() == cold.precision_report()
    np.testing.assert_array_equal(warm(x=x)["y"], cold(x)[0])
    # Inspection compiles the source again, on demand.
    assert [s.label for s in warm.program.steps] == [s.label for s in cold.program.steps]


def test_a_hit_pickles_and_profiles_like_a_compiled_model(xml, x, tmp_path) -> None:
    from lpjit.profiling import profile_model

    cache = tmp_path / "cache"
    cold = lpjit.compile(xml, threads=1, cache=cache)
    warm = lpjit.compile(xml, threads=1, cache=cache)
    assert warm.from_cache
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(warm))(x)[0], cold(x)[0])
    profile = profile_model(warm, [x], iterations=2)
    assert [row["layers"] for row in profile.rows()] == [
        [o.name for o in step.layers] for step in cold.program.steps]


def test_changed_options_or_ir_are_misses(xml, x, tmp_path) -> None:
    cache = tmp_path / "cache"
    lpjit.compile(xml, threads=1, cache=cache)
    assert lpjit.compile(xml, threads=1, cache=cache).from_cache
    assert not lpjit.compile(xml, threads=2, cache=cache).from_cache
    assert not lpjit.compile(xml, threads=1, low_precision=False, cache=cache).from_cache
    changed = lpjit.write_ir(scaled_relu(seed=1), tmp_path / "changed" / "model.xml")
    other = lpjit.compile(changed, threads=1, cache=cache)
    assert not other.from_cache
    np.testing.assert_allclose(other(x)[0], expected(scaled_relu(seed=1), x), rtol=1e-6,
                               atol=1e-6)
    assert len(CompileCache(cache).entries()) == 4


def test_graphs_xml_text_and_paths_are_cached(xml, x, tmp_path) -> None:
    cache = tmp_path / "cache"
    graph = scaled_relu()
    assert not lpjit.compile(graph, threads=1, cache=cache).from_cache
    assert lpjit.compile(scaled_relu(), threads=1, cache=cache).from_cache
    text, weights = xml.read_bytes(), xml.with_suffix(".bin").read_bytes()
    assert not lpjit.compile(text, weights=weights, threads=1, cache=cache).from_cache
    assert lpjit.compile(text, weights=xml.with_suffix(".bin"), threads=1,
                         cache=cache).from_cache
    assert lpjit.compile(xml, threads=1, cache=cache).from_cache


@pytest.mark.parametrize("damage", ["code.o", "constants.bin", "entry.pkl", "truncate",
                                    "missing"])
def test_a_corrupted_entry_is_compiled_again(xml, x, tmp_path, damage) -> None:
    cache = tmp_path / "cache"
    entry = lpjit.compile(xml, threads=1, cache=cache).cache_entry
    if damage == "truncate":
        path = entry / "entry.pkl"
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "missing":
        (entry / "code.o").unlink()
    else:
        path = entry / damage
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x5A
        path.write_bytes(bytes(data))
    again = lpjit.compile(xml, threads=1, cache=cache)
    assert not again.from_cache and again.cache_entry == entry
    np.testing.assert_allclose(again(x)[0], expected(scaled_relu(), x), rtol=1e-6, atol=1e-6)
    assert lpjit.compile(xml, threads=1, cache=cache).from_cache       # stored anew


def test_clear_removes_entries_and_nothing_else(xml, tmp_path) -> None:
    cache = tmp_path / "cache"
    lpjit.compile(xml, threads=1, cache=cache)
    lpjit.compile(xml, threads=2, cache=cache)
    (cache / "notes.txt").write_text("keep me")
    assert lpjit.clear_cache(cache) == 2
    assert CompileCache(cache).entries() == [] and (cache / "notes.txt").exists()
    assert not lpjit.compile(xml, threads=1, cache=cache).from_cache


def test_cache_false_neither_reads_nor_writes(xml, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LPJIT_CACHE_DIR", str(tmp_path / "default"))
    compiled = lpjit.compile(xml, threads=1, cache=False)
    assert not compiled.from_cache and compiled.cache_entry is None
    assert not (tmp_path / "default").exists()


def test_the_environment_chooses_the_default_directory(xml, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LPJIT_CACHE_DIR", str(tmp_path / "env"))
    assert lpjit.compile(xml, threads=1).cache_entry.parent == tmp_path / "env"
    monkeypatch.delenv("LPJIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert lpjit.compile(xml, threads=1).cache_entry.parent == tmp_path / "xdg" / "lpjit"
    assert lpjit.clear_cache() == 1


def test_dump_dir_and_verify_compile_but_still_store(xml, tmp_path) -> None:
    cache = tmp_path / "cache"
    lpjit.compile(xml, threads=1, cache=cache)
    assert not lpjit.compile(xml, threads=1, cache=cache, verify=True).from_cache
    assert not lpjit.compile(xml, threads=1, cache=cache, dump_dir=tmp_path / "d").from_cache


def test_least_recently_used_entries_go_beyond_the_size_limit(xml, tmp_path) -> None:
    cache = tmp_path / "cache"
    first = lpjit.compile(xml, threads=1, cache=cache).cache_entry
    one_entry = CompileCache(cache).size_bytes()
    small = CompileCache(cache, max_bytes=one_entry + one_entry // 2)
    second = lpjit.compile(xml, threads=2, cache=small).cache_entry
    assert small.entries() == [second] and not first.exists()


def test_a_bad_cache_argument_is_an_input_error(xml) -> None:
    with pytest.raises(lpjit.errors.InputError, match=r"cache=3 is invalid"):
        lpjit.compile(xml, cache=3)


def test_the_key_digests_are_canonical(xml, tmp_path) -> None:
    """Equal inputs give equal digests (set order, fresh objects); any change differs."""
    assert graph_digest(scaled_relu()) == graph_digest(scaled_relu())
    assert graph_digest(scaled_relu(seed=1)) != graph_digest(scaled_relu())
    assert graph_digest(scaled_relu(width=8)) != graph_digest(scaled_relu())
    assert canonical(frozenset({"avx2", "fma", "f16c"})) == canonical(
        frozenset({"f16c", "fma", "avx2"}))
    assert ir_digest(xml) == ir_digest(xml.read_bytes(), xml.with_suffix(".bin"))
    assert ir_digest(xml) != ir_digest(xml, shapes={"x": (2, WIDTH)})
    with pytest.raises(UncacheableError, match="has no canonical form"):
        canonical(object())


def test_an_object_needing_an_unknown_symbol_is_refused() -> None:
    with pytest.raises(CodegenError, match="lpjit_no_such_symbol are not defined"):
        ObjectLibrary(b"", (), externals=("lpjit_no_such_symbol",))


def test_cli_cache_info_and_clear(xml, tmp_path, capsys) -> None:
    cache = tmp_path / "cache"
    lpjit.compile(xml, threads=1, cache=cache)
    assert cli_main(["cache", "info", "--dir", str(cache)]) == 0
    assert f"directory {cache}" in capsys.readouterr().out
    assert cli_main(["cache", "clear", "--dir", str(cache)]) == 0
    assert capsys.readouterr().out.startswith("removed 1 entries")
    assert CompileCache(cache).entries() == []
