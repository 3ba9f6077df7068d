// Crash-safe output of convert: a full disk, a file size limit, SIGINT and
// SIGTERM in the middle of a run, and output paths that would replace the
// input. After each failure the output folder must be as it was before.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "formats/mapped_file.h"
#include "model/synthesize.h"
#include "test_support.h"
#include "util/sha256.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::CommandResult;
using testing::Fixture;
using testing::ListFiles;
using testing::Quote;
using testing::RunSdonnx;
using testing::TempDir;

std::string ConvertArguments(const fs::path& model, const fs::path& out) {
  return "convert " + Quote(model) + " " + Quote(out);
}

bool Contains(const std::string& text, const std::string& fragment) {
  return text.find(fragment) != std::string::npos;
}

TEST(CrashSafety, FileSizeLimitLeavesNoTemporaries) {
  TempDir out;
  // sdonnx ignores SIGXFSZ, so a write past `ulimit -f` fails with EFBIG.
  CommandResult r = RunSdonnx(ConvertArguments(Fixture("tiny/tiny-sd1.safetensors"), out.path()),
                              "ulimit -f 64;");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "file size limit reached")) << r.output;
  EXPECT_TRUE(Contains(r.output, "bytes at byte")) << r.output;
  EXPECT_TRUE(Contains(r.output, ".onnx")) << r.output;
  EXPECT_TRUE(ListFiles(out.path()).empty());
}

TEST(CrashSafety, FullDiskLeavesNoTemporaries) {
  // A 64 KiB tmpfs in a private mount namespace; skipped where user
  // namespaces are not available (some containers and CI runners).
  if (std::system("unshare -rm true >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "unshare -rm is not permitted here, so no tmpfs can be mounted";
  }
  TempDir dir;
  const fs::path mount = dir / "small";
  fs::create_directories(mount);
  const fs::path out = mount / "out";
  const std::string script =
      "mount -t tmpfs -o size=64k tmpfs " + Quote(mount) + " || exit 90\n" +
      "mkdir " + Quote(out) + "\n" + SDONNX_BINARY + " " +
      ConvertArguments(Fixture("tiny/tiny-sd1.safetensors"), out) + " 2>&1\n" +
      "echo \"exit=$?\"\necho listing:\nls -A " + Quote(out) + "\n";
  testing::WriteBytes(dir / "run.sh", script);
  CommandResult r = testing::RunCommand("unshare -rm sh " + Quote(dir / "run.sh"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "no space left on the device")) << r.output;
  EXPECT_TRUE(Contains(r.output, "exit=1")) << r.output;
  EXPECT_TRUE(r.output.ends_with("listing:\n")) << r.output;
}

TEST(CrashSafety, OutputDirThatIsTheInputIsRejected) {
  TempDir dir;
  const fs::path model = dir / "model.safetensors";
  fs::copy_file(Fixture("tiny/tiny-sd1.safetensors"), model);
  const auto size = fs::file_size(model);
  CommandResult r = RunSdonnx(ConvertArguments(model, model) + " --force");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(Contains(r.output, "is the input checkpoint")) << r.output;
  EXPECT_EQ(fs::file_size(model), size);
  EXPECT_EQ(ListFiles(dir.path()), (std::vector<std::string>{"model.safetensors"}));
}

TEST(CrashSafety, OutputDirThatIsAFileIsRejected) {
  TempDir dir;
  testing::WriteBytes(dir / "notes.txt", "keep me");
  CommandResult r =
      RunSdonnx(ConvertArguments(Fixture("tiny/tiny-sd1.safetensors"), dir / "notes.txt"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(Contains(r.output, "exists and is not a folder")) << r.output;
  EXPECT_EQ(ListFiles(dir.path()), (std::vector<std::string>{"notes.txt"}));
}

TEST(CrashSafety, EveryOutputNameIsCheckedWithoutForce) {
  // Only the last of the four outputs exists; nothing may be written.
  TempDir out;
  testing::WriteBytes(out / "vae_encoder_tiny-sd1.onnx", "keep me");
  CommandResult r = RunSdonnx(ConvertArguments(Fixture("tiny/tiny-sd1.safetensors"), out.path()));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(Contains(r.output, "vae_encoder_tiny-sd1.onnx: already exists")) << r.output;
  EXPECT_EQ(ListFiles(out.path()), (std::vector<std::string>{"vae_encoder_tiny-sd1.onnx"}));
}

// Starts `sdonnx convert MODEL OUT` as a child process and returns its pid.
pid_t StartConvert(const fs::path& model, const fs::path& out) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string model_arg = model.string();
    const std::string out_arg = out.string();
    ::execl(SDONNX_BINARY, SDONNX_BINARY, "convert", model_arg.c_str(), out_arg.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

bool HasStagingFolder(const fs::path& dir) {
  for (const std::string& name : ListFiles(dir)) {
    if (name.starts_with(".sdonnx-staging-")) return true;
  }
  return false;
}

class CrashSafetySignal : public ::testing::TestWithParam<int> {
 protected:
  // A synthetic SD 1.x checkpoint of about 1.2 GB, so that convert is still
  // running when the signal arrives (the exit status checks that). Its
  // weights are sparse zeros, so it takes almost no disk space.
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    Sd1Hyperparameters h;
    h.model_channels = 192;
    Status written = WriteSyntheticCheckpoint((dir_->path() / "big.safetensors").string(),
                                              Sd1Layout(h), FillMode::kZeros, 1);
    ASSERT_TRUE(written.ok()) << written.message();
  }
  static void TearDownTestSuite() { delete dir_; }
  static TempDir* dir_;
};

TempDir* CrashSafetySignal::dir_ = nullptr;

TEST_P(CrashSafetySignal, RemovesStagingFolder) {
  const int signal_number = GetParam();
  const fs::path out = dir_->path() / ("out-" + std::to_string(signal_number));
  fs::create_directories(out);
  const pid_t pid = StartConvert(dir_->path() / "big.safetensors", out);
  ASSERT_GT(pid, 0);

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool staged = false;
  while (!staged && std::chrono::steady_clock::now() < deadline) {
    staged = HasStagingFolder(out);
    if (!staged) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // Give the run a moment to start writing into the staging folder.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ::kill(pid, signal_number);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);

  ASSERT_TRUE(staged) << "no staging folder appeared within 60 s";
  ASSERT_TRUE(WIFEXITED(status)) << "the run ended by a signal, not through its handler";
  EXPECT_EQ(WEXITSTATUS(status), 128 + signal_number);
  EXPECT_TRUE(ListFiles(out).empty());
}

INSTANTIATE_TEST_SUITE_P(Signals, CrashSafetySignal, ::testing::Values(SIGINT, SIGTERM),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == SIGINT ? std::string("Sigint")
                                                       : std::string("Sigterm");
                         });

}  // namespace
}  // namespace sdonnx
