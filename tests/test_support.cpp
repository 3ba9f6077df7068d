#include "test_support.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include "formats/checkpoint.h"
#include "formats/safetensors.h"

namespace sdonnx::testing {

namespace fs = std::filesystem;

namespace {

// `value` as `width` little-endian bytes.
std::string Le(std::uint64_t value, int width) {
  std::string out;
  for (int i = 0; i < width; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
  return out;
}

}  // namespace

fs::path FixturesDir() {
  if (const char* env = std::getenv("SDONNX_FIXTURES"); env != nullptr && *env != '\0') {
    return fs::path(env);
  }
  return fs::path(SDONNX_DEFAULT_FIXTURES);
}

fs::path Fixture(const std::string& relative) { return FixturesDir() / relative; }

TempDir::TempDir() {
  std::string pattern = (fs::temp_directory_path() / "sdonnx-test-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

HostTensor ReadTensor(const fs::path& file, const std::string& name) {
  auto checkpoint = Checkpoint::Open(file.string());
  if (!checkpoint.ok()) throw std::runtime_error(checkpoint.status().message());
  const TensorInfo* info = (*checkpoint)->Find(name);
  if (info == nullptr) throw std::runtime_error(file.string() + ": no tensor " + name);
  auto values = (*checkpoint)->ReadAsFloat(name);
  if (!values.ok()) throw std::runtime_error(values.status().message());
  if (IsFloating(info->dtype)) return HostTensor::Float(info->shape, *values);
  std::vector<std::int32_t> ints(values->begin(), values->end());
  return HostTensor::Int32(info->shape, ints);
}

double MaxAbsDiff(const HostTensor& a, const HostTensor& b) {
  if (a.shape != b.shape || a.f32.size() != b.f32.size()) {
    return std::numeric_limits<double>::infinity();
  }
  double worst = 0;
  for (std::size_t i = 0; i < a.f32.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a.f32[i]) - b.f32[i]);
    if (std::isnan(d)) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, d);
  }
  return worst;
}

std::vector<std::string> ListFiles(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

CommandResult RunSdonnx(const std::string& arguments, const std::string& environment) {
  return RunCommand(environment + " " + std::string(SDONNX_BINARY) + " " + arguments);
}

CommandResult RunCommand(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer;
  while (std::size_t n = std::fread(buffer.data(), 1, buffer.size(), pipe)) {
    result.output.append(buffer.data(), n);
  }
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string Quote(const fs::path& path) { return "'" + path.string() + "'"; }

std::string MakeZip(const std::vector<ZipEntry>& entries) {
  std::string out;
  std::string directory;
  for (const ZipEntry& e : entries) {
    const std::uint64_t local_offset = out.size();
    out += Le(0x04034b50, 4) + Le(20, 2) + Le(0, 2) + Le(e.method, 2) + Le(0, 4) + Le(0, 4) +
           Le(e.data.size(), 4) + Le(e.data.size(), 4) + Le(e.name.size(), 2) + Le(0, 2) +
           e.name + e.data;
    directory += Le(0x02014b50, 4) + Le(20, 2) + Le(20, 2) + Le(0, 2) + Le(e.method, 2) +
                 Le(0, 4) + Le(0, 4) + Le(e.data.size(), 4) + Le(e.data.size(), 4) +
                 Le(e.name.size(), 2) + Le(0, 2) + Le(0, 2) + Le(0, 2) + Le(0, 2) + Le(0, 4) +
                 Le(local_offset, 4) + e.name;
  }
  const std::uint64_t directory_offset = out.size();
  out += directory;
  out += Le(0x06054b50, 4) + Le(0, 2) + Le(0, 2) + Le(entries.size(), 2) +
         Le(entries.size(), 2) + Le(directory.size(), 4) + Le(directory_offset, 4) + Le(0, 2);
  return out;
}

std::string ReadBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteBytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

fs::path WriteWidenedUNet(const fs::path& dir, const std::string& name, const std::string& fixture,
                          std::int64_t channels, const std::function<float(std::size_t)>& extra) {
  const std::string key = "model.diffusion_model.input_blocks.0.0.weight";
  auto source = Checkpoint::Open(Fixture("tiny/" + fixture + ".safetensors").string());
  if (!source.ok()) throw std::runtime_error(source.status().message());
  const TensorInfo* conv = (*source)->FindStored(key);
  if (conv == nullptr || conv->shape.size() != 4) throw std::runtime_error(fixture + ": no " + key);
  const auto out = static_cast<std::size_t>(conv->shape[0]);
  const auto in = static_cast<std::size_t>(conv->shape[1]);
  const auto kernel = static_cast<std::size_t>(conv->shape[2] * conv->shape[3]);
  const auto wide = static_cast<std::size_t>(channels);
  auto read = (*source)->ReadAsFloat(key);
  if (!read.ok()) throw std::runtime_error(read.status().message());
  const std::vector<float>& original = *read;
  std::vector<float> widened(out * wide * kernel);
  for (std::size_t o = 0; o < out; ++o) {
    for (std::size_t i = 0; i < wide * kernel; ++i) {
      const std::size_t at = o * wide * kernel + i;
      widened[at] = i < in * kernel ? original[o * in * kernel + i] : extra(at);
    }
  }
  std::vector<TensorToWrite> tensors;
  for (const TensorInfo& t : (*source)->tensors()) {
    if (t.name != key) {
      tensors.push_back({t.name, t.dtype, t.shape, (*source)->Data(t), {}});
      continue;
    }
    tensors.push_back({t.name, DType::kF32, {conv->shape[0], channels, conv->shape[2], conv->shape[3]},
                       {reinterpret_cast<const std::uint8_t*>(widened.data()),
                        widened.size() * sizeof(float)},
                       {}});
  }
  const fs::path path = dir / (name + ".safetensors");
  Status written = WriteSafetensors(path.string(), tensors, {});
  if (!written.ok()) throw std::runtime_error(written.message());
  fs::copy_file(Fixture("tiny/" + fixture + ".yaml"), dir / (name + ".yaml"),
                fs::copy_options::overwrite_existing);
  return path;
}

std::map<std::string, HostTensor> RunModel(const fs::path& path,
                                           const std::map<std::string, HostTensor>& inputs) {
  auto model = OrtModel::Load(path.string());
  if (!model.ok()) throw std::runtime_error(model.status().message());
  auto outputs = (*model)->Run(inputs);
  if (!outputs.ok()) throw std::runtime_error(outputs.status().message());
  return std::move(outputs).value();
}

onnx::ModelProto ReadModel(const fs::path& path) {
  onnx::ModelProto model;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(model.ParseFromIstream(&in)) << path;
  return model;
}

void SetOnnxMetadata(const fs::path& path, const std::string& key, const std::string& value) {
  onnx::ModelProto model = ReadModel(path);
  bool found = false;
  for (auto& entry : *model.mutable_metadata_props()) {
    if (entry.key() != key) continue;
    entry.set_value(value);
    found = true;
  }
  if (!found) {
    auto* entry = model.add_metadata_props();
    entry->set_key(key);
    entry->set_value(value);
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  ASSERT_TRUE(model.SerializeToOstream(&out)) << path;
}

void RemoveOnnxMetadata(const fs::path& path, const std::string& key) {
  onnx::ModelProto model = ReadModel(path);
  auto* props = model.mutable_metadata_props();
  for (int i = props->size() - 1; i >= 0; --i) {
    if (props->Get(i).key() == key) props->DeleteSubrange(i, 1);
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  ASSERT_TRUE(model.SerializeToOstream(&out)) << path;
}

void EditMetadata(const fs::path& path,
                  const std::function<void(std::map<std::string, std::string>&)>& edit) {
  const fs::path edited = path.string() + ".edited";
  {
    auto file = SafetensorsFile::Open(path.string());
    ASSERT_TRUE(file.ok()) << file.status().message();
    std::vector<TensorToWrite> tensors;
    for (const TensorInfo& t : (*file)->tensors()) {
      tensors.push_back({t.name, t.dtype, t.shape, (*file)->Data(t), {}});
    }
    std::map<std::string, std::string> metadata = (*file)->metadata();
    edit(metadata);
    ASSERT_TRUE(WriteSafetensors(edited.string(), tensors, metadata).ok());
  }
  fs::rename(edited, path);
}

std::filesystem::path NarrowedTinySd1(const std::filesystem::path& dir, DType dtype,
                                      const std::vector<TensorToWrite>& extra) {
  auto source = Checkpoint::Open(Fixture("tiny/tiny-sd1.safetensors").string());
  EXPECT_TRUE(source.ok());
  std::vector<std::vector<std::uint16_t>> buffers;
  buffers.reserve((*source)->tensors().size());
  std::vector<TensorToWrite> tensors;
  for (const TensorInfo& t : (*source)->tensors()) {
    if (!IsFloating(t.dtype) || t.dtype == dtype) {
      tensors.push_back({t.name, t.dtype, t.shape, (*source)->Data(t), {}});
      continue;
    }
    auto values = (*source)->ReadAsFloat(t.name);
    EXPECT_TRUE(values.ok());
    std::vector<std::uint16_t>& narrow = buffers.emplace_back(values->size());
    for (std::size_t i = 0; i < narrow.size(); ++i) {
      std::uint32_t bits;
      std::memcpy(&bits, &(*values)[i], 4);
      narrow[i] = dtype == DType::kF16 ? FloatToHalf((*values)[i])
                                       : static_cast<std::uint16_t>(bits >> 16);
    }
    tensors.push_back({t.name, dtype, t.shape,
                       {reinterpret_cast<const std::uint8_t*>(narrow.data()), narrow.size() * 2},
                       {}});
  }
  for (const TensorToWrite& t : extra) tensors.push_back(t);
  const std::filesystem::path path = dir / (std::string(DTypeName(dtype)) + "-sd1.safetensors");
  EXPECT_TRUE(WriteSafetensors(path.string(), tensors, {{"format", "pt"}, {"note", "narrowed"}})
                  .ok());
  return path;
}

Result<RebuildReport> RebuildFolder(const std::filesystem::path& dir,
                                    const std::filesystem::path& output, bool allow_partial) {
  RebuildOptions options;
  options.inputs = {dir.string()};
  options.output_path = output.string();
  options.allow_partial = allow_partial;
  return RebuildCheckpoint(options);
}

}  // namespace sdonnx::testing

namespace {

// Fails every test at start-up with one clear message when the fixtures
// folder is missing, instead of one confusing failure per test.
class FixturesEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    const auto dir = sdonnx::testing::FixturesDir();
    ASSERT_TRUE(std::filesystem::is_regular_file(dir / "README.md"))
        << "test fixtures not found in " << dir.string()
        << "; put the shared fixtures there or set SDONNX_FIXTURES to their folder";
  }
};

const auto* const kFixturesEnvironment =
    ::testing::AddGlobalTestEnvironment(new FixturesEnvironment());

}  // namespace
