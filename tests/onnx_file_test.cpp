// The ONNX reader on damaged files: each broken model, built here with
// protobuf, makes `sdonnx extract` fail with a message that names the file,
// the tensor and the offending value, exit non-zero and write nothing.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <filesystem>
#include <fstream>

#include "formats/onnx_file.h"
#include "test_support.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::ListFiles;
using testing::Quote;
using testing::RunSdonnx;
using testing::TempDir;
using testing::WriteBytes;

// A model whose graph passes initializer "weight" (F32 [2, 3]) to its output.
onnx::ModelProto ModelWithWeight() {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("test");
  model.add_opset_import()->set_version(17);
  auto* graph = model.mutable_graph();
  graph->set_name("g");
  auto* node = graph->add_node();
  node->set_op_type("Identity");
  node->add_input("weight");
  node->add_output("out");
  auto* output = graph->add_output();
  output->set_name("out");
  output->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto_DataType_FLOAT);
  auto* init = graph->add_initializer();
  init->set_name("weight");
  init->set_data_type(onnx::TensorProto_DataType_FLOAT);
  init->add_dims(2);
  init->add_dims(3);
  return model;
}

// Points initializer `index` at external data.
void SetExternal(onnx::ModelProto* model, const std::string& location, std::uint64_t offset,
                 std::uint64_t length, int index = 0) {
  auto* init = model->mutable_graph()->mutable_initializer(index);
  init->set_data_location(onnx::TensorProto_DataLocation_EXTERNAL);
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"location", location},
           {"offset", std::to_string(offset)},
           {"length", std::to_string(length)}}) {
    auto* entry = init->add_external_data();
    entry->set_key(key);
    entry->set_value(value);
  }
}

void Save(const onnx::ModelProto& model, const fs::path& path) {
  std::string bytes;
  ASSERT_TRUE(model.SerializeToString(&bytes));
  WriteBytes(path, bytes);
}

// Runs extract on `model` into the model's folder and checks that it failed,
// that the message contains each of `expected`, and that no file appeared.
void ExpectExtractFails(const fs::path& model, const std::vector<std::string>& expected) {
  const fs::path dir = model.parent_path();
  const std::vector<std::string> before = ListFiles(dir);
  const auto result = RunSdonnx("extract " + Quote(model) + " " + Quote(dir / "out.safetensors"));
  EXPECT_NE(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find(model.string()), std::string::npos) << result.output;
  for (const std::string& text : expected) {
    EXPECT_NE(result.output.find(text), std::string::npos) << "missing '" << text << "' in\n"
                                                           << result.output;
  }
  EXPECT_EQ(ListFiles(dir), before);
}

TEST(OnnxFile, ReadsRawTypedAndExternalData) {
  TempDir dir;
  onnx::ModelProto model = ModelWithWeight();
  auto* graph = model.mutable_graph();
  graph->add_initializer()->CopyFrom(graph->initializer(0));
  graph->mutable_initializer(1)->set_name("external");
  graph->add_initializer()->CopyFrom(graph->initializer(0));
  graph->mutable_initializer(2)->set_name("raw");
  graph->mutable_initializer(2)->set_raw_data(std::string(24, '\x01'));
  for (int i = 0; i < 6; ++i) graph->mutable_initializer(0)->add_float_data(i);
  SetExternal(&model, "weights.bin", 8, 24, 1);
  WriteBytes(dir / "weights.bin", std::string(8, '\0') + std::string(24, '\x02'));
  Save(model, dir / "model.onnx");

  auto file = OnnxFile::Open((dir / "model.onnx").string());
  ASSERT_TRUE(file.ok()) << file.status().message();
  ASSERT_EQ((*file)->initializers().size(), 3u);
  const OnnxInitializer* typed = (*file)->Find("weight");
  ASSERT_NE(typed, nullptr);
  EXPECT_EQ(typed->storage, InitializerStorage::kTypedFields);
  const auto typed_bytes = (*file)->Data(*typed);
  ASSERT_EQ(typed_bytes.size(), 24u);
  float fifth = 0;
  std::memcpy(&fifth, typed_bytes.data() + 16, 4);
  EXPECT_EQ(fifth, 4.0f);
  const OnnxInitializer* ext = (*file)->Find("external");
  ASSERT_NE(ext, nullptr);
  EXPECT_EQ(ext->storage, InitializerStorage::kExternal);
  EXPECT_EQ(ext->offset, 8u);
  const auto ext_bytes = (*file)->Data(*ext);
  EXPECT_EQ(std::string(ext_bytes.begin(), ext_bytes.end()), std::string(24, '\x02'));
  const OnnxInitializer* raw_init = (*file)->Find("raw");
  ASSERT_NE(raw_init, nullptr);
  const auto raw_bytes = (*file)->Data(*raw_init);
  EXPECT_EQ(std::string(raw_bytes.begin(), raw_bytes.end()), std::string(24, '\x01'));
}

TEST(OnnxFile, AbsoluteLocationIsRejected) {
  TempDir dir;
  WriteBytes(dir / "weights.bin", std::string(24, '\0'));
  onnx::ModelProto model = ModelWithWeight();
  SetExternal(&model, (dir / "weights.bin").string(), 0, 24);
  Save(model, dir / "model.onnx");
  ExpectExtractFails(dir / "model.onnx", {"'weight'", "absolute path"});
}

TEST(OnnxFile, DotDotLocationIsRejected) {
  TempDir dir;
  fs::create_directory(dir / "model");
  WriteBytes(dir / "weights.bin", std::string(24, '\0'));
  onnx::ModelProto model = ModelWithWeight();
  SetExternal(&model, "../weights.bin", 0, 24);
  Save(model, dir / "model" / "model.onnx");
  ExpectExtractFails(dir / "model" / "model.onnx", {"'weight'", "'..'"});
}

TEST(OnnxFile, SymlinkLocationIsRejected) {
  TempDir dir;
  WriteBytes(dir / "real.bin", std::string(24, '\0'));
  fs::create_symlink(dir / "real.bin", dir / "weights.bin");
  onnx::ModelProto model = ModelWithWeight();
  SetExternal(&model, "weights.bin", 0, 24);
  Save(model, dir / "model.onnx");
  ExpectExtractFails(dir / "model.onnx", {"'weight'", "symlink", "weights.bin"});
}

TEST(OnnxFile, SymlinkedFolderInLocationIsRejected) {
  TempDir dir;
  fs::create_directory(dir / "real");
  WriteBytes(dir / "real" / "weights.bin", std::string(24, '\0'));
  fs::create_directory_symlink(dir / "real", dir / "data");
  onnx::ModelProto model = ModelWithWeight();
  SetExternal(&model, "data/weights.bin", 0, 24);
  Save(model, dir / "model.onnx");
  ExpectExtractFails(dir / "model.onnx", {"'weight'", "symlink", "data"});
}

TEST(OnnxFile, MissingDataFileIsRejected) {
  TempDir dir;
  onnx::ModelProto model = ModelWithWeight();
  SetExternal(&model, "weights.bin", 0, 24);
  Save(model, dir / "model.onnx");
  ExpectExtractFails(dir / "model.onnx", {"'weight'", "weights.bin", "No such file"});
}

TEST(OnnxFile, DataFileShorterThanOffsetsIsRejected) {
  TempDir dir;
  WriteBytes(dir / "weights.bin", std::string(30, '\0'));
  onnx::ModelProto model = ModelWithWeight();
  SetExternal(&model, "weights.bin", 16, 24);
  Save(model, dir / "model.onnx");
  ExpectExtractFails(dir / "model.onnx", {"'weight'", "[16, 40)", "only 30 bytes"});
}

TEST(OnnxFile, TruncatedProtobufIsRejected) {
  TempDir dir;
  onnx::ModelProto model = ModelWithWeight();
  model.mutable_graph()->mutable_initializer(0)->set_raw_data(std::string(24, '\0'));
  std::string bytes;
  ASSERT_TRUE(model.SerializeToString(&bytes));
  WriteBytes(dir / "model.onnx", bytes.substr(0, bytes.size() - 10));
  ExpectExtractFails(dir / "model.onnx", {"truncated"});
}

TEST(OnnxFile, RawDataSizeDisagreeingWithDimsIsRejected) {
  TempDir dir;
  onnx::ModelProto model = ModelWithWeight();
  model.mutable_graph()->mutable_initializer(0)->set_raw_data(std::string(20, '\0'));
  Save(model, dir / "model.onnx");
  ExpectExtractFails(dir / "model.onnx", {"'weight'", "20 bytes", "[2, 3]", "need 24"});
}

TEST(OnnxFile, TypedDataCountDisagreeingWithDimsIsRejected) {
  TempDir dir;
  onnx::ModelProto model = ModelWithWeight();
  for (int i = 0; i < 5; ++i) model.mutable_graph()->mutable_initializer(0)->add_float_data(i);
  Save(model, dir / "model.onnx");
  ExpectExtractFails(dir / "model.onnx", {"'weight'", "20 bytes", "need 24"});
}

TEST(OnnxFile, ExternalLengthDisagreeingWithDimsIsRejected) {
  TempDir dir;
  WriteBytes(dir / "weights.bin", std::string(64, '\0'));
  onnx::ModelProto model = ModelWithWeight();
  SetExternal(&model, "weights.bin", 0, 28);
  Save(model, dir / "model.onnx");
  ExpectExtractFails(dir / "model.onnx", {"'weight'", "length is 28", "need 24"});
}

TEST(OnnxFile, WriterCheckRejectsUnsafeLocations) {
  TempDir dir;
  const std::string d = dir.path().string();
  EXPECT_TRUE(CheckExternalDataLocation(d, "unet.onnx.data", false, "w").ok());
  EXPECT_FALSE(CheckExternalDataLocation(d, "/tmp/unet.onnx.data", false, "w").ok());
  EXPECT_FALSE(CheckExternalDataLocation(d, "../unet.onnx.data", false, "w").ok());
  EXPECT_FALSE(CheckExternalDataLocation(d, "a/../../x", false, "w").ok());
  fs::create_symlink("/dev/null", dir / "link.data");
  Status linked = CheckExternalDataLocation(d, "link.data", false, "w");
  EXPECT_FALSE(linked.ok());
  EXPECT_NE(linked.message().find("symlink"), std::string::npos) << linked.message();
}

}  // namespace
}  // namespace sdonnx
