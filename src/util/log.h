// Logging through a sink. The library never prints: it sends messages to the
// sink installed by the program (the CLI prints them, tests collect them).
#pragma once

#include <functional>
#include <string>

namespace sdonnx {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

using LogSink = std::function<void(LogLevel, const std::string&)>;

// Installs `sink` for the whole process and returns the previous one. An
// empty sink discards messages, which is the default.
LogSink SetLogSink(LogSink sink);

void Log(LogLevel level, const std::string& message);
inline void LogInfo(const std::string& message) { Log(LogLevel::kInfo, message); }
inline void LogWarning(const std::string& message) { Log(LogLevel::kWarning, message); }
inline void LogDebug(const std::string& message) { Log(LogLevel::kDebug, message); }

}  // namespace sdonnx
