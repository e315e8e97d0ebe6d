"""Datasets: a fast synthetic generator (no downloads) and loaders for the real graphs in ../shared/data."""
from .base import GraphData
from .real import load
from .synthetic import synthetic

__all__ = ["GraphData", "load", "synthetic"]
