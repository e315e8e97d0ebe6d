// Dense projection of a row/column subset of a feature matrix.
//
//   out = x[rows][:, keep] @ weight + bias          rows, keep, bias optional
//
// Contract: x [N, C] floating point; weight [K, D] with K = keep.numel() (or C without keep); bias [D];
// rows/keep int32/int64 indices into [0, N) / [0, C) (duplicates are allowed: they gather the same row or
// column twice). The output has rows.numel() (or N) rows and D columns, so its size is known from the input
// shapes. On CPU the gathered matrix is never materialised beyond a cache-sized block per thread.
#include "utils.h"

TORCH_LIBRARY_FRAGMENT(gnnaccel, m) {
  m.def("pruned_linear(Tensor x, Tensor weight, Tensor? bias, Tensor? rows, Tensor? keep) -> Tensor");
}
