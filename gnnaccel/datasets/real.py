"""Real node-classification graphs from the offline collection in ``../shared/data`` (see its SOURCES.md).

The raw files are copied to a temporary directory and read with PyG's own loaders (which write a
``processed/`` folder next to ``raw/``, so the shared copy stays read-only). PyG is needed for this
loader only, not by the rest of gnnaccel. Planetoid graphs (Cora, CiteSeer) keep their public split; the
others get a seeded 60/20/20 split of all nodes (:func:`gnnaccel.datasets.base.random_split_masks`).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch

from ..graph import Graph
from .base import GraphData, random_split_masks

# canonical name: (collection folder, folder inside it, raw files, PyG class, PyG name)
_DATASETS: Dict[str, Tuple[str, str, Tuple[str, ...], str, str]] = {
    "Cora": ("planetoid", "Cora", tuple(f"ind.cora.{s}" for s in ("x", "tx", "allx", "y", "ty", "ally", "graph",
                                                                   "test.index")), "Planetoid", "Cora"),
    "CiteSeer": ("planetoid", "CiteSeer", tuple(f"ind.citeseer.{s}" for s in ("x", "tx", "allx", "y", "ty", "ally",
                                                                             "graph", "test.index")),
                 "Planetoid", "CiteSeer"),
    "Computers": ("amazon", "Computers", ("amazon_electronics_computers.npz",), "Amazon", "Computers"),
    "Photo": ("amazon", "Photo", ("amazon_electronics_photo.npz",), "Amazon", "Photo"),
    "CS": ("coauthor", "CS", ("ms_academic_cs.npz",), "Coauthor", "CS"),
    "Physics": ("coauthor", "Physics", ("ms_academic_phy.npz",), "Coauthor", "Physics"),
}
_ALIASES = {
    "cora": "Cora", "citeseer": "CiteSeer", "computers": "Computers", "amazon-computers": "Computers",
    "amazoncomputers": "Computers", "photo": "Photo", "amazon-photo": "Photo", "amazonphoto": "Photo",
    "cs": "CS", "coauthor-cs": "CS", "coauthorcs": "CS", "physics": "Physics", "coauthor-physics": "Physics",
    "coauthorphysics": "Physics",
}
NAMES = tuple(_DATASETS)


def default_root() -> Path:
    """$GNNACCEL_DATA, else ``../shared/data`` next to the source tree holding this package."""
    env = os.environ.get("GNNACCEL_DATA")
    if env:
        return Path(env)
    repo_root = Path(__file__).resolve().parents[2]
    return repo_root.parent / "shared" / "data"


def canonical_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    if key not in _ALIASES:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(NAMES)}")
    return _ALIASES[key]


def load(name: str, root: Union[str, Path, None] = None, split_seed: int = 0) -> GraphData:
    """Load ``name`` (Cora, CiteSeer, Computers, Photo, CS, Physics; case-insensitive, e.g. "amazon-computers",
    "coauthor-cs" also work) from ``root`` (default :func:`default_root`) as a :class:`GraphData`.

    Raises FileNotFoundError naming the dataset and the missing path, ImportError without PyG.
    """
    canonical = canonical_name(name)
    collection, folder, raw_files, cls_name, pyg_name = _DATASETS[canonical]
    root = Path(root) if root is not None else default_root()
    raw_dir = root / collection / folder / "raw"
    missing = [f for f in raw_files if not (raw_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"dataset {canonical}: raw file(s) {', '.join(missing)} not found in {raw_dir} "
                                f"(pass root= or set GNNACCEL_DATA to the folder holding '{collection}/')")
    try:
        import torch_geometric.datasets as pyg_datasets
    except ImportError as exc:  # pragma: no cover - PyG is a test dependency
        raise ImportError(f"loading {canonical} needs torch_geometric (pip install torch-geometric)") from exc
    with tempfile.TemporaryDirectory(prefix="gnnaccel-data-") as tmp:
        # PyG's Amazon capitalises the folder name ("Computers"), Coauthor and Planetoid use the name as given.
        shutil.copytree(raw_dir, Path(tmp) / folder / "raw")
        dataset = getattr(pyg_datasets, cls_name)(root=tmp, name=pyg_name)
        data = dataset[0]
    num_nodes = int(data.num_nodes)
    graph = Graph.from_edge_index(data.edge_index, num_nodes)
    x = data.x.float().contiguous()
    y = data.y.long()
    if cls_name == "Planetoid":
        train, val, test = data.train_mask, data.val_mask, data.test_mask
    else:
        train, val, test = random_split_masks(num_nodes, 0.6, 0.2, seed=split_seed)
    return GraphData(graph, x, y, train.bool(), val.bool(), test.bool(), int(y.max()) + 1, name=canonical)
