#include "util/temporaries.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "util/log.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;

std::mutex& ListMutex() {
  static std::mutex mutex;
  return mutex;
}

std::set<std::string>& List() {
  static std::set<std::string> paths;
  return paths;
}

// Folders that CreatedFolders made, in creation order (outermost first).
std::vector<std::string>& CreatedList() {
  static std::vector<std::string> paths;
  return paths;
}

// True once RemoveRegisteredTemporaries has run. The process is then about
// to exit, and a temporary created after that would be left behind.
bool& Removed() {
  static bool removed = false;
  return removed;
}

// The number of bytes in the regular files under `path`, for the log.
std::uintmax_t BytesUnder(const fs::path& path) {
  std::error_code ec;
  if (fs::is_regular_file(fs::symlink_status(path, ec))) return fs::file_size(path, ec);
  std::uintmax_t total = 0;
  for (fs::recursive_directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file(ec) && !it->is_symlink(ec)) total += it->file_size(ec);
  }
  return total;
}

// Whether the temporary `entry` belongs to no running process: its lock can
// be taken, or (for a folder) it has no lock file. On true, `*lock_fd`
// holds the lock, or -1.
bool IsStale(const fs::path& entry, const std::string& lock_name, int* lock_fd) {
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(entry, ec);
  const fs::path lock_path = lock_name.empty() ? entry : entry / lock_name;
  if (lock_name.empty() ? !fs::is_regular_file(status) : !fs::is_directory(status)) return false;
  *lock_fd = TryLockFile(lock_path);
  if (*lock_fd >= 0) return true;
  // Only a folder may lack its lock file: a run creates both while it holds
  // the folder lock that the caller holds now.
  return errno == ENOENT && !lock_name.empty();
}

}  // namespace

int CreateRegisteredTemporaryFile(std::string* pattern) {
  std::lock_guard<std::mutex> lock(ListMutex());
  if (Removed()) {
    errno = ECANCELED;
    return -1;
  }
  const int fd = ::mkostemp(pattern->data(), O_CLOEXEC);
  if (fd >= 0) List().insert(*pattern);
  return fd;
}

int CreateRegisteredTemporaryFolder(std::string* pattern) {
  std::lock_guard<std::mutex> lock(ListMutex());
  if (Removed()) {
    errno = ECANCELED;
    return -1;
  }
  if (::mkdtemp(pattern->data()) == nullptr) return -1;
  List().insert(*pattern);
  return 0;
}

void RegisterTemporary(const std::string& path) {
  std::lock_guard<std::mutex> lock(ListMutex());
  List().insert(path);
}

void UnregisterTemporary(const std::string& path) {
  std::lock_guard<std::mutex> lock(ListMutex());
  List().erase(path);
}

int RemoveRegisteredTemporaries() {
  std::lock_guard<std::mutex> lock(ListMutex());
  // Only data counts as an unfinished output: a staging folder whose files
  // were all moved keeps just its empty lock file, and placeholders are empty.
  int removed = 0;
  for (const std::string& path : List()) {
    if (BytesUnder(path) > 0) ++removed;
  }
  // Other threads keep running during the removal and may still add a file
  // to a folder being removed, which makes its final rmdir fail. Once a
  // folder is gone they cannot add to it, so a few rounds finish the job.
  for (int round = 0; round < 50; ++round) {
    bool left = false;
    for (const std::string& path : List()) {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
      left = left || std::filesystem::exists(path, ec);
    }
    if (!left) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  List().clear();
  // rmdir removes only empty folders, so a folder with contents stays.
  for (auto it = CreatedList().rbegin(); it != CreatedList().rend(); ++it) ::rmdir(it->c_str());
  CreatedList().clear();
  Removed() = true;
  return removed;
}

FolderLock::FolderLock(const fs::path& dir) {
  fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd_ < 0) return;
  while (::flock(fd_, LOCK_EX) != 0) {
    if (errno != EINTR) return;
  }
  locked_ = true;
}

FolderLock::~FolderLock() {
  if (fd_ >= 0) ::close(fd_);  // Closing releases the lock.
}

int TryLockFile(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return -1;
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

std::vector<std::string> RemoveStaleTemporaries(const FolderLock& folder_lock, const fs::path& dir,
                                                const std::string& prefix,
                                                const std::string& lock_name) {
  std::vector<std::string> removed;
  if (!folder_lock.locked()) return removed;
  constexpr std::size_t kUniqueChars = 6;  // The XXXXXX of mkstemp and mkdtemp.
  std::vector<fs::path> candidates;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() == prefix.size() + kUniqueChars && name.starts_with(prefix)) {
      candidates.push_back(entry.path());
    }
  }
  std::sort(candidates.begin(), candidates.end());
  for (const fs::path& entry : candidates) {
    int lock_fd = -1;
    if (!IsStale(entry, lock_name, &lock_fd)) continue;
    const std::uintmax_t bytes = BytesUnder(entry);
    fs::remove_all(entry, ec);
    if (lock_fd >= 0) ::close(lock_fd);
    if (ec) {
      LogWarning(entry.string() + ": cannot remove this temporary of an earlier sdonnx run that "
                 "was killed: " + ec.message() + "; remove it by hand");
      continue;
    }
    LogWarning("removed " + entry.string() + " (" + std::to_string(bytes) +
               " bytes), a temporary left by an earlier sdonnx run that was killed before it "
               "could clean up");
    removed.push_back(entry.filename().string());
  }
  return removed;
}

namespace {

// Returns why `path` cannot contain files, and what to do. For a symlink
// that leads nowhere, the message names where its chain ends, or a loop.
std::pair<std::string, std::string> NotAFolder(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_symlink(fs::symlink_status(path, ec)) || fs::exists(path, ec)) {
    return {path.string() + ": exists and is not a folder", "give another path"};
  }
  fs::path end = path;
  // Linux follows at most 40 symlinks in one lookup.
  for (int hop = 0; hop < 40 && fs::is_symlink(fs::symlink_status(end, ec)); ++hop) {
    const fs::path target = fs::read_symlink(end, ec);
    if (ec) return {path.string() + ": is a symlink that cannot be read", "give another path"};
    end = (target.is_absolute() ? target : end.parent_path() / target).lexically_normal();
  }
  if (fs::is_symlink(fs::symlink_status(end, ec))) {
    return {path.string() + ": is a symlink loop", "remove the loop or give another path"};
  }
  return {path.string() + ": is a symlink to " + end.string() + ", which does not exist",
          "create " + end.string() + " or give another path"};
}

}  // namespace

Result<CreatedFolders> CreatedFolders::Create(const fs::path& dir) {
  CreatedFolders folders;
  fs::path target = dir.lexically_normal();
  if (target.filename().empty()) target = target.parent_path();
  if (target.empty()) return folders;  // The current folder.
  std::vector<fs::path> missing;
  std::error_code ec;
  for (fs::path p = target; !p.empty() && !fs::exists(fs::symlink_status(p, ec));
       p = p.parent_path()) {
    missing.push_back(p);
    if (p == p.parent_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    std::lock_guard<std::mutex> lock(ListMutex());
    if (Removed()) return Status::Error(it->string() + ": not created, the run is stopping");
    if (::mkdir(it->c_str(), 0777) == 0) {
      CreatedList().push_back(it->string());
      folders.created_.push_back(it->string());
    } else if (errno == ENOTDIR) {
      // A file is where a parent folder should be, so name that file.
      fs::path file = it->parent_path();
      while (file.has_parent_path() && !fs::exists(fs::symlink_status(file, ec))) {
        file = file.parent_path();
      }
      const auto [problem, advice] = NotAFolder(file);
      return Status::Error(problem + ", so " + it->string() + " cannot be created; " + advice);
    } else if (const int error = errno; (error == ENOENT || error == ELOOP) &&
                                        fs::is_symlink(fs::symlink_status(it->parent_path(), ec))) {
      // A dangling symlink is where a parent folder should be.
      const auto [problem, advice] = NotAFolder(it->parent_path());
      return Status::Error(problem + ", so " + it->string() + " cannot be created; " + advice);
    } else if (error != EEXIST) {
      return Status::Error(it->string() + ": cannot create the folder: " + std::strerror(error));
    }
  }
  if (!fs::is_directory(target, ec)) {
    const auto [problem, advice] = NotAFolder(target);
    return Status::Error(problem + ", so nothing can be written inside it; " + advice);
  }
  return folders;
}

CreatedFolders::CreatedFolders(CreatedFolders&& other) noexcept
    : created_(std::exchange(other.created_, {})) {}

CreatedFolders::~CreatedFolders() {
  std::lock_guard<std::mutex> lock(ListMutex());
  for (auto it = created_.rbegin(); it != created_.rend(); ++it) {
    ::rmdir(it->c_str());
    std::erase(CreatedList(), *it);
  }
}

void CreatedFolders::Keep() {
  std::lock_guard<std::mutex> lock(ListMutex());
  for (const std::string& path : created_) std::erase(CreatedList(), path);
  created_.clear();
}

Result<LockedTemporaryFolder> LockedTemporaryFolder::Create(const fs::path& parent,
                                                            const std::string& prefix,
                                                            const std::string& lock_name) {
  const FolderLock folder_lock(parent);
  RemoveStaleTemporaries(folder_lock, parent, prefix, lock_name);
  std::string pattern = (parent / (prefix + "XXXXXX")).string();
  if (CreateRegisteredTemporaryFolder(&pattern) != 0) {
    return Status::Error(parent.string() +
                         ": cannot create a temporary folder: " + std::strerror(errno));
  }
  LockedTemporaryFolder folder{fs::path(pattern), lock_name};
  const fs::path lock_path = folder.path_ / lock_name;
  const int created = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (created < 0) {
    return Status::Error(lock_path.string() +
                         ": cannot create the lock file: " + std::strerror(errno));
  }
  ::close(created);
  // The lock fails only where the file system has no flock. The run then
  // goes on unlocked, and later runs there cannot lock the file either,
  // so they leave the folder alone.
  folder.lock_fd_ = TryLockFile(lock_path);
  return folder;
}

LockedTemporaryFolder::LockedTemporaryFolder(LockedTemporaryFolder&& other) noexcept
    : path_(std::exchange(other.path_, {})),
      lock_name_(std::move(other.lock_name_)),
      lock_fd_(std::exchange(other.lock_fd_, -1)) {}

LockedTemporaryFolder::~LockedTemporaryFolder() {
  if (!path_.empty()) {
    std::error_code ec;
    fs::remove_all(path_, ec);
    UnregisterTemporary(path_.string());
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

Result<bool> LockedTemporaryFolder::RenameTo(const fs::path& target) {
  const FolderLock folder_lock(target.parent_path());
  std::error_code ec;
  fs::remove(path_ / lock_name_, ec);
  if (::rename(path_.c_str(), target.c_str()) != 0) {
    if (errno == EEXIST || errno == ENOTEMPTY) return false;
    return Status::Error(target.string() + ": cannot move " + path_.string() +
                         " into place: " + std::strerror(errno));
  }
  UnregisterTemporary(path_.string());
  path_.clear();
  return true;
}

}  // namespace sdonnx
