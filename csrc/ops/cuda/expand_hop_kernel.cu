// CUDA kernel of gnnaccel::expand_hop (contract in csrc/ops/expand_hop.cpp): the same block as the CPU kernel,
// bit for bit, for a given random_seed.
//
// (1) One thread per seed: the seed's number of local edges (its degree, or 1 = "sampled" when fanout >= 0), with
// range checks into an error word; an inclusive scan gives the local row pointer. One host read brings back the
// total and the error word (the output sizes depend on it). (2) One thread per local edge: its row (binary search
// in the row pointer), its global edge id (CSR order, or draw t of node v = Lemire(mix64(key_v + (t+1)·golden),
// degree), the CPU kernel's counter-based hash) and its source node. (3) De-duplication in first-seen order
// without a sequential scan: a stable sort of (seeds ++ sources) puts each node's first occurrence at the head of
// its run; new nodes are numbered by a prefix sum over the positions of their first occurrences. A second host
// read brings back the frontier size. Step (3) is written out in PyTorch in gnnaccel/ops/expand_hop.py
// (_deduplicate), where it is tested against the CPU kernel on machines without a GPU.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "ops/expand_hop_common.h"
#include "utils.h"

namespace gnnaccel {
namespace {

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;
constexpr int kThreads = 256;
constexpr int kSeedOutOfRange = 1, kBadRowptr = 2, kBadCol = 4;

__host__ __device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline int64_t blocks_for(int64_t n) { return std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 65535)); }

// Pass 1: counts[r] = number of local edges of seed r (fanout >= 0: 1 per sampled row, scaled on the host).
template <typename index_t>
__global__ void count_kernel(const index_t* __restrict__ rowptr, const index_t* __restrict__ row_end,
                             const index_t* __restrict__ seeds,
                             const bool* __restrict__ skip, int64_t num_seeds, int64_t num_nodes, int64_t num_edges,
                             bool sampled, int64_t* __restrict__ counts, int* __restrict__ error) {
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < num_seeds;
       r += int64_t(gridDim.x) * blockDim.x) {
    const int64_t v = seeds[r];
    int64_t count = 0;
    if (v < 0 || v >= num_nodes) {
      atomicOr(error, kSeedOutOfRange);
    } else {
      const int64_t b = rowptr[v], e = row_end[v];
      if (b < 0 || e < b || e > num_edges) {
        atomicOr(error, kBadRowptr);
      } else if (!(skip != nullptr && skip[r]) && e > b) {
        count = sampled ? 1 : e - b;
      }
    }
    counts[r] = count;
  }
}

// Pass 2: per local edge, its global edge id and source node.
template <typename index_t>
__global__ void edges_kernel(const index_t* __restrict__ rowptr, const index_t* __restrict__ row_end,
                             const index_t* __restrict__ col,
                             const index_t* __restrict__ seeds, const int64_t* __restrict__ local_rowptr,
                             int64_t num_seeds, int64_t num_nodes, int64_t total, int64_t fanout, uint64_t seed_key,
                             index_t* __restrict__ edge_ids, int64_t* __restrict__ sources, int* __restrict__ error) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    // Row r: the last r with local_rowptr[r] <= e (rows with no edges are skipped over by the search).
    int64_t lo = 0, hi = num_seeds;  // local_rowptr[lo] <= e < local_rowptr[hi]
    while (hi - lo > 1) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (local_rowptr[mid] <= e) lo = mid; else hi = mid;
    }
    const int64_t r = lo, t = e - local_rowptr[r];
    const int64_t v = seeds[r];
    const int64_t b = rowptr[v], degree = row_end[v] - b;
    int64_t edge;
    if (fanout < 0) {
      edge = b + t;
    } else {
      const uint64_t node_key = mix64(seed_key ^ (static_cast<uint64_t>(v) * kGolden + kGolden));
      const uint64_t bits = mix64(node_key + static_cast<uint64_t>(t + 1) * kGolden);
      edge = b + static_cast<int64_t>(__umul64hi(bits, static_cast<uint64_t>(degree)));
    }
    edge_ids[e] = index_t(edge);
    const int64_t u = col[edge];
    if (u < 0 || u >= num_nodes) {
      atomicOr(error, kBadCol);
      sources[e] = 0;
    } else {
      sources[e] = u;
    }
  }
}

void check_error(int error, int64_t num_nodes) {
  TORCH_CHECK(!(error & kSeedOutOfRange), "expand_hop: seeds holds a node outside [0, ", num_nodes, ")");
  TORCH_CHECK(!(error & kBadRowptr), "expand_hop: rowptr is not non-decreasing within [0, col.numel()]");
  TORCH_CHECK(!(error & kBadCol), "expand_hop: col holds an index outside [0, num_nodes) = [0, ", num_nodes, ")");
}

// Frontier and local col (int64) from the seeds and the source node of every local edge; see the file comment.
// The host read of the frontier size also brings back pass 2's error word (checked here).
std::pair<at::Tensor, at::Tensor> deduplicate(const at::Tensor& seeds, const at::Tensor& sources,
                                              const at::Tensor& error, int64_t num_nodes) {
  const int64_t num_seeds = seeds.numel();
  const at::Tensor keys = at::cat({seeds.to(at::kLong), sources});
  const int64_t m = keys.numel();
  if (m == 0) return {keys, keys};
  const auto long_opts = keys.options();
  at::Tensor ordered, perm;
  std::tie(ordered, perm) = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  at::Tensor head = at::ones({m}, long_opts.dtype(at::kBool));
  if (m > 1) head.narrow(0, 1, m - 1).copy_(ordered.narrow(0, 1, m - 1).ne(ordered.narrow(0, 0, m - 1)));
  const at::Tensor run = at::cumsum(head, 0, at::kLong).sub_(1);
  at::Tensor first_in_run = at::full({m}, m, long_opts);
  first_in_run.scatter_reduce_(0, run, perm, "amin", /*include_self=*/true);
  at::Tensor first = at::empty({m}, long_opts);
  first.index_copy_(0, perm, first_in_run.index_select(0, run));  // first[p]: first occurrence of keys[p]
  const at::Tensor positions = at::arange(m, long_opts);
  const at::Tensor new_head = first.eq(positions).logical_and_(positions.ge(num_seeds));
  const at::Tensor rank = at::cumsum(new_head, 0, at::kLong);
  const at::Tensor new_index = rank.add(num_seeds - 1);
  const at::Tensor info = at::stack({rank[m - 1], error[0].to(at::kLong)}).cpu();  // second host read
  check_error(int(info.data_ptr<int64_t>()[1]), num_nodes);
  const int64_t size = num_seeds + info.data_ptr<int64_t>()[0];
  const at::Tensor index = at::where(first.lt(num_seeds), first, new_index.index_select(0, first));
  at::Tensor buffer = at::empty({size + 1}, long_opts);
  buffer.index_copy_(0, at::where(new_head, new_index, at::full_like(new_index, size)), keys);
  buffer.narrow(0, 0, num_seeds).copy_(keys.narrow(0, 0, num_seeds));
  return {buffer.narrow(0, 0, size).clone(), index.narrow(0, num_seeds, m - num_seeds)};
}

template <typename index_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> expand_hop_cuda_impl(
    const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& seeds, int64_t fanout, int64_t random_seed,
    const bool* skip, const std::optional<at::Tensor>& row_end_t, int64_t num_nodes) {
  const int64_t num_edges = col.numel(), num_seeds = seeds.numel();
  // Row v is [rowptr[v], row_end[v]); packed rows end where the next one starts.
  const index_t* row_end = row_end_t.has_value() ? row_end_t->data_ptr<index_t>() : rowptr.data_ptr<index_t>() + 1;
  const auto opts = rowptr.options();
  const auto long_opts = opts.dtype(at::kLong);
  auto stream = at::cuda::getCurrentCUDAStream();
  const bool sampled = fanout >= 0;
  TORCH_CHECK(sampled || num_edges == 0 || num_seeds <= std::numeric_limits<int64_t>::max() / num_edges,
              "expand_hop: ", num_seeds, " seeds over ", num_edges, " edges overflow the 64-bit edge count");

  // Pass 1 and the first host read: [total (or number of sampled rows), error word, rowptr[0], rowptr[N]].
  at::Tensor counts = at::empty({num_seeds}, long_opts);
  at::Tensor error = at::zeros({1}, opts.dtype(at::kInt));
  if (num_seeds > 0) {
    count_kernel<index_t><<<blocks_for(num_seeds), kThreads, 0, stream>>>(
        rowptr.data_ptr<index_t>(), row_end, seeds.data_ptr<index_t>(), skip, num_seeds, num_nodes, num_edges, sampled,
        counts.data_ptr<int64_t>(), error.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  at::Tensor local_rowptr = at::zeros({num_seeds + 1}, long_opts);
  if (num_seeds > 0) {
    at::Tensor tail = local_rowptr.narrow(0, 1, num_seeds);
    at::cumsum_out(tail, counts, 0);
  }
  // Unpacked rows (row_end) have no first/last entry to check: every row read is range-checked in pass 1.
  const at::Tensor first = row_end_t.has_value() ? at::zeros({}, long_opts) : rowptr[0].to(at::kLong);
  const at::Tensor last = row_end_t.has_value() ? at::full({}, num_edges, long_opts) : rowptr[num_nodes].to(at::kLong);
  const at::Tensor info = at::stack({local_rowptr[num_seeds], error[0].to(at::kLong), first, last}).cpu();
  const int64_t* host = info.data_ptr<int64_t>();
  TORCH_CHECK(host[2] == 0 && host[3] == num_edges, "expand_hop: rowptr must start at 0 and end at col.numel() = ",
              num_edges);
  check_error(int(host[1]), num_nodes);
  const int64_t total = sampled ? expand_hop_mul_edges(host[0], fanout, num_seeds) : host[0];
  expand_hop_check_block(total, num_seeds, fanout, int64_t(std::numeric_limits<index_t>::max()),
                         int64_t(sizeof(index_t)) + 12 * 8,  // edge ids + the int64 temporaries of pass 3
                         int64_t(at::cuda::getCurrentDeviceProperties()->totalGlobalMem), "GPU");
  if (sampled && fanout != 1) local_rowptr.mul_(fanout);  // no overflow: every prefix is <= total

  // Pass 2: edge ids and source nodes.
  at::Tensor edge_ids = at::empty({total}, opts);
  at::Tensor sources = at::empty({total}, long_opts);
  if (total > 0) {
    const uint64_t seed_key = mix64(static_cast<uint64_t>(random_seed) + kGolden);
    edges_kernel<index_t><<<blocks_for(total), kThreads, 0, stream>>>(
        rowptr.data_ptr<index_t>(), row_end, col.data_ptr<index_t>(), seeds.data_ptr<index_t>(),
        local_rowptr.data_ptr<int64_t>(), num_seeds, num_nodes, total, fanout, seed_key, edge_ids.data_ptr<index_t>(),
        sources.data_ptr<int64_t>(), error.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  // Pass 3.
  at::Tensor frontier, local_col;
  std::tie(frontier, local_col) = deduplicate(seeds, sources, error, num_nodes);
  return {frontier.to(rowptr.scalar_type()), local_rowptr.to(rowptr.scalar_type()), local_col.to(rowptr.scalar_type()),
          edge_ids};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> expand_hop_cuda(
    const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& seeds, int64_t fanout, int64_t random_seed,
    const std::optional<at::Tensor>& skip, const std::optional<at::Tensor>& row_end) {
  const bool* skip_ptr = expand_hop_check_args(rowptr, col, seeds, fanout, skip);
  const int64_t num_nodes = expand_hop_check_row_end(rowptr, row_end);
  const c10::cuda::CUDAGuard guard(rowptr.device());
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> out;
  AT_DISPATCH_INDEX_TYPES(rowptr.scalar_type(), "expand_hop_cuda", [&] {
    out = expand_hop_cuda_impl<index_t>(rowptr, col, seeds, fanout, random_seed, skip_ptr, row_end, num_nodes);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(gnnaccel, CUDA, m) { m.impl("expand_hop", &expand_hop_cuda); }

}  // namespace gnnaccel
