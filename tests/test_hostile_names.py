"""Absurd output files, end to end: what a trial names its files, how many it makes,
and what kinds of files they are.

The names and bytes of a trial's output folder become artifact rows, API answers and
URLs. Whatever a trial leaves there, its artifact list must be clean (valid names
only, each downloadable through the gateway with its own bytes), what was skipped
must be listed without a control character, nothing outside the folder may leak in,
and its sweep must answer on every route while the runner's stream stays up
(`tests/hostile.py`). Every attack is its own sweep, all created at once.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator

import pytest

from tests.hostile import (
    CONTROL,
    Attack,
    Batch,
    MiB,
    assert_readable,
    assert_survived,
    get,
    module_batch,
)

# Every C0 control but NUL (which no file name can hold), DEL, every C1 control, and
# terminal escape sequences: 67 names, more than the 64 skipped notes listed.
CONTROL_NAMES = """
import json, os
os.chdir("/workspace/output")
open("fine.txt", "w").write("fine")
names = [chr(c) + "c%02x" % c for c in range(1, 32)] + ["\\x7fdel"]
names += [chr(c) + "c%02x" % c for c in range(0x80, 0xA0)]
names += ["\\x1b[2Jclear", "\\x1b]0;owned\\x07title", "\\x1b[31mred\\x1b[0m"]
for name in names:
    open(name, "w").write("x")
print(json.dumps({"made": len(names)}))
"""

# Valid names that differ only in normalisation, case, spaces or invisible characters,
# and names with characters that mean something in a URL or a path.
VARIANTS = [
    "café.txt",
    unicodedata.normalize("NFD", "café.txt"),
    "Data.txt",
    "data.txt",
    "DATA.txt",
    "x",
    "x ",
    "x  ",
    " x",
    "emoji\U0001f600",
    "中文名",
    "100%",
    "sp ace",
    'quote"d',
    "back\\slash",
    "tilde~",
    "...",
    "..a",
    "a%2Fb",
    "%2e%2e",
    "-dash",
]
# Names that would look like others, or reorder or break the text around them: skipped.
INVISIBLE = ["zero\u200bwidth", "\ufeffbom", "\u202etxt.exe", "line\u2028separator"]
INVISIBLE_SHOWN = ["zero\ufffdwidth", "\ufffdbom", "\ufffdtxt.exe", "line\ufffdseparator"]
UNICODE_VARIANTS = f"""
import os
os.chdir("/workspace/output")
for name in {VARIANTS + INVISIBLE!r}:
    with open(name, "w") as f:
        f.write(name)
"""

# Characters RFC 3986 reserves: a client percent-encodes them in a path segment.
RESERVED = [
    "a(1).txt",
    "x:y",
    "plus+",
    "eq=al",
    "amp&",
    "at@",
    "semi;colon",
    "it's",
    "[b]",
    "$d",
    ",c",
    "star*",
    "bang!",
]
# "?" and "#" cannot be sent raw at all; "a%3Fb" is a name of its own.
UNSENDABLE_RAW = ["a?b", "a#b"]
RESERVED_NAMES = f"""
import os
os.chdir("/workspace/output")
for name in {[*RESERVED, *UNSENDABLE_RAW, "a%3Fb"]!r}:
    with open(name, "w") as f:
        f.write("data-" + name)
"""

A255 = "a" * 255
E255 = "é" * 127 + "x"  # 255 bytes of UTF-8
P1023 = "/".join(["b" * 255] * 4)
P1024 = "/".join(["c" * 204] * 5)
P1025 = "/".join(["d" * 204] * 4 + ["d" * 205])
CJK1023 = "/".join(["中" * 85] * 4)  # 255 bytes a part; nine characters each in a URL
LONG_NAMES = f"""
import errno, json, os
os.chdir("/workspace/output")
made = {{}}
for path in {[A255, E255, P1023, P1024, P1025, CJK1023]!r}:
    if "/" in path:
        os.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with open(path, "w") as f:
        f.write(str(len(path.encode())))
try:
    open("f" * 256, "w")
except OSError as error:
    made["256"] = errno.errorcode[error.errno]
# A tree deeper than PATH_MAX, made by descending into it.
os.mkdir("deep")
os.chdir("deep")
for _ in range(25):
    os.mkdir("g" * 200)
    os.chdir("g" * 200)
open("bottom.txt", "w").write("bottom")
print(json.dumps(made))
"""

INVALID_UTF8 = """
import os
os.chdir(b"/workspace/output")
for raw in (b"\\xff", b"caf\\xe9.txt", b"\\xc0\\xaf", b"\\xed\\xa0\\x80", b"ok\\x80"):
    open(raw, "wb").write(b"x")
open("fine.txt", "w").write("fine")
"""

MANY_FILES = """
import json, os
n = json.loads(os.environ["PRISM_PARAMS"])["n"]
os.chdir("/workspace/output")
for i in range(n):
    folder = "" if i < 10000 else "more/"
    if i == 10000:
        os.mkdir("more")
    with open(f"{folder}f{i:05d}", "wb") as f:
        f.write(b"%05d" % i)
"""

# Empty files: no data, but an inode each, which the memory cgroup charges.
EMPTY_FILES = """
import json, os
where = json.loads(os.environ["PRISM_PARAMS"])["where"]
os.makedirs(where, exist_ok=True)
os.chdir(where)
for i in range(60000):
    os.close(os.open(f"e{i:05d}", os.O_CREAT | os.O_WRONLY))
print(json.dumps({"made": 60000}))
"""

SYMLINKS = """
import os
os.chdir("/workspace/output")
os.symlink("b", "a")
os.symlink("a", "b")
os.symlink("self", "self")
os.mkdir("dir")
os.symlink("..", "dir/up")
os.symlink("/workspace/output", "dir/loop")
os.symlink("/etc/passwd", "passwd")
os.symlink("/proc/1/environ", "environ")
os.symlink("/workspace/params.json", "params")
os.link("/workspace/params.json", "hardlink.json")
"""

# A fifo with a writer left behind holding it (the bootstrap must not block on it),
# a socket, and a file and a folder nobody may read.
SPECIAL_FILES = """
import os, socket, time
os.chdir("/workspace/output")
os.mkfifo("pipe")
if os.fork() == 0:
    fd = os.open("pipe", os.O_RDWR)
    os.write(fd, b"waiting")
    time.sleep(600)
server = socket.socket(socket.AF_UNIX)
server.bind("sock")
server.listen()
open("locked.txt", "w").write("locked")
os.chmod("locked.txt", 0)
os.mkdir("closed")
open("closed/inside.txt", "w").write("inside")
os.chmod("closed", 0)
open("fine.txt", "w").write("fine")
"""

# Files still written to when the script exits: the bootstrap reads them only once
# the writers are dead, so the size listed is the size downloaded.
GROWING = """
import subprocess, sys, time
grow = "import time\\nf = open('/workspace/output/grow.log', 'ab', buffering=0)\\n"
grow += "while True:\\n    f.write(b'x' * 4096)\\n    time.sleep(0.001)\\n"
churn = "import os\\nwhile True:\\n    with open('/workspace/output/churn.bin', 'wb') as f:\\n"
churn += "        f.write(os.urandom(65536))\\n"
for code in (grow, churn):
    subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
time.sleep(0.5)
"""

SPARSE = """
import errno, json, os, signal
os.chdir("/workspace/output")
with open("sparse3.bin", "wb") as f:
    f.truncate(3 * 2**20)
with open("sparse60.bin", "wb") as f:
    f.truncate(60 * 2**20)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
try:
    with open("/workspace/huge.bin", "wb") as f:
        f.truncate(2**40)
    huge = "made"
except OSError as error:
    huge = errno.errorcode[error.errno]
print(json.dumps({"huge": huge}))
"""

SWAPPED_OUTPUT = """
import json, os, shutil
kind = json.loads(os.environ["PRISM_PARAMS"])["kind"]
shutil.rmtree("/workspace/output")
if kind == "symlink":
    os.symlink("/etc", "/workspace/output")
else:
    os.mkfifo("/workspace/output")
"""

ATTACKS = {
    "control_names": Attack(CONTROL_NAMES),
    "unicode_variants": Attack(UNICODE_VARIANTS),
    "reserved_names": Attack(RESERVED_NAMES),
    "long_names": Attack(LONG_NAMES),
    "invalid_utf8": Attack(INVALID_UTF8),
    "ten_thousand_files": Attack(MANY_FILES, params=({"n": 10000},)),
    "over_the_entry_cap": Attack(MANY_FILES, params=({"n": 10050},)),
    "empty_files": Attack(
        EMPTY_FILES,
        {"memoryMb": 64, "wallSeconds": 120},
        ({"where": "/workspace/elsewhere"}, {"where": "/workspace/output"}),
    ),
    "symlinks": Attack(SYMLINKS),
    "special_files": Attack(SPECIAL_FILES, {"wallSeconds": 60}),
    "growing_files": Attack(GROWING, {"wallSeconds": 60}),
    "sparse_files": Attack(SPARSE, {"workspaceMb": 64}),
    "swapped_output": Attack(SWAPPED_OUTPUT, params=({"kind": "symlink"}, {"kind": "fifo"})),
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, sandbox_image: str) -> Iterator[Batch]:
    yield from module_batch(tmp_path_factory.mktemp("names"), sandbox_image, ATTACKS)


def names(listed: dict[str, object]) -> list[str]:
    return [a["name"] for a in listed["artifacts"]]  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", [n for n in ATTACKS if n != "empty_files"])
def test_the_trial_succeeds_as_its_script_decided(batch: Batch, name: str) -> None:
    for trial in batch.sweeps[name]["trials"]:
        assert (trial["outcome"], trial["exitCode"]) == ("succeeded", 0), trial


@pytest.mark.parametrize("name", [n for n in ATTACKS if n != "reserved_names"])
def test_the_sweep_answers_and_every_artifact_downloads(batch: Batch, name: str) -> None:
    assert_readable(batch.stack, batch.sweeps[name])


def test_the_sweep_of_reserved_names_answers(batch: Batch) -> None:
    assert_readable(batch.stack, batch.sweeps["reserved_names"], downloads=False)


def test_control_characters_never_reach_the_api(batch: Batch) -> None:
    listed = batch.artifacts("control_names")
    assert names(listed) == ["fine.txt"]
    skipped = listed["skipped"]
    assert len(skipped) == 64
    assert skipped[-1] == "... and 4 more"
    for note in skipped[:-1]:
        assert note.endswith(": the name holds a control or invisible character"), note
        assert "\ufffd" in note
    assert not any(CONTROL.search(note) for note in skipped)
    assert not CONTROL.search(json.dumps(listed, ensure_ascii=False))


def test_names_that_differ_only_slightly_are_distinct_artifacts(batch: Batch) -> None:
    listed = batch.artifacts("unicode_variants")
    assert names(listed) == sorted(VARIANTS)
    assert sorted(listed["skipped"]) == sorted(
        f"{shown}: the name holds a control or invisible character" for shown in INVISIBLE_SHOWN
    )
    for artifact in VARIANTS:
        assert batch.download("unicode_variants", artifact) == (200, artifact.encode()), artifact


def test_reserved_characters_download_when_sent_as_they_are(batch: Batch) -> None:
    base = batch.base("reserved_names")
    for artifact in RESERVED:
        assert get(batch.stack, f"{base}/artifacts/{artifact}") == (
            200,
            f"data-{artifact}".encode(),
        ), artifact


@pytest.mark.parametrize("artifact", RESERVED)
def test_reserved_characters_download_when_percent_encoded(batch: Batch, artifact: str) -> None:
    assert batch.download("reserved_names", artifact) == (200, f"data-{artifact}".encode())


@pytest.mark.parametrize("artifact", UNSENDABLE_RAW)
def test_question_marks_and_hashes_download(batch: Batch, artifact: str) -> None:
    assert batch.download("reserved_names", artifact) == (200, f"data-{artifact}".encode())


def test_long_names_up_to_the_cap_are_kept_and_download(batch: Batch) -> None:
    listed = batch.artifacts("long_names")
    assert names(listed) == sorted([A255, E255, P1023, P1024, CJK1023])
    assert batch.trial("long_names")["metrics"] == {"256": "ENAMETOOLONG"}
    skipped = listed["skipped"]
    assert len(skipped) == 2, skipped
    assert any(n.endswith("the name is longer than 1024 bytes") for n in skipped), skipped
    assert any(
        n.startswith("deep/") and n.endswith(": unreadable (File name too long)") for n in skipped
    ), skipped
    assert all(len(n) <= 512 for n in skipped)
    for artifact in (P1023, P1024, CJK1023):
        code, data = batch.download("long_names", artifact)
        assert (code, data) == (200, str(len(artifact.encode())).encode())


def test_names_that_are_not_utf8_are_skipped_and_shown_replaced(batch: Batch) -> None:
    listed = batch.artifacts("invalid_utf8")
    assert names(listed) == ["fine.txt"]
    assert sorted(listed["skipped"]) == sorted(
        f"{shown}: the name is not UTF-8"
        for shown in ("\ufffd", "caf\ufffd.txt", "\ufffd\ufffd", "\ufffd\ufffd\ufffd", "ok\ufffd")
    )


def test_ten_thousand_files_give_the_first_thirty_two(batch: Batch) -> None:
    listed = batch.artifacts("ten_thousand_files")
    assert names(listed) == [f"f{i:05d}" for i in range(32)]
    skipped = listed["skipped"]
    assert len(skipped) == 64
    assert skipped[0] == "f00032: over the cap of 32 files"
    assert skipped[-1] == f"... and {10000 - 32 - 63} more"
    for i in (0, 31):
        assert batch.download("ten_thousand_files", f"f{i:05d}") == (200, b"%05d" % i)


def test_entries_past_the_cap_are_not_examined(batch: Batch) -> None:
    listed = batch.artifacts("over_the_entry_cap")
    assert len(listed["artifacts"]) == 32
    assert listed["skipped"][0] == "more than 10000 entries: the rest not examined"
    assert listed["skipped"][-1].startswith("... and ")


def test_empty_files_elsewhere_in_the_workspace_are_harmless(batch: Batch) -> None:
    trial = batch.trial("empty_files", 0)
    assert (trial["outcome"], trial["metrics"]) == ("succeeded", {"made": 60000}), trial


def test_empty_files_in_the_output_folder_stop_at_the_entry_cap(batch: Batch) -> None:
    trial = batch.trial("empty_files", 1)
    assert (trial["outcome"], trial["metrics"]) == ("succeeded", {"made": 60000}), trial
    listed = batch.artifacts("empty_files", 1)
    assert len(listed["artifacts"]) == 32
    assert listed["skipped"][0] == "more than 10000 entries: the rest not examined"


def test_symlinks_are_never_followed(batch: Batch) -> None:
    listed = batch.artifacts("symlinks")
    assert names(listed) == ["hardlink.json"]  # a hard link is the trial's own file
    assert batch.download("symlinks", "hardlink.json") == (200, b"{}")
    assert sorted(listed["skipped"]) == [
        f"{n}: a symlink, not a regular file"
        for n in ("a", "b", "dir/loop", "dir/up", "environ", "params", "passwd", "self")
    ]


def test_special_files_are_skipped_without_blocking(batch: Batch) -> None:
    listed = batch.artifacts("special_files")
    assert names(listed) == ["fine.txt"]
    assert sorted(listed["skipped"]) == [
        "closed/: unreadable folder (Permission denied)",
        "locked.txt: unreadable (Permission denied)",
        "pipe: a fifo, not a regular file",
        "sock: a socket, not a regular file",
    ]


def test_files_written_to_at_the_end_are_read_whole(batch: Batch) -> None:
    listed = batch.artifacts("growing_files")
    sizes = {a["name"]: int(a["sizeBytes"]) for a in listed["artifacts"]}
    assert set(sizes) == {"churn.bin", "grow.log"}
    assert sizes["grow.log"] > 0
    for artifact, size in sizes.items():
        code, data = batch.download("growing_files", artifact)
        assert (code, len(data)) == (200, size)
    assert set(batch.download("growing_files", "grow.log")[1]) == {ord("x")}


def test_sparse_files_count_at_their_size(batch: Batch) -> None:
    listed = batch.artifacts("sparse_files")
    assert names(listed) == ["sparse3.bin"]
    assert listed["skipped"] == ["sparse60.bin: over the cap of 4194304 bytes in all"]
    assert batch.trial("sparse_files")["metrics"] == {"huge": "EFBIG"}
    assert batch.download("sparse_files", "sparse3.bin") == (200, bytes(3 * MiB))


def test_an_output_folder_that_is_not_a_folder_gives_nothing(batch: Batch) -> None:
    for index in (0, 1):
        listed = batch.artifacts("swapped_output", index)
        assert listed == {"artifacts": [], "skipped": ["/workspace/output: not a folder"]}


def test_the_runner_stream_and_the_services_survive(batch: Batch) -> None:
    assert_survived(batch)
