// Output files that appear complete or not at all.
//
// An AtomicFile writes to a hidden temporary name in the destination folder
// (".NAME.sdonnx-tmp-XXXXXX") and renames it over NAME on Commit(). If it is
// destroyed without Commit(), the temporary is removed, so an error path never
// leaves a half-written file that looks like a finished one. Every 64 MiB
// written starts the disk writing them in the background, so that the
// fsync before the rename waits only for the last part.
//
// The temporary is locked with flock until it is renamed or removed. Create()
// removes the unlocked temporaries of the same NAME, which only a killed
// run leaves behind (see RemoveStaleTemporaries).
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>

#include "util/sha256.h"
#include "util/status.h"

namespace sdonnx {

class AtomicFile {
 public:
  // Creates the temporary file. With `overwrite` false, an existing `path` is
  // an error that names it and suggests --force, and so is a `path` that
  // another run creates before Commit().
  static Result<AtomicFile> Create(const std::string& path, bool overwrite);

  AtomicFile(AtomicFile&& other) noexcept;
  AtomicFile& operator=(AtomicFile&& other) = delete;
  AtomicFile(const AtomicFile&) = delete;
  ~AtomicFile();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }
  std::uint64_t bytes_written() const { return written_; }

  // Starts a SHA-256 of the file's bytes, holes included, updated by every
  // later write, so that the caller can check the file before Commit()
  // makes it visible. Call it before the first write.
  Status HashContents();
  // Returns the lowercase hex SHA-256 of the bytes written so far. Call it
  // once, after the last write; HashContents() must have been called.
  std::string FinishSha256Hex();

  Status Write(std::span<const std::uint8_t> bytes);
  Status Write(const std::string& bytes);
  // Appends `length` bytes of the file `source_fd` from `offset`, copied in
  // the kernel where the file systems allow it; `fallback` (the same bytes
  // in memory) is written instead where they do not.
  Status CopyRange(int source_fd, std::uint64_t offset, std::uint64_t length,
                   std::span<const std::uint8_t> fallback);
  // Overwrites bytes already written, from `offset`; the file size and
  // bytes_written() stay as they are.
  Status WriteAt(std::uint64_t offset, std::span<const std::uint8_t> bytes);
  // Writes zero bytes until the file size is a multiple of `alignment`.
  Status PadTo(std::uint64_t alignment);
  // Grows the file to `size` bytes without writing (a sparse hole).
  Status ExtendTo(std::uint64_t size);
  // Flushes and closes the temporary without renaming it yet, so that several
  // files can be checked before any of them becomes visible.
  Status Close();
  // Closes (if needed) and renames the temporary to the final path, with
  // MoveFilesIntoPlace.
  Status Commit();
  // Closes each of `files` and renames them all into place as one unit
  // (MoveFilesIntoPlace): after an error none of them was renamed.
  static Status CommitAll(std::span<AtomicFile> files);

 private:
  AtomicFile(std::string path, std::string temp_path, int fd, int lock_fd, bool overwrite)
      : path_(std::move(path)),
        temp_path_(std::move(temp_path)),
        fd_(fd),
        lock_fd_(lock_fd),
        overwrite_(overwrite) {}
  void Discard();
  void ReleaseLock();
  void Hash(std::span<const std::uint8_t> bytes);
  // Starts writeback of what was written since the last call, once that
  // reaches kWritebackBytes.
  void StartWriteback();

  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  // A second descriptor of the temporary that holds its flock from Create()
  // until the rename or removal, after fd_ is closed; -1 without a lock.
  int lock_fd_ = -1;
  bool overwrite_ = false;                // Whether Commit() may replace an existing file.
  std::unique_ptr<Sha256Hasher> hasher_;  // Set by HashContents().
  bool committed_ = false;
  std::uint64_t written_ = 0;
  std::uint64_t writeback_started_ = 0;  // bytes handed to the disk so far
};

}  // namespace sdonnx
