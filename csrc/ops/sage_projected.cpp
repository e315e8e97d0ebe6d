// SAGE/GCN step for a layer that projects before it aggregates (out < in): the projections of every node,
// [x W_l || x W_r] from one GEMM, are aggregated and finished in one pass.
//
//   out[r] = reduce_{e in row(r)} w[e] * xw[col[e], 0:D]  +  xw[row(r), D:2D] (if root)  +  bias
//   D = xw.size(1) / (1 + root),  reduce in {sum, mean},  row(r) = rows[r] or r
//
// Empty rows aggregate to 0 (PyG), so they get the root term and bias only. The output has rows.numel() (or
// rowptr.numel() - 1) rows and D columns. Compared with aggregate + add(bias) + addmm(root), the aggregated
// matrix is written once, by the pass that gathers it, and the projection is one GEMM instead of two.
// Inference operator (no autograd formula).
#include "utils.h"

TORCH_LIBRARY_FRAGMENT(gnnaccel, m) {
  m.def("sage_projected(Tensor rowptr, Tensor col, Tensor xw, Tensor? edge_weight, Tensor? bias, Tensor? rows, "
        "str reduce, bool root) -> Tensor");
}
