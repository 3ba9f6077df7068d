// A process-wide list of temporary files and folders that an interrupted
// run should remove: the staging folders of convert and the temporaries of
// AtomicFile. The CLI removes them when SIGINT or SIGTERM arrives.
#pragma once

#include <string>

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

// Removes every registered path and stops later creations (see above). It
// takes a lock and allocates, so it must not be called from a signal
// handler.
void RemoveRegisteredTemporaries();

}  // namespace sdonnx
