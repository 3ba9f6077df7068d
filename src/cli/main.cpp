#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "util/log.h"
#include "util/output_move.h"
#include "util/temporaries.h"
#include "version.h"

namespace sdonnx::cli {

CLI::Validator IntegerValidator() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        std::int64_t value = 0;
        const char* end = text.data() + text.size();
        const auto [stop, error] = std::from_chars(text.data(), end, value);
        if (stop == end && !text.empty() && error == std::errc()) {
          // CLI11 reads a leading 0 as octal ("010" is 8), so the number is
          // passed on in plain decimal.
          text = std::to_string(value);
          return "";
        }
        if (stop == end && !text.empty() && error == std::errc::result_out_of_range) return "";
        if (text.empty()) return "an empty value is invalid; give a number";
        return "Value " + text + " is not an integer";
      },
      "INT");
}

int ReportError(const std::string& message) {
  std::cerr << "error: " << EscapeControlCharacters(message) << "\n";
  return 1;
}

std::string EscapeControlCharacters(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    const bool c0 = byte < 0x20;
    const bool c1 = byte == 0xC2 && i + 1 < text.size() &&
                    static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
                    static_cast<unsigned char>(text[i + 1]) <= 0x9F;
    if (!c0 && byte != 0x7F && !c1) {
      out += text[i];
      continue;
    }
    char escaped[16];
    if (c1) {
      ++i;
      std::snprintf(escaped, sizeof(escaped), "\\xc2\\x%02x", static_cast<unsigned char>(text[i]));
    } else {
      std::snprintf(escaped, sizeof(escaped), "\\x%02x", byte);
    }
    out += escaped;
  }
  return out;
}

void PrintLine(const std::string& line) { std::cout << EscapeControlCharacters(line) << "\n"; }

void PrintJson(const nlohmann::json& json) {
  // nlohmann's dump escapes control characters; `replace` keeps invalid
  // UTF-8 from an ONNX or pickle string from throwing.
  std::cout << json.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

namespace {

// `value` divided by 1000 until it is below 1000 or the units run out,
// printed with the unit reached: "12.3 MB", "859.52 M".
std::string Scaled(double value, const std::vector<const char*>& units, const char* format) {
  std::size_t unit = 0;
  while (value >= 1000.0 && unit + 1 < units.size()) {
    value /= 1000.0;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof(text), unit == 0 ? "%.0f%s" : format, value, units[unit]);
  return text;
}

}  // namespace

std::string HumanBytes(std::uint64_t bytes) {
  return Scaled(static_cast<double>(bytes), {" B", " KB", " MB", " GB", " TB"}, "%.1f%s");
}

std::string HumanCount(std::int64_t count) {
  return Scaled(static_cast<double>(count), {"", " K", " M", " B"}, "%.2f%s");
}

}  // namespace sdonnx::cli

namespace {

// Set by the signal watcher as soon as a signal arrives, before it waits
// for the output moves to finish.
std::atomic<bool> g_interrupted{false};

// Blocks SIGINT, SIGTERM and SIGHUP in this thread and every thread started later,
// and starts one thread that waits for them, removes half-written outputs
// and exits. The removal allocates and takes locks, so it must not run in a
// signal handler: one that interrupted malloc would deadlock.
void StartSignalWatcher() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);  // The terminal was closed.
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::thread([signals] {
    int signal_number = 0;
    if (sigwait(&signals, &signal_number) != 0) return;
    g_interrupted = true;
    // Finished files that are being moved into place are all moved (or all
    // put back) first, so the run leaves a complete set of outputs or none.
    // The lock is kept until the exit, so no later move starts.
    const std::unique_lock<std::mutex> moves = sdonnx::LockOutputMoves();
    const int removed = sdonnx::RemoveRegisteredTemporaries();
    const std::string message =
        std::string(signal_number == SIGINT   ? "\nsdonnx: interrupted (SIGINT); "
                    : signal_number == SIGHUP ? "\nsdonnx: hung up (SIGHUP); "
                                              : "\nsdonnx: terminated (SIGTERM); ") +
        (removed > 0 ? "unfinished outputs were removed\n"
                     : "no unfinished output had to be removed\n");
    // write() instead of a stream: another thread may hold the stream's lock.
    [[maybe_unused]] const ssize_t written = ::write(STDERR_FILENO, message.data(), message.size());
    ::_exit(128 + signal_number);
  }).detach();
}

// The "sdonnx SUBCOMMAND" of the deepest subcommand that was parsed, for
// the --help hint.
std::string CommandPath(CLI::App& app) {
  std::string path = "sdonnx";
  CLI::App* current = &app;
  while (current != nullptr) {
    const std::vector<CLI::App*> parsed = current->get_subcommands();
    current = parsed.empty() ? nullptr : parsed.front();
    if (current != nullptr) path += " " + current->get_name();
  }
  return path;
}

// Whether `name` ("--force") is a flag of `app` or of one of its commands.
bool IsFlag(const CLI::App& app, const std::string& name) {
  const CLI::Option* option = app.get_option_no_throw(name);
  if (option != nullptr && option->get_expected_max() == 0) return true;
  for (const CLI::App* command : app.get_subcommands([](const CLI::App*) { return true; })) {
    if (IsFlag(*command, name)) return true;
  }
  return false;
}

// The options whose value may be empty: an empty prompt is a prompt.
bool MayBeEmpty(const CLI::Option& option) {
  for (const char* name : {"--prompt", "--negative-prompt", "prompt"}) {
    if (option.check_name(name)) return true;
  }
  return false;
}

struct Arguments {
  std::vector<std::string> reversed;  // In the reverse order CLI11's vector parse takes.
  std::vector<std::string> emptied;   // Options written "--name=" or "-n=".
};

// Reads the arguments after the program name. CLI11 reads "--name=" as
// "--name" followed by the next argument, and "-o=" as "-o" with the value
// "=". So each such argument of an option that takes a value becomes the
// name and "", which OptionValueError rejects. For a flag it becomes the
// name alone.
Arguments ReadArguments(const CLI::App& app, int argc, char** argv) {
  Arguments out;
  bool options_end = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") options_end = true;
    const bool long_empty =
        arg.size() > 3 && arg.rfind("--", 0) == 0 && arg.find('=') == arg.size() - 1;
    const bool short_assignment =
        arg.size() >= 3 && arg[0] == '-' && arg[1] != '-' && arg[1] != '=' && arg[2] == '=';
    if (!options_end && short_assignment && arg.size() > 3 && !IsFlag(app, arg.substr(0, 2))) {
      // CLI11 would keep the '=' in the value of "-o=NAME".
      out.reversed.push_back(arg.substr(0, 2));
      out.reversed.push_back(arg.substr(3));
      continue;
    }
    if (options_end || (!long_empty && !(short_assignment && arg.size() == 3))) {
      out.reversed.push_back(arg);
      continue;
    }
    const std::string name = arg.substr(0, arg.size() - 1);
    out.reversed.push_back(name);
    if (!IsFlag(app, name)) {
      out.reversed.emplace_back();
      out.emptied.push_back(name);
    }
  }
  std::reverse(out.reversed.begin(), out.reversed.end());
  return out;
}

// Returns the error for the first option of the parsed commands whose value
// is another option's name, as when the value was left out ("--model
// --prompt cat"), or "". With `empty_values`, an empty value is an error too,
// because it would name the current folder or read as 0.
std::string OptionValueError(const CLI::App& app, bool empty_values) {
  for (const CLI::Option* option : app.get_options()) {
    if (option->count() == 0 || option->get_expected_max() == 0 || MayBeEmpty(*option)) continue;
    for (const std::string& value : option->results()) {
      const std::string name = option->get_name();
      if (value.rfind('-', 0) == 0 && app.get_option_no_throw(value) != nullptr) {
        return name + " was given no value: it took the option " + value + " as its value; give " +
               name + " a value before " + value;
      }
      if (!value.empty() || !empty_values) continue;
      const std::string type = option->get_type_name();
      const bool number =
          type.find("INT") != std::string::npos || type.find("FLOAT") != std::string::npos;
      const bool folder = name.ends_with("-dir") || name.ends_with("_dir");
      return (name.rfind('-', 0) == 0 ? name : "the " + name + " argument") +
             ": an empty value is invalid; " +
             (number   ? "give a number"
              : folder ? "give a folder (for the current folder, write '.')"
                       : "give a value");
    }
  }
  for (const CLI::App* command : app.get_subcommands()) {
    if (std::string error = OptionValueError(*command, empty_values); !error.empty()) return error;
  }
  return "";
}

// CLI11's message for a ParseError, reworded where it reads poorly.
std::string ParseErrorMessage(const CLI::ParseError& e, const Arguments& args) {
  std::string message = e.what();
  // CLI11 reports "--flag=VALUE" as "NAME was given a disallowed flag
  // override"; flags take no value (see disable_flag_override in main).
  const std::string override_text = " was given a disallowed flag override";
  const std::size_t at = message.rfind(override_text);
  if (at != std::string::npos && at + override_text.size() == message.size()) {
    std::string name = message.substr(0, at);
    if (name.rfind('-', 0) != 0) name = "--" + name;
    return name + " is a flag and takes no value; write " + name + " alone";
  }

  const std::string repeated = ": At Most 1 required but received ";
  if (const std::size_t where = message.find(repeated); where != std::string::npos) {
    return message.substr(0, where) + " was given " + message.substr(where + repeated.size()) +
           " times; give it once";
  }

  // CLI11's range and set checks quote an empty value as nothing.
  for (const auto& [empty, plain] :
       {std::pair<std::string, std::string>{": Value  not in range ",
                                            ": an empty value is invalid; give a number from "},
        {":  not in {", ": an empty value is invalid; give one of {"}}) {
    if (const std::size_t where = message.find(empty); where != std::string::npos) {
      return message.replace(where, empty.size(), plain);
    }
  }

  if (message.find("not expected") != std::string::npos && !args.emptied.empty()) {
    message += " (" + args.emptied.front() + "= gave " + args.emptied.front() +
               " an empty value; write " + args.emptied.front() +
               "=VALUE with no space after the '=')";
  }
  return message;
}

// Parses the command line. Returns -1 when the run goes on, else the exit
// code: 0 after --help or --version, 1 after an error in the options, the
// code every other usage error has.
int ParseCommandLine(CLI::App& app, int argc, char** argv) {
  const Arguments args = ReadArguments(app, argc, argv);
  std::string message;
  try {
    if (argc > 0) app.name(argv[0]);
    app.parse(std::vector<std::string>(args.reversed));
    message = OptionValueError(app, true);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
    // A value left out makes CLI11 report what follows (a required option
    // "missing"), so the option that took another's name is named first.
    message = OptionValueError(app, false);
    if (message.empty()) message = ParseErrorMessage(e, args);
  }
  if (message.empty()) return -1;
  const std::string help = CommandPath(app) + " --help";
  std::cerr << "error: " << sdonnx::cli::EscapeControlCharacters(message) << "\n"
            << "run '" << sdonnx::cli::EscapeControlCharacters(help) << "' to list the options\n";
  return 1;
}

// Returns `code`, or 1 when the run succeeded but its standard output did
// not all arrive (a closed pipe, a full disk, a file size limit): for
// inspect, verify --json and tokenize the output is the result.
int WithOutputCheck(int code) {
  std::cout.flush();
  const bool lost = !std::cout.good() || std::fflush(stdout) != 0 || std::ferror(stdout) != 0;
  if (!lost || code != 0) return code;
  std::cerr << "error: writing to standard output failed (a closed pipe, a full disk or a file "
               "size limit), so the printed output is incomplete\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  StartSignalWatcher();  // First, so that every later thread blocks the signals.
  // Past a file size limit (ulimit -f), writes then fail with EFBIG and the
  // error path removes the temporaries. The default action of SIGXFSZ would
  // kill the process and leave them behind.
  std::signal(SIGXFSZ, SIG_IGN);
  // When the reader of stdout or stderr goes away (`sdonnx convert -v |
  // head`), writes to it fail with EPIPE and print nothing more, and the run
  // goes on to complete outputs. SIGPIPE's default action would kill the
  // process and leave its staging folder behind.
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"sdonnx: Stable Diffusion checkpoints to ONNX, natively"};
  app.set_version_flag("--version", std::string("sdonnx ") + SDONNX_VERSION);
  app.require_subcommand(1);
  app.fallthrough();  // Lets -v follow the subcommand too.
  bool verbose = false;
  // A flag given a value ("--prepack=yes") is an error rather than parsed
  // loosely; only "=true" is accepted. Subcommands copy these defaults.
  app.option_defaults()->disable_flag_override();
  app.add_flag("-v,--verbose", verbose, "Print debug messages");

  std::function<int()> run;
  sdonnx::cli::AddConvertCommand(app, &run);
  sdonnx::cli::AddDemoCommand(app, &run);
  sdonnx::cli::AddTokenizeCommand(app, &run);
  sdonnx::cli::AddGenerateCommand(app, &run);
  sdonnx::cli::AddInspectCommand(app, &run);
  sdonnx::cli::AddVerifyCommand(app, &run);
  sdonnx::cli::AddExtractCommand(app, &run);
  sdonnx::cli::AddRebuildCommand(app, &run);
  if (const int code = ParseCommandLine(app, argc, argv); code >= 0) return code;

  const bool colour = ::isatty(STDERR_FILENO) != 0;
  sdonnx::SetLogSink([verbose, colour](sdonnx::LogLevel level, const std::string& raw) {
    const std::string message = sdonnx::cli::EscapeControlCharacters(raw);
    switch (level) {
      case sdonnx::LogLevel::kDebug:
        if (verbose) std::cerr << "debug: " << message << "\n";
        break;
      case sdonnx::LogLevel::kInfo:
        if (verbose) std::cerr << message << "\n";
        break;
      case sdonnx::LogLevel::kWarning:
        std::cerr << (colour ? "\033[33mwarning:\033[0m " : "warning: ") << message << "\n";
        break;
      case sdonnx::LogLevel::kError:
        std::cerr << "error: " << message << "\n";
        break;
    }
  });
  int code = 1;
  try {
    code = run ? run() : 1;
  } catch (const std::exception& e) {
    // Errors travel as Status values, so reaching here is a bug to report.
    code = sdonnx::cli::ReportError(std::string("internal error (please report it): ") + e.what());
  }
  // A run interrupted during its output moves finishes them and then
  // exits through the watcher with 128 + the signal. Returning here would
  // race the watcher and could exit 0.
  while (g_interrupted) std::this_thread::sleep_for(std::chrono::seconds(1));
  return WithOutputCheck(code);
}
