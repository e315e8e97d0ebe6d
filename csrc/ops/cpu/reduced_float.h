// Half-width feature storage for the CPU kernels: bfloat16 / float16 values are read at half width and
// accumulated in float32 (acc_type), float32 / float64 accumulate in their own type as before.
//
// to_acc converts one stored value; axpy adds w * x (or x) over a run of channels into a float accumulator.
// GCC vectorises the bfloat16 conversion (a 16-bit shift) inside `omp simd` loops by itself; float16 needs the
// F16C / AVX-512 conversion instructions, which it does not emit for a scalar loop, so axpy spells them out
// where the build targets them (portable builds take the scalar loop).
#pragma once

#include <ATen/OpMathType.h>
#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX512F__) || (defined(__F16C__) && defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace gnnaccel {
namespace cpu {

// float32 for bfloat16 / float16 / float32, float64 for float64.
template <typename scalar_t>
using acc_type = at::opmath_type<scalar_t>;

template <typename scalar_t>
constexpr bool is_reduced_float = !std::is_same_v<scalar_t, acc_type<scalar_t>>;

// The dtype of the GEMMs inside the ops: bfloat16 multiplies in bfloat16 (oneDNN, float32 accumulation);
// float16 operands are widened to float32 (float16 GEMM on CPU is ~30x slower than float32 in this torch).
template <typename scalar_t>
using gemm_type = std::conditional_t<std::is_same_v<scalar_t, c10::Half>, float, scalar_t>;

inline at::ScalarType gemm_dtype(at::ScalarType t) { return t == at::kHalf ? at::kFloat : t; }

// The feature dtypes of the CPU kernels.
inline bool is_cpu_feature_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

inline float to_acc(c10::BFloat16 v) {
  const uint32_t bits = static_cast<uint32_t>(v.x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
inline float to_acc(c10::Half v) { return static_cast<float>(v); }
inline float to_acc(float v) { return v; }
inline double to_acc(double v) { return v; }

// acc[0:n] += x[0:n] (kUnit) or w * x[0:n].
template <bool kUnit, typename scalar_t>
inline void axpy(acc_type<scalar_t>* __restrict__ acc, const scalar_t* __restrict__ x, acc_type<scalar_t> w,
                 int64_t n) {
  int64_t k = 0;
  if constexpr (std::is_same_v<scalar_t, c10::Half>) {
#if defined(__AVX512F__)
    const __m512 wv = _mm512_set1_ps(w);
    for (; k + 16 <= n; k += 16) {
      // (the masked form: GCC 12 warns about the unmasked one's undefined pass-through operand)
      const __m512 xv = _mm512_mask_cvtph_ps(_mm512_setzero_ps(), __mmask16(0xFFFF),
                                             _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k)));
      const __m512 av = _mm512_loadu_ps(acc + k);
      _mm512_storeu_ps(acc + k, kUnit ? _mm512_add_ps(av, xv) : _mm512_fmadd_ps(wv, xv, av));
    }
#elif defined(__F16C__) && defined(__AVX2__) && defined(__FMA__)
    const __m256 wv = _mm256_set1_ps(w);
    for (; k + 8 <= n; k += 8) {
      const __m256 xv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + k)));
      const __m256 av = _mm256_loadu_ps(acc + k);
      _mm256_storeu_ps(acc + k, kUnit ? _mm256_add_ps(av, xv) : _mm256_fmadd_ps(wv, xv, av));
    }
#endif
  }
#pragma omp simd
  for (int64_t c = k; c < n; ++c) acc[c] += kUnit ? to_acc(x[c]) : w * to_acc(x[c]);
}

// One value converted to dst_t (through the accumulation type when the types differ).
template <typename dst_t, typename src_t>
inline dst_t cast_value(src_t v) {
  if constexpr (std::is_same_v<dst_t, src_t>) return v; else return static_cast<dst_t>(to_acc(v));
}

// dst[0:n] = src[0:n] converted (a float accumulator rounded to the storage type, or a stored row widened).
template <typename dst_t, typename src_t>
inline void convert_row(dst_t* __restrict__ dst, const src_t* __restrict__ src, int64_t n) {
  if constexpr (std::is_same_v<dst_t, src_t>) {
    std::memcpy(dst, src, sizeof(dst_t) * n);
  } else {
    for (int64_t c = 0; c < n; ++c) dst[c] = cast_value<dst_t>(src[c]);
  }
}

}  // namespace cpu
}  // namespace gnnaccel
