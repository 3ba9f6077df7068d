#include "util/atomic_file.h"

#include "util/output_move.h"
#include "util/temporaries.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

namespace sdonnx {
namespace {

constexpr std::uint64_t kWritebackBytes = 64ull << 20;

std::string ErrnoText(int err) {
  if (err == ENOSPC) return "no space left on the device; free some space and run again";
  if (err == EDQUOT) return "disk quota exceeded; free some space and run again";
  if (err == EFBIG) {
    return "file size limit reached (the process limit, ulimit -f, or the file system's "
           "maximum file size); raise the limit or write elsewhere";
  }
  return std::strerror(err);
}

// The message of a failed write of `length` bytes at byte `at` of `path`.
std::string WriteFailure(const std::string& path, std::uint64_t at, std::uint64_t length,
                         int err) {
  return path + ": writing " + std::to_string(length) + " bytes at byte " + std::to_string(at) +
         " failed: " + ErrnoText(err);
}

}  // namespace

Result<AtomicFile> AtomicFile::Create(const std::string& path, bool overwrite) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!overwrite && fs::exists(fs::symlink_status(path, ec))) {
    return Status::Error(path + ": already exists; pass --force to overwrite it");
  }
  fs::path target(path);
  fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) about
  // "." + std::string at -O3.
  std::string prefix = ".";
  prefix += target.filename().string();
  prefix += ".sdonnx-tmp-";
  std::string temp_path = (dir / (prefix + "XXXXXX")).string();
  // The folder lock makes the creation and the lock of the new temporary
  // one step for every other run that looks for stale temporaries here.
  const FolderLock folder_lock(dir);
  RemoveStaleTemporaries(folder_lock, dir, prefix, /*lock_name=*/"");
  const int fd = CreateRegisteredTemporaryFile(&temp_path);
  if (fd < 0) {
    return Status::Error(path + ": cannot create a temporary file in " + dir.string() + ": " +
                         std::strerror(errno));
  }
  ::fchmod(fd, 0644);
  // Without a lock (a file system without flock) the file is still written;
  // a later run then cannot tell whether it is stale and leaves it alone.
  int lock_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (lock_fd >= 0 && ::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(lock_fd);
    lock_fd = -1;
  }
  return AtomicFile(path, std::move(temp_path), fd, lock_fd, overwrite);
}

AtomicFile::AtomicFile(AtomicFile&& other) noexcept
    : path_(std::move(other.path_)),
      temp_path_(std::move(other.temp_path_)),
      fd_(other.fd_),
      lock_fd_(other.lock_fd_),
      overwrite_(other.overwrite_),
      hasher_(std::move(other.hasher_)),
      committed_(other.committed_),
      written_(other.written_),
      writeback_started_(other.writeback_started_) {
  other.fd_ = -1;
  other.lock_fd_ = -1;
  other.committed_ = true;  // The moved-from object owns nothing to clean up.
}

AtomicFile::~AtomicFile() { Discard(); }

void AtomicFile::StartWriteback() {
  if (written_ - writeback_started_ < kWritebackBytes) return;
  // Only a hint: without it the data is written at fsync, all at once. Its
  // errors, if any, come back from that fsync.
  ::sync_file_range(fd_, static_cast<off_t>(writeback_started_),
                    static_cast<off_t>(written_ - writeback_started_), SYNC_FILE_RANGE_WRITE);
  writeback_started_ = written_;
}

void AtomicFile::Discard() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!committed_ && !temp_path_.empty()) {
    ::unlink(temp_path_.c_str());
    UnregisterTemporary(temp_path_);
  }
  ReleaseLock();
  committed_ = true;
}

void AtomicFile::ReleaseLock() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
  lock_fd_ = -1;
}

Status AtomicFile::HashContents() {
  if (written_ != 0) return Status::Error(path_ + ": hashing must start before the first write");
  hasher_ = std::make_unique<Sha256Hasher>();
  return Status::Ok();
}

std::string AtomicFile::FinishSha256Hex() { return hasher_ ? hasher_->FinishHex() : ""; }

void AtomicFile::Hash(std::span<const std::uint8_t> bytes) {
  if (hasher_) hasher_->Update(bytes);
}

Status AtomicFile::WriteAt(std::uint64_t offset, std::span<const std::uint8_t> bytes) {
  if (fd_ < 0) return Status::Error(path_ + ": write after close");
  if (offset + bytes.size() > written_) {
    return Status::Error(path_ + ": internal error: rewriting bytes " + std::to_string(offset) +
                         " to " + std::to_string(offset + bytes.size()) + " of " +
                         std::to_string(written_) + " written");
  }
  for (std::size_t done = 0; done < bytes.size();) {
    const ssize_t n = ::pwrite(fd_, bytes.data() + done, bytes.size() - done,
                               static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::Error(WriteFailure(path_, offset + done, bytes.size() - done, errno));
    done += static_cast<std::size_t>(n);
  }
  return Status::Ok();
}

Status AtomicFile::Write(std::span<const std::uint8_t> bytes) {
  if (fd_ < 0) return Status::Error(path_ + ": write after close");
  const std::uint8_t* data = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, data, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::Error(WriteFailure(path_, written_, left, errno));
    }
    Hash(std::span<const std::uint8_t>(data, static_cast<std::size_t>(n)));
    data += n;
    left -= static_cast<std::size_t>(n);
    written_ += static_cast<std::uint64_t>(n);
    StartWriteback();
  }
  return Status::Ok();
}

Status AtomicFile::Write(const std::string& bytes) {
  return Write(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(bytes.data()),
                                             bytes.size()));
}

Status AtomicFile::CopyRange(int source_fd, std::uint64_t offset, std::uint64_t length,
                             std::span<const std::uint8_t> fallback) {
  if (fd_ < 0) return Status::Error(path_ + ": write after close");
  auto in_offset = static_cast<off_t>(offset);
  std::uint64_t copied = 0;
  while (copied < length) {
    ssize_t n = ::copy_file_range(source_fd, &in_offset, fd_, nullptr, length - copied, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP ||
                  errno == EBADF)) {
      return Write(fallback.subspan(copied));  // No kernel copy between these files.
    }
    if (n < 0) return Status::Error(WriteFailure(path_, written_, length - copied, errno));
    if (n == 0) return Write(fallback.subspan(copied));  // Source shorter than expected.
    // NOTE: the hash covers `fallback`, which the caller promises contains
    // the same bytes as the source file range.
    if (hasher_) Hash(fallback.subspan(copied, static_cast<std::size_t>(n)));
    copied += static_cast<std::uint64_t>(n);
    written_ += static_cast<std::uint64_t>(n);
    StartWriteback();
  }
  return Status::Ok();
}

Status AtomicFile::PadTo(std::uint64_t alignment) {
  static const std::uint8_t kZeros[4096] = {};
  std::uint64_t pad = (alignment - written_ % alignment) % alignment;
  while (pad > 0) {
    std::uint64_t n = std::min<std::uint64_t>(pad, sizeof(kZeros));
    SDONNX_RETURN_IF_ERROR(Write(std::span<const std::uint8_t>(kZeros, n)));
    pad -= n;
  }
  return Status::Ok();
}

Status AtomicFile::ExtendTo(std::uint64_t size) {
  if (fd_ < 0) return Status::Error(path_ + ": extend after close");
  if (size < written_) return Status::Error(path_ + ": cannot shrink while writing");
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
    return Status::Error(WriteFailure(path_, written_, size - written_, errno));
  }
  if (::lseek(fd_, 0, SEEK_END) < 0) {
    return Status::Error(path_ + ": seek failed: " + std::strerror(errno));
  }
  if (hasher_) {
    static const std::uint8_t kZeros[1 << 16] = {};
    for (std::uint64_t left = size - written_; left > 0;) {
      const std::uint64_t n = std::min<std::uint64_t>(left, sizeof(kZeros));
      hasher_->Update(std::span<const std::uint8_t>(kZeros, n));
      left -= n;
    }
  }
  written_ = size;
  return Status::Ok();
}

Status AtomicFile::Close() {
  if (fd_ < 0) return Status::Ok();
  int fd = std::exchange(fd_, -1);
  // Data must be on disk before the rename makes the file visible.
  if (::fsync(fd) != 0 && errno != EINVAL) {
    int err = errno;
    ::close(fd);
    return Status::Error(path_ + ": flushing to disk failed: " + ErrnoText(err));
  }
  if (::close(fd) != 0) return Status::Error(path_ + ": close failed: " + ErrnoText(errno));
  return Status::Ok();
}

Status AtomicFile::Commit() { return CommitAll(std::span<AtomicFile>(this, 1)); }

Status AtomicFile::CommitAll(std::span<AtomicFile> files) {
  std::vector<FileMove> moves;
  for (AtomicFile& file : files) {
    SDONNX_RETURN_IF_ERROR(file.Close());
    moves.push_back({file.temp_path_, file.path_, file.overwrite_});
  }
  SDONNX_RETURN_IF_ERROR(MoveFilesIntoPlace(moves));
  for (AtomicFile& file : files) {
    file.committed_ = true;
    UnregisterTemporary(file.temp_path_);
    file.ReleaseLock();
  }
  return Status::Ok();
}

}  // namespace sdonnx
