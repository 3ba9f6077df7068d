#include "formats/dtype_convert.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <thread>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace sdonnx {
namespace {

constexpr std::uint16_t kHalfMaxBits = 0x7bffu;  // 65504, the largest finite float16

float LoadAsFloat(DType from, const std::uint8_t* p, double* wide) {
  switch (from) {
    case DType::kF64: {
      double d;
      std::memcpy(&d, p, sizeof d);
      *wide = d;
      return static_cast<float>(d);
    }
    case DType::kF32: {
      float f;
      std::memcpy(&f, p, sizeof f);
      *wide = f;
      return f;
    }
    case DType::kF16:
    case DType::kBF16: {
      std::uint16_t bits;
      std::memcpy(&bits, p, sizeof bits);
      const float f = from == DType::kF16 ? HalfToFloat(bits) : BFloat16ToFloat(bits);
      *wide = f;
      return f;
    }
    default:
      *wide = 0;
      return 0;
  }
}

// Narrows one value to float16 bits, clamping finite overflow.
std::uint16_t NarrowToHalf(double wide, float value, NarrowingCounts* counts) {
  if (!std::isfinite(wide)) return FloatToHalf(value);
  const float magnitude = static_cast<float>(std::fabs(wide));
  const bool negative = std::signbit(wide);
  std::uint16_t half = FloatToHalf(value);
  if ((half & 0x7fffu) == 0x7c00u || !std::isfinite(value)) {  // F64 beyond float, or float16
    ++counts->clamped;
    counts->largest_clamped = std::max(counts->largest_clamped, magnitude);
    half = static_cast<std::uint16_t>((negative ? 0x8000u : 0u) | kHalfMaxBits);
  } else if ((half & 0x7fffu) == 0 && wide != 0.0) {
    ++counts->flushed_to_zero;
  }
  return half;
}

Status CheckSupported(DType from, DType to, std::size_t source_bytes, std::size_t target_bytes) {
  if (!IsFloating(from) || (to != DType::kF32 && to != DType::kF16)) {
    return Status::Error("cannot convert " + std::string(DTypeName(from)) + " to " +
                         std::string(DTypeName(to)) +
                         "; only floating-point weights convert, to F32 or F16");
  }
  if (source_bytes % DTypeSize(from) != 0 ||
      source_bytes / DTypeSize(from) != target_bytes / DTypeSize(to) ||
      target_bytes % DTypeSize(to) != 0) {
    return Status::Error("dtype conversion: " + std::to_string(source_bytes) + " bytes of " +
                         std::string(DTypeName(from)) + " do not match " +
                         std::to_string(target_bytes) + " bytes of " + std::string(DTypeName(to)));
  }
  return Status::Ok();
}

#if defined(__x86_64__)
bool HasF16c() {
  static const bool supported = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return supported;
}

// Widens float16 to float32 eight values at a time with the F16C
// instructions, up to the first group that contains a NaN or infinity.
// The scalar code keeps every NaN payload, and the hardware conversion is
// not relied on to do so. Returns how many values were converted.
__attribute__((target("avx,f16c"))) std::size_t WidenHalvesF16c(
    std::span<const std::uint8_t> source, std::span<std::uint8_t> target) {
  const std::size_t count = source.size() / 2;
  const __m128i exponent_mask = _mm_set1_epi16(0x7c00);
  std::size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m128i halves =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(source.data() + i * 2));
    // NaN or infinity: all exponent bits set. Infinities convert exactly
    // too, but one test for both keeps the loop short.
    const __m128i special =
        _mm_cmpeq_epi16(_mm_and_si128(halves, exponent_mask), exponent_mask);
    if (_mm_movemask_epi8(special) != 0) break;
    _mm256_storeu_ps(reinterpret_cast<float*>(target.data() + i * 4), _mm256_cvtph_ps(halves));
  }
  return i;
}

// Narrows float32 to float16 eight values at a time with the F16C
// instructions while every value converts back unchanged. Returns how many
// values were written.
__attribute__((target("avx,f16c"))) std::size_t NarrowExactF16c(
    std::span<const std::uint8_t> source, std::span<std::uint8_t> target) {
  const std::size_t count = source.size() / 4;
  std::size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m256 values = _mm256_loadu_ps(reinterpret_cast<const float*>(source.data() + i * 4));
    const __m128i halves = _mm256_cvtps_ph(values, _MM_FROUND_TO_NEAREST_INT);
    const __m256 back = _mm256_cvtph_ps(halves);
    if (std::memcmp(&values, &back, sizeof values) != 0) break;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(target.data() + i * 2), halves);
  }
  return i;
}
#else
bool HasF16c() { return false; }
std::size_t WidenHalvesF16c(std::span<const std::uint8_t>, std::span<std::uint8_t>) { return 0; }
std::size_t NarrowExactF16c(std::span<const std::uint8_t>, std::span<std::uint8_t>) { return 0; }
#endif

}  // namespace

void NarrowingCounts::Add(const NarrowingCounts& other) {
  values += other.values;
  clamped += other.clamped;
  flushed_to_zero += other.flushed_to_zero;
  largest_clamped = std::max(largest_clamped, other.largest_clamped);
}

Status ConvertElements(DType from, std::span<const std::uint8_t> source, DType to,
                       std::span<std::uint8_t> target, NarrowingCounts* counts) {
  SDONNX_RETURN_IF_ERROR(CheckSupported(from, to, source.size(), target.size()));
  const std::size_t count = source.size() / DTypeSize(from);
  const std::size_t in_size = DTypeSize(from);
  counts->values += count;
  if (from == to) {
    std::memcpy(target.data(), source.data(), source.size());
    return Status::Ok();
  }
  if (from == DType::kF32 && to == DType::kF16) {  // The common case, without the double.
    for (std::size_t i = 0; i < count; ++i) {
      float value;
      std::memcpy(&value, source.data() + i * 4, 4);
      std::uint16_t half = FloatToHalf(value);
      if ((half & 0x7fffu) == 0x7c00u && std::isfinite(value)) {
        ++counts->clamped;
        counts->largest_clamped = std::max(counts->largest_clamped, std::fabs(value));
        half = static_cast<std::uint16_t>((half & 0x8000u) | kHalfMaxBits);
      } else if ((half & 0x7fffu) == 0 && value != 0.0f) {
        ++counts->flushed_to_zero;
      }
      std::memcpy(target.data() + i * 2, &half, 2);
    }
    return Status::Ok();
  }
  if (to == DType::kF32 && (from == DType::kF16 || from == DType::kBF16)) {  // exact
    const bool vector = from == DType::kF16 && HasF16c();
    for (std::size_t i = 0; i < count;) {
      // Vector groups up to one that needs the scalar code, then that group.
      if (vector) i += WidenHalvesF16c(source.subspan(i * 2), target.subspan(i * 4));
      for (const std::size_t stop = std::min(count, i + 8); i < stop; ++i) {
        std::uint16_t bits;
        std::memcpy(&bits, source.data() + i * 2, 2);
        const float value = from == DType::kF16 ? HalfToFloat(bits) : BFloat16ToFloat(bits);
        std::memcpy(target.data() + i * 4, &value, 4);
      }
    }
    return Status::Ok();
  }
  for (std::size_t i = 0; i < count; ++i) {
    double wide;
    const float value = LoadAsFloat(from, source.data() + i * in_size, &wide);
    if (to == DType::kF32) {
      std::memcpy(target.data() + i * 4, &value, 4);
    } else {
      const std::uint16_t half = NarrowToHalf(wide, value, counts);
      std::memcpy(target.data() + i * 2, &half, 2);
    }
  }
  return Status::Ok();
}

bool NarrowExactly(std::span<const std::uint8_t> source, DType to,
                   std::span<std::uint8_t> target) {
  if ((to != DType::kF16 && to != DType::kBF16) || source.size() % 4 != 0 ||
      target.size() * 2 != source.size()) {
    return false;
  }
  const std::size_t count = source.size() / 4;
  const bool vector = to == DType::kF16 && HasF16c();
  for (std::size_t i = 0; i < count; ++i) {
    // Vector groups up to one that needs the scalar code, then that group.
    if (vector && i % 8 == 0) i += NarrowExactF16c(source.subspan(i * 4), target.subspan(i * 2));
    if (i >= count) break;
    std::uint32_t bits;
    std::memcpy(&bits, source.data() + i * 4, 4);
    std::uint16_t narrow = 0;
    if (to == DType::kBF16) {
      if ((bits & 0xffffu) != 0) return false;
      narrow = static_cast<std::uint16_t>(bits >> 16);
    } else if ((bits & 0x7fffffffu) > 0x7f800000u) {
      // A NaN widened from float16 keeps its payload in the top 10
      // mantissa bits; FloatToHalf would quiet it.
      if ((bits & 0x1fffu) != 0) return false;
      narrow = static_cast<std::uint16_t>(((bits >> 16) & 0x8000u) | 0x7c00u |
                                          ((bits >> 13) & 0x3ffu));
    } else {
      narrow = FloatToHalf(std::bit_cast<float>(bits));
      if (std::bit_cast<std::uint32_t>(HalfToFloat(narrow)) != bits) return false;
    }
    std::memcpy(target.data() + i * 2, &narrow, 2);
  }
  return true;
}

Status ConvertElementsParallel(DType from, std::span<const std::uint8_t> source, DType to,
                               std::span<std::uint8_t> target, int threads,
                               NarrowingCounts* counts) {
  SDONNX_RETURN_IF_ERROR(CheckSupported(from, to, source.size(), target.size()));
  const std::size_t count = source.size() / DTypeSize(from);
  constexpr std::size_t kMinPerThread = 1 << 16;
  const std::size_t parts = std::clamp<std::size_t>(count / kMinPerThread, 1,
                                                    static_cast<std::size_t>(std::max(threads, 1)));
  if (parts == 1) return ConvertElements(from, source, to, target, counts);

  std::vector<NarrowingCounts> part_counts(parts);
  std::vector<Status> part_status(parts);
  std::vector<std::thread> workers;
  const std::size_t per_part = (count + parts - 1) / parts;
  for (std::size_t p = 0; p < parts; ++p) {
    const std::size_t begin = p * per_part;
    const std::size_t end = std::min(count, begin + per_part);
    auto run = [&, p, begin, end] {
      part_status[p] = ConvertElements(
          from, source.subspan(begin * DTypeSize(from), (end - begin) * DTypeSize(from)), to,
          target.subspan(begin * DTypeSize(to), (end - begin) * DTypeSize(to)), &part_counts[p]);
    };
    if (p + 1 == parts) {
      run();  // The calling thread converts the last part.
    } else {
      workers.emplace_back(run);
    }
  }
  for (std::thread& worker : workers) worker.join();
  for (std::size_t p = 0; p < parts; ++p) {
    SDONNX_RETURN_IF_ERROR(part_status[p]);
    counts->Add(part_counts[p]);
  }
  return Status::Ok();
}

}  // namespace sdonnx
