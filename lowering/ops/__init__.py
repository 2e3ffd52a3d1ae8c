"""Graph-op lowerings, one module per op family; importing this package registers them."""

from lowering.ops import (
    attention,  # noqa: F401
    interpolate,  # noqa: F401
    lowp,  # noqa: F401
    movement,  # noqa: F401
    nn,  # noqa: F401
    normalization,  # noqa: F401
    pooling,  # noqa: F401
    reductions,  # noqa: F401
)
