#pragma once

#include <string>

#include "util/status.h"

namespace sdonnx {

// Returns an error naming `path` when it exists but is not a regular file
// (after following symlinks): a folder, a named pipe, a device or a socket.
// It uses stat() because opening a named pipe for reading waits for a
// writer. A path that cannot be stat()ed returns Ok, so that the caller's
// open reports the usual error.
Status CheckRegularFile(const std::string& path);

}  // namespace sdonnx
