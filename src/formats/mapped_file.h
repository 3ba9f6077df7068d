// A read-only memory map of a whole file. The file is opened with O_RDONLY and
// mapped PROT_READ | MAP_PRIVATE, so nothing sdonnx does can modify the source
// checkpoint.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "util/status.h"

namespace sdonnx {

class MappedFile {
 public:
  static Result<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  std::span<const std::uint8_t> bytes() const { return {data_, size_}; }
  std::size_t size() const { return size_; }
  // The read-only descriptor the file was mapped from; it stays open so
  // that byte ranges can be copied in the kernel (copy_file_range).
  int fd() const { return fd_; }

  // Tells the kernel that [offset, offset + length) will be read soon, or is
  // no longer needed, so streaming a large file keeps the page cache share of
  // the resident set small.
  void WillNeed(std::size_t offset, std::size_t length) const;
  void DontNeed(std::size_t offset, std::size_t length) const;

 private:
  MappedFile(std::string path, int fd, const std::uint8_t* data, std::size_t size)
      : path_(std::move(path)), fd_(fd), data_(data), size_(size) {}
  std::string path_;
  int fd_ = -1;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace sdonnx
