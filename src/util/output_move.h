// Moving finished output files into place as one unit: after a run, either
// every file is in place or, if a rename fails, the output paths are as they
// were before. A SIGINT or SIGTERM that arrives in the middle waits until
// the moves are done (see LockOutputMoves).
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "util/status.h"

namespace sdonnx {

// A finished file and the path it is renamed to, in the same file system.
struct FileMove {
  std::string from;
  std::string to;
  // Whether an existing `to` may be replaced (the run was given --force).
  bool overwrite = false;
};

// Renames each `from` to its `to`, in order, while holding the lock of
// LockOutputMoves. Without `overwrite`, a `to` that exists at the moment of
// its rename fails the set, even if it appeared after the run checked its
// output names: another run may have written it meanwhile. With
// `overwrite`, a `to` that exists and is not a folder is kept aside first,
// in a folder ".NAME.sdonnx-old-XXXXXX" beside it that is locked with flock
// while this run lives. If a rename fails, the moves already done are
// undone in reverse order: each new file goes back to `from`, and the file
// it replaced is put back at `to`. The error names the file that failed
// and, if undoing failed too, where each old file was kept.
//
// Before each move, the ".NAME.sdonnx-old-XXXXXX" folders of the same NAME
// whose lock no live run has are removed, with a warning that names the
// path and its size. A run killed by SIGKILL during its moves leaves them.
//
// For tests only: SDONNX_TEST_MOVE_PAUSE_MS=N sleeps N milliseconds after
// each rename, still holding the lock, so that a test can send a signal in
// the middle of the moves.
Status MoveFilesIntoPlace(const std::vector<FileMove>& moves);

// Takes the lock that MoveFilesIntoPlace holds. The CLI's signal watcher
// takes it before it removes the temporaries and exits, and keeps it until
// the exit, so a signal never stops a set of moves halfway and no move
// starts after the signal.
[[nodiscard]] std::unique_lock<std::mutex> LockOutputMoves();

}  // namespace sdonnx
