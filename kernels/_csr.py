"""Device-side helpers shared by the Triton kernels: the output tile's rows, range-checked CSR row bounds and
kept-channel loads.

Each returns the updated per-row ``bad`` flags (some index the row reads is out of range: the kernels write
such rows as NaN instead of reading out of bounds).
"""
import triton
import triton.language as tl


@triton.jit
def csr_row_range(rowptr, node, m_mask, num_rows, num_edges, bad):
    """Start and degree of CSR rows ``node`` (int64, masked by ``m_mask``); a row id or a rowptr entry out of
    range gives degree 0 and sets ``bad``. Returns ``start, deg, bad``."""
    row_ok = m_mask & (node >= 0) & (node < num_rows)
    bad = bad | (m_mask & ~row_ok)
    start = tl.load(rowptr + node, mask=row_ok, other=0).to(tl.int64)
    end = tl.load(rowptr + node + 1, mask=row_ok, other=0).to(tl.int64)
    csr_ok = (start >= 0) & (end >= start) & (end <= num_edges)
    bad = bad | (row_ok & ~csr_ok)
    deg = tl.where(row_ok & csr_ok, end - start, 0)
    return start, deg, bad


@triton.jit
def row_tile(rowptr, rows, num_out, num_rows, num_edges, channels, HAS_ROWS: tl.constexpr, BLOCK_M: tl.constexpr,
             BLOCK_C: tl.constexpr):
    """The program's ``BLOCK_M x BLOCK_C`` output tile (grid axis 0: rows, axis 1: channels): output row
    positions, their CSR rows (``rows[offs_m]`` or ``offs_m``) and those rows' bounds. Returns
    ``offs_m, m_mask, offs_c, c_mask, start, deg, bad``."""
    offs_m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < num_out
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = offs_c < channels
    if HAS_ROWS:
        node = tl.load(rows + offs_m, mask=m_mask, other=0).to(tl.int64)
    else:
        node = offs_m
    start, deg, bad = csr_row_range(rowptr, node, m_mask, num_rows, num_edges, offs_m < 0)
    return offs_m, m_mask, offs_c, c_mask, start, deg, bad


@triton.jit
def kept_channels(keep, offs_k, k_mask, num_channels, bad, HAS_KEEP: tl.constexpr):
    """Input channels read at positions ``offs_k``: ``keep[offs_k]`` (range-checked; an out-of-range channel
    sets ``bad`` for every row) or ``offs_k`` itself. Returns ``channel, ch_ok, bad``."""
    if HAS_KEEP:
        channel = tl.load(keep + offs_k, mask=k_mask, other=0).to(tl.int64)
        ch_ok = k_mask & (channel >= 0) & (channel < num_channels)
        bad = bad | (tl.max((k_mask & ~ch_ok).to(tl.int32), axis=0) > 0)
    else:
        channel = offs_k.to(tl.int64)
        ch_ok = k_mask
    return channel, ch_ok, bad
