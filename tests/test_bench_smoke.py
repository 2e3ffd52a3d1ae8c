"""Smoke test of the benchmark harness (``python -m bench.run``): its whole code path on the
tiny model, with ``--quick``.  It checks the document the run produces, never a speed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import lpjit
from lpjit.errors import LoweringError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import run

pytestmark = pytest.mark.oracle


def test_quick_run_reports_every_cell_and_survives_a_failing_compile(
        tmp_path, monkeypatch, capsys) -> None:
    """lpjit int8 is made to fail: its cell carries the error, everything else is measured."""
    real_compile = lpjit.compile

    def failing_int8(xml, *, low_precision=True, **options):
        if low_precision:
            raise LoweringError("injected failure of the int8 path")
        return real_compile(xml, low_precision=low_precision, **options)

    monkeypatch.setattr(lpjit, "compile", failing_int8)
    out = tmp_path / "bench.json"
    document = run.main(["--quick", "--models", "tiny_cnn", "--threads", "1",
                         "--models-dir", str(tmp_path / "models"),
                         "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert json.loads(out.read_text())["results"] == json.loads(
        json.dumps(document["results"], default=str))
    assert {p["name"] for p in document["peaks"]} >= {"fp32_fma", "int8_exact", "int8_sat"}
    assert all(p["assembly_check"] == "ok" for p in document["peaks"])
    rows = {(r["precision"], r["threads"]): r for r in document["results"]}
    assert set(rows) == {("int8", 1), ("fp32", 1)}
    int8, fp32 = rows["int8", 1], rows["fp32", 1]
    assert int8["lpjit"]["error"] == "LoweringError: injected failure of the int8 path"
    for cell in (int8["openvino"], fp32["lpjit"], fp32["openvino"]):
        assert cell["samples"] == 3 and cell["p10_ms"] <= cell["median_ms"] <= cell["p90_ms"]
        assert cell["gops"] > 0
    for row in (int8, fp32):        # the peak kernel timed in the same rounds as the cells
        peak = row["peak_beside"]["gops"]
        assert peak > 0 and row["openvino"]["peak_fraction"] == pytest.approx(
            row["openvino"]["gops"] / peak, rel=1e-3, abs=1e-4)
        assert row["openvino"]["peak_fraction_best"] > 0
    assert int8["peak_beside"]["kernel"] in ("int8_exact", "int8_vnni")
    assert fp32["peak_beside"]["kernel"] == "fp32_fma"
    assert fp32["macs"] > 0 and fp32["relative_l2_lpjit_vs_openvino"] < 1e-4
    assert fp32["lpjit"]["cache_hit"] is True and "ratio" in fp32 and "ratio" not in int8
    printed = capsys.readouterr().out
    assert "lpjit ms [p10-p90]" in printed and "injected failure" in printed
    for xml in (tmp_path / "models" / "tiny_cnn").glob("*/model.xml"):
        assert xml.with_suffix(".bin").exists()
