"""Huge-page-backed buffers (gnnaccel._memory): same values as the plain torch calls, advice given where the
kernel supports it, and a plain fallback everywhere else."""
from pathlib import Path

import pytest
import torch

import gnnaccel
from gnnaccel._memory import advise_huge_pages, empty_for_gather, project_for_gather

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
THP_ADVISABLE = THP.exists() and ("[madvise]" in THP.read_text() or "[always]" in THP.read_text())


def test_as_huge_pages_copies_large_host_tensors_only(generator):
    big = torch.randn(40_000, 128, generator=generator)  # 20 MB
    copy = gnnaccel.as_huge_pages(big)
    assert copy.data_ptr() != big.data_ptr() and torch.equal(copy, big)
    strided = big[:, ::2]
    assert torch.equal(gnnaccel.as_huge_pages(strided), strided)
    small = torch.randn(10, 4, generator=generator)
    assert gnnaccel.as_huge_pages(small) is small  # below the size where the TLB matters: untouched


@pytest.mark.skipif(not THP_ADVISABLE, reason="transparent huge pages are disabled on this machine")
def test_advice_is_given_for_large_buffers():
    assert advise_huge_pages(torch.empty(16 << 20, dtype=torch.uint8))
    assert not advise_huge_pages(torch.empty(1 << 20, dtype=torch.uint8))  # too small to bother


def test_empty_for_gather_shape_dtype_device():
    like = torch.zeros(1, dtype=torch.float64)
    out = empty_for_gather((3000, 700), like)
    assert out.shape == (3000, 700) and out.dtype == torch.float64 and out.is_contiguous()
    assert empty_for_gather((5, 2), like, dtype=torch.float32).dtype == torch.float32


@pytest.mark.parametrize("rows", [7, 30_000])
def test_project_for_gather_matches_linear(rows, generator):
    x = torch.randn(rows, 96, generator=generator, dtype=torch.float64)
    w = torch.randn(40, 96, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(project_for_gather(x, w), x @ w.t())
    # While autograd records, it falls back to F.linear and gradients flow.
    wg = w.clone().requires_grad_()
    project_for_gather(x, wg).sum().backward()
    torch.testing.assert_close(wg.grad, x.sum(0).expand(40, 96))
