#include "test_support.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cmath>
#include <fstream>
#include <limits>

#include "formats/checkpoint.h"

namespace sdonnx::testing {

namespace fs = std::filesystem;

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
  const std::string command =
      environment + " " + std::string(SDONNX_BINARY) + " " + arguments + " 2>&1";
  CommandResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
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

void WriteBytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
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
