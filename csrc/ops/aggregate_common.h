// Output allocation shared by the CPU and CUDA kernels of gnnaccel::aggregate (see aggregate.cpp for the contract).
#pragma once

#include "csr_checks.h"
#include "host_memory.h"

namespace gnnaccel {

// out [num_out, C] in x's dtype; arg [num_out, C] int64 when max/min must record the winning edge, else [0].
inline std::tuple<at::Tensor, at::Tensor> empty_aggregate_outputs(const at::Tensor& rowptr, const at::Tensor& x,
                                                                  const std::optional<at::Tensor>& rows,
                                                                  Reduce reduce, bool compute_arg) {
  const int64_t num_out = rows.has_value() ? rows->numel() : rowptr.numel() - 1;
  auto out = empty_host_output({num_out, x.size(1)}, x.options());  // huge-page advice on CPU only
  auto arg = compute_arg && reduce_has_arg(reduce) ? at::empty({num_out, x.size(1)}, x.options().dtype(at::kLong))
                                                   : at::empty({0}, x.options().dtype(at::kLong));
  return {out, arg};
}

}  // namespace gnnaccel
