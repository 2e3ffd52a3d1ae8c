"""Fuzz lpjit's IR reader, reference executor and compiler with mutated OpenVINO IRs.

    python tools/fuzz_ir.py --cases 20000 --seed 1
    python tools/fuzz_ir.py --cases 2000 --seed 1 --compile-every 20   # also compile 1 in 20
    python tools/fuzz_ir.py --seed 1 --replay 1234                     # rerun one case here

Case ``i`` of seed ``N`` is fully determined by ``(N, i)``: a seed IR from the corpus
(``tests/fuzz/seeds.py``, built with OpenVINO and NNCF at start-up) and 1..``--max-steps``
mutations from ``tests/fuzz/mutations.py``.  Cases run in ``--workers`` spawned processes, each
under an address-space limit (``RLIMIT_AS``, ``--memory-mb`` beyond what the worker maps after
start-up) and a per-case watchdog (``--timeout`` seconds; ``SIGALRM`` in the worker, and the
parent kills a worker that stops answering).  Every case must end in success or an
``LpjitError``; anything else -- another exception, a timeout, a killed or crashed worker -- is
a crash, written to ``--out`` as ``<seed>-<case>.xml``/``.bin`` plus a ``.txt`` with the
mutations and the traceback.  Compiled outputs that disagree with the reference, and
``VerificationError`` (a compiler invariant broken), are compiler findings
(``runner.COMPILER_FAILURES``), written out the same way; like crashes, they fail the run.
(Compiled f32 weight decompression, a documented difference from the reference's f16 steps,
is checked against the reference of the folded graph: ``compile: ok, as f32 decompression``.)

Prints the cases run, the count of every outcome, then every crash and finding; exits 1 if
any case crashed or is a compiler finding.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import multiprocessing
import random
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fuzz import mutations, runner

Report = Callable[[int, str, str], None]
BATCH = 16                  # cases sent to a worker at a time
GRACE = 10.0                # seconds past --timeout before the parent kills a silent worker
STARTUP = 120.0             # seconds a worker may take to import lpjit and say it is ready


@attrs.frozen
class Options:
    """What every worker needs to rebuild and run case ``i``."""

    seed: int
    timeout: float
    memory: int
    families: tuple[str, ...]
    max_steps: int
    compile_every: int


@attrs.frozen
class Finding:
    """A case whose outcome is a crash (or a compile mismatch), with the worker's report."""

    index: int
    kind: str
    detail: str


def case_at(seeds: Sequence[mutations.Seed], pools: mutations.Pools, options: Options,
            index: int) -> mutations.Case:
    """Case ``index`` of ``options.seed``: the same on every run and in every process."""
    chooser = mutations.RandomChooser(random.Random(f"{options.seed}:{index}"))
    return mutations.make_case(seeds, pools, chooser, options.families, options.max_steps)


def compiles(options: Options, index: int) -> bool:
    return options.compile_every > 0 and index % options.compile_every == 0


def run_one(seeds: Sequence[mutations.Seed], pools: mutations.Pools, options: Options,
            index: int, scratch: Path) -> tuple[str, str]:
    """(outcome, detail) of case ``index``; outcome ``crash`` carries the traceback."""
    case = case_at(seeds, pools, options, index)
    budget = options.timeout * (10 if compiles(options, index) else 1)
    try:
        with runner.time_limit(budget):
            outcome = runner.run_case(case, input_seed=index, scratch=scratch,
                                      compile_model=compiles(options, index))
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        return "crash", f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}"
    return str(outcome), outcome.detail


# ------------------------------------------------------------------------------------------
# Worker processes


def _limit_address_space(extra: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = runner.address_space_in_use() + extra
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY
                                            else min(limit, hard), hard))


def warm_up(seeds: Sequence[mutations.Seed], compile_model: bool) -> None:
    """Run every seed unmutated, so that lazy imports and LLVM's start-up happen before the
    memory limit is set (and do not count as the first case's allocations)."""
    smallest = min(seeds, key=lambda seed: len(seed.xml))
    for seed in seeds:
        case = mutations.Case(seed.name, seed.xml, seed.weights, ())
        runner.run_case(case, compile_model=compile_model and seed is smallest)


def worker_main(conn: Connection, seeds: list[mutations.Seed], options: Options) -> None:
    """Receive batches of case indices; answer ``(index, outcome, detail)`` for each."""
    pools = mutations.Pools.of(seeds)
    warm_up(seeds, compile_model=options.compile_every > 0)
    _limit_address_space(options.memory)
    with tempfile.TemporaryDirectory(prefix="fuzz_ir_") as scratch:
        conn.send("ready")
        while (batch := conn.recv()) is not None:
            for index in batch:
                outcome, detail = run_one(seeds, pools, options, index, Path(scratch))
                conn.send((index, outcome, detail))


@attrs.define
class Worker:
    """A worker process, its pipe, the cases sent and not yet answered, and its last word."""

    process: multiprocessing.process.BaseProcess
    conn: Connection
    pending: collections.deque[int] = attrs.field(factory=collections.deque)
    ready: bool = False
    last: float = attrs.field(factory=time.monotonic)

    @classmethod
    def start(cls, context: multiprocessing.context.SpawnContext,
              seeds: list[mutations.Seed], options: Options) -> Worker:
        parent, child = context.Pipe()
        process = context.Process(target=worker_main, args=(child, seeds, options),
                                  daemon=True)
        process.start()
        child.close()
        return cls(process, parent)

    def overdue(self, options: Options, now: float) -> bool:
        if not self.ready:
            return now - self.last > STARTUP
        if not self.pending:
            return False
        budget = options.timeout * (10 if compiles(options, self.pending[0]) else 1)
        return now - self.last > budget + GRACE

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


class Pool:
    """Runs cases on ``count`` workers, replacing any worker that dies or hangs."""

    def __init__(self, count: int, seeds: list[mutations.Seed], options: Options) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.seeds, self.options = seeds, options
        self.workers = [Worker.start(self.context, seeds, options) for _ in range(count)]

    def run(self, indices: Sequence[int], report: Report) -> None:
        """Run every case; call ``report(index, outcome, detail)`` as each one ends."""
        queue = collections.deque(indices)
        while queue or any(w.pending for w in self.workers):
            for w in self.workers:
                if w.ready and len(w.pending) < BATCH // 2 and queue:
                    batch = [queue.popleft() for _ in range(min(BATCH, len(queue)))]
                    if not w.pending:
                        w.last = time.monotonic()
                    w.pending.extend(batch)
                    w.conn.send(batch)
            for conn in wait([w.conn for w in self.workers], timeout=0.5):
                self._receive(next(w for w in self.workers if w.conn is conn), queue, report)
            now = time.monotonic()
            for i, w in enumerate(self.workers):
                if w.overdue(self.options, now):
                    self._replace(i, queue, report, "hang: the worker stopped answering "
                                  "(killed after the time budget)")

    def _receive(self, w: Worker, queue: collections.deque[int], report: Report) -> None:
        try:
            message = w.conn.recv()
        except (EOFError, OSError):
            w.process.join(5)
            code = w.process.exitcode
            self._replace(self.workers.index(w), queue, report,
                          f"the worker died (exit code {code}; a negative code is the signal)")
            return
        w.last = time.monotonic()
        if message == "ready":
            w.ready = True
            return
        index, outcome, detail = message
        w.pending.popleft()
        report(index, outcome, detail)

    def _replace(self, i: int, queue: collections.deque[int], report: Report,
                 why: str) -> None:
        w = self.workers[i]
        w.stop()
        if w.pending:
            report(w.pending.popleft(), "crash", why)
            queue.extendleft(reversed(w.pending))
        self.workers[i] = Worker.start(self.context, self.seeds, self.options)

    def close(self) -> None:
        for w in self.workers:
            if w.process.is_alive():
                try:
                    w.conn.send(None)
                except OSError:
                    pass
            w.process.join(5)
            w.stop()


# ------------------------------------------------------------------------------------------
# Driver


def write_reproducer(directory: Path, case: mutations.Case, options: Options,
                     finding: Finding) -> Path:
    """``<seed>-<index>.xml/.bin/.txt``; returns the .xml path."""
    directory.mkdir(parents=True, exist_ok=True)
    xml = directory / f"{options.seed}-{finding.index}.xml"
    xml.write_bytes(case.xml)
    xml.with_suffix(".bin").write_bytes(case.weights)
    xml.with_suffix(".txt").write_text(
        f"{finding.kind} in case {finding.index} of seed {options.seed}\n"
        f"{case.describe()}\n"
        f"read from {'files' if case.via_files else 'bytes'}\n"
        f"replay: python tools/fuzz_ir.py --seed {options.seed} --replay {finding.index}"
        f"{' --compile-every 1' if compiles(options, finding.index) else ''}\n\n"
        f"{finding.detail}\n")
    return xml


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=10_000, help="number of cases (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="fuzz seed: case i is fixed by (seed, i)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--timeout", type=float, default=2.0,
                   help="seconds per case (x10 for compiled cases; default 2)")
    p.add_argument("--memory-mb", type=int, default=2048,
                   help="address space a worker may add after start-up (default 2048 MiB)")
    p.add_argument("--families", default=",".join(mutations.DEFAULT_MIX),
                   help="comma-separated mutation families; repeat one to weight it "
                        f"(known: {', '.join(mutations.ALL_FAMILIES)})")
    p.add_argument("--max-steps", type=int, default=3, help="mutations per case, at most")
    p.add_argument("--compile-every", type=int, default=0,
                   help="also compile every k-th case that is small enough (0: never)")
    p.add_argument("--out", type=Path, default=Path("fuzz-findings"),
                   help="directory for reproducers (default ./fuzz-findings)")
    p.add_argument("--no-nncf", action="store_true", help="leave the NNCF seeds out")
    p.add_argument("--replay", type=int, default=None, metavar="CASE",
                   help="run one case in this process and print its traceback")
    args = p.parse_args(argv)
    unknown = set(args.families.split(",")) - set(mutations.ALL_FAMILIES)
    if unknown:
        p.error(f"unknown families: {', '.join(sorted(unknown))}")
    return args


def build_seeds(nncf: bool) -> list[mutations.Seed]:
    """The corpus; OpenVINO's and NNCF's chatter goes to stderr."""
    from fuzz import seeds

    with contextlib.redirect_stdout(sys.stderr):
        return seeds.build_corpus(nncf=nncf)


def replay(seeds: list[mutations.Seed], options: Options, index: int, out: Path) -> int:
    case = case_at(seeds, mutations.Pools.of(seeds), options, index)
    print(case.describe())
    with tempfile.TemporaryDirectory() as scratch:
        outcome, detail = run_one(seeds, mutations.Pools.of(seeds), options, index,
                                  Path(scratch))
    print(outcome)
    if detail:
        print(detail)
        print("files:", write_reproducer(out, case, options, Finding(index, outcome, detail)))
    return 1 if outcome == "crash" or outcome in runner.COMPILER_FAILURES else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    options = Options(args.seed, args.timeout, args.memory_mb << 20,
                      tuple(args.families.split(",")), args.max_steps, args.compile_every)
    start = time.monotonic()
    seeds = build_seeds(not args.no_nncf)
    if args.replay is not None:
        return replay(seeds, options, args.replay, args.out)
    print(f"fuzz_ir: seed {args.seed}, {args.cases} cases, {len(seeds)} seed IRs, "
          f"{args.workers} workers", file=sys.stderr)
    counts: collections.Counter[str] = collections.Counter()
    findings: list[Finding] = []

    def report(index: int, outcome: str, detail: str) -> None:
        counts[outcome] += 1
        if outcome == "crash" or outcome in runner.COMPILER_FAILURES:
            findings.append(Finding(index, outcome, detail))
        done = sum(counts.values())
        if done % 1000 == 0:
            print(f"  {done}/{args.cases} cases, {counts['crash']} crashes, "
                  f"{len(findings) - counts['crash']} compiler findings, "
                  f"{time.monotonic() - start:.0f} s", file=sys.stderr)

    pool = Pool(args.workers, seeds, options)
    try:
        pool.run(range(args.cases), report)
    finally:
        pool.close()
    elapsed = time.monotonic() - start
    print(f"cases run: {sum(counts.values())} (seed {args.seed}) in {elapsed:.0f} s")
    print("outcomes:")
    for outcome, count in sorted(counts.items()):
        print(f"  {count:7d}  {outcome}")
    pools = mutations.Pools.of(seeds)
    for finding in sorted(findings, key=lambda f: f.index):
        case = case_at(seeds, pools, options, finding.index)
        path = write_reproducer(args.out, case, options, finding)
        print(f"{finding.kind}: case {finding.index}: {case.describe()}\n"
              f"    {finding.detail.splitlines()[0] if finding.detail else ''}\n    {path}")
    compiler_findings = sum(counts[outcome] for outcome in runner.COMPILER_FAILURES)
    print(f"crashes: {counts['crash']}")
    print(f"compiler findings: {compiler_findings}")
    return 1 if counts["crash"] or compiler_findings else 0


if __name__ == "__main__":
    sys.exit(main())
