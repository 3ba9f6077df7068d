#include "formats/sniff.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <vector>

#include "formats/safetensors.h"
#include "formats/torch_checkpoint.h"
#include "util/regular_file.h"

namespace sdonnx {
namespace {

constexpr std::size_t kSniffBytes = 4096;

std::string_view AsText(std::span<const std::uint8_t> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

bool StartsWithText(std::span<const std::uint8_t> bytes, std::string_view prefix) {
  return AsText(bytes).starts_with(prefix);
}

bool LooksLikeSafetensors(std::span<const std::uint8_t> bytes) {
  if (bytes.size() < 9) return false;
  std::uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | bytes[i];
  return header_length >= 2 && header_length <= kMaxHeaderBytes && bytes[8] == '{';
}

// An HTML page, after an optional UTF-8 byte order mark and white space.
bool LooksLikeHtml(std::span<const std::uint8_t> bytes) {
  std::string_view text = AsText(bytes.first(std::min<std::size_t>(bytes.size(), 512)));
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  std::string lower(text.substr(0, 16));
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lower.starts_with("<!doctype html") || lower.starts_with("<html") ||
         lower.starts_with("<head") || lower.starts_with("<body");
}

// protobuf writes fields in field-number order, so a serialized ModelProto
// starts with ir_version (field 1, varint: tag 0x08), a small number, and
// then the tag of another ModelProto field.
bool LooksLikeOnnx(std::span<const std::uint8_t> bytes) {
  if (bytes.size() < 3 || bytes[0] != 0x08) return false;
  const std::uint8_t ir_version = bytes[1];
  if (ir_version < 1 || ir_version > 0x7f) return false;
  constexpr std::uint8_t kNextTags[] = {
      0x12,  // producer_name
      0x1a,  // producer_version
      0x22,  // domain
      0x28,  // model_version
      0x32,  // doc_string
      0x3a,  // graph
      0x42,  // opset_import
      0x72,  // metadata_props
  };
  return std::find(std::begin(kNextTags), std::end(kNextTags), bytes[2]) != std::end(kNextTags);
}

}  // namespace

std::string FileFormatName(FileFormat format) {
  switch (format) {
    case FileFormat::kEmpty: return "empty file";
    case FileFormat::kSafetensors: return "safetensors";
    case FileFormat::kTorchZip: return "PyTorch zip checkpoint";
    case FileFormat::kZip: return "zip archive (not a PyTorch checkpoint)";
    case FileFormat::kTorchLegacy: return "PyTorch legacy checkpoint";
    case FileFormat::kPickle: return "Python pickle (not a PyTorch checkpoint)";
    case FileFormat::kGitLfsPointer: return "Git LFS pointer";
    case FileFormat::kHtml: return "HTML page";
    case FileFormat::kOnnx: return "ONNX model";
    case FileFormat::kUnknown: return "unknown format";
  }
  return "unknown format";
}

std::string FileFormatId(FileFormat format) {
  switch (format) {
    case FileFormat::kEmpty: return "empty";
    case FileFormat::kSafetensors: return "safetensors";
    case FileFormat::kTorchZip: return "torch-zip";
    case FileFormat::kZip: return "zip";
    case FileFormat::kTorchLegacy: return "torch-legacy";
    case FileFormat::kPickle: return "pickle";
    case FileFormat::kGitLfsPointer: return "git-lfs-pointer";
    case FileFormat::kHtml: return "html";
    case FileFormat::kOnnx: return "onnx";
    case FileFormat::kUnknown: return "unknown";
  }
  return "unknown";
}

FileFormat SniffFormat(std::span<const std::uint8_t> bytes) {
  if (bytes.empty()) return FileFormat::kEmpty;
  if (StartsWithText(bytes, "version https://git-lfs.github.com/spec/")) {
    return FileFormat::kGitLfsPointer;
  }
  if (LooksLikeTorchCheckpoint(bytes)) {
    return StartsWithText(bytes, "PK") ? FileFormat::kTorchZip : FileFormat::kTorchLegacy;
  }
  if (StartsWithText(bytes, "PK\x03\x04") || StartsWithText(bytes, std::string_view("PK\x05\x06", 4))) {
    return FileFormat::kZip;
  }
  if (LooksLikeSafetensors(bytes)) return FileFormat::kSafetensors;
  // PROTO opcode with a protocol from 2 to 5.
  if (bytes.size() >= 2 && bytes[0] == 0x80 && bytes[1] >= 2 && bytes[1] <= 5) {
    return FileFormat::kPickle;
  }
  if (LooksLikeHtml(bytes)) return FileFormat::kHtml;
  if (LooksLikeOnnx(bytes)) return FileFormat::kOnnx;
  return FileFormat::kUnknown;
}

Result<FileFormat> SniffFile(const std::string& path) {
  SDONNX_RETURN_IF_ERROR(CheckRegularFile(path));
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return Status::Error(path + ": cannot open: " + std::strerror(errno));
  std::vector<std::uint8_t> head(kSniffBytes);
  std::size_t filled = 0;
  while (filled < head.size()) {
    const ssize_t n = ::read(fd, head.data() + filled, head.size() - filled);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string reason = std::strerror(errno);
      ::close(fd);
      return Status::Error(path + ": cannot read: " + reason);
    }
    if (n == 0) break;
    filled += static_cast<std::size_t>(n);
  }
  ::close(fd);
  head.resize(filled);
  return SniffFormat(head);
}

std::string NotACheckpointAdvice(FileFormat format) {
  switch (format) {
    case FileFormat::kEmpty:
      return "it has 0 bytes; the download or copy did not finish, so fetch the "
             "file again";
    case FileFormat::kZip:
      return "this is a zip archive but not a PyTorch checkpoint (it has no data.pkl record); "
             "unpack it and pass the .safetensors or .ckpt file inside";
    case FileFormat::kPickle:
      return "this is a Python pickle but not a torch.save checkpoint; only torch.save files "
             "(zip or legacy) are read";
    case FileFormat::kGitLfsPointer:
      return "this is a Git LFS pointer, a small text file that stands for the model, not the "
             "model itself; run `git lfs pull` in the repository, or download the file itself";
    case FileFormat::kHtml:
      return "this is an HTML page, not a model; the download saved a web page (often a login "
             "or confirmation page), so download the file itself, with a direct link or an "
             "access token";
    case FileFormat::kOnnx:
      return "run `sdonnx inspect` on it, or `sdonnx verify` on the folder of its export";
    case FileFormat::kSafetensors:
    case FileFormat::kTorchZip:
    case FileFormat::kTorchLegacy:
    case FileFormat::kUnknown:
      return "";
  }
  return "";
}

}  // namespace sdonnx
