// sdonnx_fp16_gemm: measures the error of one float16 Gemm in ONNX Runtime's
// CPU provider, laid out as sdonnx writes a linear layer with --fp16 (Cast
// to float16, Gemm with transB = 1 on a float16 [N, K] weight, Cast back).
// It compares the output with an exact (double) product of the same float16
// operands, and with a sum that rounds each product and each partial sum to
// float16 in order k = 0 ... K-1.
//
//   sdonnx_fp16_gemm [K] [THREADS]
//
// The input is [154, K] (two rows of 77 tokens) of |N(0, 1)| values, the
// weight [768, K] of N(0, 1 / K) values, as in a randomly initialized layer.
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "formats/dtype.h"
#include "runtime/ort_session.h"

namespace {

constexpr std::int64_t kRows = 154;
constexpr std::int64_t kColumns = 768;

float RoundToHalf(float value) { return sdonnx::HalfToFloat(sdonnx::FloatToHalf(value)); }

void AddCast(onnx::GraphProto* graph, const char* input, const char* output, int to) {
  auto* node = graph->add_node();
  node->set_op_type("Cast");
  node->add_input(input);
  node->add_output(output);
  auto* attribute = node->add_attribute();
  attribute->set_name("to");
  attribute->set_type(onnx::AttributeProto::INT);
  attribute->set_i(to);
}

// Writes x [kRows, k] -> Cast -> Gemm(transB = 1) with `weight` -> Cast -> y.
std::string WriteModel(std::int64_t k, const std::vector<std::uint16_t>& weight) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(17);
  auto* graph = model.mutable_graph();
  graph->set_name("fp16_gemm");

  auto add_value = [](onnx::ValueInfoProto* value, const char* name, std::int64_t columns) {
    value->set_name(name);
    auto* tensor = value->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(onnx::TensorProto::FLOAT);
    tensor->mutable_shape()->add_dim()->set_dim_value(kRows);
    tensor->mutable_shape()->add_dim()->set_dim_value(columns);
  };
  add_value(graph->add_input(), "x", k);
  add_value(graph->add_output(), "y", kColumns);

  auto* w = graph->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::FLOAT16);
  w->add_dims(kColumns);
  w->add_dims(k);
  w->set_raw_data(weight.data(), weight.size() * sizeof(std::uint16_t));

  AddCast(graph, "x", "x16", onnx::TensorProto::FLOAT16);
  auto* gemm = graph->add_node();
  gemm->set_op_type("Gemm");
  gemm->add_input("x16");
  gemm->add_input("w");
  gemm->add_output("y16");
  auto* trans_b = gemm->add_attribute();
  trans_b->set_name("transB");
  trans_b->set_type(onnx::AttributeProto::INT);
  trans_b->set_i(1);
  AddCast(graph, "y16", "y", onnx::TensorProto::FLOAT);

  const std::string path =
      (std::filesystem::temp_directory_path() / ("sdonnx_fp16_gemm_" + std::to_string(k) + ".onnx"))
          .string();
  std::ofstream(path, std::ios::binary) << model.SerializeAsString();
  return path;
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t k = argc > 1 ? std::atoll(argv[1]) : 3072;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
  if (k < 1 || threads < 1) {
    std::fprintf(stderr, "usage: %s [K] [THREADS], both positive\n", argv[0]);
    return 2;
  }
  std::mt19937 generator(1);
  std::normal_distribution<float> normal;
  std::vector<std::uint16_t> weight(static_cast<std::size_t>(kColumns * k));
  for (std::uint16_t& w : weight) w = sdonnx::FloatToHalf(normal(generator) / std::sqrt(float(k)));
  std::vector<float> x(static_cast<std::size_t>(kRows * k));
  for (float& v : x) v = RoundToHalf(std::fabs(normal(generator)));

  sdonnx::SessionOptions session;
  session.intra_op_threads = threads;
  const std::string path = WriteModel(k, weight);
  auto model = sdonnx::OrtModel::Load(path, session);
  std::filesystem::remove(path);
  auto out = model.ok() ? (*model)->Run({{"x", sdonnx::HostTensor::Float({kRows, k}, x)}})
                        : model.status();
  if (!out.ok()) {
    std::fprintf(stderr, "error: %s\n", out.status().message().c_str());
    return 1;
  }
  const std::vector<float>& y = (*out)["y"].f32;

  double scale = 0, error = 0, rounding = 0, from_half_sum = 0;
  for (std::int64_t i = 0; i < kRows; ++i) {
    for (std::int64_t j = 0; j < kColumns; ++j) {
      double exact = 0;
      float half_sum = 0;
      for (std::int64_t n = 0; n < k; ++n) {
        const float w = sdonnx::HalfToFloat(weight[j * k + n]);
        exact += double{x[i * k + n]} * w;
        half_sum = RoundToHalf(half_sum + RoundToHalf(x[i * k + n] * w));
      }
      const float got = y[i * kColumns + j];
      scale = std::max(scale, std::fabs(exact));
      error = std::max(error, std::fabs(got - exact));
      rounding = std::max(rounding, std::fabs(RoundToHalf(float(exact)) - exact));
      from_half_sum = std::max(from_half_sum, std::fabs(double{got} - half_sum));
    }
  }
  std::printf(
      "K %lld: max |exact| %.4g; ONNX Runtime's max error %.4g (%.4g relative); "
      "rounding the exact result to float16: %.4g (%.4g relative); "
      "max |ONNX Runtime - in-order float16 sum| %.4g\n",
      static_cast<long long>(k), scale, error, error / scale, rounding, rounding / scale,
      from_half_sum);
  return 0;
}
