// A process-wide list of temporary files and folders that an interrupted
// run should remove: the staging folders of convert and the temporaries of
// AtomicFile. The CLI removes them when SIGINT or SIGTERM arrives.
#pragma once

#include <string>

namespace sdonnx {

void RegisterTemporary(const std::string& path);
void UnregisterTemporary(const std::string& path);

// Removes every registered path. It takes a lock and allocates, so it must
// not be called from a signal handler.
void RemoveRegisteredTemporaries();

}  // namespace sdonnx
