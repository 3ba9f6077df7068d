// The subcommands of the sdonnx program. Each registers its options on the
// CLI11 app and returns the exit code from its run function.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>

namespace sdonnx::cli {

// Adds `convert` to `app`; `run` is set to the action to take if it is chosen.
void AddConvertCommand(CLI::App& app, std::function<int()>* run);
void AddDemoCommand(CLI::App& app, std::function<int()>* run);
void AddTokenizeCommand(CLI::App& app, std::function<int()>* run);
void AddGenerateCommand(CLI::App& app, std::function<int()>* run);
void AddInspectCommand(CLI::App& app, std::function<int()>* run);
void AddVerifyCommand(CLI::App& app, std::function<int()>* run);
void AddExtractCommand(CLI::App& app, std::function<int()>* run);
void AddRebuildCommand(CLI::App& app, std::function<int()>* run);

// Prints "error: MESSAGE" to stderr and returns exit code 1.
int ReportError(const std::string& message);
// Returns `text` with terminal control characters (C0 except newline and
// tab, DEL, and the UTF-8 encoded C1 range) written as \xNN, so that names
// read from a hostile file cannot send escape sequences to the terminal.
std::string EscapeControlCharacters(const std::string& text);
// "12.3 MB" style sizes for people.
std::string HumanBytes(std::uint64_t bytes);
// "859.52 M" style counts (of parameters) for people.
std::string HumanCount(std::int64_t count);

}  // namespace sdonnx::cli
