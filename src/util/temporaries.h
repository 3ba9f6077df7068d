// A process-wide list of temporary files and folders that an interrupted
// run should remove: the staging folders of convert and the temporaries of
// AtomicFile. The CLI removes them from its SIGINT and SIGTERM handler.
#pragma once

#include <string>

namespace sdonnx {

void RegisterTemporary(const std::string& path);
void UnregisterTemporary(const std::string& path);

// Removes every registered path. Meant for a signal handler that exits right
// after: it skips the work if another thread has the list locked, and it is not
// async-signal-safe in the strict sense (it calls into std::filesystem).
void RemoveRegisteredTemporaries();

}  // namespace sdonnx
