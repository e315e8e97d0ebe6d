// Fused SAGE/GCN step: aggregate a block of rows and project it at once.
//
//   z[r]   = [ reduce_{e in row(r)} w[e] * x[col[e]]  ||  x[row(r)] (if root) ]     reduce in {sum, mean}
//   out[r] = z[r] @ weight + bias                                                 row(r) = rows[r] or r
//
// weight is [C * (1 + root), D]: the neighbour-branch rows first, then the root-branch rows (PyG SAGEConv:
// cat([lin_l.weight, lin_r.weight], 1).t()). Empty rows aggregate to 0 (PyG). The output has rows.numel()
// (or rowptr.numel() - 1) rows and D columns. On CPU each thread aggregates a block of rows into a
// cache-sized buffer and multiplies it by the weight with BLAS, so the aggregated matrix never exists whole.
#include "utils.h"

TORCH_LIBRARY_FRAGMENT(gnnaccel, m) {
  m.def("sage_fused(Tensor rowptr, Tensor col, Tensor x, Tensor? edge_weight, Tensor weight, Tensor? bias, "
        "Tensor? rows, str reduce, bool root) -> Tensor");
}
