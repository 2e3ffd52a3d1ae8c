"""Hypothesis as the driver of the fuzz mutators: draws, settings and the checked property."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st

from fuzz import conftest, mutations, runner

T = TypeVar("T")
TIME_BUDGET = 2.0                   # seconds per case (reading and the reference)
COMPILE_TIME_BUDGET = 30.0          # seconds per case that is also compiled
MEMORY_HEADROOM = 1 << 30           # bytes of address space a case may add


class DrawChooser:
    """A ``mutations.Chooser`` over hypothesis draws (shrinks toward low integers and the
    first option)."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def choice(self, options: Sequence[T]) -> T:
        return options[self.data.draw(st.integers(0, len(options) - 1))]


def fuzz_settings(examples: int) -> settings:
    """Deterministic (derandomized) runs of ``examples`` cases, no deadline per example."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example],
                    print_blob=True)


def check(seeds: Sequence[mutations.Seed], pools: mutations.Pools, data: st.DataObject,
          families: Sequence[str], max_steps: int = 3, *,
          compile_model: bool = False) -> runner.Outcome:
    """Make a case from ``families``; require success or an LpjitError, within the time and
    memory budget, and no compiler failure (``runner.COMPILER_FAILURES``: compiled outputs
    that disagree with the reference, a ``VerificationError``).  Tallies the outcome
    (``conftest.TALLY``) and returns it."""
    case = mutations.make_case(seeds, pools, DrawChooser(data), families, max_steps)
    note(case.describe())
    budget = COMPILE_TIME_BUDGET if compile_model else TIME_BUDGET
    try:
        with runner.time_limit(budget), runner.address_space_limit(MEMORY_HEADROOM):
            outcome = runner.run_case(case, compile_model=compile_model)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        conftest.TALLY["crash"] += 1
        raise AssertionError(f"{case.describe()}: {type(e).__name__}: {e}") from e
    conftest.TALLY[str(outcome)] += 1
    if str(outcome) in runner.COMPILER_FAILURES:
        raise AssertionError(f"{case.describe()}: {outcome}: {outcome.detail}")
    return outcome
