"""``NumberingBuilder``: an ``ir.IRBuilder`` that folds constants and reuses pure instructions.

The kernel emitter writes index arithmetic naively: every access recomputes its flat offset,
unrolled loops substitute constants into ``(t % 49) * 4 + r`` and floor division is emitted as
``sdiv`` plus a sign correction.  LLVM cleans all of that up, but only after llvmlite has
built, printed and LLVM has parsed it: for a ResNet-18 that was 28 MB of IR text, most of the
compile time.  This builder removes the redundancy as the instructions are requested:

1. **Constant folding.**  Integer ``add sub mul sdiv srem udiv urem and or xor shl ashr lshr``,
   ``icmp``, ``select`` and the integer casts of scalar constants are computed in Python with
   LLVM's semantics (wrapping two's complement, truncating division; a division by zero or an
   overflowing ``sdiv`` is left to LLVM), and the identities ``x+0``, ``x-0``, ``x*1``,
   ``x*0``, ``x/1``, ``x%1``, ``x&0``, ``x|0``, ``x^0``, ``select(c, x, x)`` are applied.
2. **Value ranges.**  Every scalar integer value may carry an interval ``[lo, hi]``: constants,
   ranges the emitter asserts (``assume_range``: a loop index inside its body), and what add,
   sub, mul, division, remainder, bitwise ops, shifts, casts and select compute from them
   (dropped whenever the interval could leave the type's signed range).  A signed or
   unsigned comparison whose operands' intervals decide it folds to a constant: floor division
   of a non-negative index by a positive constant becomes plain ``sdiv``, and clamps of an
   index into a range it is already in disappear.
3. **Value numbering.**  A pure instruction (integer arithmetic, comparison, select, cast,
   ``getelementptr``, ``extractelement``, ``insertelement``, ``shufflevector``, and loads the
   emitter declares invariant) whose opcode, operands and flags match one already emitted in a
   block that dominates the insertion point is not emitted again: the earlier value is
   returned.  The builder knows dominance only as the emitter declares it: the current block,
   plus the blocks on the ``dominators`` stack (``enter_dominated`` pushes the current block
   before a structured branch into code it dominates; ``scope`` restores the stack when the
   region ends).  Control flow the emitter does not declare (an ``if_then`` inside an op
   emitter) only makes the builder forget, never reuse wrongly.
4. **Dead code.**  Folding leaves instructions nobody uses (the correction arm of a floor
   division that folded away); ``remove_dead_instructions`` deletes the unused pure ones of a
   function before it is printed.

Float arithmetic is never folded or numbered (fast-math flags are attached after creation).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from llvmlite import ir

_PURE_OPNAMES = frozenset({
    "add", "sub", "mul", "sdiv", "srem", "udiv", "urem", "and", "or", "xor", "shl", "ashr",
    "lshr", "icmp", "fcmp", "select", "trunc", "zext", "sext", "sitofp", "uitofp", "fptosi",
    "fptoui", "fpext", "fptrunc", "bitcast", "getelementptr", "extractelement",
    "insertelement", "shufflevector", "load", "fadd", "fsub", "fmul", "fdiv", "frem", "fneg",
})
_SIGNED_CMP = {"<": int.__lt__, "<=": int.__le__, ">": int.__gt__, ">=": int.__ge__,
               "==": int.__eq__, "!=": int.__ne__}

Range = tuple[int, int]


def _signed_bounds(width: int) -> Range:
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


def _wrap(value: int, width: int) -> int:
    """``value`` reduced to a ``width``-bit two's complement integer (as a signed number)."""
    value &= (1 << width) - 1
    return value - (1 << width) if value >> (width - 1) else value


def _unsigned(value: int, width: int) -> int:
    return value & ((1 << width) - 1)


def _truncating_div(a: int, b: int) -> int:
    quotient = abs(a) // abs(b)
    return quotient if (a < 0) == (b < 0) else -quotient


def _truncating_rem(a: int, b: int) -> int:
    return a - b * _truncating_div(a, b)


def scalar_int(value: ir.Value) -> int | None:
    """The integer of a scalar integer constant (signed), else None."""
    if type(value) is not ir.Constant or type(value.type) is not ir.IntType:
        return None
    constant, width = value.constant, value.type.width
    if type(constant) is int:
        if width > 1 and -(1 << (width - 1)) <= constant < (1 << (width - 1)):
            return constant
        return _wrap(constant, width) if width > 1 else constant & 1
    if isinstance(constant, bool):
        return int(constant)
    return None


_SCALAR_TYPE_KEYS = {ir.HalfType: "half", ir.FloatType: "float", ir.DoubleType: "double"}


def _type_key(t: ir.Type) -> object:
    kind = type(t)
    if kind is ir.IntType:
        return t.width
    if kind is ir.VectorType:
        return ("vector", _type_key(t.element), t.count)
    return _SCALAR_TYPE_KEYS.get(kind) or str(t)


_SHARED_KEYS: dict[int, tuple[object, ir.Constant]] = {}
"""Keys of the vector constants registered by ``shared_constant``, by object (holding each
constant, so that its id stays unique)."""


def shared_constant(c: ir.Constant) -> ir.Constant:
    """Register a vector constant the emitter reuses (undef vectors, shuffle masks), so that
    numbering finds its key without walking its elements each time; returns ``c``."""
    _SHARED_KEYS[id(c)] = (_constant_key(c), c)
    return c


def _constant_key(c: ir.Constant) -> object:
    value = c.constant
    if type(value) is int and type(c.type) is ir.IntType:
        return ("const", c.type.width, value)
    if isinstance(value, (list, tuple)):
        known = _SHARED_KEYS.get(id(c))
        if known is not None:
            return known[0]
        return ("const", _type_key(c.type), tuple(_operand_key(e) for e in value))
    elif isinstance(value, (bytearray, bytes)):
        return ("bytes", id(c))
    elif value is not None and not isinstance(value, (int, float)):
        value = repr(value)     # ir.Undefined and other sentinels
    return ("const", _type_key(c.type), value)


def _operand_key(value: object) -> object:
    if isinstance(value, ir.Instruction):
        return id(value)
    if isinstance(value, ir.Constant):
        return _constant_key(value)
    if isinstance(value, (list, tuple)):
        return tuple(_operand_key(v) for v in value)
    if isinstance(value, ir.Type):
        return ("type", _type_key(value))
    if isinstance(value, ir.Value):
        return id(value)
    return value


class NumberingBuilder(ir.IRBuilder):
    """An ``ir.IRBuilder`` that folds, numbers and range-checks as it builds (module doc)."""

    def __init__(self, block: ir.Block | None = None) -> None:
        super().__init__(block)
        self._table: dict[tuple, tuple[ir.Value, ir.Block, tuple]] = {}
        self._ranges: dict[int, tuple[Range, ir.Value]] = {}
        self.dominators: list[ir.Block] = []
        self._dominating: dict[int, int] = {}       # id(block) -> count on the stack

    # -- dominance -----------------------------------------------------------------------------
    def enter_dominated(self) -> None:
        """Declare that the current block dominates every block emitted next (until the
        enclosing ``scope`` ends): its values may be reused there."""
        block = self.block
        self.dominators.append(block)
        self._dominating[id(block)] = self._dominating.get(id(block), 0) + 1

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """A region of structured code: dominators declared inside it are dropped at its end."""
        depth = len(self.dominators)
        try:
            yield
        finally:
            while len(self.dominators) > depth:
                block = self.dominators.pop()
                self._dominating[id(block)] -= 1

    def _visible(self, block: ir.Block) -> bool:
        return block is self.block or self._dominating.get(id(block), 0) > 0

    def _lookup(self, key: tuple) -> ir.Value | None:
        entry = self._table.get(key)
        if entry is not None and self._visible(entry[1]):
            return entry[0]
        return None

    def _remember(self, key: tuple, value: ir.Value, operands: tuple) -> ir.Value:
        if isinstance(value, ir.Instruction):
            self._table[key] = (value, self.block, operands)
        return value

    # -- ranges --------------------------------------------------------------------------------
    def assume_range(self, value: ir.Value, lo: int, hi: int) -> None:
        """Assert that scalar integer ``value`` lies in ``[lo, hi]`` wherever it is used
        (ignored for an empty interval: code that never runs)."""
        if lo <= hi:
            self._ranges[id(value)] = ((lo, hi), value)

    def range_of(self, value: ir.Value) -> Range | None:
        """The known interval of a scalar integer value, or None."""
        constant = scalar_int(value)
        if constant is not None:
            return constant, constant
        return self._range_of_value(value)

    def _range_of_value(self, value: ir.Value) -> Range | None:
        entry = self._ranges.get(id(value))
        return entry[0] if entry is not None else None

    def _set_range(self, value: ir.Value, bounds: Range | None) -> ir.Value:
        if bounds is not None and isinstance(value.type, ir.IntType) \
                and not isinstance(value, ir.Constant):
            low, high = _signed_bounds(value.type.width)
            if low <= bounds[0] <= bounds[1] <= high:
                self._ranges[id(value)] = (bounds, value)
        return value

    # -- integer binary operators ----------------------------------------------------------------
    def _int_binary(self, opname: str, lhs: ir.Value, rhs: ir.Value, name: str,
                    flags: tuple) -> ir.Value:
        if not isinstance(lhs.type, ir.IntType):
            key = (opname, _operand_key(lhs), _operand_key(rhs), tuple(flags))
            found = self._lookup(key)
            if found is not None:
                return found
            value = getattr(ir.IRBuilder, opname)(self, lhs, rhs, name=name, flags=flags)
            return self._remember(key, value, (lhs, rhs))
        a, b = scalar_int(lhs), scalar_int(rhs)
        if a is not None or b is not None:
            simplified = _simplify(opname, lhs, rhs, a, b)
            if simplified is not None:
                return simplified
        key = (opname, _operand_key(lhs), _operand_key(rhs), tuple(flags))
        found = self._lookup(key)
        if found is not None:
            return found
        value = getattr(ir.IRBuilder, opname)(self, lhs, rhs, name=name, flags=flags)
        left = (a, a) if a is not None else self._range_of_value(lhs)
        right = (b, b) if b is not None else self._range_of_value(rhs)
        if left is not None and right is not None:
            self._set_range(value, _binary_range(opname, left, right, lhs.type.width))
        return self._remember(key, value, (lhs, rhs))

    def add(self, lhs, rhs, name="", flags=()):
        return self._int_binary("add", lhs, rhs, name, flags)

    def sub(self, lhs, rhs, name="", flags=()):
        return self._int_binary("sub", lhs, rhs, name, flags)

    def mul(self, lhs, rhs, name="", flags=()):
        return self._int_binary("mul", lhs, rhs, name, flags)

    def sdiv(self, lhs, rhs, name="", flags=()):
        return self._int_binary("sdiv", lhs, rhs, name, flags)

    def srem(self, lhs, rhs, name="", flags=()):
        return self._int_binary("srem", lhs, rhs, name, flags)

    def udiv(self, lhs, rhs, name="", flags=()):
        return self._int_binary("udiv", lhs, rhs, name, flags)

    def urem(self, lhs, rhs, name="", flags=()):
        return self._int_binary("urem", lhs, rhs, name, flags)

    def and_(self, lhs, rhs, name="", flags=()):
        return self._int_binary("and_", lhs, rhs, name, flags)

    def or_(self, lhs, rhs, name="", flags=()):
        return self._int_binary("or_", lhs, rhs, name, flags)

    def xor(self, lhs, rhs, name="", flags=()):
        return self._int_binary("xor", lhs, rhs, name, flags)

    def shl(self, lhs, rhs, name="", flags=()):
        return self._int_binary("shl", lhs, rhs, name, flags)

    def ashr(self, lhs, rhs, name="", flags=()):
        return self._int_binary("ashr", lhs, rhs, name, flags)

    def lshr(self, lhs, rhs, name="", flags=()):
        return self._int_binary("lshr", lhs, rhs, name, flags)

    # -- comparisons, select, casts --------------------------------------------------------------
    def icmp_signed(self, cmpop, lhs, rhs, name=""):
        return self._icmp_numbered("s", cmpop, lhs, rhs, name)

    def icmp_unsigned(self, cmpop, lhs, rhs, name=""):
        return self._icmp_numbered("u", cmpop, lhs, rhs, name)

    def _icmp_numbered(self, prefix: str, cmpop: str, lhs: ir.Value, rhs: ir.Value,
                       name: str) -> ir.Value:
        a, b = scalar_int(lhs), scalar_int(rhs)
        if a is not None and b is not None:
            width = lhs.type.width
            if prefix == "u":
                a, b = _unsigned(a, width), _unsigned(b, width)
            elif width == 1:
                a, b = -a, -b                   # i1 true is -1 as a signed number
            return ir.Constant(ir.IntType(1), int(_SIGNED_CMP[cmpop](a, b)))
        if isinstance(lhs.type, ir.IntType) and lhs.type.width > 1:
            decided = _decide_compare(prefix, cmpop, self.range_of(lhs), self.range_of(rhs),
                                      lhs.type.width)
            if decided is not None:
                return ir.Constant(ir.IntType(1), int(decided))
        key = ("icmp" + prefix, cmpop, _operand_key(lhs), _operand_key(rhs))
        found = self._lookup(key)
        if found is not None:
            return found
        method = ir.IRBuilder.icmp_signed if prefix == "s" else ir.IRBuilder.icmp_unsigned
        value = method(self, cmpop, lhs, rhs, name=name)
        if isinstance(lhs.type, ir.IntType):
            self._set_range(value, (0, 1))
        return self._remember(key, value, (lhs, rhs))

    def select(self, cond, lhs, rhs, name="", flags=()):
        decided = scalar_int(cond)
        if decided is not None:
            return lhs if decided else rhs
        if lhs is rhs:
            return lhs
        key = ("select", _operand_key(cond), _operand_key(lhs), _operand_key(rhs),
               tuple(flags))
        found = self._lookup(key)
        if found is not None:
            return found
        value = ir.IRBuilder.select(self, cond, lhs, rhs, name=name, flags=flags)
        left, right = self.range_of(lhs), self.range_of(rhs)
        if left is not None and right is not None and isinstance(lhs.type, ir.IntType):
            self._set_range(value, (min(left[0], right[0]), max(left[1], right[1])))
        return self._remember(key, value, (cond, lhs, rhs))

    def _int_cast(self, opname: str, value: ir.Value, typ: ir.Type, name: str) -> ir.Value:
        if value.type == typ:
            return value
        constant = scalar_int(value)
        if constant is not None and isinstance(typ, ir.IntType):
            return ir.Constant(typ, _cast_constant(opname, constant, value.type.width,
                                                   typ.width))
        key = (opname, _operand_key(value), _type_key(typ))
        found = self._lookup(key)
        if found is not None:
            return found
        result = getattr(ir.IRBuilder, opname)(self, value, typ, name=name)
        bounds = self.range_of(value)
        if bounds is not None and isinstance(typ, ir.IntType):
            if opname == "sext" or (opname == "zext" and bounds[0] >= 0):
                self._set_range(result, bounds)
            elif opname == "trunc":
                low, high = _signed_bounds(typ.width)
                if low <= bounds[0] and bounds[1] <= high:
                    self._set_range(result, bounds)
        return self._remember(key, result, (value,))

    def sext(self, value, typ, name=""):
        return self._int_cast("sext", value, typ, name)

    def zext(self, value, typ, name=""):
        return self._int_cast("zext", value, typ, name)

    def trunc(self, value, typ, name=""):
        return self._int_cast("trunc", value, typ, name)

    def _numbered(self, opname: str, operands: tuple, extra: tuple, make) -> ir.Value:
        key = (opname, *(_operand_key(o) for o in operands), *extra)
        found = self._lookup(key)
        if found is not None:
            return found
        return self._remember(key, make(), operands)

    def sitofp(self, value, typ, name=""):
        return self._numbered("sitofp", (value,), (_type_key(typ),),
                              lambda: ir.IRBuilder.sitofp(self, value, typ, name=name))

    def uitofp(self, value, typ, name=""):
        return self._numbered("uitofp", (value,), (_type_key(typ),),
                              lambda: ir.IRBuilder.uitofp(self, value, typ, name=name))

    # -- addresses and vectors -----------------------------------------------------------------
    def gep(self, ptr, indices, inbounds=False, name="", source_etype=None):
        extra = (inbounds, _type_key(source_etype) if source_etype is not None else None)
        return self._numbered(
            "gep", (ptr, *indices), extra,
            lambda: ir.IRBuilder.gep(self, ptr, indices, inbounds=inbounds, name=name,
                                     source_etype=source_etype))

    def extract_element(self, vector, idx, name=""):
        return self._numbered("extractelement", (vector, idx), (),
                              lambda: ir.IRBuilder.extract_element(self, vector, idx,
                                                                   name=name))

    def insert_element(self, vector, value, idx, name=""):
        return self._numbered("insertelement", (vector, value, idx), (),
                              lambda: ir.IRBuilder.insert_element(self, vector, value, idx,
                                                                  name=name))

    def shuffle_vector(self, vector1, vector2, mask, name=""):
        return self._numbered("shufflevector", (vector1, vector2, mask), (),
                              lambda: ir.IRBuilder.shuffle_vector(self, vector1, vector2,
                                                                  mask, name=name))

    def invariant_load(self, ptr: ir.Value, typ: ir.Type, align: int | None = None
                       ) -> ir.Value:
        """A load from memory nothing writes while the function runs (constants): numbered
        like a pure instruction."""
        return self._numbered("load", (ptr,), (_type_key(typ), align),
                              lambda: ir.IRBuilder.load(self, ptr, typ=typ, align=align))


# -- folding rules -------------------------------------------------------------------------------


def _simplify(opname: str, lhs: ir.Value, rhs: ir.Value, a: int | None, b: int | None
              ) -> ir.Value | None:
    """The folded result of integer binary operator ``lhs op rhs`` (``a``, ``b``: their
    values when constant), or None to emit it."""
    if a is not None and b is not None:
        folded = _fold(opname, a, b, lhs.type.width)
        if folded is not None:
            return ir.Constant(lhs.type, folded)
    if isinstance(lhs.type, ir.VectorType):
        return None
    if b == 0 and opname in ("add", "sub", "or_", "xor", "shl", "ashr", "lshr"):
        return lhs
    if a == 0 and opname in ("add", "or_", "xor"):
        return rhs
    if (b == 1 and opname in ("mul", "sdiv", "udiv")) or (a == 1 and opname == "mul"):
        return lhs if b == 1 else rhs
    if (a == 0 or b == 0) and opname in ("mul", "and_"):
        return ir.Constant(lhs.type, 0)
    if b == 1 and opname in ("srem", "urem"):
        return ir.Constant(lhs.type, 0)
    if lhs.type.width == 1 and opname == "and_" and (a == 1 or b == 1):
        return rhs if a == 1 else lhs
    if lhs.type.width == 1 and opname == "or_" and (a == 1 or b == 1):
        return ir.Constant(lhs.type, 1)
    return None


_FOLDS = {
    "add": lambda a, b, ua, ub: a + b, "sub": lambda a, b, ua, ub: a - b,
    "mul": lambda a, b, ua, ub: a * b,
    "sdiv": lambda a, b, ua, ub: _truncating_div(a, b),
    "srem": lambda a, b, ua, ub: _truncating_rem(a, b),
    "udiv": lambda a, b, ua, ub: ua // ub, "urem": lambda a, b, ua, ub: ua % ub,
    "and_": lambda a, b, ua, ub: ua & ub, "or_": lambda a, b, ua, ub: ua | ub,
    "xor": lambda a, b, ua, ub: ua ^ ub, "shl": lambda a, b, ua, ub: ua << ub,
    "ashr": lambda a, b, ua, ub: a >> ub, "lshr": lambda a, b, ua, ub: ua >> ub,
}


def _fold(opname: str, a: int, b: int, width: int) -> int | None:
    """``a op b`` on ``width``-bit integers as LLVM computes it; None when undefined."""
    ua, ub = _unsigned(a, width), _unsigned(b, width)
    if opname in ("sdiv", "srem", "udiv", "urem") and b == 0:
        return None
    if opname in ("sdiv", "srem") and a == _signed_bounds(width)[0] and b == -1:
        return None
    if opname in ("shl", "ashr", "lshr") and not 0 <= ub < width:
        return None
    result = _FOLDS[opname](a, b, ua, ub)
    return _wrap(result, width) if width > 1 else result & 1


def _cast_constant(opname: str, value: int, source: int, target: int) -> int:
    if opname == "zext":
        return _unsigned(value, source) if source > 1 else value
    if opname == "sext":
        return -1 if source == 1 and value else value
    return _wrap(value, target) if target > 1 else value & 1


def _binary_range(opname: str, a: Range | None, b: Range | None, width: int) -> Range | None:
    """The interval of ``a op b`` from its operands' intervals (None: unknown)."""
    if a is None or b is None or width <= 1:
        return None
    if opname == "add":
        return a[0] + b[0], a[1] + b[1]
    if opname == "sub":
        return a[0] - b[1], a[1] - b[0]
    if opname == "mul":
        products = [x * y for x in a for y in b]
        return min(products), max(products)
    nonnegative = a[0] >= 0 and b[0] >= 0
    if opname in ("sdiv", "udiv") and nonnegative and b[0] > 0:
        return a[0] // b[1], a[1] // b[0]
    if opname in ("srem", "urem") and nonnegative and b[0] > 0:
        return 0, min(a[1], b[1] - 1)
    if opname == "and_" and nonnegative:
        return 0, min(a[1], b[1])
    if opname in ("or_", "xor") and nonnegative:
        return 0, (1 << max(a[1], b[1]).bit_length()) - 1
    if opname == "shl" and a[0] >= 0 and b[0] == b[1] and 0 <= b[0] < width:
        return a[0] << b[0], a[1] << b[0]
    if opname in ("ashr", "lshr") and a[0] >= 0 and b[0] == b[1] and 0 <= b[0] < width:
        return a[0] >> b[0], a[1] >> b[0]
    return None


def _decide_compare(prefix: str, cmpop: str, a: Range | None, b: Range | None,
                    width: int) -> bool | None:
    """The value of ``icmp`` when the operand intervals decide it, else None."""
    if a is None or b is None:
        return None
    if prefix == "u" and (a[0] < 0 or b[0] < 0):
        return None             # unsigned order agrees with signed order on non-negatives
    compare = _SIGNED_CMP[cmpop]
    corners = {compare(x, y) for x in (a[0], a[1]) for y in (b[0], b[1])}
    if len(corners) != 1:
        return None
    if cmpop in ("==", "!=") and not (a[0] == a[1] == b[0] == b[1]):
        if a[1] < b[0] or b[1] < a[0]:
            return cmpop == "!="
        return None
    return corners.pop()


# -- dead code -----------------------------------------------------------------------------------


def remove_dead_instructions(function: ir.Function) -> int:
    """Delete the pure instructions of ``function`` whose value nothing uses (and then those
    only they used); returns how many were removed."""
    uses: dict[int, int] = {}
    for block in function.blocks:
        for instruction in block.instructions:
            for operand in _operands(instruction):
                uses[id(operand)] = uses.get(id(operand), 0) + 1
    worklist = [i for block in function.blocks for i in block.instructions
                if _removable(i) and not uses.get(id(i))]
    dead: set[int] = set()
    while worklist:
        instruction = worklist.pop()
        if id(instruction) in dead:
            continue
        dead.add(id(instruction))
        for operand in _operands(instruction):
            uses[id(operand)] -= 1
            if not uses[id(operand)] and isinstance(operand, ir.Instruction) \
                    and _removable(operand):
                worklist.append(operand)
    if dead:
        for block in function.blocks:
            block.instructions[:] = [i for i in block.instructions if id(i) not in dead]
    return len(dead)


def _removable(instruction: ir.Instruction) -> bool:
    return instruction.opname in _PURE_OPNAMES and not isinstance(
        instruction, (ir.CallInstr, ir.StoreInstr))


def _operands(instruction: ir.Instruction) -> list[ir.Value]:
    if isinstance(instruction, ir.PhiInstr):
        return [value for value, _ in instruction.incomings]
    return list(instruction.operands)


__all__ = ["NumberingBuilder", "remove_dead_instructions", "scalar_int", "shared_constant"]
