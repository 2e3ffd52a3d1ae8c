"""Graph-op lowerings, one module per op family; importing this package registers them."""

from lowering.ops import normalization  # noqa: F401
from lowering.ops import reductions  # noqa: F401
from lowering.ops import movement  # noqa: F401
from lowering.ops import nn  # noqa: F401
from lowering.ops import pooling  # noqa: F401
from lowering.ops import interpolate  # noqa: F401
from lowering.ops import attention  # noqa: F401
