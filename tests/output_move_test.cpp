// MoveFilesIntoPlace: finished files are moved into place all together, and
// a failed rename undoes the earlier ones, old files included. Without
// overwrite, a file that appeared since the run checked its outputs is kept.
#include "util/output_move.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <iterator>

#include "test_support.h"
#include "util/atomic_file.h"
#include "util/temporaries.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;
using testing::ListFiles;
using testing::TempDir;
using testing::WarningLog;
using testing::WriteBytes;

std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

bool Contains(const std::string& text, const std::string& fragment) {
  return text.find(fragment) != std::string::npos;
}

TEST(OutputMove, MovesEveryFileAndReplacesOldOnes) {
  TempDir dir;
  fs::create_directories(dir / "staging");
  WriteBytes(dir / "staging" / "a", "new a");
  WriteBytes(dir / "staging" / "b", "new b");
  WriteBytes(dir / "b", "old b");
  const Status moved =
      MoveFilesIntoPlace({{(dir / "staging" / "a").string(), (dir / "a").string(), true},
                          {(dir / "staging" / "b").string(), (dir / "b").string(), true}});
  ASSERT_TRUE(moved.ok()) << moved.message();
  EXPECT_EQ(ReadText(dir / "a"), "new a");
  EXPECT_EQ(ReadText(dir / "b"), "new b");
  // No folder of kept-aside files is left behind.
  EXPECT_EQ(ListFiles(dir.path()), (std::vector<std::string>{"a", "b", "staging"}));
  EXPECT_TRUE(ListFiles(dir / "staging").empty());
}

TEST(OutputMove, FailedMoveRestoresEarlierOnes) {
  TempDir dir;
  fs::create_directories(dir / "staging");
  for (const std::string name : {"a", "b", "c"}) WriteBytes(dir / "staging" / name, "new " + name);
  WriteBytes(dir / "a", "old a");
  // A file cannot replace a folder, so the third rename fails after two
  // have been done.
  fs::create_directories(dir / "c");
  WriteBytes(dir / "c" / "inside", "keep");
  const Status moved = MoveFilesIntoPlace({
      {(dir / "staging" / "a").string(), (dir / "a").string(), true},
      {(dir / "staging" / "b").string(), (dir / "b").string(), true},
      {(dir / "staging" / "c").string(), (dir / "c").string(), true},
  });
  ASSERT_FALSE(moved.ok());
  EXPECT_TRUE(Contains(moved.message(), (dir / "c").string() + ": cannot move the finished file"))
      << moved.message();
  EXPECT_TRUE(Contains(moved.message(), "every output was left as it was before"))
      << moved.message();
  EXPECT_EQ(ReadText(dir / "a"), "old a");
  EXPECT_FALSE(fs::exists(dir / "b"));
  EXPECT_EQ(ReadText(dir / "c" / "inside"), "keep");
  EXPECT_EQ(ListFiles(dir.path()), (std::vector<std::string>{"a", "c", "staging"}));
  EXPECT_EQ(ListFiles(dir / "staging"), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(ReadText(dir / "staging" / "a"), "new a");
}

TEST(OutputMove, MissingSourceFailsWithoutChanges) {
  TempDir dir;
  WriteBytes(dir / "a", "old a");
  const Status moved = MoveFilesIntoPlace({{(dir / "gone").string(), (dir / "a").string(), true}});
  ASSERT_FALSE(moved.ok());
  EXPECT_TRUE(Contains(moved.message(), "gone into place")) << moved.message();
  EXPECT_EQ(ReadText(dir / "a"), "old a");
  EXPECT_EQ(ListFiles(dir.path()), (std::vector<std::string>{"a"}));
}

TEST(OutputMove, CommitAllIsAllOrNothing) {
  TempDir dir;
  std::vector<AtomicFile> files;
  for (const std::string name : {"one.png", "two.png"}) {
    Result<AtomicFile> file = AtomicFile::Create((dir / name).string(), /*overwrite=*/true);
    ASSERT_TRUE(file.ok()) << file.status().message();
    ASSERT_TRUE(file->Write(name).ok());
    files.push_back(std::move(file).value());
  }
  fs::create_directories(dir / "two.png");
  WriteBytes(dir / "two.png" / "inside", "keep");
  ASSERT_FALSE(AtomicFile::CommitAll(files).ok());
  EXPECT_FALSE(fs::exists(dir / "one.png"));
  files.clear();  // Removes the temporaries.
  EXPECT_EQ(ListFiles(dir.path()), (std::vector<std::string>{"two.png"}));

  std::vector<AtomicFile> again;
  for (const std::string name : {"three.png", "four.png"}) {
    Result<AtomicFile> file = AtomicFile::Create((dir / name).string(), /*overwrite=*/false);
    ASSERT_TRUE(file.ok()) << file.status().message();
    ASSERT_TRUE(file->Write(name).ok());
    again.push_back(std::move(file).value());
  }
  const Status committed = AtomicFile::CommitAll(again);
  ASSERT_TRUE(committed.ok()) << committed.message();
  again.clear();
  EXPECT_EQ(ReadText(dir / "three.png"), "three.png");
  EXPECT_EQ(ReadText(dir / "four.png"), "four.png");
  EXPECT_EQ(ListFiles(dir.path()), (std::vector<std::string>{"four.png", "three.png", "two.png"}));
}

TEST(OutputMove, FileThatAppearedIsKeptWithoutForce) {
  // "b" is not there when the run checks its outputs but appears before the
  // moves, as when another run finished first.
  TempDir dir;
  fs::create_directories(dir / "staging");
  for (const std::string name : {"a", "b", "c"}) WriteBytes(dir / "staging" / name, "new " + name);
  WriteBytes(dir / "b", "other run's b");
  const Status moved = MoveFilesIntoPlace({
      {(dir / "staging" / "a").string(), (dir / "a").string()},
      {(dir / "staging" / "b").string(), (dir / "b").string()},
      {(dir / "staging" / "c").string(), (dir / "c").string()},
  });
  ASSERT_FALSE(moved.ok());
  EXPECT_TRUE(Contains(moved.message(), (dir / "b").string() +
                                            ": already exists (another run wrote it "
                                            "meanwhile?); pass --force to overwrite it"))
      << moved.message();
  EXPECT_TRUE(Contains(moved.message(), "every output was left as it was before"))
      << moved.message();
  EXPECT_EQ(ReadText(dir / "b"), "other run's b");
  EXPECT_EQ(ListFiles(dir.path()), (std::vector<std::string>{"b", "staging"}));
  EXPECT_EQ(ListFiles(dir / "staging"), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(ReadText(dir / "staging" / "a"), "new a");
}

TEST(OutputMove, CommitKeepsFileCreatedMeanwhile) {
  TempDir dir;
  {
    Result<AtomicFile> file = AtomicFile::Create((dir / "x.png").string(), /*overwrite=*/false);
    ASSERT_TRUE(file.ok()) << file.status().message();
    ASSERT_TRUE(file->Write("mine").ok());
    WriteBytes(dir / "x.png", "theirs");
    const Status committed = file->Commit();
    ASSERT_FALSE(committed.ok());
    EXPECT_TRUE(Contains(committed.message(), (dir / "x.png").string() + ": already exists"))
        << committed.message();
    EXPECT_TRUE(Contains(committed.message(), "pass --force")) << committed.message();
    EXPECT_EQ(ReadText(dir / "x.png"), "theirs");
  }  // The AtomicFile's destructor removes the temporary.
  EXPECT_EQ(ListFiles(dir.path()), (std::vector<std::string>{"x.png"}));
}

TEST(OutputMove, CommitWithForceReplacesFileCreatedMeanwhile) {
  TempDir dir;
  Result<AtomicFile> file = AtomicFile::Create((dir / "x.png").string(), /*overwrite=*/true);
  ASSERT_TRUE(file.ok()) << file.status().message();
  ASSERT_TRUE(file->Write("mine").ok());
  WriteBytes(dir / "x.png", "theirs");
  const Status committed = file->Commit();
  ASSERT_TRUE(committed.ok()) << committed.message();
  EXPECT_EQ(ReadText(dir / "x.png"), "mine");
  EXPECT_EQ(ListFiles(dir.path()), (std::vector<std::string>{"x.png"}));
}

// Creates the folder that keeps a replaced "a" aside, as a run killed in
// the middle of its moves leaves it: ".a.sdonnx-old-XXXXXX" with the old
// file and the lock file "a.lock".
fs::path MakeBackupFolder(const fs::path& dir, const std::string& unique) {
  const fs::path folder = dir / (".a.sdonnx-old-" + unique);
  fs::create_directories(folder);
  WriteBytes(folder / "a", "old a kept aside");
  WriteBytes(folder / "a.lock", "");
  return folder;
}

TEST(OutputMove, DeadRunsBackupFolderIsRemoved) {
  TempDir dir;
  const fs::path folder = MakeBackupFolder(dir.path(), "Ab12Cd");
  // A folder of another NAME is not this move's to remove.
  const fs::path other = dir / ".b.sdonnx-old-Ab12Cd";
  fs::create_directories(other);
  WriteBytes(dir / "new-a", "new a");
  WarningLog log;
  const Status moved = MoveFilesIntoPlace({{(dir / "new-a").string(), (dir / "a").string()}});
  ASSERT_TRUE(moved.ok()) << moved.message();
  EXPECT_EQ(ReadText(dir / "a"), "new a");
  EXPECT_FALSE(fs::exists(folder));
  EXPECT_TRUE(fs::exists(other));
  EXPECT_TRUE(Contains(log.text(), "removed " + folder.string() + " (16 bytes)")) << log.text();
}

TEST(OutputMove, LiveRunsBackupFolderIsKept) {
  TempDir dir;
  const fs::path folder = MakeBackupFolder(dir.path(), "Ef34Gh");
  // The test holds the lock, as the run that created the folder would.
  const int lock_fd = TryLockFile(folder / "a.lock");
  ASSERT_GE(lock_fd, 0);
  WriteBytes(dir / "new-a", "new a");
  WarningLog log;
  const Status moved = MoveFilesIntoPlace({{(dir / "new-a").string(), (dir / "a").string(), true}});
  ::close(lock_fd);
  ASSERT_TRUE(moved.ok()) << moved.message();
  EXPECT_EQ(ReadText(folder / "a"), "old a kept aside");
  EXPECT_TRUE(log.text().empty()) << log.text();
  EXPECT_EQ(ListFiles(dir.path()), (std::vector<std::string>{".a.sdonnx-old-Ef34Gh", "a"}));
}

}  // namespace
}  // namespace sdonnx
