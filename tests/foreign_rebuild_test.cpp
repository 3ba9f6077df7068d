// rebuild of a diffusers ONNX export (another tool's files): every
// initializer, named or anonymous, maps back to the checkpoint key that the
// fixture's names.json lists for it, and its values equal the source's.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "formats/checkpoint.h"
#include "formats/safetensors.h"
#include "rebuild/foreign_keys.h"
#include "rebuild/rebuild.h"
#include "test_support.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::TempDir;

fs::path ForeignExport() { return Fixture("foreign/tiny-sd1-diffusers"); }

nlohmann::json AnswerKey() {
  std::ifstream in(Fixture("foreign/tiny-sd1-diffusers.names.json"));
  return nlohmann::json::parse(in);
}

std::string TransformName(WeightTransform transform) {
  switch (transform) {
    case WeightTransform::kSame: return "same";
    case WeightTransform::kReshape: return "reshaped";
    case WeightTransform::kTranspose: return "transposed";
  }
  return "?";
}

TEST(ForeignRebuild, MappingMatchesTheAnswerKey) {
  const nlohmann::json key = AnswerKey();
  for (const std::string& component : ForeignComponents()) {
    SCOPED_TRACE(component);
    auto file = OnnxFile::Open((ForeignExport() / component / "model.onnx").string());
    ASSERT_TRUE(file.ok()) << file.status().message();
    const ForeignComponentMap map = MapForeignComponent(**file, component);
    EXPECT_TRUE(map.unmapped.empty()) << map.unmapped.front();
    std::map<std::string, const ForeignWeight*> by_onnx_name;
    for (const ForeignWeight& w : map.mapped) by_onnx_name[w.onnx_name] = &w;
    ASSERT_EQ(map.mapped.size(), key.at(component).size());
    for (const auto& entry : key.at(component)) {
      const std::string onnx_name = entry.at("onnx").get<std::string>();
      SCOPED_TRACE(onnx_name);
      ASSERT_TRUE(by_onnx_name.contains(onnx_name));
      const ForeignWeight& w = *by_onnx_name[onnx_name];
      EXPECT_EQ(w.diffusers_name, entry.at("diffusers").get<std::string>());
      EXPECT_EQ(w.checkpoint_key, entry.at("checkpoint_key").get<std::string>());
      EXPECT_EQ(w.checkpoint_shape, entry.at("checkpoint_shape").get<std::vector<std::int64_t>>());
      EXPECT_TRUE(entry.at("transform").get<std::string>().starts_with(TransformName(w.transform)));
    }
  }
}

TEST(ForeignRebuild, WeightsEqualTheSource) {
  TempDir dir;
  RebuildOptions options;
  options.inputs = {ForeignExport().string()};
  options.output_path = (dir / "rebuilt.safetensors").string();
  auto report = RebuildCheckpoint(options);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_TRUE(report->foreign);
  EXPECT_FALSE(report->partial);
  EXPECT_EQ(report->tensors_written, 484u);

  auto rebuilt = Checkpoint::Open(options.output_path);
  auto source = Checkpoint::Open(Fixture("tiny/tiny-sd1.safetensors").string());
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status().message();
  ASSERT_TRUE(source.ok());
  EXPECT_EQ((*rebuilt)->metadata().at("sdonnx.rebuild"), "foreign");
  for (const TensorInfo& t : (*rebuilt)->tensors()) {
    SCOPED_TRACE(t.name);
    const TensorInfo* original = (*source)->Find(t.name);
    ASSERT_NE(original, nullptr);
    EXPECT_EQ(t.shape, original->shape);
    auto a = (*rebuilt)->ReadAsFloat(t.name);
    auto b = (*source)->ReadAsFloat(t.name);
    ASSERT_TRUE(a.ok());
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(*a, *b);
  }
}

// Copies the export into `dir` without `left_out`.
void CopyExportWithout(const fs::path& dir, const std::string& left_out) {
  fs::create_directories(dir);
  for (const std::string& component : ForeignComponents()) {
    if (component == left_out) continue;
    fs::copy(ForeignExport() / component, dir / component, fs::copy_options::recursive);
  }
}

TEST(ForeignRebuild, MissingComponentIsRefused) {
  TempDir dir;
  CopyExportWithout(dir / "export", "vae_decoder");
  RebuildOptions options;
  options.inputs = {(dir / "export").string()};
  options.output_path = (dir / "rebuilt.safetensors").string();
  auto report = RebuildCheckpoint(options);
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().message().find("component vae_decoder (vae_decoder/model.onnx) is "
                                           "missing"),
            std::string::npos)
      << report.status().message();
  EXPECT_FALSE(fs::exists(options.output_path));

  options.allow_partial = true;
  auto partial = RebuildCheckpoint(options);
  ASSERT_TRUE(partial.ok()) << partial.status().message();
  auto rebuilt = SafetensorsFile::Open(options.output_path);
  ASSERT_TRUE(rebuilt.ok());
  EXPECT_EQ((*rebuilt)->metadata().at("sdonnx.rebuild"), "partial");
  EXPECT_EQ((*rebuilt)->metadata().at("sdonnx.rebuild_missing_components"), "vae_decoder");
}

}  // namespace
}  // namespace sdonnx
