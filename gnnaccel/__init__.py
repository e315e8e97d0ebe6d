"""gnnaccel: fast inference of trained graph neural networks.

Prune input channels of every layer (a Gram-form LASSO on each channel's contribution, then a closed-form
refit), run full-graph inference in fused row blocks, and answer small batches in real time with a cache of
hidden features.
"""
import importlib.util as _importlib_util
import os as _os
import sys as _sys


def _source_tree_kernels() -> None:
    """In a source checkout, expose the top-level ``kernels/`` as ``gnnaccel.kernels`` (setup.py installs it so)."""
    if _importlib_util.find_spec(__name__ + ".kernels") is not None:
        return
    directory = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "kernels")
    init = _os.path.join(directory, "__init__.py")
    if _os.path.isfile(init):
        spec = _importlib_util.spec_from_file_location(__name__ + ".kernels", init,
                                                       submodule_search_locations=[directory])
        module = _importlib_util.module_from_spec(spec)
        _sys.modules[spec.name] = module
        spec.loader.exec_module(module)


_source_tree_kernels()

from ._library import EXTENSION_LOADED, ExtensionNotBuiltError
from ._memory import as_huge_pages
from .graph import Graph
from . import ops
from . import batched, cache, inference, models, nn, pruning, train
from .batched import BatchedEngine, latency_stream
from .models import from_pyg
from .pruning.prune import prune
from .serialize import load, save

__version__ = "0.1.0"

__all__ = ["Graph", "ops", "nn", "models", "inference", "train", "pruning", "batched", "cache", "from_pyg", "prune",
           "save", "load", "as_huge_pages", "BatchedEngine", "latency_stream", "EXTENSION_LOADED", "ExtensionNotBuiltError",
           "__version__"]
