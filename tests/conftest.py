"""Shared fixtures.  Under ``CI=true`` the OpenVINO oracle must be importable: never skipped."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The numba executor (lowering.numba_exec) is the tests' second opinion on loop-IR meaning, run
# on small inputs: compiling its generated functions dominates, and LLVM's -O0 halves that
# without changing results (no fast-math: IEEE operations either way).  Set before numba loads.
os.environ.setdefault("NUMBA_OPT", "0")


def _openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        if IN_CI:
            raise RuntimeError("CI=true but openvino is not installed: the oracle tests "
                               "must run in CI (pip install -e '.[test]')") from None
        return False
    return True


HAVE_OPENVINO = _openvino_available()


def pytest_collection_modifyitems(config, items):
    if HAVE_OPENVINO:
        return
    skip = pytest.mark.skip(reason="openvino is not installed (pip install -e '.[test]')")
    for item in items:
        if "oracle" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _session_compile_cache(tmp_path_factory):
    """Tests never touch the user's compile cache: one cache for the session (module-scoped
    fixtures compile into it) ..."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LPJIT_CACHE_DIR", str(tmp_path_factory.mktemp("lpjit-cache")))
        yield


@pytest.fixture(autouse=True)
def _compile_cache(tmp_path_factory, monkeypatch):
    """... and an empty one for each test, so that no test loads code another one compiled
    (say under a monkeypatched schedule)."""
    monkeypatch.setenv("LPJIT_CACHE_DIR", str(tmp_path_factory.mktemp("lpjit-cache")))
