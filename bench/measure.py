"""Interleaved timing of several contenders (benchmarks only).

1. **Warm-up.**  Each contender runs ``warmup`` times; then one timed call sets its batch
   size, the number of calls that lasts about ``batch_seconds``.
2. **Rounds.**  Every round runs one batch of each contender, round-robin, the order reversed
   on odd rounds, after a ``settle`` pause (so that the worker threads of the previous
   contender's runtime, OpenMP or TBB, which spin for a while after a parallel region, are
   asleep and do not steal a core).  A sample is the batch's mean time per call.
3. **Statistics.**  Median, 10th and 90th percentile and minimum of each contender's samples.

A contender that raises is dropped from the later rounds; its error is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import attrs
import numpy as np


@attrs.frozen
class Settings:
    """How long to measure: ``rounds`` samples per contender of ``batch_seconds`` each."""

    rounds: int = 15
    batch_seconds: float = 0.02
    warmup: int = 3
    settle: float = 0.02

    @classmethod
    def quick(cls) -> Settings:
        """A smoke run: few, short samples."""
        return cls(rounds=3, batch_seconds=0.005, warmup=1, settle=0.002)


@attrs.frozen
class Timing:
    """Seconds per call of one contender: the samples and their statistics, or an error."""

    samples: tuple[float, ...] = ()
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.samples)

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def p10(self) -> float:
        return float(np.percentile(self.samples, 10))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.samples, 90))

    def to_json(self) -> dict:
        if not self.ok:
            return {"error": self.error}
        return {"median_ms": self.median * 1e3, "p10_ms": self.p10 * 1e3,
                "p90_ms": self.p90 * 1e3, "min_ms": min(self.samples) * 1e3,
                "samples": len(self.samples)}


def describe_error(error: BaseException) -> str:
    """``ErrorType: message`` on one line."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def interleaved(contenders: Mapping[str, Callable[[], object]],
                settings: Settings) -> dict[str, Timing]:
    """Time every contender round-robin (module docstring)."""
    errors: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for name, run in contenders.items():
        try:
            sizes[name] = _batch_size(run, settings)
        except Exception as error:  # noqa: BLE001 - a failing contender is a reported cell
            errors[name] = describe_error(error)
    samples: dict[str, list[float]] = {name: [] for name in sizes}
    order = list(sizes)
    for round_index in range(settings.rounds):
        for name in order if round_index % 2 == 0 else reversed(order):
            if name in errors:
                continue
            time.sleep(settings.settle)
            try:
                samples[name].append(_batch(contenders[name], sizes[name]))
            except Exception as error:  # noqa: BLE001
                errors[name] = describe_error(error)
    return {name: Timing(tuple(samples.get(name, ())), errors.get(name, ""))
            for name in contenders}


def _batch_size(run: Callable[[], object], settings: Settings) -> int:
    for _ in range(settings.warmup):
        run()
    once = _batch(run, 1)
    return max(1, int(settings.batch_seconds / max(once, 1e-7)))


def _batch(run: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        run()
    return (time.perf_counter() - start) / count
