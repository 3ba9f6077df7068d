// The session cache (runtime/session_cache.h): the first load saves ONNX
// Runtime's fully optimized model with its prepacked weights, later loads
// map it, and a damaged or foreign entry is rebuilt or named, never used.
#include "runtime/session_cache.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "convert/convert.h"
#include "formats/onnx_file.h"
#include "runtime/ort_session.h"
#include "test_support.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::MaxAbsDiff;
using testing::ReadTensor;
using testing::TempDir;

class SessionCache : public ::testing::Test {
 protected:
  void SetUp() override {
    ConvertOptions convert;
    convert.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
    convert.output_dir = (dir_ / "onnx").string();
    convert.external_data = ExternalData::kAlways;
    const Status converted = ConvertCheckpoint(convert).status();
    ASSERT_TRUE(converted.ok()) << converted.message();
    unet_ = (dir_ / "onnx" / "unet_tiny-sd1.onnx").string();
    options_.intra_op_threads = 1;
    options_.cache_dir = (dir_ / "cache").string();
  }

  std::map<std::string, HostTensor> Inputs() const {
    return {{"sample", ReadTensor(reference_, "unet.sample")},
            {"timestep", ReadTensor(reference_, "unet.timestep")},
            {"encoder_hidden_states", ReadTensor(reference_, "unet.context")}};
  }

  // Loads the UNet with `options` and runs it on the reference inputs.
  HostTensor RunUNet(const SessionOptions& options, std::unique_ptr<OrtModel>* loaded = nullptr) {
    auto model = OrtModel::Load(unet_, options);
    EXPECT_TRUE(model.ok()) << model.status().message();
    if (!model.ok()) return {};
    auto out = (*model)->Run(Inputs());
    EXPECT_TRUE(out.ok()) << out.status().message();
    if (loaded) *loaded = std::move(*model);
    return out.ok() ? (*out)["out_sample"] : HostTensor{};
  }

  // The one entry folder of the UNet in the cache.
  fs::path UNetEntry() const {
    for (const auto& item : fs::directory_iterator(dir_ / "cache")) {
      if (item.path().filename().string().rfind("unet_tiny-sd1-", 0) == 0) return item.path();
    }
    return {};
  }

  TempDir dir_;
  std::string unet_;
  SessionOptions options_;
  const fs::path reference_ = Fixture("tiny/tiny-sd1.reference.safetensors");
};

TEST_F(SessionCache, SecondLoadReusesTheEntry) {
  std::unique_ptr<OrtModel> first;
  const HostTensor built = RunUNet(options_, &first);
  ASSERT_TRUE(first);
  EXPECT_TRUE(first->cache_built());
  EXPECT_EQ(first->path(), unet_);
  EXPECT_FALSE(first->cached_path().empty());
  EXPECT_EQ(first->Metadata().at("sdonnx.family"), "sd1");

  std::unique_ptr<OrtModel> second;
  const HostTensor reused = RunUNet(options_, &second);
  ASSERT_TRUE(second);
  EXPECT_FALSE(second->cache_built());
  EXPECT_EQ(second->cached_path(), first->cached_path());
  EXPECT_EQ(built.f32, reused.f32);
  EXPECT_LE(MaxAbsDiff(reused, ReadTensor(reference_, "unet.out")), 1e-4);

  SessionOptions direct = options_;
  direct.cache_dir.clear();
  direct.optimization = GraphOptimization::kAll;
  direct.prepack_weights = true;
  EXPECT_EQ(RunUNet(direct).f32, reused.f32);
  EXPECT_EQ(testing::ListFiles(UNetEntry()),
            (std::vector<std::string>{"entry.txt", "model.onnx", "model.onnx.data"}));
}

TEST_F(SessionCache, KeyFollowsTheModelAndTheSettings) {
  const std::map<std::string, std::string> metadata = {{"sdonnx.conversion_id", "abc"}};
  const std::vector<std::string> data = {"unet_tiny-sd1.onnx.data"};
  const auto key = SessionCacheKey(unet_, metadata, data, options_);
  ASSERT_TRUE(key.ok()) << key.status().message();
  EXPECT_NE(key->find("conversion abc"), std::string::npos) << *key;
  EXPECT_NE(key->find("onnxruntime "), std::string::npos) << *key;

  SessionOptions widen = options_;
  widen.widen_weights_at_load = true;
  EXPECT_NE(*SessionCacheKey(unet_, metadata, data, widen), *key);
  EXPECT_NE(*SessionCacheKey(unet_, {}, data, options_), *key);

  // A rewritten data file (same name, new time) is another model.
  const fs::path data_path = dir_ / "onnx" / data[0];
  fs::last_write_time(data_path, fs::last_write_time(data_path) + std::chrono::seconds(5));
  EXPECT_NE(*SessionCacheKey(unet_, metadata, data, options_), *key);
  EXPECT_NE(SessionCacheEntry(dir_ / "cache", unet_, *key),
            SessionCacheEntry(dir_ / "cache", unet_, *SessionCacheKey(unet_, {}, data, options_)));
}

TEST_F(SessionCache, ChangedModelGetsANewEntry) {
  RunUNet(options_);
  const fs::path first = UNetEntry();
  fs::last_write_time(unet_, fs::last_write_time(unet_) + std::chrono::seconds(5));
  testing::WarningLog log(LogLevel::kInfo);
  std::unique_ptr<OrtModel> model;
  RunUNet(options_, &model);
  ASSERT_TRUE(model);
  EXPECT_TRUE(model->cache_built());
  EXPECT_NE(fs::path(model->cached_path()).parent_path(), first);
  // No run can use the first entry again, so building the new one removed it.
  EXPECT_FALSE(fs::exists(first));
  EXPECT_EQ(model->cache_entries_removed(), 1u);
  EXPECT_GT(model->cache_bytes_freed(), 0u);
  EXPECT_NE(log.text().find(first.string() + ": removed; its model changed or was removed"),
            std::string::npos)
      << log.text();
}

TEST_F(SessionCache, StaleEntriesArePruned) {
  // Five copies of the export, each cached. One loses its UNet file, one
  // its data file's time. Two lose every file as an unmounted drive would:
  // one its whole folder, one all it held, leaving an empty mount point.
  // The fifth loses its UNet file, but its entry has a file of the
  // user's own, so it is never removed.
  std::map<std::string, fs::path> entries;
  for (const char* copy : {"removed", "retimed", "unmounted", "emptied", "annotated"}) {
    fs::copy(dir_ / "onnx", dir_ / copy);
    auto model = OrtModel::Load((dir_ / copy / "unet_tiny-sd1.onnx").string(), options_);
    ASSERT_TRUE(model.ok()) << model.status().message();
    entries[copy] = fs::path((*model)->cached_path()).parent_path();
  }
  fs::remove(dir_ / "removed" / "unet_tiny-sd1.onnx");
  // A copy of a stale entry under another name is not an entry.
  fs::copy(entries["removed"], dir_ / "cache" / "mystuff");
  const fs::path data = dir_ / "retimed" / "unet_tiny-sd1.onnx.data";
  fs::last_write_time(data, fs::last_write_time(data) + std::chrono::seconds(5));
  fs::remove_all(dir_ / "unmounted");
  for (const auto& item : fs::directory_iterator(dir_ / "emptied")) fs::remove(item.path());
  fs::remove(dir_ / "annotated" / "unet_tiny-sd1.onnx");
  testing::WriteBytes(entries["annotated"] / "notes.txt", "mine");

  testing::WarningLog log(LogLevel::kInfo);
  std::unique_ptr<OrtModel> model;
  RunUNet(options_, &model);
  ASSERT_TRUE(model);
  EXPECT_TRUE(model->cache_built());
  EXPECT_FALSE(fs::exists(entries["removed"]));
  EXPECT_FALSE(fs::exists(entries["retimed"]));
  EXPECT_TRUE(fs::exists(entries["unmounted"] / "model.onnx.data"));
  EXPECT_TRUE(fs::exists(entries["emptied"] / "model.onnx.data"));
  EXPECT_TRUE(fs::exists(dir_ / "cache" / "mystuff" / "model.onnx.data"));
  EXPECT_TRUE(fs::exists(entries["annotated"] / "notes.txt"));
  EXPECT_EQ(model->cache_entries_removed(), 2u);
  EXPECT_NE(log.text().find(entries["retimed"].string() + ": removed"), std::string::npos)
      << log.text();

  // A load that builds nothing removes nothing.
  fs::copy(dir_ / "onnx", dir_ / "later");
  auto later = OrtModel::Load((dir_ / "later" / "unet_tiny-sd1.onnx").string(), options_);
  ASSERT_TRUE(later.ok()) << later.status().message();
  const fs::path later_entry = fs::path((*later)->cached_path()).parent_path();
  fs::remove(dir_ / "later" / "unet_tiny-sd1.onnx");
  RunUNet(options_, &model);
  EXPECT_FALSE(model->cache_built());
  EXPECT_TRUE(fs::exists(later_entry / "model.onnx"));
}

TEST_F(SessionCache, TruncatedEntryIsRebuilt) {
  const HostTensor expected = RunUNet(options_);
  const fs::path entry = UNetEntry();
  fs::resize_file(entry / "model.onnx.data", fs::file_size(entry / "model.onnx.data") / 2);
  testing::WarningLog warnings;
  std::unique_ptr<OrtModel> model;
  const HostTensor rebuilt = RunUNet(options_, &model);
  ASSERT_TRUE(model);
  EXPECT_TRUE(model->cache_built());
  EXPECT_EQ(rebuilt.f32, expected.f32);
  EXPECT_NE(warnings.text().find("model.onnx.data has " +
                                 std::to_string(fs::file_size(entry / "model.onnx.data") / 2) +
                                 " bytes, but entry.txt records 'data_bytes "),
            std::string::npos)
      << warnings.text();
  EXPECT_NE(warnings.text().find("building it again"), std::string::npos) << warnings.text();
}

TEST_F(SessionCache, EntryWithForeignFileIsNamedAndKept) {
  RunUNet(options_);
  const fs::path entry = UNetEntry();
  fs::remove(entry / "entry.txt");
  testing::WriteBytes(entry / "notes.txt", "mine");
  auto model = OrtModel::Load(unet_, options_);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("contains 'notes.txt'"), std::string::npos)
      << model.status().message();
  EXPECT_TRUE(fs::exists(entry / "notes.txt"));
}

TEST_F(SessionCache, SymlinkedEntryIsRefused) {
  RunUNet(options_);
  const fs::path entry = UNetEntry();
  const fs::path elsewhere = dir_ / "elsewhere";
  fs::rename(entry, elsewhere);
  fs::create_directory_symlink(elsewhere, entry);
  auto model = OrtModel::Load(unet_, options_);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("is a symlink"), std::string::npos)
      << model.status().message();
  EXPECT_TRUE(fs::exists(elsewhere / "model.onnx"));
}

TEST_F(SessionCache, EditedKeyIsRebuilt) {
  RunUNet(options_);
  const fs::path record = UNetEntry() / "entry.txt";
  std::string text = testing::ReadBytes(record);
  text += "one more line\n";
  testing::WriteBytes(record, text);
  testing::WarningLog warnings;
  std::unique_ptr<OrtModel> model;
  RunUNet(options_, &model);
  ASSERT_TRUE(model);
  EXPECT_TRUE(model->cache_built());
  EXPECT_NE(warnings.text().find("entry.txt records another key (line "), std::string::npos)
      << warnings.text();
  EXPECT_NE(warnings.text().find("'one more line' where this run's key has nothing"),
            std::string::npos)
      << warnings.text();
}

TEST_F(SessionCache, EditedKeyLineIsNamed) {
  RunUNet(options_);
  const fs::path record = UNetEntry() / "entry.txt";
  std::string text = testing::ReadBytes(record);
  const std::size_t at = text.find("widen_weights_at_load 0");
  ASSERT_NE(at, std::string::npos) << text;
  text.replace(at, 23, "widen_weights_at_load 1");
  testing::WriteBytes(record, text);
  testing::WarningLog warnings;
  RunUNet(options_);
  EXPECT_NE(warnings.text().find("'widen_weights_at_load 1' where this run's key has "
                                 "'widen_weights_at_load 0'"),
            std::string::npos)
      << warnings.text();
}

TEST_F(SessionCache, FolderWithAnEntryFileNameIsKept) {
  RunUNet(options_);
  const fs::path entry = UNetEntry();
  fs::remove(entry / "model.onnx");
  fs::create_directories(entry / "model.onnx" / "sub");
  testing::WriteBytes(entry / "model.onnx" / "sub" / "mine.txt", "mine");
  auto model = OrtModel::Load(unet_, options_);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("contains a folder 'model.onnx'"), std::string::npos)
      << model.status().message();
  EXPECT_EQ(testing::ReadBytes(entry / "model.onnx" / "sub" / "mine.txt"), "mine");
}

// The metadata generate reads comes from the converted file, not from the
// entry's copy, so a damaged copy cannot be blamed on the export.
TEST_F(SessionCache, MetadataComesFromTheConvertedFile) {
  std::unique_ptr<OrtModel> model;
  RunUNet(options_, &model);
  ASSERT_TRUE(model);
  auto file = OnnxFile::Open(unet_);
  ASSERT_TRUE(file.ok()) << file.status().message();
  EXPECT_EQ(model->Metadata(), (*file)->metadata());
}

TEST_F(SessionCache, FileWhereEntryBelongsIsKept) {
  RunUNet(options_);
  const fs::path entry = UNetEntry();
  fs::remove_all(entry);
  testing::WriteBytes(entry, "mine");
  auto model = OrtModel::Load(unet_, options_);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("is not a folder where the session cache keeps"),
            std::string::npos)
      << model.status().message();
  EXPECT_EQ(testing::ReadBytes(entry), "mine");
}

TEST_F(SessionCache, StaleBuildFolderIsRemoved) {
  const fs::path stale = dir_ / "cache" / ".building-Ab12Cd";
  fs::create_directories(stale);
  testing::WriteBytes(stale / "sdonnx.lock", "");
  testing::WriteBytes(stale / "model.onnx", "half");
  RunUNet(options_);
  EXPECT_FALSE(fs::exists(stale));
  for (const auto& item : fs::directory_iterator(dir_ / "cache")) {
    EXPECT_NE(item.path().filename().string().rfind(".building-", 0), 0u) << item.path();
  }
}

TEST_F(SessionCache, UnwritableCacheFolderIsNamed) {
  testing::WriteBytes(dir_ / "cache", "a file where the folder should be");
  auto model = OrtModel::Load(unet_, options_);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find((dir_ / "cache").string()), std::string::npos)
      << model.status().message();
}

// verify skips a cache kept inside the export folder.
// The key records the model's path on one line. A path with a line break
// cannot be read back from it, so such an entry is used but never judged
// stale.
TEST_F(SessionCache, PathWithALineBreakKeepsItsEntry) {
  const fs::path odd = dir_ / "line\nbreak";
  fs::copy(dir_ / "onnx", odd);
  const std::string odd_unet = (odd / "unet_tiny-sd1.onnx").string();
  auto first = OrtModel::Load(odd_unet, options_);
  ASSERT_TRUE(first.ok()) << first.status().message();
  const fs::path entry = fs::path((*first)->cached_path()).parent_path();
  fs::last_write_time(unet_, fs::last_write_time(unet_) + std::chrono::seconds(5));
  std::unique_ptr<OrtModel> model;
  RunUNet(options_, &model);
  ASSERT_TRUE(model);
  EXPECT_EQ(model->cache_entries_removed(), 0u);
  auto again = OrtModel::Load(odd_unet, options_);
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_FALSE((*again)->cache_built());
  EXPECT_EQ(fs::path((*again)->cached_path()).parent_path(), entry);
}

TEST_F(SessionCache, DanglingSymlinkIsNamedWithItsTarget) {
  fs::create_directory_symlink(dir_ / "unmounted" / "cache", dir_ / "cache");
  auto model = OrtModel::Load(unet_, options_);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find((dir_ / "cache").string() + ": is a symlink to " +
                                          (dir_ / "unmounted" / "cache").string() +
                                          ", which does not exist"),
            std::string::npos)
      << model.status().message();
  EXPECT_NE(model.status().message().find("create " + (dir_ / "unmounted" / "cache").string() +
                                          " or give another path"),
            std::string::npos)
      << model.status().message();
  EXPECT_FALSE(fs::exists(dir_ / "unmounted"));
}

TEST_F(SessionCache, CacheInsideTheExportPassesVerify) {
  SessionOptions inside = options_;
  inside.cache_dir = (dir_ / "onnx").string();
  RunUNet(inside);
  const testing::CommandResult r = testing::RunSdonnx("verify " + testing::Quote(dir_ / "onnx"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST(SessionCacheTensorRt, EnginesGoToTheCacheFolder) {
  const auto options = TensorRtProviderOptions({"a:1", "a:2", "a:3"}, "/tmp/cache");
  EXPECT_EQ(options.at("trt_profile_min_shapes"), "a:1");
  EXPECT_EQ(options.at("trt_engine_cache_enable"), "1");
  EXPECT_EQ(options.at("trt_engine_cache_path"), "/tmp/cache/tensorrt");
  EXPECT_EQ(options.at("trt_timing_cache_enable"), "1");
  EXPECT_EQ(options.at("trt_timing_cache_path"), "/tmp/cache/tensorrt");
  EXPECT_EQ(TensorRtProviderOptions({}, "/tmp/cache").size(), 4u);
}

}  // namespace
}  // namespace sdonnx
