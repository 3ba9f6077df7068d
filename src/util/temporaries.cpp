#include "util/temporaries.h"

#include <filesystem>
#include <mutex>
#include <set>

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

}  // namespace

void RegisterTemporary(const std::string& path) {
  std::lock_guard<std::mutex> lock(ListMutex());
  List().insert(path);
}

void UnregisterTemporary(const std::string& path) {
  std::lock_guard<std::mutex> lock(ListMutex());
  List().erase(path);
}

void RemoveRegisteredTemporaries() {
  std::unique_lock<std::mutex> lock(ListMutex(), std::try_to_lock);
  if (!lock.owns_lock()) return;
  for (const std::string& path : List()) {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  List().clear();
}

}  // namespace sdonnx
