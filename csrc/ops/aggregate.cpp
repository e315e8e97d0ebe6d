// Sparse neighbourhood aggregation over a CSR graph.
//
//   out[r] = reduce_{e in row(r)} w[e] * x[col[e]]        row(r) = rows[r] if rows is given, else r
//
// Contract (same as PyG): an empty row gives 0 for every reduction. `mean` divides the (weighted) sum by the
// number of edges of the row. For max/min the second output holds, per output entry, the edge index that won
// (-1 for an empty row) when compute_arg is set (autograd needs it); it is empty ([0]) otherwise and for
// sum/mean, so inference does not pay for it. The row count comes from rowptr, so no size needs
// reading from device memory.
#include "utils.h"

TORCH_LIBRARY_FRAGMENT(gnnaccel, m) {
  m.def("aggregate(Tensor rowptr, Tensor col, Tensor x, Tensor? edge_weight, Tensor? rows, str reduce,"
        " bool compute_arg=False) -> (Tensor, Tensor)");
}
