#include "util/output_move.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "util/log.h"
#include "util/temporaries.h"

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
  int backup_lock_fd = -1;  // the descriptor with the flock of backup_dir's lock file
  bool moved = false;
};

// The hidden folders that keep a replaced NAME are ".NAME.sdonnx-old-XXXXXX".
std::string BackupPrefix(const fs::path& target) {
  // Appended piece by piece: GCC 12 warns (-Wrestrict) on "." + string.
  std::string prefix = ".";
  prefix += target.filename().string();
  prefix += ".sdonnx-old-";
  return prefix;
}

// The lock file inside a backup folder. It is longer than NAME, so it never
// takes the place of the kept file.
std::string BackupLockName(const fs::path& target) { return target.filename().string() + ".lock"; }

fs::path ParentOf(const fs::path& target) {
  return target.has_parent_path() ? target.parent_path() : fs::path(".");
}

void ReleaseBackupLock(MoveState* state) {
  if (state->backup_lock_fd >= 0) ::close(state->backup_lock_fd);
  state->backup_lock_fd = -1;
}

// Keeps the file at `path` aside in a new hidden folder beside it,
// ".NAME.sdonnx-old-XXXXXX", whose lock file this run holds. A hard link
// keeps `path` in place until the rename replaces it. Where the file system
// has no hard links, the file is renamed instead. Call it while holding the
// folder lock of the parent, so that no other run finds the new folder
// before its lock is taken.
Status KeepAside(const std::string& path, MoveState* state) {
  const fs::path target(path);
  std::string pattern = (ParentOf(target) / (BackupPrefix(target) + "XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    return Status::Error(path +
                         ": cannot create a folder to keep the existing file in while it "
                         "is replaced: " +
                         std::strerror(errno));
  }
  const fs::path lock_path = fs::path(pattern) / BackupLockName(target);
  const int created = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (created < 0) {
    const int err = errno;
    ::rmdir(pattern.c_str());
    return Status::Error(lock_path.string() +
                         ": cannot create the lock file: " + std::strerror(err));
  }
  ::close(created);
  // Without flock the folder stays unlocked, and later runs cannot take its
  // lock either, so they leave it alone.
  state->backup_lock_fd = TryLockFile(lock_path);
  state->backup_dir = pattern;
  const std::string backup = (fs::path(pattern) / target.filename()).string();
  if (::link(path.c_str(), backup.c_str()) != 0 && ::rename(path.c_str(), backup.c_str()) != 0) {
    const int err = errno;
    std::error_code ec;
    fs::remove_all(pattern, ec);
    ReleaseBackupLock(state);
    state->backup_dir.clear();
    return Status::Error(
        path + ": cannot keep the existing file aside while it is replaced: " + std::strerror(err));
  }
  state->backup = backup;
  return Status::Ok();
}

// Renames `from` to `to` unless `to` exists. Returns 0, or the errno value
// of the failure (EEXIST: `to` exists).
int RenameWithoutReplacing(const std::string& from, const std::string& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return errno;
  // The file system rejects RENAME_NOREPLACE. link() fails with EEXIST too.
  if (::link(from.c_str(), to.c_str()) == 0) {
    if (::unlink(from.c_str()) == 0) return 0;
    // Two names of one file would make the undo's rename a no-op.
    const int err = errno;
    ::unlink(to.c_str());
    return err;
  }
  if (errno == EEXIST) return EEXIST;
  if (errno != EPERM && errno != EOPNOTSUPP && errno != ENOSYS) return errno;
  // NOTE: without hard links either, a file that appears between this
  // check and the rename is still replaced.
  struct stat info {};
  if (::lstat(to.c_str(), &info) == 0) return EEXIST;
  return ::rename(from.c_str(), to.c_str()) == 0 ? 0 : errno;
}

// Removes the backup folders of `move.to` whose lock no live run has, and keeps
// the existing `to` aside if the move may replace it. Both happen under the
// folder lock of the parent.
Status PrepareMove(const FileMove& move, MoveState* state) {
  const fs::path target(move.to);
  const fs::path dir = ParentOf(target);
  const FolderLock folder_lock(dir);
  RemoveStaleTemporaries(folder_lock, dir, BackupPrefix(target), BackupLockName(target));
  if (!move.overwrite) return Status::Ok();
  struct stat info {};
  if (::lstat(move.to.c_str(), &info) != 0 || S_ISDIR(info.st_mode)) return Status::Ok();
  return KeepAside(move.to, state);
}

// Renames `move.from` to `move.to`, replacing `to` only with `overwrite`.
Status Move(const FileMove& move) {
  const int err = move.overwrite ? (::rename(move.from.c_str(), move.to.c_str()) == 0 ? 0 : errno)
                                 : RenameWithoutReplacing(move.from, move.to);
  if (err == 0) return Status::Ok();
  if (err == EEXIST && !move.overwrite) {
    return Status::Error(move.to +
                         ": already exists (another run wrote it meanwhile?); pass --force to "
                         "overwrite it");
  }
  return Status::Error(move.to + ": cannot move the finished file " + move.from +
                       " into place: " + std::strerror(err));
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
      // NOTE: the folder's lock ends with this run, so a later run that
      // writes the same NAME removes the folder and the old file in it.
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
    failed = PrepareMove(move, &state);
    if (!failed.ok()) break;
    failed = Move(move);
    if (!failed.ok()) break;
    state.moved = true;
    PauseForTests();
  }

  if (failed.ok()) {
    for (MoveState& state : states) {
      if (state.backup_dir.empty()) continue;
      std::error_code ec;
      fs::remove_all(state.backup_dir, ec);
      if (ec) LogWarning(state.backup_dir + ": cannot remove the replaced file: " + ec.message());
      ReleaseBackupLock(&state);
    }
    return Status::Ok();
  }

  // The failed move may have kept its old file aside, so it is undone first.
  std::string undo_failures;
  for (std::size_t i = done + 1; i-- > 0;) {
    const std::string failure = Undo(moves[i], states[i]);
    ReleaseBackupLock(&states[i]);
    if (!failure.empty()) undo_failures += "; " + failure;
  }
  if (undo_failures.empty()) {
    return Status::Error(failed.message() + "; every output was left as it was before");
  }
  return Status::Error(failed.message() + "; undoing the earlier moves failed too" + undo_failures);
}

}  // namespace sdonnx
