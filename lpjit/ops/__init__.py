"""Op classes of the graph IR, one per op kind, registered by IR (type, version).

Importing this package registers every family.
"""

from lpjit.ops import core, elementwise  # noqa: F401
from lpjit.ops import activations, normalization, quantize, reductions  # noqa: F401
from lpjit.ops import attention, interpolate, nn  # noqa: F401
from lpjit.ops import movement, shape, slicing  # noqa: F401
from lpjit.ops.registry import lookup, register, supported_types  # noqa: F401
