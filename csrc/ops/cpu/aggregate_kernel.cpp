// CPU kernel of gnnaccel::aggregate (the row loop lives in aggregate_rows.h).
#include "ops/aggregate_common.h"
#include "ops/cpu/aggregate_rows.h"

namespace gnnaccel {
namespace {

using cpu::aggregate_rows;

std::tuple<at::Tensor, at::Tensor> aggregate_cpu(const at::Tensor& rowptr, const at::Tensor& col,
                                                 const at::Tensor& x, const std::optional<at::Tensor>& edge_weight,
                                                 const std::optional<at::Tensor>& rows, c10::string_view reduce_name,
                                                 bool compute_arg) {
  const Reduce reduce = parse_reduce(std::string(reduce_name));
  check_csr_features(rowptr, col, x, edge_weight, rows);
  TORCH_CHECK(cpu::is_cpu_feature_dtype(x.scalar_type()),
              "aggregate on CPU supports float32, float64, bfloat16 and float16 x, got ", x.scalar_type());
  const int64_t num_graph_rows = rowptr.numel() - 1;
  at::Tensor out, arg;
  std::tie(out, arg) = empty_aggregate_outputs(rowptr, x, rows, reduce, compute_arg);
  const int64_t num_out = out.size(0);
  const int64_t channels = x.size(1);
  const bool with_arg = compute_arg && reduce_has_arg(reduce);
  if (num_out == 0 || channels == 0) return {out, arg};

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "aggregate_cpu", [&] {
    AT_DISPATCH_INDEX_TYPES(rowptr.scalar_type(), "aggregate_cpu_index", [&] {
      const index_t* rp = rowptr.data_ptr<index_t>();
      const index_t* cl = col.data_ptr<index_t>();
      const index_t* rw = rows.has_value() ? rows->data_ptr<index_t>() : nullptr;
      const scalar_t* w = edge_weight.has_value() ? edge_weight->data_ptr<scalar_t>() : nullptr;
      TORCH_CHECK(rp[0] == 0 && int64_t(rp[num_graph_rows]) == col.numel(),
                  "aggregate: rowptr must start at 0 and end at col.numel() = ", col.numel());
      auto run = [&](auto reduce_tag, auto weighted_tag) {
        constexpr Reduce RR = decltype(reduce_tag)::value;
        constexpr bool W = decltype(weighted_tag)::value;
        if (with_arg) {
          if constexpr (RR == Reduce::kMax || RR == Reduce::kMin) {
            aggregate_rows<scalar_t, index_t, RR, W, true>(rp, cl, x.data_ptr<scalar_t>(), w, rw, num_out,
                                                           num_graph_rows, x.size(0), col.numel(), channels, channels,
                                                           out.data_ptr<scalar_t>(), arg.data_ptr<int64_t>());
            return;
          }
        }
        aggregate_rows<scalar_t, index_t, RR, W, false>(rp, cl, x.data_ptr<scalar_t>(), w, rw, num_out, num_graph_rows,
                                                     x.size(0), col.numel(), channels, channels, out.data_ptr<scalar_t>(), nullptr);
      };
      auto with_weight = [&](auto reduce_tag) {
        if (w != nullptr) run(reduce_tag, std::true_type{});
        else run(reduce_tag, std::false_type{});
      };
      switch (reduce) {
        case Reduce::kSum: with_weight(std::integral_constant<Reduce, Reduce::kSum>{}); break;
        case Reduce::kMean: with_weight(std::integral_constant<Reduce, Reduce::kMean>{}); break;
        case Reduce::kMax: with_weight(std::integral_constant<Reduce, Reduce::kMax>{}); break;
        case Reduce::kMin: with_weight(std::integral_constant<Reduce, Reduce::kMin>{}); break;
      }
    });
  });
  return {out, arg};
}

}  // namespace

TORCH_LIBRARY_IMPL(gnnaccel, CPU, m) { m.impl("aggregate", &aggregate_cpu); }

}  // namespace gnnaccel
