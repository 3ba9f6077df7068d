// A process-wide list of temporary files and folders that an interrupted
// run should remove: the staging folders of convert and the temporaries of
// AtomicFile. The CLI removes them when SIGINT or SIGTERM arrives.
//
// A run killed with SIGKILL (or by a crash or power loss) removes nothing.
// Each temporary is therefore locked with flock for the life of its run, and
// a later run that writes into the same folder removes the temporaries whose
// lock it can take (RemoveStaleTemporaries).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "util/status.h"

namespace sdonnx {

// Creates a file (mkostemp with O_CLOEXEC) or a folder (mkdtemp) from
// `pattern`, which ends in XXXXXX and receives the name, and registers it.
// Creation and registration happen under the lock that
// RemoveRegisteredTemporaries takes, so a signal never finds a temporary
// that exists but is not yet registered. Once the removal has started they
// create nothing and fail with ECANCELED. They return the descriptor (or 0
// for a folder), or -1 with errno set.
[[nodiscard]] int CreateRegisteredTemporaryFile(std::string* pattern);
[[nodiscard]] int CreateRegisteredTemporaryFolder(std::string* pattern);

void RegisterTemporary(const std::string& path);
void UnregisterTemporary(const std::string& path);

// Removes every registered path and stops later creations (see above).
// Then removes the folders registered by CreatedFolders, deepest first, if
// they are empty. Returns how many of the removed paths held data: 0 when
// the run had written nothing yet or had moved all its outputs into place. It takes a lock and
// allocates, so it must not be called from a signal handler.
int RemoveRegisteredTemporaries();

// An exclusive flock on a folder, held while a run removes stale
// temporaries from it and creates and locks its own. Every run that does
// this takes the same lock, so none of them finds another run's temporary in
// the moment between its creation and its lock. locked() is false where the
// file system rejects flock on a folder; callers then remove nothing.
class FolderLock {
 public:
  explicit FolderLock(const std::filesystem::path& dir);
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;
  bool locked() const { return locked_; }

 private:
  int fd_ = -1;
  bool locked_ = false;
};

// Opens `path` for reading and writing and takes an exclusive flock on it
// without waiting. Returns the descriptor (O_CLOEXEC), which holds the lock
// until it is closed, or -1 with errno set (EWOULDBLOCK: another open file
// holds the lock).
[[nodiscard]] int TryLockFile(const std::filesystem::path& path);

// Removes the temporaries of dead runs from `dir`: each entry named
// `prefix` followed by exactly six characters (the XXXXXX of mkstemp). With
// an empty `lock_name` the entry must be a regular file, and it is its own
// lock. Otherwise it must be a folder, and its lock is the file
// `lock_name` inside it. A folder without that file is stale too, because
// sdonnx versions before the lock left such folders. An entry is removed only if
// its lock can be taken. Call it while holding `folder_lock` on `dir`; it
// does nothing if that lock is not held. Logs a warning for each removal
// and returns the names removed.
std::vector<std::string> RemoveStaleTemporaries(const FolderLock& folder_lock,
                                                const std::filesystem::path& dir,
                                                const std::string& prefix,
                                                const std::string& lock_name);

// A temporary folder of one run: `parent/PREFIX` plus six random characters,
// with the file `lock_name` inside it whose flock marks the run as alive.
// Create() removes the dead runs' folders of that prefix from `parent` and
// creates, registers and locks a new one, all under the folder lock of
// `parent`. The folder is removed with its contents when destroyed.
class LockedTemporaryFolder {
 public:
  static Result<LockedTemporaryFolder> Create(const std::filesystem::path& parent,
                                              const std::string& prefix,
                                              const std::string& lock_name);
  LockedTemporaryFolder(LockedTemporaryFolder&& other) noexcept;
  LockedTemporaryFolder(const LockedTemporaryFolder&) = delete;
  LockedTemporaryFolder& operator=(const LockedTemporaryFolder&) = delete;
  ~LockedTemporaryFolder();

  const std::filesystem::path& path() const { return path_; }
  // Removes the lock file and renames the folder to `target`, under the
  // folder lock of its parent. Returns false when `target` already exists
  // as a folder with files (another run's), leaving this one for the
  // destructor to remove.
  Result<bool> RenameTo(const std::filesystem::path& target);

 private:
  LockedTemporaryFolder(std::filesystem::path path, std::string lock_name)
      : path_(std::move(path)), lock_name_(std::move(lock_name)) {}
  std::filesystem::path path_;
  std::string lock_name_;
  int lock_fd_ = -1;  // Holds the flock of the lock file.
};

// The folders that one run created for its output, and their removal if the
// run fails. Each folder is registered, so that an interrupted run removes
// it too. Only folders that are still empty are removed: a folder that
// gained a file (from this run or another program) stays.
class CreatedFolders {
 public:
  // Creates `dir` and each missing parent. The error names the folder that
  // could not be created.
  static Result<CreatedFolders> Create(const std::filesystem::path& dir);

  CreatedFolders(CreatedFolders&& other) noexcept;
  CreatedFolders(const CreatedFolders&) = delete;
  CreatedFolders& operator=(const CreatedFolders&) = delete;
  // Removes the created folders, deepest first, unless Keep() was called.
  ~CreatedFolders();

  // Keeps the folders after a successful run and unregisters them.
  void Keep();
  // The folders created, outermost first; empty if `dir` existed.
  const std::vector<std::string>& created() const { return created_; }

 private:
  CreatedFolders() = default;
  std::vector<std::string> created_;
};

}  // namespace sdonnx
