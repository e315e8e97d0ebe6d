// Graph-attention aggregation over a CSR graph (the message passing of GATConv), fused:
//
//   z[e, h]   = leaky_relu(alpha_src[col[e], h] + alpha_dst[i, h], negative_slope)
//   p[e, h]   = softmax of z[., h] over the edges e of CSR row r_i          r_i = rows[i] if rows is given, else i
//   out[i, k] = sum_e p[e, head(k)] * xw[col[e], k]                           head(k) = head_index[k] or k / (D / H)
//
// xw [S, D] holds the projected source rows (D = heads x channels, one head after the other, or any channel ->
// head map given by head_index [D]); alpha_src [S, H] and alpha_dst [num_out, H] the per-head attention terms of
// the sources and of the output rows. Both xw and alpha_src may be column blocks of a wider matrix (unit channel
// stride, any row stride). The softmax is numerically stable (running maximum and sum per row and head, one
// pass over a row's edges: no per-edge intermediate is stored). An empty row gives 0 (PyG's convention).
// The second output lse [num_out, H] is the log-sum-exp of each row's logits per head (0 for an empty row):
// the backward recomputes p[e, h] = exp(z[e, h] - lse[i, h]) from it. It is float32 for bfloat16 / float16 xw
// (whose kernels compute in float32), xw's dtype otherwise.
#include "utils.h"

TORCH_LIBRARY_FRAGMENT(gnnaccel, m) {
  m.def("gat_aggregate(Tensor rowptr, Tensor col, Tensor xw, Tensor alpha_src, Tensor alpha_dst, Tensor? rows,"
        " Tensor? head_index, float negative_slope) -> (Tensor, Tensor)");
}
