#include "formats/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace sdonnx {
namespace {

std::size_t PageFloor(std::size_t offset) {
  static const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return offset - offset % page;
}

}  // namespace

Result<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  // O_NONBLOCK keeps open() from waiting for a writer if the path is a
  // named pipe; reads of regular files ignore it.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    return Status::Error(path + ": cannot open for reading: " + std::strerror(errno));
  }
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    int err = errno;
    ::close(fd);
    return Status::Error(path + ": cannot stat: " + std::strerror(err));
  }
  if (!S_ISREG(info.st_mode)) {
    ::close(fd);
    return Status::Error(path + (S_ISDIR(info.st_mode) ? ": is a folder" : ": not a regular file") +
                         "; pass the path of a model file");
  }
  const auto size = static_cast<std::size_t>(info.st_size);
  const std::uint8_t* data = nullptr;
  if (size > 0) {
    void* mapped = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapped == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      return Status::Error(path + ": cannot memory-map " + std::to_string(size) +
                           " bytes: " + std::strerror(err));
    }
    data = static_cast<const std::uint8_t*>(mapped);
  }
  return std::unique_ptr<MappedFile>(new MappedFile(path, fd, data, size));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<std::uint8_t*>(data_), size_);
  if (fd_ >= 0) ::close(fd_);
}

void MappedFile::WillNeed(std::size_t offset, std::size_t length) const {
  if (data_ == nullptr || offset >= size_) return;
  const std::size_t start = PageFloor(offset);
  ::madvise(const_cast<std::uint8_t*>(data_) + start, offset + length - start, MADV_WILLNEED);
}

void MappedFile::DontNeed(std::size_t offset, std::size_t length) const {
  if (data_ == nullptr || offset >= size_) return;
  const std::size_t start = PageFloor(offset);
  ::madvise(const_cast<std::uint8_t*>(data_) + start, offset + length - start, MADV_DONTNEED);
}

}  // namespace sdonnx
