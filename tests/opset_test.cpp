// Opsets past those of the ONNX library here (libonnx 1.12 has schemas up
// to 17) are checked by loading the graph in ONNX Runtime. Files of every
// opset run.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <fstream>

#include "convert/convert.h"
#include "graph/model_writer.h"
#include "test_support.h"

namespace sdonnx {
namespace {

using testing::Fixture;
using testing::MaxAbsDiff;
using testing::ReadTensor;
using testing::TempDir;
using testing::ReadModel;

TEST(Opsets, NineteenAndTwentyMatchReference) {
  const auto reference = Fixture("tiny/tiny-sdxl.reference.safetensors");
  for (int opset : {19, 20}) {
    SCOPED_TRACE(opset);
    TempDir dir;
    ConvertOptions options;
    options.model_path = Fixture("tiny/tiny-sdxl.safetensors").string();
    options.output_dir = dir.path().string();
    options.opset = opset;
    Result<ConvertReport> report = ConvertCheckpoint(options);
    ASSERT_TRUE(report.ok()) << report.status().message();
    auto unet = OrtModel::Load((dir / "unet_tiny-sdxl.onnx").string());
    ASSERT_TRUE(unet.ok()) << unet.status().message();
    auto out = (*unet)->Run({{"sample", ReadTensor(reference, "unet.sample")},
                             {"timestep", ReadTensor(reference, "unet.timestep")},
                             {"encoder_hidden_states", ReadTensor(reference, "unet.context")},
                             {"text_embeds", ReadTensor(reference, "unet.text_embeds")},
                             {"time_ids", ReadTensor(reference, "unet.time_ids")}});
    ASSERT_TRUE(out.ok()) << out.status().message();
    EXPECT_LE(MaxAbsDiff((*out)["out_sample"], ReadTensor(reference, "unet.out")), 1e-4);
    auto text = OrtModel::Load((dir / "clip_text_2_tiny-sdxl.onnx").string());
    ASSERT_TRUE(text.ok()) << text.status().message();
    auto encoded = (*text)->Run({{"input_ids", ReadTensor(reference, "text1.input_ids")}});
    ASSERT_TRUE(encoded.ok()) << encoded.status().message();
    EXPECT_LE(MaxAbsDiff((*encoded)["last_hidden_state"],
                         ReadTensor(reference, "text1.last_hidden_state")),
              1e-4);
  }
}

TEST(Opsets, DeclaredOpsetAndIrVersion) {
  for (int opset : {14, 17, 18, 21}) {
    SCOPED_TRACE(opset);
    TempDir dir;
    ConvertOptions options;
    options.model_path = Fixture("tiny/tiny-sd2.safetensors").string();
    options.output_dir = dir.path().string();
    options.opset = opset;
    ASSERT_TRUE(ConvertCheckpoint(options).ok());
    const onnx::ModelProto model = ReadModel(dir / "clip_text_tiny-sd2.onnx");
    ASSERT_EQ(model.opset_import_size(), 1);
    EXPECT_EQ(model.opset_import(0).domain(), "");
    EXPECT_EQ(model.opset_import(0).version(), opset);
    EXPECT_EQ(model.ir_version(), IrVersionForOpset(opset));
    bool layer_norm_op = false;
    for (const auto& node : model.graph().node()) {
      EXPECT_TRUE(node.domain().empty()) << node.op_type();
      layer_norm_op = layer_norm_op || node.op_type() == "LayerNormalization";
    }
    EXPECT_EQ(layer_norm_op, opset >= 17);
  }
  EXPECT_EQ(IrVersionForOpset(21), 10);
}

// ReduceMean takes its axes as an input from opset 18; an attribute there is
// an error that only ONNX Runtime's schemas can see.
TEST(Opsets, LateOpsetGraphIsCheckedByOnnxRuntime) {
  auto checkpoint = Checkpoint::Open(Fixture("tiny/tiny-sd1.safetensors").string());
  ASSERT_TRUE(checkpoint.ok());
  TempDir dir;
  GraphBuilder builder(**checkpoint, 18, "bad");
  const std::string x = builder.Input("x", onnx::TensorProto_DataType_FLOAT, {2, 3});
  const std::string mean = builder.Op("ReduceMean", {x}, {{"axes", std::vector<std::int64_t>{-1}}});
  builder.Output(mean, "y", onnx::TensorProto_DataType_FLOAT, {2, 1});
  auto written = WriteModel(builder, **checkpoint, dir.path().string(), "bad.onnx", {});
  ASSERT_FALSE(written.ok());
  EXPECT_NE(written.status().message().find("ONNX Runtime"), std::string::npos)
      << written.status().message();
  EXPECT_TRUE(testing::ListFiles(dir.path()).empty());
}

TEST(Opsets, ExternalDataOfLateOpsetIsChecked) {
  TempDir dir;
  ConvertOptions options;
  options.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
  options.output_dir = dir.path().string();
  options.opset = 21;
  options.external_data = ExternalData::kAlways;
  ASSERT_TRUE(ConvertCheckpoint(options).ok());
  const auto path = dir / "vae_decoder_tiny-sd1.onnx";
  EXPECT_TRUE(CheckModelFile(path.string()).ok());
  // A data file cut short fails the check.
  std::filesystem::resize_file(dir / "vae_decoder_tiny-sd1.onnx.data", 4096);
  Status checked = CheckModelFile(path.string());
  EXPECT_FALSE(checked.ok());
  EXPECT_NE(checked.message().find("vae_decoder_tiny-sd1.onnx.data"), std::string::npos)
      << checked.message();
}

}  // namespace
}  // namespace sdonnx
