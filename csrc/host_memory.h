// Large host output buffers backed by transparent huge pages (see gnnaccel/_memory.py for the measurements).
//
// A fresh buffer of hundreds of MB written through 4 KiB pages takes one page fault per 4 KiB (about 30 ms per
// 100 MB here), and when the next layer gathers rows from it, most random reads also miss the TLB. Advising
// MADV_HUGEPAGE before the first write makes both 512x rarer where THP runs in "madvise" mode. Only advice:
// on failure, another OS or a small buffer nothing changes.
#pragma once

#include <ATen/ATen.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <cstdint>

namespace gnnaccel {

inline void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t(2) << 20;
  if (!t.device().is_cpu()) return;
  const auto& storage = t.storage();
  const uintptr_t bytes = storage.nbytes();
  if (bytes < 4 * kHugePage || storage.data() == nullptr) return;
  const uintptr_t start = reinterpret_cast<uintptr_t>(storage.data());
  const uintptr_t first = (start + kHugePage - 1) / kHugePage * kHugePage;
  const uintptr_t last = (start + bytes) / kHugePage * kHugePage;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

// at::empty for an operator's output; large host buffers get the huge-page advice (device tensors: plain).
inline at::Tensor empty_host_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor out = at::empty(sizes, options);
  advise_huge_pages(out);
  return out;
}

}  // namespace gnnaccel
