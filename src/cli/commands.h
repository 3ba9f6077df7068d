// The subcommands of the sdonnx program. Each registers its options on the
// CLI11 app and returns the exit code from its run function.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

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

// Rejects a value that is not a whole number, such as "abc" or "1.5". Add it
// with transform() before CLI::Range, which reports such a value as out of
// range: it rewrites the number in plain decimal, because CLI11 reads a
// leading 0 as octal. A number too large for int64 passes as typed, so that
// Range reports it as out of range.
CLI::Validator IntegerValidator();
// Prints "error: MESSAGE" to stderr and returns exit code 1.
int ReportError(const std::string& message);
// Returns `text` with terminal control characters written as \xNN: all of
// C0 (newline and tab included), DEL, and the UTF-8 encoded C1 range. Names
// read from a hostile file then can neither send escape sequences to the
// terminal nor start a forged line. Apply it to each output line built from
// file contents, then add the line's own newline.
std::string EscapeControlCharacters(const std::string& text);
// Prints `line`, escaped as above, and a newline to stdout.
void PrintLine(const std::string& line);
// Dumps `json` to stdout, indented by 2. Invalid UTF-8 in a string becomes
// U+FFFD instead of an exception.
void PrintJson(const nlohmann::json& json);
// "12.3 MB" style sizes for people.
std::string HumanBytes(std::uint64_t bytes);
// "859.52 M" style counts (of parameters) for people.
std::string HumanCount(std::int64_t count);

}  // namespace sdonnx::cli
