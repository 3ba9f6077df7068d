// ONNX Runtime session settings (graph optimization level, weight
// prepacking) change load time and memory, never the result.
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "formats/dtype_convert.h"

#include "convert/convert.h"
#include "runtime/ort_session.h"
#include "test_support.h"

namespace sdonnx {
namespace {

using testing::Fixture;
using testing::MaxAbsDiff;
using testing::ReadTensor;
using testing::TempDir;

TEST(SessionOptions, EveryLevelAndPrepackMatchReference) {
  const auto reference = Fixture("tiny/tiny-sd1.reference.safetensors");
  TempDir dir;
  ConvertOptions convert;
  convert.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
  convert.output_dir = dir.path().string();
  convert.external_data = ExternalData::kAlways;
  ASSERT_TRUE(ConvertCheckpoint(convert).ok());
  const std::map<std::string, HostTensor> inputs = {
      {"sample", ReadTensor(reference, "unet.sample")},
      {"timestep", ReadTensor(reference, "unet.timestep")},
      {"encoder_hidden_states", ReadTensor(reference, "unet.context")}};
  for (const char* level : {"all", "extended", "basic", "disabled"}) {
    for (const bool prepack : {true, false}) {
      SCOPED_TRACE(std::string(level) + (prepack ? " with prepacking" : " without prepacking"));
      SessionOptions options;
      options.intra_op_threads = 1;
      options.optimization = *ParseGraphOptimization(level);
      options.prepack_weights = prepack;
      auto unet = OrtModel::Load((dir / "unet_tiny-sd1.onnx").string(), options);
      ASSERT_TRUE(unet.ok()) << unet.status().message();
      auto out = (*unet)->Run(inputs);
      ASSERT_TRUE(out.ok()) << out.status().message();
      EXPECT_LE(MaxAbsDiff((*out)["out_sample"], ReadTensor(reference, "unet.out")), 1e-4);
    }
  }
}

// CPU sessions allocate from one arena, so the VAE reuses the memory the
// UNet freed instead of adding its own peak to the UNet's. A session with
// shared_arena off keeps an arena of its own, and the outputs are the same.
TEST(SessionOptions, SessionsShareOneArena) {
  const auto reference = Fixture("tiny/tiny-sd1.reference.safetensors");
  TempDir dir;
  ConvertOptions convert;
  convert.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
  convert.output_dir = dir.path().string();
  ASSERT_TRUE(ConvertCheckpoint(convert).ok());
  const std::string unet_path = (dir / "unet_tiny-sd1.onnx").string();
  const std::map<std::string, HostTensor> inputs = {
      {"sample", ReadTensor(reference, "unet.sample")},
      {"timestep", ReadTensor(reference, "unet.timestep")},
      {"encoder_hidden_states", ReadTensor(reference, "unet.context")}};
  auto in_use = [](const OrtModel& model, const char* key) {
    const auto stats = model.CpuArenaStats();
    EXPECT_TRUE(stats.ok()) << stats.status().message();
    return stats.ok() && stats->count(key) ? std::stoll(stats->at(key)) : -1;
  };

  SessionOptions options;
  options.intra_op_threads = 1;
  auto first = OrtModel::Load(unet_path, options);
  ASSERT_TRUE(first.ok()) << first.status().message();
  const auto shared_out = (*first)->Run(inputs);
  ASSERT_TRUE(shared_out.ok()) << shared_out.status().message();
  const long long allocations = in_use(**first, "NumAllocs");
  EXPECT_GT(allocations, 0);

  // A session loaded later counts the first one's allocations in its arena.
  auto second = OrtModel::Load(unet_path, options);
  ASSERT_TRUE(second.ok()) << second.status().message();
  EXPECT_GE(in_use(**second, "NumAllocs"), allocations);

  SessionOptions own = options;
  own.shared_arena = false;
  auto separate = OrtModel::Load(unet_path, own);
  ASSERT_TRUE(separate.ok()) << separate.status().message();
  EXPECT_LT(in_use(**separate, "NumAllocs"), allocations);
  const auto separate_out = (*separate)->Run(inputs);
  ASSERT_TRUE(separate_out.ok()) << separate_out.status().message();
  EXPECT_EQ((*separate_out).at("out_sample").f32, (*shared_out).at("out_sample").f32);
}

// Writes y = x . Cast(w) with x [1, n] and a float16 weight w [n, n] whose
// float32 copy is larger than kMaxFoldedBytes.
void WriteCastWeightModel(const std::filesystem::path& path, std::int64_t n) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(17);
  onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("cast_weight");
  for (auto [value, name] : {std::pair{graph->add_input(), "x"}, {graph->add_output(), "y"}}) {
    value->set_name(name);
    auto* tensor = value->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(onnx::TensorProto::FLOAT);
    tensor->mutable_shape()->add_dim()->set_dim_value(1);
    tensor->mutable_shape()->add_dim()->set_dim_value(n);
  }
  std::vector<float> wide(static_cast<std::size_t>(n * n));
  for (std::size_t i = 0; i < wide.size(); ++i) wide[i] = std::sin(0.37f * static_cast<float>(i));
  std::vector<std::uint8_t> half(wide.size() * 2);
  NarrowingCounts counts;
  ASSERT_TRUE(ConvertElements(DType::kF32,
                              {reinterpret_cast<const std::uint8_t*>(wide.data()), wide.size() * 4},
                              DType::kF16, half, &counts)
                  .ok());
  onnx::TensorProto* w = graph->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::FLOAT16);
  w->add_dims(n);
  w->add_dims(n);
  w->set_raw_data(half.data(), half.size());
  onnx::NodeProto* cast = graph->add_node();
  cast->set_op_type("Cast");
  cast->add_input("w");
  cast->add_output("w32");
  onnx::AttributeProto* to = cast->add_attribute();
  to->set_name("to");
  to->set_type(onnx::AttributeProto::INT);
  to->set_i(onnx::TensorProto::FLOAT);
  onnx::NodeProto* matmul = graph->add_node();
  matmul->set_op_type("MatMul");
  matmul->add_input("x");
  matmul->add_input("w32");
  matmul->add_output("y");
  std::ofstream(path, std::ios::binary) << model.SerializeAsString();
}

int CastNodes(const std::filesystem::path& path) {
  onnx::ModelProto model;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(model.ParseFromIstream(&in)) << path;
  int casts = 0;
  for (const onnx::NodeProto& node : model.graph().node()) casts += node.op_type() == "Cast";
  return casts;
}

TEST(SessionOptions, CastWeightsWidenPerRunByDefault) {
  TempDir dir;
  constexpr std::int64_t n = 1024;  // A float32 copy of w is 4 MiB.
  static_assert(n * n * 4 > kMaxFoldedBytes);
  WriteCastWeightModel(dir / "model.onnx", n);
  std::vector<float> x(n);
  for (std::int64_t i = 0; i < n; ++i) x[i] = std::cos(0.11f * static_cast<float>(i));
  std::map<std::string, HostTensor> results;
  for (const bool at_load : {false, true}) {
    SCOPED_TRACE(at_load ? "widened at load" : "widened at each run");
    SessionOptions options;
    options.intra_op_threads = 1;
    options.widen_weights_at_load = at_load;
    options.optimized_model_path = (dir / (at_load ? "load.onnx" : "run.onnx")).string();
    auto model = OrtModel::Load((dir / "model.onnx").string(), options);
    ASSERT_TRUE(model.ok()) << model.status().message();
    // Folding replaces the Cast by a float32 initializer; otherwise it runs.
    EXPECT_EQ(CastNodes(options.optimized_model_path), at_load ? 0 : 1);
    auto out = (*model)->Run({{"x", HostTensor::Float({1, n}, x)}});
    ASSERT_TRUE(out.ok()) << out.status().message();
    results[at_load ? "load" : "run"] = (*out)["y"];
  }
  EXPECT_EQ(MaxAbsDiff(results["load"], results["run"]), 0.0);
}

TEST(SessionOptions, UnknownLevelIsRejected) {
  Result<GraphOptimization> level = ParseGraphOptimization("fast");
  ASSERT_FALSE(level.ok());
  EXPECT_NE(level.status().message().find("'fast'"), std::string::npos);
  EXPECT_NE(level.status().message().find("all, extended, basic or disabled"), std::string::npos);
}

}  // namespace
}  // namespace sdonnx

namespace sdonnx {
namespace {

TEST(OrtErrors, AllocationFailureGetsSizeAndAdvice) {
  const std::string advice = OrtAllocationAdvice(
      "Non-zero status code returned while running MatMul node. Name:'/MatMul_0' Status "
      "Message: bfc_arena.cc:359 Failed to allocate memory for requested buffer of size "
      "4398046511104\n");
  EXPECT_NE(advice.find("4096.0 GiB"), std::string::npos) << advice;
  EXPECT_NE(advice.find("smaller image size"), std::string::npos) << advice;
  EXPECT_EQ(OrtAllocationAdvice("Invalid input name: sample"), "");
}

}  // namespace
}  // namespace sdonnx
