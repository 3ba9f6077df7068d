#include "formats/dtype.h"

#include <onnx/onnx_pb.h>

#include <bit>
#include <cmath>

namespace sdonnx {

std::size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF64:
    case DType::kI64:
      return 8;
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
    case DType::kI16:
      return 2;
    case DType::kI8:
    case DType::kU8:
    case DType::kBool:
      return 1;
  }
  return 0;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF64: return "F64";
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI64: return "I64";
    case DType::kI32: return "I32";
    case DType::kI16: return "I16";
    case DType::kI8: return "I8";
    case DType::kU8: return "U8";
    case DType::kBool: return "BOOL";
  }
  return "?";
}

std::optional<DType> DTypeFromName(std::string_view name) {
  for (DType d : {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kI64, DType::kI32,
                  DType::kI16, DType::kI8, DType::kU8, DType::kBool}) {
    if (DTypeName(d) == name) return d;
  }
  return std::nullopt;
}

int DTypeToOnnx(DType dtype) {
  switch (dtype) {
    case DType::kF64: return onnx::TensorProto_DataType_DOUBLE;
    case DType::kF32: return onnx::TensorProto_DataType_FLOAT;
    case DType::kF16: return onnx::TensorProto_DataType_FLOAT16;
    case DType::kBF16: return onnx::TensorProto_DataType_BFLOAT16;
    case DType::kI64: return onnx::TensorProto_DataType_INT64;
    case DType::kI32: return onnx::TensorProto_DataType_INT32;
    case DType::kI16: return onnx::TensorProto_DataType_INT16;
    case DType::kI8: return onnx::TensorProto_DataType_INT8;
    case DType::kU8: return onnx::TensorProto_DataType_UINT8;
    case DType::kBool: return onnx::TensorProto_DataType_BOOL;
  }
  return onnx::TensorProto_DataType_UNDEFINED;
}

std::optional<DType> DTypeFromOnnx(int onnx_type) {
  for (DType d : {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kI64, DType::kI32,
                  DType::kI16, DType::kI8, DType::kU8, DType::kBool}) {
    if (DTypeToOnnx(d) == onnx_type) return d;
  }
  return std::nullopt;
}

bool IsFloating(DType dtype) {
  return dtype == DType::kF64 || dtype == DType::kF32 || dtype == DType::kF16 ||
         dtype == DType::kBF16;
}

float HalfToFloat(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  std::uint32_t exponent = (bits >> 10) & 0x1fu;
  std::uint32_t mantissa = bits & 0x3ffu;
  std::uint32_t out;
  if (exponent == 0) {
    if (mantissa == 0) {
      out = sign;
    } else {  // Subnormal half: normalise into a float.
      exponent = 127 - 15 + 1;
      while ((mantissa & 0x400u) == 0) {
        mantissa <<= 1;
        --exponent;
      }
      mantissa &= 0x3ffu;
      out = sign | (exponent << 23) | (mantissa << 13);
    }
  } else if (exponent == 0x1f) {
    out = sign | 0x7f800000u | (mantissa << 13);
  } else {
    out = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  return std::bit_cast<float>(out);
}

float BFloat16ToFloat(std::uint16_t bits) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

std::uint16_t FloatToHalf(float value) {
  const std::uint32_t f = std::bit_cast<std::uint32_t>(value);
  const std::uint16_t sign = static_cast<std::uint16_t>((f >> 16) & 0x8000u);
  const std::uint32_t abs = f & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // Inf or NaN; keep NaNs quiet.
    return sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u);
  }
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // Rounds past 65504.
  if (abs < 0x38800000u) {                         // Result is subnormal or zero.
    const float scaled = std::bit_cast<float>(abs) * 16777216.0f;  // 2^24
    // The scaling is exact; nearbyint rounds half to even in the default mode.
    const auto rounded = static_cast<std::uint32_t>(std::nearbyint(scaled));
    return sign | static_cast<std::uint16_t>(rounded);
  }
  const std::uint32_t mantissa_odd = (abs >> 13) & 1u;
  const std::uint32_t rounded = abs + 0xfffu + mantissa_odd;
  return sign | static_cast<std::uint16_t>((rounded - 0x38000000u) >> 13);
}

}  // namespace sdonnx
