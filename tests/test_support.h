// Helpers shared by the tests: fixture paths, temporary folders, reference
// tensors and comparisons.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

#include "formats/dtype.h"
#include "formats/safetensors.h"
#include "rebuild/rebuild.h"
#include "runtime/ort_session.h"
#include "util/log.h"

namespace sdonnx {

// Names a dtype parameter in test listings (found by argument-dependent lookup).
inline void PrintTo(DType dtype, std::ostream* out) { *out << DTypeName(dtype); }

}  // namespace sdonnx

namespace sdonnx::testing {

// The fixtures folder: $SDONNX_FIXTURES, or ../shared/fixtures beside the repo.
std::filesystem::path FixturesDir();
std::filesystem::path Fixture(const std::string& relative);

// A fresh folder under the system temporary folder, removed on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Reads tensor `name` of a safetensors file as float32 (any float dtype) or,
// for integer dtypes, as int32.
HostTensor ReadTensor(const std::filesystem::path& file, const std::string& name);

// max |a - b| over all elements; +inf if the shapes differ.
double MaxAbsDiff(const HostTensor& a, const HostTensor& b);

// Loads the ONNX file at `path` in ONNX Runtime and runs it on `inputs`;
// throws std::runtime_error with ONNX Runtime's message on failure.
std::map<std::string, HostTensor> RunModel(const std::filesystem::path& path,
                                           const std::map<std::string, HostTensor>& inputs);

// Parses the ONNX file at `path` (a failed parse fails the test).
onnx::ModelProto ReadModel(const std::filesystem::path& path);

// Sets metadata `key` of the inline ONNX model at `path` to `value`, adding
// the entry if it is missing.
void SetOnnxMetadata(const std::filesystem::path& path, const std::string& key,
                     const std::string& value);

// Removes metadata `key` from the inline ONNX model at `path`.
void RemoveOnnxMetadata(const std::filesystem::path& path, const std::string& key);

// Collects the messages logged while it exists: warnings, or every level
// from `minimum` up.
class WarningLog {
 public:
  explicit WarningLog(LogLevel minimum = LogLevel::kWarning) {
    previous_ = SetLogSink([this, minimum](LogLevel level, const std::string& message) {
      if (level >= minimum && level != LogLevel::kError) text_ += message + "\n";
    });
  }
  ~WarningLog() { SetLogSink(previous_); }
  const std::string& text() const { return text_; }

 private:
  LogSink previous_;
  std::string text_;
};

// Names of the regular files in `dir`, sorted; hidden ones included.
std::vector<std::string> ListFiles(const std::filesystem::path& dir);

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs `command` through the shell and returns its exit code and output.
CommandResult RunCommand(const std::string& command);

// Runs the built sdonnx program through the shell with `arguments`;
// `environment` is a prefix such as "env -u NAME" or "NAME=value".
CommandResult RunSdonnx(const std::string& arguments, const std::string& environment = "");

// `path` in single quotes for the shell.
std::string Quote(const std::filesystem::path& path);

// Writes tiny fixture `fixture` as DIR/NAME.safetensors, with its YAML as
// DIR/NAME.yaml, the UNet's first convolution widened to `channels` inputs
// (8: instruct-pix2pix, 9: inpainting) and stored as float32. The added
// weights are extra(i) for their flat index i in the new tensor. Returns the
// checkpoint path.
std::filesystem::path WriteWidenedUNet(const std::filesystem::path& dir, const std::string& name,
                                       const std::string& fixture, std::int64_t channels,
                                       const std::function<float(std::size_t)>& extra);

// A zip of stored records, the way torch.save lays them out (without the
// 64-byte alignment padding, which readers must not rely on).
struct ZipEntry {
  std::string name;
  std::string data;
  int method = 0;
};

std::string MakeZip(const std::vector<ZipEntry>& entries);

// Rewrites the safetensors file at `path` with `edit` applied to its
// metadata; a failure to read or write it fails the test.
void EditMetadata(const std::filesystem::path& path,
                  const std::function<void(std::map<std::string, std::string>&)>& edit);

// Returns the bytes of the file at `path`; a failure to read it fails the test.
std::string ReadBytes(const std::filesystem::path& path);

// Writes `bytes` to `path` as they are.
void WriteBytes(const std::filesystem::path& path, const std::string& bytes);

// Writes tiny-sd1 into `dir` as DTYPE-sd1.safetensors (such as
// F16-sd1.safetensors) with every floating tensor narrowed to `dtype` (F16
// by rounding, BF16 by truncation), plus `extra` tensors. Returns its path.
std::filesystem::path NarrowedTinySd1(const std::filesystem::path& dir, DType dtype,
                                      const std::vector<TensorToWrite>& extra = {});

// Runs RebuildCheckpoint on the export folder `dir`, writing `output`.
Result<RebuildReport> RebuildFolder(const std::filesystem::path& dir,
                                    const std::filesystem::path& output,
                                    bool allow_partial = false);

}  // namespace sdonnx::testing
