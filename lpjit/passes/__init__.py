"""Graph passes: pure functions ``Graph -> Graph``."""

from lpjit.passes.fold_constants import FoldConstantsOptions, fold_constants  # noqa: F401
from lpjit.passes.fold_shape_subgraphs import fold_constant_node, fold_shape_subgraphs  # noqa: F401
