// CPU kernel of gnnaccel::sage_projected: the aggregate row loop over xw, with the root term and the bias
// added by the epilogue while the row is still in registers.
#include <ATen/Dispatch.h>

#include "host_memory.h"
#include "ops/cpu/aggregate_rows.h"
#include "ops/sage_projected_common.h"

namespace gnnaccel {
namespace {

template <typename scalar_t>
struct RootBiasEpilogue {
  static constexpr bool kActive = true;
  const scalar_t* root;  // [num_out, width] with row stride root_stride, or nullptr
  int64_t root_stride;
  const scalar_t* bias;  // [width] or nullptr
  template <typename T>  // the accumulation type
  T operator()(int64_t r, int64_t c) const {
    T v = bias != nullptr ? T(cpu::to_acc(bias[c])) : T(0);
    if (root != nullptr) v += cpu::to_acc(root[r * root_stride + c]);
    return v;
  }
};

at::Tensor sage_projected_cpu(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& xw,
                              const std::optional<at::Tensor>& root, const std::optional<at::Tensor>& edge_weight,
                              const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& rows,
                              c10::string_view reduce_name) {
  const int64_t num_out = check_sage_projected_inputs(rowptr, col, xw, root, edge_weight, bias, rows, reduce_name);
  TORCH_CHECK(cpu::is_cpu_feature_dtype(xw.scalar_type()),
              "sage_projected on CPU supports float32, float64, bfloat16 and float16 xw, got ", xw.scalar_type());
  const Reduce reduce = parse_reduce(std::string(reduce_name));
  const int64_t num_graph_rows = rowptr.numel() - 1;
  const int64_t width = xw.size(1);
  auto out = empty_host_output({num_out, width}, xw.options());
  if (num_out == 0 || width == 0) return out;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, xw.scalar_type(), "sage_projected_cpu", [&] {
    AT_DISPATCH_INDEX_TYPES(rowptr.scalar_type(), "sage_projected_cpu_index", [&] {
      const index_t* rp = rowptr.data_ptr<index_t>();
      TORCH_CHECK(rp[0] == 0 && int64_t(rp[num_graph_rows]) == col.numel(),
                  "sage_projected: rowptr must start at 0 and end at col.numel() = ", col.numel());
      const scalar_t* w = edge_weight.has_value() ? edge_weight->data_ptr<scalar_t>() : nullptr;
      const index_t* rw = rows.has_value() ? rows->data_ptr<index_t>() : nullptr;
      const RootBiasEpilogue<scalar_t> epilogue{root.has_value() ? root->data_ptr<scalar_t>() : nullptr,
                                                root.has_value() ? root->stride(0) : 0,
                                                bias.has_value() ? bias->data_ptr<scalar_t>() : nullptr};
      auto run = [&](auto reduce_tag, auto weighted_tag) {
        constexpr Reduce RR = decltype(reduce_tag)::value;
        constexpr bool W = decltype(weighted_tag)::value;
        cpu::aggregate_rows<scalar_t, index_t, RR, W, false>(rp, col.data_ptr<index_t>(), xw.data_ptr<scalar_t>(), w,
                                                             rw, num_out, num_graph_rows, xw.size(0), col.numel(),
                                                             width, xw.stride(0), out.data_ptr<scalar_t>(), nullptr,
                                                             epilogue, "sage_projected");
      };
      auto with_weight = [&](auto reduce_tag) {
        if (w != nullptr) run(reduce_tag, std::true_type{});
        else run(reduce_tag, std::false_type{});
      };
      if (reduce == Reduce::kSum) with_weight(std::integral_constant<Reduce, Reduce::kSum>{});
      else with_weight(std::integral_constant<Reduce, Reduce::kMean>{});
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(gnnaccel, CPU, m) { m.impl("sage_projected", &sage_projected_cpu); }

}  // namespace gnnaccel
