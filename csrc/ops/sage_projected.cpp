// SAGE/GCN step for a layer that projects before it aggregates (out < in): the neighbour projections of
// every node, xw = x W_l, are aggregated and the layer finished in one pass.
//
//   out[r] = reduce_{e in row(r)} w[e] * xw[col[e]]  +  root[r] (if given)  +  bias (if given)
//   reduce in {sum, mean},  row(r) = rows[r] or r
//
// root holds the root-branch term of each *output* row (x[row(r)] W_r, computed by the caller with one GEMM
// over the same rows). xw and root may be column blocks of a wider row-major matrix (unit channel stride, any
// row stride): a wide layer computes [x W_l | x W_r] with one GEMM and passes its two halves. Empty rows aggregate to 0 (PyG), so they get root + bias only. The output has
// rows.numel() (or rowptr.numel() - 1) rows and D = xw.size(1) columns. Compared with aggregate, then add(root),
// then add(bias), the output is written once, by the pass that gathers it. xw stays a compact [N, D] matrix:
// for narrow layers it then fits in the last-level cache, which a [N, 2D] [x W_l | x W_r] would not.
// Inference operator (no autograd formula).
#include "utils.h"

TORCH_LIBRARY_FRAGMENT(gnnaccel, m) {
  m.def("sage_projected(Tensor rowptr, Tensor col, Tensor xw, Tensor? root, Tensor? edge_weight, Tensor? bias, "
        "Tensor? rows, str reduce) -> Tensor");
}
