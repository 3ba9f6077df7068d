// The sdonnx program end to end: exit codes, messages, and what is left in
// the output folder after a failure.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <regex>
#include <utility>

#include "test_support.h"
#include "util/sha256.h"
#include "formats/mapped_file.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::Fixture;
using testing::CommandResult;
using testing::Quote;
using testing::RunSdonnx;
using testing::ListFiles;
using testing::TempDir;
using testing::WriteBytes;

std::string FileSha256(const fs::path& path) {
  auto mapped = MappedFile::Open(path.string());
  return mapped.ok() ? Sha256Hex((*mapped)->bytes()) : "";
}

TEST(Cli, ConvertWritesFiveFilesAndReportsThem) {
  TempDir out;
  CommandResult r = RunSdonnx("convert --model-path " +
                              Quote(Fixture("tiny/tiny-sd1.safetensors")) + " --output-dir " +
                              Quote(out.path()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ListFiles(out.path()),
            (std::vector<std::string>{"clip_text_tiny-sd1.onnx", "extras_tiny-sd1.safetensors",
                                      "unet_tiny-sd1.onnx", "vae_decoder_tiny-sd1.onnx",
                                      "vae_encoder_tiny-sd1.onnx"}));
  EXPECT_NE(r.output.find("detected: sd1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("wrote "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" MB)"), std::string::npos) << r.output;
}

TEST(Cli, PositionalArgumentsAndOpsetWork) {
  TempDir out;
  CommandResult r = RunSdonnx("convert " + Quote(Fixture("tiny/tiny-sd1.safetensors")) + " " +
                              Quote(out.path()) + " --opset-version 14");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ListFiles(out.path()).size(), 5u);
}

TEST(Cli, SourceCheckpointIsLeftUnchanged) {
  TempDir dir;
  const fs::path source = dir / "model.safetensors";
  fs::copy_file(Fixture("tiny/tiny-sd1.safetensors"), source);
  fs::copy_file(Fixture("tiny/tiny-sd1.yaml"), dir / "model.yaml");
  const std::string before = FileSha256(source);
  const auto mtime = fs::last_write_time(source);
  CommandResult r = RunSdonnx("convert " + Quote(source) + " " + Quote(dir.path()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(FileSha256(source), before);
  EXPECT_EQ(fs::last_write_time(source), mtime);
}

TEST(Cli, FileThatIsNotSafetensorsFailsAndLeavesOutputEmpty) {
  TempDir dir;
  const fs::path bogus = dir / "notes.safetensors";
  WriteBytes(bogus, "<html><body>404 Not Found</body></html>");
  const fs::path out = dir / "out";
  fs::create_directories(out);
  CommandResult r = RunSdonnx("convert " + Quote(bogus) + " " + Quote(out));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("notes.safetensors"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_TRUE(ListFiles(out).empty());
}

TEST(Cli, CheckpointWithoutUNetFailsAndLeavesOutputEmpty) {
  TempDir dir;
  const fs::path vae_only = dir / "vae.safetensors";
  const float zero[4] = {};
  WriteBytes(vae_only, "");
  {
    std::string header = R"({"first_stage_model.encoder.conv_in.bias":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    bytes += header;
    bytes.append(reinterpret_cast<const char*>(zero), sizeof(zero));
    WriteBytes(vae_only, bytes);
  }
  const fs::path out = dir / "out";
  CommandResult r = RunSdonnx("convert " + Quote(vae_only) + " " + Quote(out));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("vae.safetensors"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("no UNet"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("model.diffusion_model.input_blocks.0.0.weight"), std::string::npos)
      << r.output;
  EXPECT_TRUE(ListFiles(out).empty());
}

TEST(Cli, ExistingOutputIsKeptWithoutForce) {
  TempDir out;
  WriteBytes(out / "unet_tiny-sd1.onnx", "keep me");
  CommandResult r = RunSdonnx("convert " + Quote(Fixture("tiny/tiny-sd1.safetensors")) + " " +
                              Quote(out.path()));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--force"), std::string::npos) << r.output;
  EXPECT_EQ(ListFiles(out.path()), (std::vector<std::string>{"unet_tiny-sd1.onnx"}));
  std::ifstream kept(out / "unet_tiny-sd1.onnx");
  std::string text((std::istreambuf_iterator<char>(kept)), {});
  EXPECT_EQ(text, "keep me");

  CommandResult forced = RunSdonnx("convert " + Quote(Fixture("tiny/tiny-sd1.safetensors")) +
                                   " " + Quote(out.path()) + " --force");
  EXPECT_EQ(forced.exit_code, 0) << forced.output;
  EXPECT_EQ(ListFiles(out.path()).size(), 5u);
}

TEST(Cli, ControlCharactersFromTheFileAreEscaped) {
  // A tensor name that would retitle the terminal and clear the screen, in
  // JSON escapes (U+009B is the one-character CSI).
  TempDir dir;
  const std::string header =
      R"({"\u001b]0;pwned\u0007\u001b[2J\u009b31m":{"dtype":"F7","shape":[1],)"
      R"("data_offsets":[0,4]}})";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  WriteBytes(dir / "evil.safetensors", bytes + header + std::string(4, '\0'));
  CommandResult r = RunSdonnx("convert " + Quote(dir / "evil.safetensors") + " " +
                              Quote(dir / "out"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.output.find('\x1b'), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find('\x07'), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("\xc2\x9b"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\\x1b]0;pwned\\x07\\x1b[2J\\xc2\\x9b31m"), std::string::npos)
      << r.output;
}

TEST(Cli, DeeplyNestedYamlConfigIsRejected) {
  // A deeply nested config must give an error, not a stack overflow in the
  // YAML parser.
  TempDir dir;
  WriteBytes(dir / "deep.yaml",
             "model: " + std::string(100000, '[') + std::string(100000, ']') + "\n");
  CommandResult r = RunSdonnx("convert " + Quote(Fixture("tiny/tiny-sd1.safetensors")) + " " +
                              Quote(dir / "out") + " --config " + Quote(dir / "deep.yaml"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("deep.yaml: cannot read the YAML config"), std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(dir / "out"));
}

TEST(Cli, UnsupportedOpsetIsRejected) {
  TempDir out;
  CommandResult r = RunSdonnx("convert " + Quote(Fixture("tiny/tiny-sd1.safetensors")) + " " +
                              Quote(out.path()) + " --opset-version 12");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(ListFiles(out.path()).empty());
}

TEST(Cli, DemoRunsTheWholePipeline) {
  TempDir work;
  CommandResult r = RunSdonnx("demo --work-dir " + Quote(work.path()) + " --output " +
                              Quote(work / "demo.png"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::is_regular_file(work / "demo.png")) << r.output;
  EXPECT_NE(r.output.find("generated "), std::string::npos) << r.output;
  for (const char* component : {"clip_text", "unet", "vae_decoder", "vae_encoder"}) {
    EXPECT_NE(r.output.find(std::string("ran ") + component), std::string::npos) << r.output;
  }
  EXPECT_EQ(r.output.find("NON-FINITE"), std::string::npos) << r.output;
  // Two decimals, as generate prints it.
  EXPECT_TRUE(std::regex_search(r.output, std::regex(R"(steps, [0-9]+\.[0-9]{2} s per step\))")))
      << r.output;
}

// Options CLI11 rejects get the same "error: " prefix and exit code as
// every other usage error, and a hint to run --help.
TEST(Cli, OptionErrorsExitOneWithHelpHint) {
  const std::string model = Quote(Fixture("tiny/tiny-sd1.safetensors"));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"convert " + model + " out --opset-version 13", "--opset-version"},
      {"convert " + model + " out --ort-attention=maybe",
       "--ort-attention is a flag and takes no value"},
      {"generate --model m --prompt p --output g.png --prepack=yes",
       "--prepack is a flag and takes no value"},
      {"convert " + model + " out --no-such-option", "--no-such-option"},
      {"convert", "--model-path is required"},
      {"", "subcommand"}};
  for (const auto& [arguments, message] : cases) {
    SCOPED_TRACE(arguments);
    TempDir dir;
    const CommandResult r = RunSdonnx(arguments, "cd " + Quote(dir.path()) + " &&");
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(r.output.starts_with("error: ")) << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(" --help' to list the options"), std::string::npos) << r.output;
    EXPECT_TRUE(ListFiles(dir.path()).empty());
  }
  EXPECT_NE(RunSdonnx("convert " + model + " out --opset-version 13")
                .output.find("run 'sdonnx convert --help'"),
            std::string::npos);
  for (const char* arguments : {"--help", "convert --help", "--version"}) {
    EXPECT_EQ(RunSdonnx(arguments).exit_code, 0) << arguments;
  }
}

TEST(Cli, AttentionChunksMustBeAnInteger) {
  const std::string model = Quote(Fixture("tiny/tiny-sd1.safetensors"));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"abc", "Value abc is not an integer"},
      {"1.5", "Value 1.5 is not an integer"},
      {"4x", "Value 4x is not an integer"},
      {"0", "not in range 1 to 256"},
      {"257", "not in range 1 to 256"},
      {"99999999999999999999", "not in range 1 to 256"},
  };
  for (const auto& [value, message] : cases) {
    SCOPED_TRACE(value);
    TempDir dir;
    const CommandResult r = RunSdonnx("convert " + model + " out --attention-chunks " + value,
                                      "cd " + Quote(dir.path()) + " &&");
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("--attention-chunks"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << r.output;
    EXPECT_TRUE(ListFiles(dir.path()).empty());
  }
}

// A size past 64 bits is named as typed. CLI11 used to clamp it, and
// generate then reported 9223372036854775807.
TEST(Cli, HugeImageSizeIsNamedAsTyped) {
  for (const std::string option : {"--width", "--height", "--batch-size"}) {
    SCOPED_TRACE(option);
    TempDir dir;
    const CommandResult r = RunSdonnx(
        "generate --model m --prompt p --output o.png " + option + " 99999999999999999999",
        "cd " + Quote(dir.path()) + " &&");
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(option), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("99999999999999999999 not in range 1 to"), std::string::npos)
        << r.output;
    EXPECT_EQ(r.output.find("9223372036854775807"), std::string::npos) << r.output;
    EXPECT_TRUE(ListFiles(dir.path()).empty());
  }
}

// CLI11 reads a leading 0 as octal; sdonnx reads every integer as decimal.
TEST(Cli, LeadingZerosAreDecimal) {
  TempDir dir;
  const CommandResult batch =
      RunSdonnx("generate --model m --prompt p --output o.png --batch-size 065",
                "cd " + Quote(dir.path()) + " &&");
  EXPECT_EQ(batch.exit_code, 1) << batch.output;
  EXPECT_NE(batch.output.find("Value 65 not in range 1 to 64"), std::string::npos) << batch.output;
  // As octal, 014 would be 12, below the smallest opset.
  const CommandResult opset = RunSdonnx("convert " + Quote(Fixture("tiny/tiny-sd1.safetensors")) +
                                        " " + Quote(dir / "out") + " --opset-version 014");
  EXPECT_EQ(opset.exit_code, 0) << opset.output;
  EXPECT_EQ(testing::ReadModel(dir / "out" / "unet_tiny-sd1.onnx").opset_import(0).version(), 14);
}

// CLI11 reads "--name=" as "--name" followed by the next argument, so
// "--cache-dir= --force" would name a folder "--force". The empty value
// is rejected instead, and a flag written "--force=" stays a flag.
TEST(Cli, EmptyAssignmentIsAnEmptyValue) {
  TempDir dir;
  const std::string cd = "cd " + Quote(dir.path()) + " &&";
  const CommandResult cache =
      RunSdonnx("generate --model m --prompt p --output o.png --cache-dir= --force", cd);
  EXPECT_EQ(cache.exit_code, 1) << cache.output;
  EXPECT_NE(cache.output.find("--cache-dir: an empty value is invalid; give a folder"),
            std::string::npos)
      << cache.output;
  const CommandResult output = RunSdonnx("generate --model m --prompt p --output= --force", cd);
  EXPECT_EQ(output.exit_code, 1) << output.output;
  EXPECT_EQ(output.output.find("--force"), std::string::npos) << output.output;
  EXPECT_TRUE(testing::ListFiles(dir.path()).empty());
  EXPECT_TRUE(fs::is_empty(dir.path()));

  // Every option but the prompts rejects an empty value, however written.
  const std::string model = Quote(Fixture("tiny/tiny-sd1.safetensors"));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"convert " + model + " --output-dir=", "--output-dir: an empty value is invalid"},
      {"convert '' out", "--model-path: an empty value is invalid"},
      {"generate --model m --prompt p --output o.png --cfg-scale=",
       "--cfg-scale: an empty value is invalid; give a number"},
      {"generate --model m --prompt p --output o.png --steps=",
       "--steps: an empty value is invalid; give a number"},
      {"generate --model m --prompt p --output o.png --strength=",
       "--strength: an empty value is invalid; give a number from"},
      {"generate --model m --prompt p --output o.png --graph-optimization=",
       "--graph-optimization: an empty value is invalid; give one of {"},
      {"generate --model m --prompt p --output o.png --init-image=",
       "--init-image: an empty value is invalid"},
      {"extract m.onnx -o=", "--output: an empty value is invalid"},
      {"generate --model m --prompt= 'a cat' --output o.png",
       "a cat (--prompt= gave --prompt an empty value; write --prompt=VALUE"},
      {"generate --model m --prompt p --seed 1 --seed 2 --output o.png",
       "--seed was given 2 times; give it once"},
      // A value left out: the option took the next option's name.
      {"generate --model --prompt cat --output o.png",
       "--model was given no value: it took the option --prompt as its value"},
      {"convert --model-path --output-dir out", "--model-path was given no value"},
      {"generate --model m --prompt p --output --force", "--output was given no value"},
  };
  for (const auto& [arguments, expected] : cases) {
    SCOPED_TRACE(arguments);
    const CommandResult r = RunSdonnx(arguments, cd);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(expected), std::string::npos) << r.output;
  }
  EXPECT_TRUE(fs::is_empty(dir.path()));

  // "-o=NAME" names NAME, as "--output=NAME" does.
  const CommandResult converted =
      RunSdonnx("convert " + Quote(Fixture("tiny/tiny-sd1.safetensors")) + " short", cd);
  ASSERT_EQ(converted.exit_code, 0) << converted.output;
  const CommandResult short_assignment =
      RunSdonnx("extract short/unet_tiny-sd1.onnx -o=unet.safetensors", cd);
  EXPECT_EQ(short_assignment.exit_code, 0) << short_assignment.output;
  EXPECT_TRUE(fs::exists(dir / "unet.safetensors"));

  const CommandResult flag =
      RunSdonnx("convert " + Quote(Fixture("tiny/tiny-sd1.safetensors")) + " out --force=", cd);
  EXPECT_EQ(flag.exit_code, 0) << flag.output;
  // After "--", "--name=" is a positional argument like any other.
  const CommandResult positional = RunSdonnx("inspect -- --name=", cd);
  EXPECT_EQ(positional.exit_code, 1) << positional.output;
  EXPECT_NE(positional.output.find("--name="), std::string::npos) << positional.output;
}

// Every integer option rejects text with "is not an integer", not with
// "not in range" or "Could not convert".
TEST(Cli, IntegerOptionsRejectText) {
  const std::string model = Quote(Fixture("tiny/tiny-sd1.safetensors"));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"convert " + model + " out --opset-version abc", "--opset-version"},
      {"convert " + model + " out --opset-version 17.5", "--opset-version"},
      {"generate --model m --prompt p --output o.png --steps ten", "--steps"},
      {"generate --model m --prompt p --output o.png --threads 2.5", "--threads"},
      {"generate --model m --prompt p --output o.png --seed abc", "--seed"},
      {"generate --model m --prompt p --output o.png --width 5.5", "--width"},
      {"convert " + model + " out --static-shape 64x64 --batch-size 1.5", "--batch-size"},
  };
  for (const auto& [arguments, option] : cases) {
    SCOPED_TRACE(arguments);
    TempDir dir;
    const CommandResult r = RunSdonnx(arguments, "cd " + Quote(dir.path()) + " &&");
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(option), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("is not an integer"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("not in range"), std::string::npos) << r.output;
    EXPECT_TRUE(ListFiles(dir.path()).empty());
  }
}

// Seeds past the int64 range were clamped, and a batch's last seed could
// pass the largest seed that --seed accepts back.
TEST(Cli, SeedsOutOfRangeAreRejected) {
  const std::string generate = "generate --model m --prompt p --output o.png";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {generate + " --seed 18446744073709551615", "is out of range; seeds go from 0 to"},
      {generate + " --seed -2", "is out of range; seeds go from 0 to"},
      {generate + " --seed 9223372036854775807 --batch-size 2",
       "gives the last image seed 9223372036854775808, past the largest seed"},
  };
  for (const auto& [arguments, message] : cases) {
    SCOPED_TRACE(arguments);
    TempDir dir;
    const CommandResult r = RunSdonnx(arguments, "cd " + Quote(dir.path()) + " &&");
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << r.output;
    EXPECT_TRUE(ListFiles(dir.path()).empty());
  }
}

}  // namespace
}  // namespace sdonnx

namespace sdonnx {
namespace {

// A control character in a file name reaches the terminal escaped, from
// convert, generate and tokenize as from the other commands.
TEST(Cli, ControlCharactersInFileNamesAreEscaped) {
  TempDir dir;
  const std::string stem = "ok\x1b]0;x\a";
  fs::copy_file(Fixture("tiny/tiny-sd1.safetensors"), dir / (stem + ".safetensors"));
  fs::copy_file(Fixture("tiny/tiny-sd1.yaml"), dir / (stem + ".yaml"));
  const CommandResult converted =
      RunSdonnx("convert " + Quote(dir / (stem + ".safetensors")) + " " + Quote(dir / "models"));
  ASSERT_EQ(converted.exit_code, 0) << converted.output;
  EXPECT_NE(converted.output.find("unet_ok\\x1b]0;x\\x07.onnx"), std::string::npos)
      << converted.output;

  const fs::path tokenizer = dir / "vocab\x1b[1m.txt.gz";
  fs::copy_file(Fixture("clip/bpe_simple_vocab_16e6.txt.gz"), tokenizer);
  const CommandResult generated =
      RunSdonnx("generate --model " + Quote(dir / "models") +
                " --prompt fox --steps 1 --width 32 --height 32 --tokenizer " + Quote(tokenizer) +
                " --output " + Quote(dir / "g\x1b[31m.png"));
  ASSERT_EQ(generated.exit_code, 0) << generated.output;
  EXPECT_NE(generated.output.find("g\\x1b[31m.png"), std::string::npos) << generated.output;
  const CommandResult tokenized = RunSdonnx("tokenize --tokenizer " + Quote(tokenizer) + " fox");
  ASSERT_EQ(tokenized.exit_code, 0) << tokenized.output;
  EXPECT_NE(tokenized.output.find("vocab\\x1b[1m.txt.gz"), std::string::npos) << tokenized.output;
  for (const CommandResult* r : {&converted, &generated, &tokenized}) {
    EXPECT_EQ(r->output.find('\x1b'), std::string::npos) << r->output;
    EXPECT_EQ(r->output.find('\a'), std::string::npos) << r->output;
  }
}

// generate creates the missing folders above --output, and removes them
// again when the run fails.
TEST(Cli, GenerateCreatesMissingOutputFolders) {
  TempDir dir;
  const std::string common = " --prompt fox --steps 1 --width 32 --height 32 --tokenizer " +
                             Quote(Fixture("clip/bpe_simple_vocab_16e6.txt.gz"));
  const CommandResult failed = RunSdonnx("generate --model " + Quote(dir / "no-models") + common +
                                         " --output " + Quote(dir / "a" / "b" / "g.png"));
  EXPECT_EQ(failed.exit_code, 1) << failed.output;
  EXPECT_FALSE(fs::exists(dir / "a")) << failed.output;

  const CommandResult converted = RunSdonnx(
      "convert " + Quote(Fixture("tiny/tiny-sd1.safetensors")) + " " + Quote(dir / "models"));
  ASSERT_EQ(converted.exit_code, 0) << converted.output;
  const CommandResult r = RunSdonnx("generate --model " + Quote(dir / "models") + common +
                                    " --output " + Quote(dir / "a" / "b" / "g.png"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ListFiles(dir / "a" / "b"), (std::vector<std::string>{"g.png"}));
}

}  // namespace
}  // namespace sdonnx

namespace sdonnx {
namespace {

// ONNX Runtime parses the process's command line when sdonnx first loads a
// model; a long prompt there once overflowed the stack.
TEST(Cli, LongPromptOnCommandLineGenerates) {
  TempDir dir;
  const fs::path models = dir / "models";
  CommandResult converted = RunSdonnx("convert " + Quote(Fixture("tiny/tiny-sd1.safetensors")) +
                                      " " + Quote(models));
  ASSERT_EQ(converted.exit_code, 0) << converted.output;
  std::string prompt;
  for (int i = 0; i < 15000; ++i) prompt += "(x ";  // 45 KB; both stay under 128 KB
  const fs::path image = dir / "long.png";
  CommandResult r = RunSdonnx(
      "generate --model " + Quote(models) + " --steps 1 --width 32 --height 32 --tokenizer " +
      Quote(Fixture("clip/bpe_simple_vocab_16e6.txt.gz")) + " --prompt '" + prompt +
      "' --negative-prompt '" + prompt + "' --output " + Quote(image));
  ASSERT_EQ(r.exit_code, 0) << r.output.substr(0, 2000);
  EXPECT_EQ(ListFiles(dir.path()), (std::vector<std::string>{"long.png", "models"}));
}

}  // namespace
}  // namespace sdonnx

namespace sdonnx {
namespace {

// Opening a named pipe for reading waits for a writer, so every command
// must reject one before it opens it. `timeout` turns a hang into exit 124.
TEST(Cli, NamedPipesAreRejectedWithoutBlocking) {
  TempDir dir;
  const fs::path pipe = dir / "pipe.safetensors";
  ASSERT_EQ(::mkfifo(pipe.c_str(), 0600), 0);
  const fs::path vocabulary_pipe = dir / "bpe_simple_vocab_16e6.txt.gz";
  ASSERT_EQ(::mkfifo(vocabulary_pipe.c_str(), 0600), 0);
  const fs::path models = dir / "models";
  ASSERT_EQ(RunSdonnx("convert " + Quote(Fixture("tiny/tiny-sd1.safetensors")) + " " +
                      Quote(models)).exit_code,
            0);
  const std::string generate = "generate --model " + Quote(models) +
                               " --steps 1 --width 32 --height 32 --prompt x --output " +
                               Quote(dir / "out.png");
  const std::string tokenizer = " --tokenizer " + Quote(Fixture("clip/bpe_simple_vocab_16e6.txt.gz"));
  const std::vector<std::string> commands = {
      "inspect " + Quote(pipe),
      "inspect --json " + Quote(pipe),
      "verify " + Quote(pipe),
      "convert " + Quote(pipe) + " " + Quote(dir / "converted"),
      "extract " + Quote(pipe) + " " + Quote(dir / "extracted.safetensors"),
      generate + tokenizer + " --init-image " + Quote(pipe),
      generate + " --tokenizer " + Quote(vocabulary_pipe),
  };
  for (const std::string& command : commands) {
    SCOPED_TRACE(command);
    CommandResult r = testing::RunCommand("timeout 20 " + std::string(SDONNX_BINARY) + " " + command);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("not a regular file"), std::string::npos) << r.output;
  }
  EXPECT_EQ(ListFiles(dir.path()), (std::vector<std::string>{"bpe_simple_vocab_16e6.txt.gz",
                                                            "models", "pipe.safetensors"}));
}

// A result that stdout cannot take in full gives exit code 1.
TEST(Cli, LostOutputIsAnError) {
  const std::string model = Quote(Fixture("tiny/tiny-sd1.safetensors"));
  for (const std::string& arguments : {"inspect --json " + model, "inspect " + model,
                                       "verify --json " + model}) {
    SCOPED_TRACE(arguments);
    // stderr to the pipe that RunCommand reads, stdout to a full disk.
    const CommandResult r = testing::RunCommand("{ " + std::string(SDONNX_BINARY) + " " +
                                                arguments + " 2>&1 >/dev/full; }");
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("writing to standard output failed"), std::string::npos) << r.output;
  }
}

}  // namespace
}  // namespace sdonnx
