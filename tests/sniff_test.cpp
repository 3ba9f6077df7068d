// Format sniffing: files are identified by their bytes, whatever their
// extension, and files that are not checkpoints get a message that says
// what they are.
#include <gtest/gtest.h>

#include <fstream>

#include "formats/checkpoint.h"
#include "formats/sniff.h"
#include "test_support.h"

namespace sdonnx {
namespace {

using testing::Fixture;
using testing::TempDir;
using testing::WriteBytes;

FileFormat SniffText(const std::string& text) {
  return SniffFormat(std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

const char* kLfsPointer =
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4c86efd062ea772972dd068c8ff4d1b2e9a2ad0b1dc5f1a3ee4ac8d1a7b9c0aa\n"
    "size 4265146304\n";

// A zip archive with one stored record, as `zip -0` writes it.
std::string SmallZip() {
  std::string zip("PK\x03\x04", 4);
  zip += std::string("\x0a\x00\x00\x00\x00\x00", 6);  // version, flags, method: stored
  zip += std::string(16, '\0');                        // time, date, crc, sizes
  zip += std::string("\x0a\x00\x00\x00", 4);           // name length 10, no extra field
  zip += "readme.txt";
  return zip;
}

Status OpenError(const std::filesystem::path& path) {
  return Checkpoint::Open(path.string()).status();
}

TEST(Sniff, IdentifiesTheFixtures) {
  EXPECT_EQ(*SniffFile(Fixture("tiny/tiny-sd1.safetensors").string()), FileFormat::kSafetensors);
  EXPECT_EQ(*SniffFile(Fixture("ckpt/tiny-sd1.ckpt").string()), FileFormat::kTorchZip);
  EXPECT_EQ(*SniffFile(Fixture("ckpt/tiny-sd1-legacy.ckpt").string()), FileFormat::kTorchLegacy);
  EXPECT_EQ(*SniffFile(Fixture("foreign/tiny-sd1-diffusers/unet/model.onnx").string()),
            FileFormat::kOnnx);
  EXPECT_EQ(*SniffFile(Fixture("foreign/tiny-sd1-diffusers/text_encoder/model.onnx").string()),
            FileFormat::kOnnx);
}

TEST(Sniff, RecognisesFilesThatAreNotModels) {
  EXPECT_EQ(SniffText(""), FileFormat::kEmpty);
  EXPECT_EQ(SniffText(kLfsPointer), FileFormat::kGitLfsPointer);
  EXPECT_EQ(SniffText("<!DOCTYPE html>\n<html><head><title>Sign in</title>"), FileFormat::kHtml);
  EXPECT_EQ(SniffText("\xEF\xBB\xBF  \n<html lang=\"en\">"), FileFormat::kHtml);
  EXPECT_EQ(SniffText(SmallZip()), FileFormat::kZip);
  EXPECT_EQ(SniffText(std::string("\x80\x04\x95\x10\x00", 5)), FileFormat::kPickle);
  EXPECT_EQ(SniffText("random bytes that are no format at all"), FileFormat::kUnknown);
}

TEST(Sniff, TruncatedSafetensorsIsStillSafetensors) {
  const std::string bytes = ReadFile(Fixture("tiny/tiny-sd1.safetensors")).substr(0, 4096);
  EXPECT_EQ(SniffText(bytes), FileFormat::kSafetensors);
  TempDir dir;
  WriteBytes(dir / "cut.safetensors", bytes);
  const Status status = OpenError(dir / "cut.safetensors");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("truncated"), std::string::npos) << status.message();
}

TEST(Sniff, GitLfsPointerGetsAdvice) {
  TempDir dir;
  WriteBytes(dir / "model.safetensors", kLfsPointer);
  const Status status = OpenError(dir / "model.safetensors");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("Git LFS pointer"), std::string::npos) << status.message();
  EXPECT_NE(status.message().find("git lfs pull"), std::string::npos) << status.message();
  EXPECT_NE(status.message().find("model.safetensors"), std::string::npos) << status.message();
}

TEST(Sniff, HtmlPageGetsAdvice) {
  TempDir dir;
  WriteBytes(dir / "model.ckpt", "<!doctype html><html><body>Please log in</body></html>");
  const Status status = OpenError(dir / "model.ckpt");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("HTML page"), std::string::npos) << status.message();
  EXPECT_NE(status.message().find("download the file itself"), std::string::npos)
      << status.message();
}

TEST(Sniff, ZipRenamedSafetensorsIsRejected) {
  TempDir dir;
  WriteBytes(dir / "model.safetensors", SmallZip());
  const Status status = OpenError(dir / "model.safetensors");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("zip archive"), std::string::npos) << status.message();
  EXPECT_NE(status.message().find("not a PyTorch checkpoint"), std::string::npos)
      << status.message();
}

TEST(Sniff, TorchZipRenamedSafetensorsStillLoads) {
  TempDir dir;
  std::filesystem::copy_file(Fixture("ckpt/tiny-sd1.ckpt"), dir / "renamed.safetensors");
  auto checkpoint = Checkpoint::Open((dir / "renamed.safetensors").string());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  EXPECT_EQ((*checkpoint)->format(), "ckpt");
}

TEST(Sniff, EmptyFileIsRejected) {
  TempDir dir;
  WriteBytes(dir / "model.safetensors", "");
  const Status status = OpenError(dir / "model.safetensors");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("empty"), std::string::npos) << status.message();
}

TEST(Sniff, OnnxFileIsNotACheckpoint) {
  const Status status = OpenError(Fixture("foreign/tiny-sd1-diffusers/vae_decoder/model.onnx"));
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("ONNX model"), std::string::npos) << status.message();
  EXPECT_NE(status.message().find("sdonnx inspect"), std::string::npos) << status.message();
}

TEST(Sniff, RandomBytesGetTheSafetensorsError) {
  TempDir dir;
  WriteBytes(dir / "noise.bin", std::string("\x13\x57\x9b\xdf\x02\x46\x8a\xce\x11\x22\x33", 11));
  const Status status = OpenError(dir / "noise.bin");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("noise.bin"), std::string::npos) << status.message();
}

}  // namespace
}  // namespace sdonnx
