"""torch's intra-op thread count, set for a block of work."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Optional

import torch

__all__ = ["intra_op_threads"]


@contextmanager
def intra_op_threads(n: Optional[int]):
    """Run the block with ``n`` intra-op threads (None: unchanged), restoring the previous count.

    Args:
        n: thread count for the block, or None to leave it as it is.
    """
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
