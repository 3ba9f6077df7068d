// Crash-safe output of convert: a full disk, a file size limit, SIGINT and
// SIGTERM in the middle of a run, and output paths that would replace the
// input. After each failure the output folder must be as it was before. A
// signal while convert or generate moves its finished files into place must
// leave all of them.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <thread>

#include "convert/convert.h"
#include "formats/mapped_file.h"
#include "model/synthesize.h"
#include "test_support.h"
#include "util/sha256.h"
#include "util/temporaries.h"

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

TEST(CrashSafety, EveryExistingOutputIsListed) {
  TempDir out;
  ASSERT_EQ(RunSdonnx(ConvertArguments(Fixture("tiny/tiny-sd1.safetensors"), out.path()))
                .exit_code,
            0);
  const std::vector<std::string> before = ListFiles(out.path());
  CommandResult r = RunSdonnx(ConvertArguments(Fixture("tiny/tiny-sd1.safetensors"), out.path()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.output, "extras_tiny-sd1.safetensors: already exists; pass --force to "
                                 "overwrite it and the 4 other existing outputs of this run ("))
      << r.output;
  for (const char* name : {"unet_tiny-sd1.onnx", "vae_decoder_tiny-sd1.onnx",
                           "vae_encoder_tiny-sd1.onnx", "clip_text_tiny-sd1.onnx"}) {
    EXPECT_TRUE(Contains(r.output, name)) << r.output;
  }
  EXPECT_EQ(ListFiles(out.path()), before);
}

TEST(CrashSafety, FolderWithAnotherExportIsRefused) {
  TempDir out;
  testing::WriteBytes(out / "unet_other.onnx", "another checkpoint's UNet");
  for (const std::string extra : {"", " --force"}) {
    SCOPED_TRACE(extra);
    CommandResult r = RunSdonnx(
        ConvertArguments(Fixture("tiny/tiny-sd1.safetensors"), out.path()) + extra);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(Contains(r.output, "already holds the export of another checkpoint "
                                   "(unet_other.onnx)"))
        << r.output;
    EXPECT_EQ(ListFiles(out.path()), std::vector<std::string>{"unet_other.onnx"});
  }
}

TEST(CrashSafety, FailedMoveKeepsOldOutputsWithForce) {
  // convert moves the extras file, then unet, vae_encoder, vae_decoder and
  // clip_text. A folder in clip_text's place makes the last rename fail
  // after four old files have been replaced.
  TempDir out;
  const std::vector<std::string> replaced = {
      "extras_tiny-sd1.safetensors", "unet_tiny-sd1.onnx", "vae_decoder_tiny-sd1.onnx",
      "vae_encoder_tiny-sd1.onnx"};
  for (const std::string& name : replaced) testing::WriteBytes(out / name, "old " + name);
  fs::create_directories(out / "clip_text_tiny-sd1.onnx");
  testing::WriteBytes(out / "clip_text_tiny-sd1.onnx" / "keep", "keep");
  const std::vector<std::string> before = ListFiles(out.path());

  CommandResult r =
      RunSdonnx(ConvertArguments(Fixture("tiny/tiny-sd1.safetensors"), out.path()) + " --force");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "clip_text_tiny-sd1.onnx: cannot move the finished file"))
      << r.output;
  EXPECT_TRUE(Contains(r.output, "every output was left as it was before")) << r.output;
  EXPECT_EQ(ListFiles(out.path()), before);
  for (const std::string& name : replaced) {
    std::ifstream in(out / name, std::ios::binary);
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "old " + name);
  }
  EXPECT_EQ(ListFiles(out / "clip_text_tiny-sd1.onnx"), (std::vector<std::string>{"keep"}));
}

// Starts `sdonnx convert MODEL OUT` in a child process, with its stderr
// written to `stderr_path` when one is given.
pid_t StartConvert(const fs::path& model, const fs::path& out, const fs::path& stderr_path = {}) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (!stderr_path.empty()) {
      const int fd = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd < 0 || ::dup2(fd, STDERR_FILENO) < 0) ::_exit(126);
    }
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

// Whether a staging folder in `dir` holds a file with data (not only its
// empty lock file).
bool StagingHoldsData(const fs::path& dir) {
  std::error_code ec;
  for (const std::string& name : ListFiles(dir)) {
    if (!name.starts_with(".sdonnx-staging-")) continue;
    for (fs::recursive_directory_iterator it(dir / name, ec), end; !ec && it != end;
         it.increment(ec)) {
      if (it->is_regular_file(ec) && it->file_size(ec) > 0) return true;
    }
  }
  return false;
}

// `sdonnx convert -v MODEL OUT | head` with nothing read: a closed pipe on
// stdout and stderr must not kill the run halfway. The run finishes its
// files and exits 1, because its printed report was lost.
TEST(CrashSafety, ClosedOutputPipeLetsConvertFinish) {
  TempDir dir;
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ::close(fds[0]);
  const std::string model = Fixture("tiny/tiny-sd1.safetensors").string();
  const std::string out = (dir / "out").string();
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::dup2(fds[1], STDOUT_FILENO) < 0 || ::dup2(fds[1], STDERR_FILENO) < 0) ::_exit(126);
    ::execl(SDONNX_BINARY, SDONNX_BINARY, "convert", "-v", model.c_str(), out.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_TRUE(fs::is_regular_file(dir / "out" / "unet_tiny-sd1.onnx"));
  EXPECT_TRUE(fs::is_regular_file(dir / "out" / "extras_tiny-sd1.safetensors"));
  EXPECT_FALSE(HasStagingFolder(dir / "out"));
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
  const fs::path errors = dir_->path() / ("stderr-" + std::to_string(signal_number));
  const pid_t pid = StartConvert(dir_->path() / "big.safetensors", out, errors);
  ASSERT_GT(pid, 0);

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool staged = false;
  while (!staged && std::chrono::steady_clock::now() < deadline) {
    staged = StagingHoldsData(out);
    if (!staged) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(pid, signal_number);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);

  ASSERT_TRUE(staged) << "no data appeared in a staging folder within 60 s";
  ASSERT_TRUE(WIFEXITED(status)) << "the run ended by a signal, not through its handler";
  EXPECT_EQ(WEXITSTATUS(status), 128 + signal_number);
  EXPECT_TRUE(ListFiles(out).empty());
  std::ifstream in(errors);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string expected = signal_number == SIGINT   ? "interrupted (SIGINT)"
                               : signal_number == SIGHUP ? "hung up (SIGHUP)"
                                                         : "terminated (SIGTERM)";
  EXPECT_NE(text.find(expected + "; unfinished outputs were removed"), std::string::npos) << text;
}

INSTANTIATE_TEST_SUITE_P(Signals, CrashSafetySignal, ::testing::Values(SIGINT, SIGTERM, SIGHUP),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == SIGINT   ? std::string("Sigint")
                                  : info.param == SIGHUP ? std::string("Sighup")
                                                         : std::string("Sigterm");
                         });

// The signal watcher prints "unfinished outputs were removed" only when the
// removal found something, so a signal after the outputs were complete
// does not claim a removal. Each case runs in a child process, because the
// removal stops later temporaries in the process that runs it.
TEST(SignalRemoval, CountsOnlyWhatWasUnfinished) {
  TempDir dir;
  // An empty registered folder stands for a staging folder whose files were
  // all moved into place.
  auto removed_in_child = [&](bool register_file, bool register_empty_folder = false) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      if (register_empty_folder) {
        std::string pattern = (dir / "staging.XXXXXX").string();
        if (CreateRegisteredTemporaryFolder(&pattern) != 0) ::_exit(100);
      }
      if (register_file) {
        std::string pattern = (dir / "partial.XXXXXX").string();
        const int fd = CreateRegisteredTemporaryFile(&pattern);
        if (fd < 0 || ::write(fd, "x", 1) != 1) ::_exit(100);
        ::close(fd);
      }
      ::_exit(RemoveRegisteredTemporaries());
    }
    int status = 0;
    EXPECT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status));
    return WEXITSTATUS(status);
  };
  EXPECT_EQ(removed_in_child(false), 0);
  EXPECT_EQ(removed_in_child(true), 1);
  EXPECT_EQ(removed_in_child(false, true), 0);
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

// Starts sdonnx with `arguments` as a child process and returns its pid.
// SDONNX_TEST_MOVE_PAUSE_MS=`pause_ms` makes it sleep after each file it
// moves into place, so that a signal can arrive in the middle of the moves.
// With `quiet`, its output goes to /dev/null.
pid_t StartSdonnxWithMovePause(const std::vector<std::string>& arguments, int pause_ms,
                               bool quiet = false) {
  std::vector<std::string> argv_text = {SDONNX_BINARY};
  argv_text.insert(argv_text.end(), arguments.begin(), arguments.end());
  std::vector<std::string> env_text = {"SDONNX_TEST_MOVE_PAUSE_MS=" + std::to_string(pause_ms)};
  for (char** entry = environ; *entry != nullptr; ++entry) env_text.emplace_back(*entry);
  // Built before fork(): the child may only call async-signal-safe functions.
  std::vector<char*> argv;
  for (std::string& text : argv_text) argv.push_back(text.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (std::string& text : env_text) envp.push_back(text.data());
  envp.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null_fd = quiet ? ::open("/dev/null", O_WRONLY) : -1;
    if (null_fd >= 0) {
      ::dup2(null_fd, STDOUT_FILENO);
      ::dup2(null_fd, STDERR_FILENO);
    }
    ::execve(SDONNX_BINARY, argv.data(), envp.data());
    ::_exit(127);
  }
  return pid;
}

// Waits up to 60 s for a file in `dir` whose name does not start with '.',
// that is, one that has been moved into place.
bool WaitForVisibleFile(const fs::path& dir) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    for (const std::string& name : ListFiles(dir)) {
      if (!name.starts_with(".")) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A signal while finished files are moved into place. The tiny SD 1.x model
// is converted once: its files are what an uninterrupted convert writes,
// and generate reads them.
class CrashSafetyMove : public ::testing::TestWithParam<int> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    ConvertOptions options;
    options.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
    options.output_dir = (dir_->path() / "model").string();
    Result<ConvertReport> report = ConvertCheckpoint(options);
    ASSERT_TRUE(report.ok()) << report.status().message();
  }
  static void TearDownTestSuite() { delete dir_; }

  // Sends the test's signal once `out` has a file in place, waits for the
  // run and checks that it exited through the signal watcher.
  static void SignalOnFirstFile(pid_t pid, const fs::path& out) {
    ASSERT_GT(pid, 0);
    const bool visible = WaitForVisibleFile(out);
    ::kill(pid, GetParam());
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(visible) << "no output file appeared within 60 s";
    ASSERT_TRUE(WIFEXITED(status)) << "the run ended by a signal, not through its handler";
    EXPECT_EQ(WEXITSTATUS(status), 128 + GetParam());
  }

  static TempDir* dir_;
};

TempDir* CrashSafetyMove::dir_ = nullptr;

TEST_P(CrashSafetyMove, ConvertKeepsEveryFile) {
  const fs::path out = dir_->path() / ("convert-" + std::to_string(GetParam()));
  fs::create_directories(out);
  SignalOnFirstFile(
      StartSdonnxWithMovePause(
          {"convert", Fixture("tiny/tiny-sd1.safetensors").string(), out.string()}, 200),
      out);
  const fs::path reference = dir_->path() / "model";
  ASSERT_EQ(ListFiles(out), ListFiles(reference));
  for (const std::string& name : ListFiles(reference)) {
    EXPECT_EQ(ReadText(out / name), ReadText(reference / name)) << name;
  }
}

TEST_P(CrashSafetyMove, GenerateKeepsEveryImage) {
  const fs::path out = dir_->path() / ("generate-" + std::to_string(GetParam()));
  fs::create_directories(out);
  SignalOnFirstFile(
      StartSdonnxWithMovePause(
          {"generate", "--model", (dir_->path() / "model").string(), "--prompt", "fox", "--steps",
           "1", "--width", "32", "--height", "32", "--threads", "1", "--batch-size", "3",
           "--tokenizer", Fixture("clip/bpe_simple_vocab_16e6.txt.gz").string(), "--output",
           (out / "fox.png").string()},
          200),
      out);
  const std::vector<std::string> names = ListFiles(out);
  ASSERT_EQ(names.size(), 3u);
  for (const std::string& name : names) {
    EXPECT_FALSE(name.starts_with(".")) << name;
    EXPECT_TRUE(ReadText(out / name).starts_with("\x89PNG")) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Signals, CrashSafetyMove, ::testing::Values(SIGINT, SIGTERM),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == SIGINT ? std::string("Sigint")
                                                       : std::string("Sigterm");
                         });

// Converts the tiny SD 1.x checkpoint into `out` in this process.
Status ConvertTiny(const fs::path& out) {
  ConvertOptions options;
  options.model_path = Fixture("tiny/tiny-sd1.safetensors").string();
  options.output_dir = out.string();
  return ConvertCheckpoint(options).status();
}

// Names in `dir` that a finished or interrupted run must not leave: its
// temporaries and the folders that keep replaced files.
std::vector<std::string> LeftOverTemporaries(const fs::path& dir) {
  std::vector<std::string> left;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.find(".sdonnx-") != std::string::npos) left.push_back(name);
  }
  return left;
}

// Signals at random moments early in a run, when rebuild and extract create
// their temporaries. A temporary that exists but is not registered when the
// signal watcher runs, or that is created after it, would be left behind.
TEST(CrashSafetyEarlySignal, RebuildAndExtractLeaveNoTemporaries) {
  TempDir dir;
  const fs::path model = dir / "model";
  ASSERT_TRUE(ConvertTiny(model).ok());
  // A whole run takes about 100 ms (rebuild) or 30 ms (extract) here, and
  // the delays cover its first part, where the temporaries are created.
  std::mt19937 random(12345);
  std::uniform_int_distribution<int> rebuild_delay_us(0, 60000);
  std::uniform_int_distribution<int> extract_delay_us(0, 30000);
  int interrupted = 0;
  for (int run = 0; run < 40; ++run) {
    const bool rebuild = run % 2 == 0;
    const fs::path out = dir / ("early-" + std::to_string(run));
    fs::create_directories(out);
    const std::vector<std::string> arguments =
        rebuild ? std::vector<std::string>{"rebuild", model.string(), "-o",
                                           (out / "r.safetensors").string()}
                : std::vector<std::string>{"extract", (model / "unet_tiny-sd1.onnx").string(),
                                           (out / "e.safetensors").string()};
    const pid_t pid = StartSdonnxWithMovePause(arguments, 0, /*quiet=*/true);
    ASSERT_GT(pid, 0);
    const int delay = rebuild ? rebuild_delay_us(random) : extract_delay_us(random);
    std::this_thread::sleep_for(std::chrono::microseconds(delay));
    const int signal_number = run % 4 < 2 ? SIGTERM : SIGINT;
    ::kill(pid, signal_number);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    SCOPED_TRACE(arguments.front() + " run " + std::to_string(run));
    // Before the watcher starts, the default action ends the run; that
    // happens before anything is created.
    EXPECT_TRUE(WIFEXITED(status) || WIFSIGNALED(status));
    if (WIFSIGNALED(status) || WEXITSTATUS(status) == 128 + signal_number) ++interrupted;
    EXPECT_EQ(LeftOverTemporaries(out), std::vector<std::string>{});
  }
  EXPECT_GT(interrupted, 0) << "every run finished before its signal";
}

// Copies the tiny SD 1.x checkpoint into `dir` under its own name, with one
// low mantissa bit of a late tensor element flipped, so that a convert of
// the copy writes the same output names with other contents.
fs::path AlteredCopy(const fs::path& dir) {
  fs::create_directories(dir);
  const fs::path copy = dir / "tiny-sd1.safetensors";
  std::string bytes = ReadText(Fixture("tiny/tiny-sd1.safetensors"));
  // The lowest byte of a float16 or float32 element, stored little-endian.
  bytes[bytes.size() - 4] = static_cast<char>(bytes[bytes.size() - 4] ^ 1);
  testing::WriteBytes(copy, bytes);
  // The tiny model's head count comes from the YAML beside it.
  fs::copy_file(Fixture("tiny/tiny-sd1.yaml"), dir / "tiny-sd1.yaml");
  return copy;
}

// Returns the names in `dir` that do not start with '.', with their contents.
std::map<std::string, std::string> VisibleFiles(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const std::string& name : ListFiles(dir)) {
    if (!name.starts_with(".")) files[name] = ReadText(dir / name);
  }
  return files;
}

// A file that another run writes while convert moves its set into place
// fails the set without --force, and the other run's file is kept.
TEST(CrashSafetyOverlap, FileWrittenDuringMovesIsKept) {
  TempDir dir;
  const fs::path out = dir / "out";
  fs::create_directories(out);
  // convert moves the extras file first and vae_decoder third; the pause
  // after each rename leaves time to write vae_decoder in between.
  const pid_t pid = StartSdonnxWithMovePause(
      {"convert", Fixture("tiny/tiny-sd1.safetensors").string(), out.string()}, 300,
      /*quiet=*/true);
  ASSERT_GT(pid, 0);
  const bool visible = WaitForVisibleFile(out);
  testing::WriteBytes(out / "vae_decoder_tiny-sd1.onnx", "another run's file");
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(visible) << "no output file appeared within 60 s";
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_EQ(ListFiles(out), (std::vector<std::string>{"vae_decoder_tiny-sd1.onnx"}));
  EXPECT_EQ(ReadText(out / "vae_decoder_tiny-sd1.onnx"), "another run's file");
}

// Two converts of different checkpoints with the same output names, started
// together without --force: one of them writes its whole set, and the other
// fails, whether it finds the first run's files at its start or during its
// moves.
TEST(CrashSafetyOverlap, TwoConvertsKeepOneWholeSet) {
  TempDir dir;
  const fs::path first_model = Fixture("tiny/tiny-sd1.safetensors");
  const fs::path second_model = AlteredCopy(dir / "alt");
  std::map<std::string, std::string> expected[2];
  for (int i = 0; i < 2; ++i) {
    ConvertOptions options;
    options.model_path = (i == 0 ? first_model : second_model).string();
    options.output_dir = (dir / ("reference-" + std::to_string(i))).string();
    const Status converted = ConvertCheckpoint(options).status();
    ASSERT_TRUE(converted.ok()) << converted.message();
    expected[i] = VisibleFiles(options.output_dir);
  }
  ASSERT_NE(expected[0], expected[1]);

  const fs::path out = dir / "out";
  const std::string script = "export SDONNX_TEST_MOVE_PAUSE_MS=50\n" + std::string(SDONNX_BINARY) +
                             " " + ConvertArguments(first_model, out) + " >" +
                             Quote(dir / "first.log") + " 2>&1 &\n" + "first=$!\n" + SDONNX_BINARY +
                             " " + ConvertArguments(second_model, out) + " >" +
                             Quote(dir / "second.log") + " 2>&1 &\n" + "second=$!\n" +
                             "wait $first; echo \"first=$?\"\nwait $second; echo \"second=$?\"\n";
  testing::WriteBytes(dir / "run.sh", script);
  const CommandResult r = testing::RunCommand("sh " + Quote(dir / "run.sh"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const bool first_won = Contains(r.output, "first=0");
  const bool second_won = Contains(r.output, "second=0");
  ASSERT_NE(first_won, second_won) << r.output;
  EXPECT_TRUE(Contains(r.output, first_won ? "second=1" : "first=1")) << r.output;
  const std::string loser_log = ReadText(dir / (first_won ? "second.log" : "first.log"));
  EXPECT_TRUE(Contains(loser_log, ": already exists")) << loser_log;
  EXPECT_TRUE(Contains(loser_log, "pass --force to overwrite it")) << loser_log;
  EXPECT_EQ(VisibleFiles(out), expected[first_won ? 0 : 1]);
  EXPECT_EQ(LeftOverTemporaries(out), std::vector<std::string>{});
}

// A --force run killed with SIGKILL during its moves leaves the files it
// kept aside in .NAME.sdonnx-old-XXXXXX folders. The next run that writes
// the same names removes them and logs each one.
TEST(CrashSafetyKill, NextRunRemovesKeptAsideFiles) {
  TempDir dir;
  const fs::path out = dir / "out";
  ASSERT_TRUE(ConvertTiny(out).ok());

  const fs::path model = Fixture("tiny/tiny-sd1.safetensors");
  const pid_t pid = StartSdonnxWithMovePause({"convert", model.string(), out.string(), "--force"},
                                             300, /*quiet=*/true);
  ASSERT_GT(pid, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::vector<std::string> kept;
  while (kept.empty() && std::chrono::steady_clock::now() < deadline) {
    for (const std::string& name : ListFiles(out)) {
      if (Contains(name, ".sdonnx-old-")) kept.push_back(name);
    }
    if (kept.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_FALSE(kept.empty()) << "no kept-aside folder appeared within 60 s";
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before SIGKILL arrived";
  EXPECT_EQ(WTERMSIG(status), SIGKILL);

  const CommandResult r = RunSdonnx(ConvertArguments(model, out) + " --force");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const std::string& name : kept) {
    EXPECT_TRUE(Contains(r.output, "removed " + (out / name).string() + " (")) << r.output;
  }
  EXPECT_TRUE(Contains(r.output, " bytes), a temporary left by an earlier sdonnx run")) << r.output;
  EXPECT_EQ(LeftOverTemporaries(out), std::vector<std::string>{});
}

}  // namespace
}  // namespace sdonnx
