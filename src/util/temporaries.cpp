#include "util/temporaries.h"

#include <fcntl.h>
#include <stdlib.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

namespace sdonnx {
namespace {

std::mutex& ListMutex() {
  static std::mutex mutex;
  return mutex;
}

std::set<std::string>& List() {
  static std::set<std::string> paths;
  return paths;
}

// True once RemoveRegisteredTemporaries has run. The process is then about
// to exit, and a temporary created after that would be left behind.
bool& Removed() {
  static bool removed = false;
  return removed;
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

void RemoveRegisteredTemporaries() {
  std::lock_guard<std::mutex> lock(ListMutex());
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
  Removed() = true;
}

}  // namespace sdonnx
