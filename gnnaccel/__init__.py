"""gnnaccel: fast inference of trained graph neural networks.

Prune input channels of every layer (a Gram-form LASSO on each channel's contribution, then a closed-form
refit), run full-graph inference in fused row blocks, and answer small batches in real time with a cache of
hidden features.
"""
from ._library import EXTENSION_LOADED, ExtensionNotBuiltError
from ._memory import as_huge_pages
from .backend import current_backend, set_default_backend, use_backend
from .graph import Graph
from . import ops
from . import batched, cache, inference, models, nn, pruning, train
from .batched import BatchedEngine
from .latency import latency_stream
from .models import from_pyg
from .pruning.prune import prune
from .serialize import load, save

__version__ = "0.1.0"

__all__ = ["Graph", "ops", "nn", "models", "inference", "train", "pruning", "batched", "cache", "from_pyg", "prune",
           "save", "load", "as_huge_pages", "BatchedEngine", "latency_stream", "EXTENSION_LOADED", "ExtensionNotBuiltError",
           "use_backend", "current_backend", "set_default_backend",
           "__version__"]
