"""Which node class implements an IR layer ``(type, version)``.

Op classes register the IR type name(s) they implement and the opset in which each of
their versions was introduced::

    @register("Softmax", 8, ir_names=("SoftMax",))
    class SoftmaxV8(Node): ...

A layer with ``version="opsetN"`` is dispatched to the highest registered version <= N of its
type (an opset contains the newest version of every op introduced up to it).  Type names are
matched case-insensitively, as OpenVINO's reader does.
"""

from __future__ import annotations

from collections.abc import Callable

from lpjit.errors import UnsupportedOpError
from lpjit.graph import Node, Origin

# lower-case IR type -> {introduced-in opset: class}
_TABLE: dict[str, dict[int, type[Node]]] = {}
# class -> (canonical IR type name, version) for the writer
IR_NAMES: dict[type[Node], tuple[str, int]] = {}

# Versions OpenVINO defines for ops that lpjit implements in more than one version (or whose
# newer versions it does not implement).  A layer whose opset selects a version lpjit lacks
# must fail, not silently run with an older version's semantics.
OPENVINO_VERSIONS: dict[str, tuple[int, ...]] = {
    "softmax": (1, 8), "maxpool": (1, 8, 14), "avgpool": (1, 14), "gather": (1, 7, 8),
    "interpolate": (1, 4, 11), "mvn": (2, 6), "gelu": (2, 7), "squeeze": (1, 15),
    "shapeof": (1, 3), "broadcast": (1, 3), "pad": (1, 12), "batchnorminference": (1, 5),
    "topk": (1, 3, 11), "convert": (1,), "reducel2": (4,), "reducel1": (4,),
    "nonmaxsuppression": (1, 3, 4, 5, 9, 13), "scatterelementsupdate": (3, 12),
    "multinomial": (13,), "convertlike": (1,), "roialign": (3, 9, 15),
    "deformableconvolution": (1, 8), "embeddingbagoffsets": (3, 15),
    "embeddingbagpacked": (3, 15), "col2im": (15,), "stringtensorpack": (15,),
}

# OpenVINO's reader moves these ops from opset1 to opset2.
_OPSET1_TO_OPSET2 = {"mvn", "roipooling", "reorgyolo"}


def register(ir_type: str, version: int, *, aliases: tuple[str, ...] = ()
             ) -> Callable[[type[Node]], type[Node]]:
    """Class decorator: ``cls`` implements IR type ``ir_type`` introduced in ``opset<version>``.

    ``ir_type`` is the spelling OpenVINO's serializer writes (``ReLU``, ``SoftMax``, ``Const``);
    ``aliases`` are other spellings that should map to the same class.
    """

    def decorate(cls: type[Node]) -> type[Node]:
        for name in (ir_type, *aliases):
            versions = _TABLE.setdefault(name.lower(), {})
            assert version not in versions, f"{name}-{version} registered twice"
            versions[version] = cls
        IR_NAMES.setdefault(cls, (ir_type, version))
        return cls

    return decorate


def parse_opset(version: str) -> int | None:
    """``opset8`` -> 8; ``None`` for anything else (``extension``, ``experimental``, ``""``)."""
    v = version.strip().lower()
    if v.startswith("opset") and v[5:].isdigit():
        return int(v[5:])
    return None


def lookup(origin: Origin) -> type[Node]:
    """The class for ``origin.type`` in ``origin.version``; ``UnsupportedOpError`` if none."""
    key = origin.type.lower()
    versions = _TABLE.get(key)
    if not versions:
        raise UnsupportedOpError(
            f"op type '{origin.type}' is not supported by lpjit "
            f"(supported: {', '.join(sorted(supported_types()))})", origin)
    opset = parse_opset(origin.version)
    if opset is None:
        raise UnsupportedOpError(
            f"op version '{origin.version}' is not supported; expected 'opset1'..'opset16'",
            origin)
    if opset == 1 and key in _OPSET1_TO_OPSET2:
        opset = 2
    candidates = [v for v in versions if v <= opset]
    if not candidates:
        known = ", ".join(f"opset{v}" for v in sorted(versions))
        raise UnsupportedOpError(
            f"{origin.type} is not defined in {origin.version}; lpjit implements it from "
            f"{known}", origin)
    chosen = max(candidates)
    newer = [v for v in OPENVINO_VERSIONS.get(key, ()) if chosen < v <= opset]
    if newer:
        raise UnsupportedOpError(
            f"{origin.type}-{max(newer)} (selected by {origin.version}) is not supported; "
            f"lpjit implements {origin.type} versions "
            f"{', '.join(str(v) for v in sorted(versions))}", origin)
    return versions[chosen]


def supported_types() -> list[str]:
    """IR type names lpjit implements, as the serializer spells them."""
    return sorted({name for name, _ in IR_NAMES.values()})
