// CPU kernel of gnnaccel::expand_hop (contract in csrc/ops/expand_hop.cpp).
//
// Three passes: (1) per seed, the number of local edges (parallel); (2) per seed, the global edge ids of its
// local edges and their source nodes (parallel; sampled draws use a counter-based hash, so the result does not
// depend on the thread count); (3) de-duplication into the frontier, sequential because first-seen order is
// part of the contract. Pass 3 uses a dense position array over the nodes when the batch touches a sizeable
// part of the graph, and an open-addressing hash table sized to the batch otherwise, so a small batch on a
// big graph costs O(batch), not O(num_nodes). No state outlives a call: concurrent calls are safe.
#include <ATen/Parallel.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <limits>
#include <memory>
#include <vector>

#include "ops/expand_hop_common.h"
#include "utils.h"

namespace gnnaccel {
namespace {

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;

// Memory an allocation can still get on this machine, in bytes: MemAvailable + SwapFree of /proc/meminfo, else
// the physical memory; 0 when unknown (no bound). Beyond it an allocation fails or, with overcommit, the process
// is killed while the block is filled (gnnaccel/_memory.py available_memory_bytes reads the same figures).
int64_t host_available_bytes() {
  int64_t available = -1, swap_free = 0;
  if (FILE* f = std::fopen("/proc/meminfo", "r")) {
    char line[256];
    while (std::fgets(line, sizeof(line), f)) {
      long long kib = 0;
      if (std::sscanf(line, "MemAvailable: %lld kB", &kib) == 1) available = int64_t(kib) * 1024;
      if (std::sscanf(line, "SwapFree: %lld kB", &kib) == 1) swap_free = int64_t(kib) * 1024;
    }
    std::fclose(f);
  }
  if (available >= 0) return available + swap_free;
  const long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
  return pages > 0 && page_size > 0 ? int64_t(pages) * int64_t(page_size) : 0;
}

// SplitMix64 finaliser: a full-avalanche 64-bit mix (Steele et al. 2014).
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Uniform integer in [0, n) from 64 random bits (Lemire's multiply-shift; bias <= n / 2^64).
inline uint64_t bounded(uint64_t bits, uint64_t n) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(bits) * n) >> 64);
}

// Open-addressing (linear probing) map node -> frontier position, sized to the batch.
template <typename index_t>
class NodePositionHash {
 public:
  explicit NodePositionHash(int64_t max_keys) {
    uint64_t size = 16;
    while (size < static_cast<uint64_t>(2 * max_keys)) size <<= 1;
    mask_ = size - 1;
    keys_.reset(new index_t[size]);
    values_.reset(new index_t[size]);
    std::fill(keys_.get(), keys_.get() + size, index_t(-1));
  }
  // Position of `node`; inserts it with `position` if absent (then *inserted = true).
  inline index_t find_or_insert(index_t node, index_t position, bool* inserted) {
    uint64_t h = (static_cast<uint64_t>(node) * kGolden) >> 20;
    for (;; ++h) {
      const uint64_t slot = h & mask_;
      const index_t key = keys_[slot];
      if (key == node) { *inserted = false; return values_[slot]; }
      if (key == index_t(-1)) {
        keys_[slot] = node;
        values_[slot] = position;
        *inserted = true;
        return position;
      }
    }
  }

 private:
  uint64_t mask_;
  std::unique_ptr<index_t[]> keys_, values_;
};

// Dense node -> position array; positions are stored as pos_t (int32 when they fit: half the cache footprint).
template <typename index_t, typename pos_t>
class NodePositionDense {
 public:
  explicit NodePositionDense(int64_t num_nodes) : pos_(new pos_t[num_nodes]) {
    std::fill(pos_.get(), pos_.get() + num_nodes, pos_t(-1));
  }
  inline index_t find_or_insert(index_t node, index_t position, bool* inserted) {
    pos_t& p = pos_[node];
    if (p >= 0) { *inserted = false; return index_t(p); }
    p = pos_t(position);
    *inserted = true;
    return position;
  }

 private:
  std::unique_ptr<pos_t[]> pos_;
};

template <typename index_t, typename Map>
int64_t deduplicate(Map& map, const index_t* seeds, int64_t num_seeds, index_t* local_col, int64_t num_local_edges,
                    index_t* frontier) {
  bool inserted;
  int64_t size = 0;
  for (int64_t r = 0; r < num_seeds; ++r) {
    frontier[size] = seeds[r];
    map.find_or_insert(seeds[r], index_t(r), &inserted);  // a duplicated seed keeps its first position
    ++size;
  }
  for (int64_t e = 0; e < num_local_edges; ++e) {
    const index_t node = local_col[e];
    const index_t p = map.find_or_insert(node, index_t(size), &inserted);
    if (inserted) frontier[size++] = node;
    local_col[e] = p;
  }
  return size;
}

template <typename index_t>
std::vector<at::Tensor> expand_hop_impl(const at::Tensor& rowptr_t, const at::Tensor& col_t, const at::Tensor& seeds_t,
                                        int64_t fanout, int64_t random_seed, const bool* skip,
                                        const std::optional<at::Tensor>& row_end_t, int64_t num_nodes) {
  const index_t* rowptr = rowptr_t.data_ptr<index_t>();
  // Row v is [rowptr[v], row_end[v]); packed rows end where the next one starts.
  const index_t* row_end = row_end_t.has_value() ? row_end_t->data_ptr<index_t>() : rowptr + 1;
  const index_t* col = col_t.data_ptr<index_t>();
  const index_t* seeds = seeds_t.data_ptr<index_t>();
  const int64_t num_edges = col_t.numel();
  const int64_t num_seeds = seeds_t.numel();
  const auto opts = rowptr_t.options();
  TORCH_CHECK(row_end_t.has_value() || (int64_t(rowptr[0]) == 0 && int64_t(rowptr[num_nodes]) == num_edges),
              "expand_hop: rowptr must start at 0 and end at col.numel() = ", num_edges);

  // Pass 1: local degree per seed (validating seeds and the rows they read).
  auto local_rowptr_t = at::empty({num_seeds + 1}, opts);
  index_t* local_rowptr = local_rowptr_t.data_ptr<index_t>();
  std::vector<int64_t> count(num_seeds);
  std::atomic<int> error{0};  // 1: seed out of range, 2: bad rowptr, 3: bad col
  at::parallel_for(0, num_seeds, int64_t(1) << 14, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t v = seeds[r];
      if (v < 0 || v >= num_nodes) { error = 1; count[r] = 0; continue; }
      const int64_t b = rowptr[v], e = row_end[v];
      if (b < 0 || e < b || e > num_edges) { error = 2; count[r] = 0; continue; }
      const int64_t degree = e - b;
      count[r] = (skip != nullptr && skip[r]) ? 0 : (fanout < 0 ? degree : (degree > 0 ? fanout : 0));
    }
  });
  TORCH_CHECK(error != 1, "expand_hop: seeds holds a node outside [0, ", num_nodes, ")");
  TORCH_CHECK(error != 2, "expand_hop: rowptr is not non-decreasing within [0, col.numel()]");
  // Running total with overflow checks (a fanout near 2^63 must not wrap), checked against the index dtype and
  // the machine's memory before anything of that size is allocated.
  int64_t total = 0;
  for (int64_t r = 0; r < num_seeds; ++r) total = expand_hop_add_edges(total, count[r], fanout, num_seeds);
  // A block past 256 MB reads the memory figures (a file read: not worth it for the usual small batches).
  const int64_t bytes_per_edge = int64_t(7 * sizeof(index_t));
  const bool big = total > (int64_t(1) << 28) / bytes_per_edge - num_seeds;
  expand_hop_check_block(total, num_seeds, fanout, int64_t(std::numeric_limits<index_t>::max()), bytes_per_edge,
                         big ? host_available_bytes() : 0, "host");
  local_rowptr[0] = 0;
  for (int64_t r = 0, running = 0; r < num_seeds; ++r) {
    running += count[r];
    local_rowptr[r + 1] = index_t(running);
  }

  // Pass 2: global edge ids and their source nodes (local_col holds node ids until pass 3 relabels them).
  auto edge_ids_t = at::empty({total}, opts);
  auto local_col_t = at::empty({total}, opts);
  index_t* edge_ids = edge_ids_t.data_ptr<index_t>();
  index_t* local_col = local_col_t.data_ptr<index_t>();
  const uint64_t seed_key = mix64(static_cast<uint64_t>(random_seed) + kGolden);
  // Threads only for big blocks (>= ~32k edges per task): a fork/join costs more than a small batch, and far
  // more on a loaded machine where a worker may wait for a core.
  const int64_t edges_per_seed = std::max<int64_t>(1, total / std::max<int64_t>(1, num_seeds));
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / edges_per_seed);
  at::parallel_for(0, num_seeds, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t out = local_rowptr[r], n = local_rowptr[r + 1] - out;
      if (n == 0) continue;
      const int64_t v = seeds[r];
      const int64_t b = rowptr[v], degree = row_end[v] - b;
      if (fanout < 0) {
        for (int64_t t = 0; t < n; ++t) edge_ids[out + t] = index_t(b + t);
      } else {
        const uint64_t node_key = mix64(seed_key ^ (static_cast<uint64_t>(v) * kGolden + kGolden));
        for (int64_t t = 0; t < n; ++t) {
          const uint64_t bits = mix64(node_key + static_cast<uint64_t>(t + 1) * kGolden);
          edge_ids[out + t] = index_t(b + int64_t(bounded(bits, uint64_t(degree))));
        }
      }
      for (int64_t t = 0; t < n; ++t) {
        const int64_t u = col[edge_ids[out + t]];
        if (u < 0 || u >= num_nodes) { error = 3; local_col[out + t] = 0; continue; }
        local_col[out + t] = index_t(u);
      }
    }
  });
  TORCH_CHECK(error != 3, "expand_hop: col holds an index outside [0, num_nodes) = [0, ", num_nodes, ")");

  // Pass 3: de-duplication. The dense array costs O(num_nodes) to set up: worth it only for big batches.
  const int64_t max_frontier = num_seeds + total;
  auto frontier_t = at::empty({max_frontier}, opts);
  int64_t size;
  if (max_frontier * 8 >= num_nodes) {
    if (max_frontier <= int64_t(std::numeric_limits<int32_t>::max())) {
      NodePositionDense<index_t, int32_t> map(num_nodes);
      size = deduplicate<index_t>(map, seeds, num_seeds, local_col, total, frontier_t.data_ptr<index_t>());
    } else {
      NodePositionDense<index_t, int64_t> map(num_nodes);
      size = deduplicate<index_t>(map, seeds, num_seeds, local_col, total, frontier_t.data_ptr<index_t>());
    }
  } else {
    NodePositionHash<index_t> map(max_frontier);
    size = deduplicate<index_t>(map, seeds, num_seeds, local_col, total, frontier_t.data_ptr<index_t>());
  }
  // Copy out the used prefix: a view would keep the over-allocated storage alive.
  return {frontier_t.narrow(0, 0, size).clone(), local_rowptr_t, local_col_t, edge_ids_t};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> expand_hop_cpu(
    const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& seeds, int64_t fanout, int64_t random_seed,
    const std::optional<at::Tensor>& skip, const std::optional<at::Tensor>& row_end) {
  const bool* skip_ptr = expand_hop_check_args(rowptr, col, seeds, fanout, skip);
  const int64_t num_nodes = expand_hop_check_row_end(rowptr, row_end);
  std::vector<at::Tensor> out;
  AT_DISPATCH_INDEX_TYPES(rowptr.scalar_type(), "expand_hop_cpu", [&] {
    out = expand_hop_impl<index_t>(rowptr, col, seeds, fanout, random_seed, skip_ptr, row_end, num_nodes);
  });
  return {out[0], out[1], out[2], out[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(gnnaccel, CPU, m) { m.impl("expand_hop", &expand_hop_cpu); }

}  // namespace gnnaccel
