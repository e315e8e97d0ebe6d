"""gnnaccel: fast inference of trained graph neural networks.

Prune input channels of every layer (a Gram-form LASSO on each channel's contribution, then a closed-form
refit), run full-graph inference in fused row blocks, and answer small batches in real time with a cache of
hidden features.
"""
from ._library import EXTENSION_LOADED, ExtensionNotBuiltError
from .graph import Graph
from . import ops
from . import inference, models, nn, train; from .models import from_pyg  # noqa: E702

__version__ = "0.1.0"

__all__ = ["Graph", "ops", "EXTENSION_LOADED", "ExtensionNotBuiltError", "__version__"]
