// rebuild's checks before its output appears, and the cleanup of what a
// killed or failed run leaves. rebuild checks the file hash before the
// rename, names the file that contains a damaged tensor and validates the
// source format. Stale staging folders and temporaries of killed runs are
// removed, and so are the folders created for an output that failed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <random>
#include <thread>

#include "convert/convert.h"
#include "formats/onnx_file.h"
#include "formats/safetensors.h"
#include "model/synthesize.h"
#include "rebuild/rebuild.h"
#include "test_support.h"
#include "util/log.h"
#include "util/sha256.h"
#include "util/temporaries.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::EditMetadata;
using testing::Fixture;
using testing::ListFiles;
using testing::Quote;
using testing::RunSdonnx;
using testing::RebuildFolder;
using testing::TempDir;
using testing::WarningLog;

bool Contains(const std::string& text, const std::string& fragment) {
  return text.find(fragment) != std::string::npos;
}

std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

Status Convert(const fs::path& model, const fs::path& out,
               ExternalData external = ExternalData::kAuto) {
  ConvertOptions options;
  options.model_path = model.string();
  options.output_dir = out.string();
  options.config_path = Fixture("tiny/tiny-sd1.yaml").string();
  options.external_data = external;
  return ConvertCheckpoint(options).status();
}

// Replaces the first `from` in `text` with `to`, which has the same length.
void ReplaceOnce(std::string* text, const std::string& from, const std::string& to) {
  const std::size_t at = text->find(from);
  ASSERT_NE(at, std::string::npos) << from;
  text->replace(at, from.size(), to);
}

// Edits the source's "format" metadata from "pt" to "tf" alike in the
// recorded header and the recorded metadata, so that the header still fits
// the tensors and only the file hash shows the edit.
void EditRecordedFormat(const fs::path& extras) {
  EditMetadata(extras, [](std::map<std::string, std::string>& m) {
    ReplaceOnce(&m.at("sdonnx.source_header"), R"("format":"pt")", R"("format":"tf")");
    ReplaceOnce(&m.at("sdonnx.source_metadata"), R"("format":"pt")", R"("format":"tf")");
  });
}

// Names in `dir` of sdonnx's temporaries: staging folders, AtomicFile
// temporaries and the folders that keep replaced files.
std::vector<std::string> Temporaries(const fs::path& dir) {
  std::vector<std::string> left;
  for (const std::string& name : ListFiles(dir)) {
    if (Contains(name, ".sdonnx-")) left.push_back(name);
  }
  return left;
}

TEST(RebuildHash, EditedHeaderAndMetadataIsRejected) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx").ok());
  const fs::path extras = dir / "onnx" / "extras_tiny-sd1.safetensors";
  ASSERT_NO_FATAL_FAILURE(EditRecordedFormat(extras));
  std::string expected_sha;
  {
    auto file = SafetensorsFile::Open(extras.string());
    ASSERT_TRUE(file.ok()) << file.status().message();
    expected_sha = (*file)->metadata().at("sdonnx.source_sha256");
  }

  const auto result = RunSdonnx("rebuild " + Quote(dir / "onnx") + " -o " +
                                Quote(dir / "rebuilt.safetensors"));
  EXPECT_NE(result.exit_code, 0) << result.output;
  EXPECT_TRUE(Contains(result.output, extras.string())) << result.output;
  EXPECT_TRUE(Contains(result.output, "the rebuilt file's SHA-256 is ")) << result.output;
  EXPECT_TRUE(Contains(result.output, "but the source's (sdonnx.source_sha256) is " +
                                          expected_sha))
      << result.output;
  EXPECT_TRUE(Contains(result.output, "edited or damaged")) << result.output;
  EXPECT_TRUE(Contains(result.output, "Convert the checkpoint again")) << result.output;
  EXPECT_FALSE(fs::exists(dir / "rebuilt.safetensors"));
  EXPECT_EQ(Temporaries(dir.path()), std::vector<std::string>{});
}

TEST(RebuildHash, AllowPartialWritesMismatchWithWarning) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx").ok());
  ASSERT_NO_FATAL_FAILURE(EditRecordedFormat(dir / "onnx" / "extras_tiny-sd1.safetensors"));
  WarningLog warnings;
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors", /*allow_partial=*/true);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_FALSE(report->file_identical);
  EXPECT_TRUE(report->partial);
  EXPECT_EQ(report->output_sha256.size(), 64u);
  EXPECT_NE(report->output_sha256, report->source_sha256);
  EXPECT_TRUE(Contains(warnings.text(), "--allow-partial was given")) << warnings.text();
  EXPECT_TRUE(Contains(warnings.text(), "marked partial")) << warnings.text();
  auto rebuilt = SafetensorsFile::Open((dir / "rebuilt.safetensors").string());
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status().message();
  const auto& metadata = (*rebuilt)->metadata();
  EXPECT_EQ(metadata.at("format"), "tf");
  EXPECT_EQ(metadata.at("sdonnx.rebuild"), "partial");
  EXPECT_EQ(metadata.at("sdonnx.rebuild_omitted_tensors"), "0");
  EXPECT_EQ(metadata.at("sdonnx.rebuild_file_sha256_differs"), "true");
  const std::string written = ReadText(dir / "rebuilt.safetensors");
  EXPECT_EQ(report->output_sha256,
            Sha256Hex({reinterpret_cast<const std::uint8_t*>(written.data()), written.size()}));
  EXPECT_EQ(Temporaries(dir.path()), std::vector<std::string>{});
  const auto result = RunSdonnx("verify " + Quote(dir / "rebuilt.safetensors"));
  EXPECT_TRUE(Contains(result.output, "partial")) << result.output;
  EXPECT_TRUE(Contains(result.output, "sdonnx.rebuild_file_sha256_differs")) << result.output;
}

TEST(RebuildHash, ReportsWrittenFileHash) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx").ok());
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors");
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_TRUE(report->file_identical);
  EXPECT_EQ(report->output_sha256, report->source_sha256);
  EXPECT_EQ(report->bytes, fs::file_size(Fixture("tiny/tiny-sd1.safetensors")));
}

// Copies tiny-sd1 into `dir` with `trailing` bytes appended after the last
// tensor, which the export does not keep, and converts it into dir/onnx.
fs::path ConvertWithTrailingBytes(const fs::path& dir, const std::string& trailing) {
  const fs::path source = dir / "tiny-sd1.safetensors";
  fs::copy_file(Fixture("tiny/tiny-sd1.safetensors"), source);
  std::ofstream(source, std::ios::binary | std::ios::app) << trailing;
  EXPECT_TRUE(Convert(source, dir / "onnx").ok());
  return source;
}

TEST(RebuildHash, BytesOutsideTensorsAreNamed) {
  TempDir dir;
  ConvertWithTrailingBytes(dir.path(), "JUNKJUNK");
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors");
  ASSERT_FALSE(report.ok());
  const std::string message = report.status().message();
  EXPECT_TRUE(Contains(message, "The source had 8 bytes outside its header and tensors"))
      << message;
  EXPECT_TRUE(Contains(message, "pass --allow-partial")) << message;
  EXPECT_FALSE(fs::exists(dir / "rebuilt.safetensors"));

  WarningLog warnings;
  report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors", /*allow_partial=*/true);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_FALSE(report->file_identical);
  EXPECT_TRUE(Contains(warnings.text(), "8 bytes outside")) << warnings.text();
  EXPECT_TRUE(fs::exists(dir / "rebuilt.safetensors"));
}

// Overwrites the first byte of initializer `key` of the ONNX file `model`,
// wherever it is stored, and returns the file that contains it.
fs::path DamageInitializer(const fs::path& model, const std::string& key) {
  fs::path holder = model;
  std::uint64_t offset = 0;
  {
    auto file = OnnxFile::Open(model.string());
    EXPECT_TRUE(file.ok()) << file.status().message();
    const OnnxInitializer* init = (*file)->Find(key);
    EXPECT_NE(init, nullptr) << key;
    if (init == nullptr) return holder;
    if (init->storage == InitializerStorage::kExternal) {
      holder = model.parent_path() / init->location;
    }
    offset = init->offset;
  }
  std::fstream data(holder, std::ios::in | std::ios::out | std::ios::binary);
  data.seekg(static_cast<std::streamoff>(offset));
  const char old = static_cast<char>(data.get());
  data.seekp(static_cast<std::streamoff>(offset));
  data.put(static_cast<char>(old ^ 0x5a));
  return holder;
}

void ExpectDamageNamed(const std::string& message, const std::string& key,
                       const fs::path& holder) {
  EXPECT_TRUE(Contains(message, key + " (XXH3-128 digest differs")) << message;
  EXPECT_TRUE(Contains(message, "stored in " + holder.string() + " from byte ")) << message;
  EXPECT_TRUE(Contains(message, "convert the checkpoint again")) << message;
  EXPECT_TRUE(Contains(message, "--allow-partial")) << message;
  EXPECT_FALSE(Contains(message, "complete export")) << message;
}

// Converts tiny-sd1 with `external`, damages one UNet weight and checks
// that rebuild names it and `holder_name`, the file that contains it.
void ExpectDamagedWeightNamed(ExternalData external, const std::string& holder_name) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx", external).ok());
  const std::string key = "model.diffusion_model.out.2.bias";
  const fs::path holder = DamageInitializer(dir / "onnx" / "unet_tiny-sd1.onnx", key);
  EXPECT_EQ(holder.filename(), holder_name);
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors");
  ASSERT_FALSE(report.ok());
  ExpectDamageNamed(report.status().message(), key, holder);
}

TEST(RebuildMessages, DamagedExternalDataIsNamed) {
  ExpectDamagedWeightNamed(ExternalData::kAlways, "unet_tiny-sd1.onnx.data");
}

TEST(RebuildMessages, DamagedInlineWeightNamesOnnxFile) {
  ExpectDamagedWeightNamed(ExternalData::kNever, "unet_tiny-sd1.onnx");
}

TEST(RebuildMessages, MissingComponentAdvisesCompleteExport) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx").ok());
  fs::remove(dir / "onnx" / "vae_decoder_tiny-sd1.onnx");
  auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors");
  ASSERT_FALSE(report.ok());
  const std::string message = report.status().message();
  EXPECT_TRUE(Contains(message, "Give the complete export")) << message;
  EXPECT_FALSE(Contains(message, "convert the checkpoint again")) << message;
}

TEST(RebuildRecord, UnknownSourceFormatIsRejected) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx").ok());
  const fs::path extras = dir / "onnx" / "extras_tiny-sd1.safetensors";
  for (const std::string value : {"pickle", "", "SAFETENSORS"}) {
    SCOPED_TRACE("'" + value + "'");
    ASSERT_NO_FATAL_FAILURE(EditMetadata(
        extras, [&value](std::map<std::string, std::string>& m) {
          m["sdonnx.source_format"] = value;
        }));
    auto report = RebuildFolder(dir / "onnx", dir / "rebuilt.safetensors", /*allow_partial=*/true);
    ASSERT_FALSE(report.ok());
    const std::string message = report.status().message();
    EXPECT_TRUE(Contains(message, extras.string())) << message;
    EXPECT_TRUE(Contains(message, "'sdonnx.source_format' is '" + value + "'")) << message;
    EXPECT_TRUE(Contains(message, "'safetensors' or 'ckpt'")) << message;
    EXPECT_FALSE(fs::exists(dir / "rebuilt.safetensors"));
  }
}

TEST(RebuildOutput, CreatesMissingParentFolders) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx").ok());
  const fs::path output = dir / "a" / "b" / "rebuilt.safetensors";
  const auto result = RunSdonnx("rebuild " + Quote(dir / "onnx") + " -o " + Quote(output));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_TRUE(fs::is_regular_file(output));
  EXPECT_EQ(ListFiles(dir / "a" / "b"), std::vector<std::string>{"rebuilt.safetensors"});
}

TEST(RebuildOutput, FailureRemovesCreatedFolders) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx").ok());
  ASSERT_NO_FATAL_FAILURE(EditRecordedFormat(dir / "onnx" / "extras_tiny-sd1.safetensors"));
  fs::create_directories(dir / "kept");
  auto report = RebuildFolder(dir / "onnx", dir / "kept" / "a" / "b" / "rebuilt.safetensors");
  ASSERT_FALSE(report.ok());
  EXPECT_TRUE(fs::is_directory(dir / "kept"));
  EXPECT_FALSE(fs::exists(dir / "kept" / "a"));
}

TEST(RebuildOutput, ParentThatIsAFileIsRejected) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx").ok());
  testing::WriteBytes(dir / "notes.txt", "keep me");
  auto report = RebuildFolder(dir / "onnx", dir / "notes.txt" / "rebuilt.safetensors");
  ASSERT_FALSE(report.ok());
  EXPECT_TRUE(Contains(report.status().message(), "notes.txt")) << report.status().message();
  EXPECT_EQ(ListFiles(dir.path()), (std::vector<std::string>{"notes.txt", "onnx"}));
}

// A staging folder as a convert killed with SIGKILL leaves it: a partial
// file and, with `lock`, the unlocked lock file.
fs::path MakeStagingFolder(const fs::path& out, const std::string& suffix, bool lock) {
  const fs::path staging = out / (".sdonnx-staging-" + suffix);
  fs::create_directories(staging);
  testing::WriteBytes(staging / "unet_tiny-sd1.onnx", "partial");
  if (lock) testing::WriteBytes(staging / "sdonnx.lock", "");
  return staging;
}

TEST(StaleTemporaries, ConvertRemovesDeadStagingFolders) {
  TempDir out;
  const fs::path locked = MakeStagingFolder(out.path(), "dead01", /*lock=*/true);
  const fs::path unlocked = MakeStagingFolder(out.path(), "old001", /*lock=*/false);
  WarningLog warnings;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), out.path()).ok());
  EXPECT_FALSE(fs::exists(locked));
  EXPECT_FALSE(fs::exists(unlocked));
  EXPECT_TRUE(Contains(warnings.text(), "removed " + locked.string())) << warnings.text();
  EXPECT_TRUE(Contains(warnings.text(), "removed " + unlocked.string())) << warnings.text();
  EXPECT_TRUE(fs::exists(out / "unet_tiny-sd1.onnx"));
}

TEST(StaleTemporaries, ConvertKeepsLiveStagingFolder) {
  TempDir out;
  const fs::path live = MakeStagingFolder(out.path(), "live01", /*lock=*/true);
  const int lock_fd = TryLockFile(live / "sdonnx.lock");
  ASSERT_GE(lock_fd, 0);
  WarningLog warnings;
  const Status converted = Convert(Fixture("tiny/tiny-sd1.safetensors"), out.path());
  ::close(lock_fd);
  ASSERT_TRUE(converted.ok()) << converted.message();
  EXPECT_EQ(ListFiles(live), (std::vector<std::string>{"sdonnx.lock", "unet_tiny-sd1.onnx"}));
  EXPECT_FALSE(Contains(warnings.text(), "removed")) << warnings.text();
}

TEST(StaleTemporaries, RebuildRemovesDeadTemporaryOfItsOutput) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx").ok());
  fs::create_directories(dir / "out");
  const fs::path dead = dir / "out" / ".rebuilt.safetensors.sdonnx-tmp-dead01";
  const fs::path live = dir / "out" / ".rebuilt.safetensors.sdonnx-tmp-live01";
  const fs::path other = dir / "out" / ".other.safetensors.sdonnx-tmp-dead02";
  for (const fs::path& path : {dead, live, other}) testing::WriteBytes(path, "partial");
  const int lock_fd = TryLockFile(live);
  ASSERT_GE(lock_fd, 0);
  WarningLog warnings;
  auto report = RebuildFolder(dir / "onnx", dir / "out" / "rebuilt.safetensors");
  ::close(lock_fd);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(other));
  EXPECT_TRUE(Contains(warnings.text(), "removed " + dead.string())) << warnings.text();
}

// Starts `sdonnx ARGUMENTS...` with its output discarded and returns its pid.
pid_t StartSdonnx(const std::vector<std::string>& arguments) {
  std::vector<std::string> text = {SDONNX_BINARY};
  text.insert(text.end(), arguments.begin(), arguments.end());
  // Built before fork(): the child may only call async-signal-safe functions.
  std::vector<char*> argv;
  for (std::string& t : text) argv.push_back(t.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null_fd = ::open("/dev/null", O_WRONLY);
    if (null_fd >= 0) {
      ::dup2(null_fd, STDOUT_FILENO);
      ::dup2(null_fd, STDERR_FILENO);
    }
    ::execv(SDONNX_BINARY, argv.data());
    ::_exit(127);
  }
  return pid;
}

// Waits up to 60 s for a staging folder with a file besides its lock.
bool WaitForStagedFile(const fs::path& out) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(out, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.starts_with(".sdonnx-staging-") && ListFiles(entry.path()).size() > 1) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

// A synthetic SD 1.x checkpoint (UNet width 128) with sparse zero weights,
// large enough that convert is still writing when the test stops it.
class KilledConvert : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    Sd1Hyperparameters h;
    h.model_channels = 128;
    Status written = WriteSyntheticCheckpoint((dir_->path() / "big.safetensors").string(),
                                              Sd1Layout(h), FillMode::kZeros, 1);
    ASSERT_TRUE(written.ok()) << written.message();
  }
  static void TearDownTestSuite() { delete dir_; }
  static fs::path Model() { return dir_->path() / "big.safetensors"; }
  static TempDir* dir_;
};

TempDir* KilledConvert::dir_ = nullptr;

TEST_F(KilledConvert, NextConvertRemovesItsStagingFolder) {
  TempDir out;
  const pid_t pid = StartSdonnx({"convert", Model().string(), out.path().string()});
  ASSERT_GT(pid, 0);
  const bool staged = WaitForStagedFile(out.path());
  ::kill(pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(staged) << "no staged file appeared within 60 s";
  ASSERT_TRUE(WIFSIGNALED(status)) << "convert finished before SIGKILL";
  ASSERT_EQ(Temporaries(out.path()).size(), 1u);

  // The tiny checkpoint is quicker to convert; any convert into the folder
  // removes the stale staging folder.
  const auto result =
      RunSdonnx("convert " + Quote(Fixture("tiny/tiny-sd1.safetensors")) + " " + Quote(out.path()));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_TRUE(Contains(result.output, "warning: removed " + out.path().string() +
                                          "/.sdonnx-staging-"))
      << result.output;
  EXPECT_EQ(Temporaries(out.path()), std::vector<std::string>{});
  EXPECT_TRUE(fs::exists(out / "unet_tiny-sd1.onnx"));
}

TEST_F(KilledConvert, SignalRemovesCreatedFolders) {
  TempDir dir;
  const fs::path out = dir / "a" / "b" / "c";
  const pid_t pid = StartSdonnx({"convert", Model().string(), out.string()});
  ASSERT_GT(pid, 0);
  const bool staged = WaitForStagedFile(out);
  ::kill(pid, SIGINT);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(staged) << "no staged file appeared within 60 s";
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGINT);
  EXPECT_EQ(ListFiles(dir.path()), std::vector<std::string>{});
  EXPECT_FALSE(fs::exists(dir / "a"));
}

// Signals at random moments of whole rebuild runs. Each run must leave
// either no output or, only once it has renamed it into place, the finished
// file with the source's bytes.
TEST(RebuildSignal, LeavesNothingOrTheFinishedFile) {
  TempDir dir;
  ASSERT_TRUE(Convert(Fixture("tiny/tiny-sd1.safetensors"), dir / "onnx").ok());
  const std::string source = ReadText(Fixture("tiny/tiny-sd1.safetensors"));
  std::mt19937 random(2024);
  // A run took about 100 ms on a 2-core machine, so the delays of up to
  // 200 ms cover all of it there.
  std::uniform_int_distribution<int> delay_us(0, 200000);
  int interrupted = 0;
  for (int run = 0; run < 24; ++run) {
    SCOPED_TRACE("run " + std::to_string(run));
    const fs::path out = dir / ("out-" + std::to_string(run));
    fs::create_directories(out);
    const pid_t pid =
        StartSdonnx({"rebuild", (dir / "onnx").string(), "-o", (out / "r.safetensors").string()});
    ASSERT_GT(pid, 0);
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(random)));
    const int signal_number = run % 2 == 0 ? SIGINT : SIGTERM;
    ::kill(pid, signal_number);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    const bool signalled = WIFSIGNALED(status) ||
                           (WIFEXITED(status) && WEXITSTATUS(status) == 128 + signal_number);
    if (signalled) ++interrupted;
    const std::vector<std::string> left = ListFiles(out);
    if (left.empty()) {
      EXPECT_TRUE(signalled) << "a run that finished left no output";
      continue;
    }
    ASSERT_EQ(left, std::vector<std::string>{"r.safetensors"});
    EXPECT_TRUE(ReadText(out / "r.safetensors") == source) << "the output is not the source";
  }
  EXPECT_GT(interrupted, 0) << "every run finished before its signal";
}

TEST(ConvertOutput, FailureRemovesCreatedFolders) {
  TempDir dir;
  fs::create_directories(dir / "kept");
  const fs::path out = dir / "kept" / "a" / "b";
  // sdonnx ignores SIGXFSZ, so a write past `ulimit -f` fails with EFBIG.
  const auto result = RunSdonnx(
      "convert " + Quote(Fixture("tiny/tiny-sd1.safetensors")) + " " + Quote(out),
      "ulimit -f 64;");
  EXPECT_NE(result.exit_code, 0) << result.output;
  EXPECT_TRUE(Contains(result.output, "file size limit reached")) << result.output;
  EXPECT_TRUE(fs::is_directory(dir / "kept"));
  EXPECT_FALSE(fs::exists(dir / "kept" / "a"));
}

TEST(CreatedFolders, RemovesOnlyEmptyFolders) {
  TempDir dir;
  {
    auto created = CreatedFolders::Create(dir / "a" / "b");
    ASSERT_TRUE(created.ok()) << created.status().message();
    EXPECT_EQ(created->created(),
              (std::vector<std::string>{(dir / "a").string(), (dir / "a" / "b").string()}));
    testing::WriteBytes(dir / "a" / "note.txt", "another program's file");
  }
  EXPECT_TRUE(fs::exists(dir / "a" / "note.txt"));
  EXPECT_FALSE(fs::exists(dir / "a" / "b"));
}

TEST(CreatedFolders, KeepLeavesFolders) {
  TempDir dir;
  {
    auto created = CreatedFolders::Create(dir / "a" / "b");
    ASSERT_TRUE(created.ok()) << created.status().message();
    created->Keep();
  }
  EXPECT_TRUE(fs::is_directory(dir / "a" / "b"));
}

// A symlink that leads nowhere is named with where it ends, relative
// targets resolved, and a loop as a loop; nothing is created.
TEST(CreatedFolders, DanglingSymlinksAreNamedWithTheirEnd) {
  TempDir dir;
  fs::create_directories(dir / "a");
  fs::create_directory_symlink("../missing", dir / "a" / "relative");
  fs::create_directory_symlink(dir / "gone", dir / "dangling");
  fs::create_directory_symlink(dir / "dangling", dir / "chain");
  fs::create_directory_symlink(dir / "loop", dir / "loop");
  const std::vector<std::pair<fs::path, std::string>> cases = {
      {dir / "a" / "relative", "relative: is a symlink to " + (dir / "missing").string() +
                                   ", which does not exist, so nothing can be written inside "
                                   "it; create " +
                                   (dir / "missing").string() + " or give another path"},
      {dir / "chain", "chain: is a symlink to " + (dir / "gone").string() + ", which does not"},
      {dir / "loop", "loop: is a symlink loop"},
      {dir / "dangling" / "sub", "dangling: is a symlink to " + (dir / "gone").string() +
                                     ", which does not exist, so " +
                                     (dir / "dangling" / "sub").string() + " cannot be created"},
      {dir / "loop" / "sub", "loop: is a symlink loop, so"},
  };
  for (const auto& [path, expected] : cases) {
    SCOPED_TRACE(path.string());
    const auto created = CreatedFolders::Create(path);
    ASSERT_FALSE(created.ok());
    EXPECT_NE(created.status().message().find(expected), std::string::npos)
        << created.status().message();
  }
  EXPECT_FALSE(fs::exists(dir / "missing"));
  EXPECT_FALSE(fs::exists(dir / "gone"));
}

}  // namespace
}  // namespace sdonnx
