"""Fixtures of the fuzz tests: the seed corpus (built once per session) and a case tally."""

from __future__ import annotations

from collections import Counter

import pytest

from fuzz import mutations

# Outcomes of every fuzz case the session ran ("read: GraphError", "reference: ok", ...).
TALLY: Counter[str] = Counter()


@pytest.fixture(scope="session")
def corpus() -> tuple[list[mutations.Seed], mutations.Pools]:
    """The seed IRs (saved by OpenVINO and NNCF) and the value pools drawn from them."""
    from fuzz import seeds

    built = seeds.build_corpus()
    return built, mutations.Pools.of(built)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLY:
        return
    from fuzz.runner import COMPILER_FAILURES

    crashes = TALLY.get("crash", 0)
    findings = sum(TALLY.get(outcome, 0) for outcome in COMPILER_FAILURES)
    terminalreporter.write_sep("-", f"fuzz: {sum(TALLY.values())} cases, {crashes} crashes, "
                                    f"{findings} compiler findings")
    for outcome, count in sorted(TALLY.items()):
        terminalreporter.write_line(f"{count:6d}  {outcome}")
