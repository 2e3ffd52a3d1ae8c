"""The on-disk compile cache: a model compiled once is loaded, not compiled, next time.

**Key.**  An entry is found by the SHA-256 of a JSON document (``key_document``) holding

1. the IR's content: the ``.xml`` bytes, the ``.bin`` bytes and the ``shapes`` given, or a
   canonical serialization of a ``Graph`` (``graph_digest``: every node's class, origin,
   tensor names, input references and typed fields, constants by the hash of their bytes);
2. the ``CompileOptions`` (every field, canonicalised: threads, low precision, target);
3. the host CPU (LLVM's name and feature list) and whether OpenMP is usable;
4. the compiler: lpjit's version and a digest of its sources (``lpjit``, ``lowering``,
   ``runtime``), the llvmlite, LLVM, numpy and Python versions.

A change to any of them is a miss, so an entry can never be stale.

**Entry.**  A directory ``<cache>/<key>/`` with ``code.o`` (the object MCJIT emitted),
``code.<k>.o`` (the objects of a program compiled in parts, if any), ``constants.bin`` (the
constants the code binds by symbol, 64-byte aligned) and ``entry.pkl`` (a header, the SHA-256
of the payload, and the payload: the model's description for ``CompiledModel``, the symbol
table, the external symbols, and the size and SHA-256 of every other file).  Entries are written into a temporary directory and renamed into
place, so readers never see half an entry.  Every checksum is verified before anything is
unpickled or handed to LLVM: a corrupted or truncated entry is a miss (it is removed and the
model compiled again), never a crash.

**Size.**  After a store, the least recently used entries are removed while the cache holds
more than ``max_bytes``.  ``clear`` removes every entry (and nothing that is not one).

The cache directory is chosen by ``lpjit.compile`` (``cache=``, ``LPJIT_CACHE_DIR``,
``$XDG_CACHE_HOME/lpjit``, ``~/.cache/lpjit``); nothing here reads the environment.
Entries are pickles: share a cache directory only with users you trust.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import os
import pickle
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from lpjit.errors import InputError, LpjitError

CACHE_FORMAT = 2
MAGIC = b"lpjit-cache-entry\n"
DEFAULT_MAX_BYTES = 2 << 30
ALIGNMENT = 64
_KEY = re.compile(r"[0-9a-f]{64}")
_SOURCE_SUFFIXES = (".py", ".in", ".c", ".h")


class UncacheableError(LpjitError):
    """The compile's inputs have no canonical form (e.g. an attribute without a stable repr)."""


# -- the key ----------------------------------------------------------------------------------


def canonical(value: Any) -> Any:
    """``value`` as JSON data that is equal exactly when the values are (hash-independent).

    Arrays become their dtype, shape and SHA-256; sets are sorted; attrs classes become their
    qualified name and fields.  A value only known by its ``repr`` must not show an address;
    otherwise ``UncacheableError``.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ["bytes", hashlib.sha256(value).hexdigest()]
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return ["ndarray", data.dtype.str, list(data.shape),
                hashlib.sha256(data.reshape(-1).view(np.uint8)).hexdigest()]
    if isinstance(value, np.generic):
        return ["scalar", value.dtype.str, canonical(value.item())]
    if isinstance(value, np.dtype):
        return ["dtype", value.str]
    if isinstance(value, enum.Enum):
        return ["enum", _qualified(type(value)), value.name]
    if isinstance(value, (tuple, list)):
        return [canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return ["set", sorted((canonical(v) for v in value), key=json.dumps)]
    if isinstance(value, Mapping):
        return ["map", sorted(([canonical(k), canonical(v)] for k, v in value.items()),
                              key=json.dumps)]
    if attrs.has(type(value)) and not _is_graph_object(value):
        return [_qualified(type(value)), {f.name: canonical(getattr(value, f.name))
                                          for f in attrs.fields(type(value))}]
    text = repr(value)
    if " at 0x" in text or _is_graph_object(value):
        raise UncacheableError(f"a {_qualified(type(value))} value has no canonical form")
    return ["repr", _qualified(type(value)), text]


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_graph_object(value: Any) -> bool:
    from lpjit.graph import Node, Value

    return isinstance(value, (Node, Value))


def graph_digest(graph: Any) -> str:
    """SHA-256 of a ``Graph``'s canonical serialization (module docstring, item 1)."""
    digest = hashlib.sha256(json.dumps(["graph", graph.name]).encode())
    position: dict[int, int] = {}
    for index, node in enumerate(graph.nodes):
        position[id(node)] = index
        record = [_qualified(type(node)), canonical(node.origin),
                  canonical(node.tensor_names),
                  [[position[id(v.node)], v.index] for v in node.inputs],
                  canonical(node.attributes())]
        digest.update(json.dumps(record).encode())
    ends = [[position[id(p)] for p in graph.parameters], [position[id(r)] for r in graph.results]]
    digest.update(json.dumps(ends).encode())
    return digest.hexdigest()


def ir_digest(xml: Any, weights: Any = None, shapes: Mapping | None = None) -> str:
    """SHA-256 of an IR given as ``lpjit.compile`` takes it: a path to an ``.xml`` (its
    ``.bin`` beside it) or XML text, ``weights`` (bytes or path) and ``shapes``."""
    from lpjit.frontend.ir_reader import _is_xml_text

    digest = hashlib.sha256()
    if _is_xml_text(xml):
        digest.update(xml.encode() if isinstance(xml, str) else bytes(xml))
    else:
        path = Path(xml)
        digest.update(path.read_bytes())
        if weights is None:
            weights = path.with_suffix(".bin")
    digest.update(b"\0weights\0")
    if isinstance(weights, (bytes, bytearray, memoryview)):
        digest.update(hashlib.sha256(weights).hexdigest().encode())
    elif weights is not None and Path(weights).is_file():
        digest.update(_file_sha256(Path(weights)).encode())
    digest.update(json.dumps(canonical(
        {name: tuple(shape) for name, shape in (shapes or {}).items()})).encode())
    return digest.hexdigest()


@functools.cache
def compiler_fingerprint() -> str:
    """SHA-256 of every source file of the packages that make code (lpjit, lowering,
    runtime): any edit to the compiler changes every key."""
    import lowering
    import lpjit
    import runtime

    digest = hashlib.sha256()
    for package in (lpjit, lowering, runtime):
        # ``__path__``, not ``__file__``: an editable install may import a namespace package.
        for root in sorted({Path(p).resolve() for p in package.__path__ if Path(p).is_dir()}):
            for path in sorted(root.rglob("*")):
                if path.suffix in _SOURCE_SUFFIXES and "__pycache__" not in path.parts:
                    digest.update(str(path.relative_to(root.parent)).encode() + b"\0")
                    digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def host_description() -> dict[str, Any]:
    """The host CPU as the code generator sees it, and whether OpenMP is usable."""
    from runtime.jit import TargetSpec, initialize_llvm

    openmp = initialize_llvm()
    host = TargetSpec.host()
    return {"cpu": host.cpu, "features": sorted(host.features.split(",")), "openmp": openmp}


@functools.cache
def compiler_versions() -> dict[str, Any]:
    """Versions of everything that makes or reads the cached code."""
    import llvmlite
    import llvmlite.binding as llvm

    import lpjit

    return {"lpjit": lpjit.__version__, "sources": compiler_fingerprint(),
            "llvmlite": llvmlite.__version__, "llvm": list(llvm.llvm_version_info),
            "numpy": np.__version__, "python": list(sys.version_info[:2])}


def key_document(source_digest: str, options: Any) -> dict[str, Any]:
    """What a cache key hashes (module docstring): the IR digest, the options, host, compiler."""
    return {"format": CACHE_FORMAT, "ir": source_digest, "options": canonical(options),
            "host": host_description(), "compiler": compiler_versions()}


def cache_key(source_digest: str, options: Any) -> str:
    """The entry name: SHA-256 of ``key_document``."""
    document = json.dumps(key_document(source_digest, options), sort_keys=True)
    return hashlib.sha256(document.encode()).hexdigest()


# -- entries ----------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class CacheEntry:
    """What a cache entry holds: the model's ``description`` (any picklable object), the
    object ``code``, the ``symbols`` it binds (name, 64-byte aligned array), the other
    ``externals`` it calls, and the objects of its ``parts`` (loaded with ``code``)."""

    description: Any
    code: bytes
    symbols: tuple[tuple[str, np.ndarray], ...]
    externals: tuple[str, ...] = ()
    parts: tuple[bytes, ...] = ()


class CorruptEntryError(Exception):
    """An entry that fails a check; internal to ``CompileCache.load``."""


@attrs.frozen
class CompileCache:
    """A cache directory (module docstring); ``max_bytes`` bounds its size."""

    directory: Path = attrs.field(converter=Path)
    max_bytes: int = DEFAULT_MAX_BYTES

    def entry_path(self, key: str) -> Path:
        return self.directory / key

    def load(self, key: str) -> CacheEntry | None:
        """The entry stored under ``key``, or None (absent, or corrupted: then removed)."""
        path = self.entry_path(key)
        if not (path / "entry.pkl").is_file():
            return None
        try:
            entry = _read_entry(path, key)
        except (CorruptEntryError, OSError, pickle.UnpicklingError, EOFError, ValueError,
                TypeError, AttributeError, ImportError, IndexError, KeyError):
            # Unreadable for whatever reason: forget it; the caller compiles again.
            shutil.rmtree(path, ignore_errors=True)
            return None
        _touch(path / "entry.pkl")
        return entry

    def store(self, key: str, entry: CacheEntry) -> Path | None:
        """Write ``entry`` under ``key`` (atomically); returns its directory, or None when
        the cache cannot be written (read-only, full disk: the compile still succeeds)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_tag(self.directory)
            staging = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:16]}-", dir=self.directory))
        except OSError:
            return None
        try:
            _write_entry(staging, key, entry)
            os.rename(staging, self.entry_path(key))
        except (OSError, pickle.PicklingError, TypeError, AttributeError):
            # Not writable, or a description that does not pickle: the compile stands.
            shutil.rmtree(staging, ignore_errors=True)
            return self.entry_path(key) if (self.entry_path(key) / "entry.pkl").is_file() \
                else None
        self.prune()
        return self.entry_path(key)

    def entries(self) -> list[Path]:
        """Every entry directory, least recently used first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir()
                 if _KEY.fullmatch(p.name) and (p / "entry.pkl").is_file()]
        return sorted(found, key=_last_used)

    def size_bytes(self) -> int:
        """Bytes held by all entries."""
        return sum(_entry_bytes(p) for p in self.entries())

    def prune(self) -> int:
        """Remove least recently used entries until at most ``max_bytes`` remain."""
        entries = self.entries()
        sizes = [_entry_bytes(p) for p in entries]
        total, removed = sum(sizes), 0
        for path, size in zip(entries, sizes):
            if total <= self.max_bytes:
                break
            shutil.rmtree(path, ignore_errors=True)
            total, removed = total - size, removed + 1
        return removed

    def clear(self) -> int:
        """Remove every entry and unfinished write; returns the number of entries removed."""
        entries = self.entries()
        for path in entries:
            shutil.rmtree(path, ignore_errors=True)
        if self.directory.is_dir():
            for path in self.directory.glob(".tmp-*"):
                shutil.rmtree(path, ignore_errors=True)
        return len(entries)


def _write_entry(directory: Path, key: str, entry: CacheEntry) -> None:
    (directory / "code.o").write_bytes(entry.code)
    for number, code in enumerate(entry.parts, 1):
        (directory / f"code.{number}.o").write_bytes(code)
    table, offset = [], 0
    with open(directory / "constants.bin", "wb") as blob:
        for name, data in entry.symbols:
            raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
            padding = -offset % ALIGNMENT
            blob.write(b"\0" * padding)
            offset += padding
            table.append((name, data.dtype.str, tuple(data.shape), offset))
            blob.write(memoryview(raw))
            offset += raw.size
    payload = pickle.dumps({
        "format": CACHE_FORMAT, "key": key, "description": entry.description,
        "symbols": table, "externals": tuple(entry.externals),
        "code": (len(entry.code), hashlib.sha256(entry.code).hexdigest()),
        "parts": [(len(code), hashlib.sha256(code).hexdigest()) for code in entry.parts],
        "constants": (offset, _file_sha256(directory / "constants.bin")),
    }, protocol=pickle.HIGHEST_PROTOCOL)
    (directory / "entry.pkl").write_bytes(MAGIC + hashlib.sha256(payload).digest() + payload)


def _read_entry(directory: Path, key: str) -> CacheEntry:
    data = (directory / "entry.pkl").read_bytes()
    digest, payload = data[len(MAGIC):len(MAGIC) + 32], data[len(MAGIC) + 32:]
    if not data.startswith(MAGIC) or hashlib.sha256(payload).digest() != digest:
        raise CorruptEntryError("entry.pkl fails its checksum")
    meta = pickle.loads(payload)
    if meta["format"] != CACHE_FORMAT or meta["key"] != key:
        raise CorruptEntryError("entry of another format or key")
    code = (directory / "code.o").read_bytes()
    if (len(code), hashlib.sha256(code).hexdigest()) != meta["code"]:
        raise CorruptEntryError("code.o fails its checksum")
    parts = []
    for number, expected in enumerate(meta["parts"], 1):
        part = (directory / f"code.{number}.o").read_bytes()
        if (len(part), hashlib.sha256(part).hexdigest()) != tuple(expected):
            raise CorruptEntryError(f"code.{number}.o fails its checksum")
        parts.append(part)
    blob = _read_aligned(directory / "constants.bin", meta["constants"])
    symbols = []
    for name, dtype, shape, offset in meta["symbols"]:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        array = blob[offset:offset + count * dtype.itemsize].view(dtype).reshape(shape)
        symbols.append((name, array))
    return CacheEntry(meta["description"], code, tuple(symbols), tuple(meta["externals"]),
                      tuple(parts))


def _read_aligned(path: Path, expected: tuple[int, str]) -> np.ndarray:
    """The file's bytes in 64-byte aligned, read-only memory, checked against
    ``(size, sha256)``."""
    size, sha = expected
    if path.stat().st_size != size:
        raise CorruptEntryError(f"{path.name} has the wrong size")
    raw = np.empty(size + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    block = raw[start:start + size]
    with open(path, "rb") as f:
        if f.readinto(memoryview(block)) != size:
            raise CorruptEntryError(f"{path.name} is truncated")
    if hashlib.sha256(block).hexdigest() != sha:
        raise CorruptEntryError(f"{path.name} fails its checksum")
    block.flags.writeable = False
    return block


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


def _last_used(path: Path) -> float:
    try:
        return (path / "entry.pkl").stat().st_mtime
    except OSError:
        return 0.0


def _entry_bytes(path: Path) -> int:
    total = 0
    for file in path.iterdir() if path.is_dir() else ():
        try:
            total += file.stat().st_size
        except OSError:
            pass
    return total


def _write_tag(directory: Path) -> None:
    """A ``CACHEDIR.TAG`` (bford.info/cachedir) so that backups skip the cache."""
    tag = directory / "CACHEDIR.TAG"
    if not tag.exists():
        tag.write_text("Signature: 8a477f597d28d172789f06886806bc55\n"
                       "# This file marks the lpjit compile cache (see lpjit/cache.py).\n")


# -- choosing the directory --------------------------------------------------------------------


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """``$LPJIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/lpjit``, else ``~/.cache/lpjit``."""
    if environ.get("LPJIT_CACHE_DIR"):
        return Path(environ["LPJIT_CACHE_DIR"]).expanduser()
    if environ.get("XDG_CACHE_HOME"):
        return Path(environ["XDG_CACHE_HOME"]).expanduser() / "lpjit"
    return Path.home() / ".cache" / "lpjit"


def cache_for(cache: bool | str | os.PathLike | CompileCache | None,
              environ: Mapping[str, str]) -> CompileCache | None:
    """The cache ``lpjit.compile(cache=...)`` asks for: ``True`` the default directory,
    ``False``/``None`` none, a path that directory, or a ``CompileCache`` itself."""
    if isinstance(cache, CompileCache):
        return cache
    if cache is None or cache is False:
        return None
    if cache is True:
        return CompileCache(default_cache_dir(environ))
    if isinstance(cache, (str, os.PathLike)):
        return CompileCache(Path(cache).expanduser())
    raise InputError(f"cache={cache!r} is invalid; expected True, False or a directory path")
