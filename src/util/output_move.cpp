#include "util/output_move.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "util/log.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;

std::mutex& MoveMutex() {
  static std::mutex mutex;
  return mutex;
}

// Progress of one move, kept so that it can be undone.
struct MoveState {
  std::string backup_dir;  // contains the replaced file as backup_dir/NAME
  std::string backup;
  bool moved = false;
};

// Keeps the file at `path` aside in a new hidden folder beside it,
// ".NAME.sdonnx-old-XXXXXX". A hard link keeps `path` in place until the
// rename replaces it. Where the file system has no hard links, the file is
// renamed instead.
Status KeepAside(const std::string& path, MoveState* state) {
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  // Appended piece by piece: GCC 12 warns (-Wrestrict) on "." + string.
  std::string name = ".";
  name += target.filename().string();
  name += ".sdonnx-old-XXXXXX";
  std::string pattern = (dir / name).string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    return Status::Error(path +
                         ": cannot create a folder to keep the existing file in while it "
                         "is replaced: " +
                         std::strerror(errno));
  }
  const std::string backup = (fs::path(pattern) / target.filename()).string();
  if (::link(path.c_str(), backup.c_str()) != 0 && ::rename(path.c_str(), backup.c_str()) != 0) {
    const int err = errno;
    ::rmdir(pattern.c_str());
    return Status::Error(
        path + ": cannot keep the existing file aside while it is replaced: " + std::strerror(err));
  }
  state->backup_dir = pattern;
  state->backup = backup;
  return Status::Ok();
}

// Undoes `move`. Returns an empty string on success, else what failed.
std::string Undo(const FileMove& move, const MoveState& state) {
  std::string failure;
  if (state.moved && ::rename(move.to.c_str(), move.from.c_str()) != 0) {
    failure =
        move.to + ": cannot move the new file back to " + move.from + ": " + std::strerror(errno);
  }
  if (!state.backup.empty()) {
    // With a hard link and no rename done, `to` and the backup are the same
    // file. rename() then leaves both names, and removing the folder drops
    // the extra one.
    if (failure.empty() && ::rename(state.backup.c_str(), move.to.c_str()) == 0) {
      std::error_code ec;
      fs::remove_all(state.backup_dir, ec);
    } else {
      if (failure.empty()) {
        failure = move.to + ": cannot put the old file back: " + std::strerror(errno);
      }
      failure += "; the old file is kept at " + state.backup;
    }
  }
  return failure;
}

void PauseForTests() {
  const char* pause = std::getenv("SDONNX_TEST_MOVE_PAUSE_MS");
  if (pause == nullptr) return;
  std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(pause)));
}

}  // namespace

std::unique_lock<std::mutex> LockOutputMoves() { return std::unique_lock<std::mutex>(MoveMutex()); }

Status MoveFilesIntoPlace(const std::vector<FileMove>& moves) {
  const std::unique_lock<std::mutex> lock = LockOutputMoves();
  std::vector<MoveState> states(moves.size());
  Status failed;
  std::size_t done = 0;
  for (; done < moves.size(); ++done) {
    const FileMove& move = moves[done];
    MoveState& state = states[done];
    struct stat info {};
    if (::lstat(move.to.c_str(), &info) == 0 && !S_ISDIR(info.st_mode)) {
      failed = KeepAside(move.to, &state);
      if (!failed.ok()) break;
    }
    if (::rename(move.from.c_str(), move.to.c_str()) != 0) {
      failed = Status::Error(move.to + ": cannot move the finished file " + move.from +
                             " into place: " + std::strerror(errno));
      break;
    }
    state.moved = true;
    PauseForTests();
  }

  if (failed.ok()) {
    for (const MoveState& state : states) {
      if (state.backup_dir.empty()) continue;
      std::error_code ec;
      fs::remove_all(state.backup_dir, ec);
      if (ec) LogWarning(state.backup_dir + ": cannot remove the replaced file: " + ec.message());
    }
    return Status::Ok();
  }

  // The failed move may have kept its old file aside, so it is undone first.
  std::string undo_failures;
  for (std::size_t i = done + 1; i-- > 0;) {
    const std::string failure = Undo(moves[i], states[i]);
    if (!failure.empty()) undo_failures += "; " + failure;
  }
  if (undo_failures.empty()) {
    return Status::Error(failed.message() + "; every output was left as it was before");
  }
  return Status::Error(failed.message() + "; undoing the earlier moves failed too" + undo_failures);
}

}  // namespace sdonnx
