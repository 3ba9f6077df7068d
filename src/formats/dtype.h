// Element types shared by the safetensors reader, the ONNX writer and the
// runtime, with their safetensors names and ONNX TensorProto codes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sdonnx {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

std::size_t DTypeSize(DType dtype);
// "F32", "BF16", ... as safetensors spells them.
std::string_view DTypeName(DType dtype);
std::optional<DType> DTypeFromName(std::string_view name);
// The onnx::TensorProto_DataType value.
int DTypeToOnnx(DType dtype);
// The DType of an onnx::TensorProto_DataType value, if it is one of ours.
std::optional<DType> DTypeFromOnnx(int onnx_type);
bool IsFloating(DType dtype);

// IEEE 754 half and bfloat16 to float; both are exact widenings.
float HalfToFloat(std::uint16_t bits);
float BFloat16ToFloat(std::uint16_t bits);
// Round to nearest, ties to even; values beyond the half range become +-inf.
std::uint16_t FloatToHalf(float value);

}  // namespace sdonnx
