// CPU kernel of gnnaccel::pruned_linear: rows are cut into blocks; each thread gathers its block's rows and
// kept columns into a buffer of about 256 KiB and calls BLAS (addmm) on it, writing straight into its slice of
// the output. Inside at::parallel_for the BLAS call runs single-threaded, so blocks proceed independently.
// bfloat16 multiplies in bfloat16 (oneDNN, float32 accumulation); float16 gathers its blocks widened to float32
// and multiplies by a float32 copy of the weight (cpu::gemm_type), rounding each output block once.
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "host_memory.h"
#include "ops/cpu/reduced_float.h"
#include "utils.h"

namespace gnnaccel {
namespace {

constexpr int64_t kBlockBytes = 256 * 1024;

template <typename index_t>
void check_range(const at::Tensor& idx, int64_t bound, const char* name, const char* what) {
  const index_t* p = idx.data_ptr<index_t>();
  for (int64_t i = 0; i < idx.numel(); ++i) {
    TORCH_CHECK(p[i] >= 0 && p[i] < bound, "pruned_linear: ", name, "[", i, "] = ", int64_t(p[i]),
                " is outside [0, ", bound, ") (", what, ")");
  }
}

at::Tensor pruned_linear_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             const std::optional<at::Tensor>& rows, const std::optional<at::Tensor>& keep) {
  GNNACCEL_CHECK_2D(x, "x");
  GNNACCEL_CHECK_2D(weight, "weight");
  TORCH_CHECK(cpu::is_cpu_feature_dtype(x.scalar_type()),
              "pruned_linear on CPU supports float32, float64, bfloat16 and float16 x, got ", x.scalar_type());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "weight dtype ", weight.scalar_type(), " must match x dtype ",
              x.scalar_type());
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(), "pruned_linear_cpu got a non-CPU tensor");
  const int64_t num_cols = keep.has_value() ? keep->numel() : x.size(1);
  TORCH_CHECK(weight.size(0) == num_cols, "weight has ", weight.size(0), " rows but ",
              keep.has_value() ? "keep selects " : "x has ", num_cols, " input channels");
  const int64_t out_channels = weight.size(1);
  if (bias.has_value()) {
    GNNACCEL_CHECK_1D(*bias, "bias");
    TORCH_CHECK(bias->numel() == out_channels, "bias has ", bias->numel(), " entries but weight has ", out_channels,
                " columns");
    TORCH_CHECK(bias->scalar_type() == x.scalar_type(), "bias dtype must match x dtype");
    TORCH_CHECK(bias->device().is_cpu(), "bias must be on the CPU like x");
  }
  for (const auto* opt : {&rows, &keep}) {
    if (!opt->has_value()) continue;
    const char* name = opt == &rows ? "rows" : "keep";
    TORCH_CHECK((*opt)->dim() == 1, name, " must be 1-D, got shape ", (*opt)->sizes());
    TORCH_CHECK((*opt)->scalar_type() == at::kLong || (*opt)->scalar_type() == at::kInt, name,
                " must be int32 or int64, got ", (*opt)->scalar_type());
    TORCH_CHECK((*opt)->device().is_cpu(), name, " must be on the CPU like x");
  }
  const at::Tensor rows_c = rows.has_value() ? rows->contiguous() : at::Tensor();
  const at::Tensor keep_c = keep.has_value() ? keep->contiguous() : at::Tensor();
  if (rows.has_value()) {
    AT_DISPATCH_INDEX_TYPES(rows_c.scalar_type(), "pruned_linear_rows",
                            [&] { check_range<index_t>(rows_c, x.size(0), "rows", "rows of x"); });
  }
  if (keep.has_value()) {
    AT_DISPATCH_INDEX_TYPES(keep_c.scalar_type(), "pruned_linear_keep",
                            [&] { check_range<index_t>(keep_c, x.size(1), "keep", "columns of x"); });
  }
  const int64_t num_out = rows.has_value() ? rows->numel() : x.size(0);
  auto out = empty_host_output({num_out, out_channels}, x.options());
  if (num_out == 0 || out_channels == 0) return out;
  // Detached: the nested out= BLAS calls (also on OpenMP worker threads, which do not inherit dispatch TLS)
  // must not see tensors that require grad.
  const at::ScalarType gemm_dtype = cpu::gemm_dtype(x.scalar_type());
  const at::Tensor w = weight.detach().to(gemm_dtype).contiguous();
  const std::optional<at::Tensor> bias_d =
      bias.has_value() ? std::optional<at::Tensor>(bias->detach().to(gemm_dtype)) : std::nullopt;
  if (num_cols == 0) {  // nothing kept: the product is empty, only the bias remains
    if (bias.has_value()) out.copy_(bias->unsqueeze(0).expand_as(out)); else out.zero_();
    return out;
  }
  const bool widen = gemm_dtype != x.scalar_type();  // float16: blocks widened to float32 below
  if (!rows.has_value() && !keep.has_value() && !widen) {  // plain linear: one multi-threaded BLAS call
    if (bias_d.has_value()) at::addmm_out(out, *bias_d, x.detach(), w); else at::mm_out(out, x.detach(), w);
    return out;
  }
  const at::Tensor xc = x.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "pruned_linear_cpu", [&] {
    using gemm_t = cpu::gemm_type<scalar_t>;
    constexpr bool kWidenOut = !std::is_same_v<gemm_t, scalar_t>;
    const int64_t block = std::clamp<int64_t>(kBlockBytes / int64_t(sizeof(gemm_t) * num_cols), 16, 1024);
    const int64_t num_blocks = (num_out + block - 1) / block;
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const int64_t in_channels = xc.size(1);
    auto gather_block = [&](auto row_of, auto col_of, int64_t begin, int64_t end, gemm_t* buf) {
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* src = xp + row_of(r) * in_channels;
        gemm_t* dst = buf + (r - begin) * num_cols;
        if (!keep.has_value()) {
          cpu::convert_row(dst, src, num_cols);
        } else {
          for (int64_t c = 0; c < num_cols; ++c) dst[c] = cpu::cast_value<gemm_t>(src[col_of(c)]);
        }
      }
    };
    auto run = [&](auto row_of, auto col_of) {
      const at::ThreadLocalState tls;  // OpenMP workers do not inherit inference mode / dispatch TLS
      at::parallel_for(0, num_blocks, 1, [&](int64_t b0, int64_t b1) {
        at::ThreadLocalStateGuard tls_guard(tls);
        std::vector<gemm_t> storage(block * num_cols);
        std::vector<float> widened(kWidenOut ? block * out_channels : 0);  // float16: the float32 GEMM result
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t begin = b * block, end = std::min(num_out, begin + block);
          gather_block(row_of, col_of, begin, end, storage.data());
          at::Tensor buf = at::from_blob(storage.data(), {end - begin, num_cols}, x.options().dtype(gemm_dtype));
          at::Tensor dst = kWidenOut ? at::from_blob(widened.data(), {end - begin, out_channels},
                                                     x.options().dtype(at::kFloat))
                                     : out.narrow(0, begin, end - begin);
          if (bias_d.has_value()) at::addmm_out(dst, *bias_d, buf, w); else at::mm_out(dst, buf, w);
          if constexpr (kWidenOut) {
            cpu::convert_row(op + begin * out_channels, widened.data(), (end - begin) * out_channels);
          }
        }
      });
    };
    auto with_cols = [&](auto row_of) {
      if (!keep.has_value()) { run(row_of, [](int64_t c) { return c; }); return; }
      AT_DISPATCH_INDEX_TYPES(keep_c.scalar_type(), "pruned_linear_keep_t", [&] {
        const index_t* kp = keep_c.data_ptr<index_t>();
        run(row_of, [kp](int64_t c) { return int64_t(kp[c]); });
      });
    };
    if (!rows.has_value()) {
      with_cols([](int64_t r) { return r; });
    } else {
      AT_DISPATCH_INDEX_TYPES(rows_c.scalar_type(), "pruned_linear_rows_t", [&] {
        const index_t* rp = rows_c.data_ptr<index_t>();
        with_cols([rp](int64_t r) { return int64_t(rp[r]); });
      });
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(gnnaccel, CPU, m) { m.impl("pruned_linear", &pruned_linear_cpu); }

}  // namespace gnnaccel
