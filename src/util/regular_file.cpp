#include "util/regular_file.h"

#include <sys/stat.h>

namespace sdonnx {

Status CheckRegularFile(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0 || S_ISREG(info.st_mode)) return Status::Ok();
  if (S_ISDIR(info.st_mode)) {
    return Status::Error(path + ": is a folder; pass the path of a file");
  }
  const char* kind = S_ISFIFO(info.st_mode)   ? "a named pipe"
                     : S_ISSOCK(info.st_mode) ? "a socket"
                                              : "a device";
  return Status::Error(path + ": is " + std::string(kind) +
                       ", not a regular file; pass the path of a file");
}

}  // namespace sdonnx
