"""The sandbox's seccomp profile against the real engine: trials that try every denied
call, and trials that do ordinary work under it.

Trials run through the Sandbox class, in containers labelled with this module's own
owner; the finalizer removes exactly those, and each test checks that none was left
behind. A probe that would change the trial itself were it allowed (being traced, a
personality, a namespace) runs in a forked child, so a missing profile shows up as a
wrong answer rather than as a wrecked trial. Nothing here connects anywhere but to
the container's own loopback.
"""

from __future__ import annotations

import errno
import json
import secrets
from typing import Any

import docker
import pytest

from prism.trial import TrialResult
from sandbox import Limits, Sandbox
from sandbox.container import OWNER_LABEL
from sandbox.seccomp import ALLOWED, DENIED, NOT_IMPLEMENTED, PROFILE_JSON

MiB = 2**20
LIMITS = Limits(wall_seconds=30, memory_bytes=256 * MiB, workspace_bytes=16 * MiB)

# Denied calls that x86_64 does not have (32-bit x86 only): the 32-bit probe tries some.
NOT_ON_X86_64 = {"umount", "stime", "clock_settime64", "clock_adjtime64", "vm86", "vm86old"}
# Newer than this engine's libseccomp (2.5.4), which runc then skips: such a call
# answers ENOSYS here, as a call newer than the profile does, and EPERM on an engine
# that knows it. Either way it never runs.
NEWER_THAN_ENGINE = {"statmount", "listmount", "open_tree_attr"}


pytestmark = pytest.mark.usefixtures("nothing_left_behind")


def run(box: Sandbox, script: str) -> TrialResult:
    return box.run(f"seccomp-{secrets.token_hex(4)}", script, "{}", LIMITS)


def report(execution: TrialResult) -> dict[str, Any]:
    assert (execution.outcome, execution.stderr) == ("succeeded", ""), execution
    assert execution.result is not None, execution
    return dict(execution.result)


# What every probe shares: a raw system call by number, its errno by name, a child.
PROBE_HELPERS = """
import ctypes, ctypes.util, errno, json, os

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.syscall.restype = ctypes.c_long


def raw(number, *args):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a) for a in args))
    return result, ctypes.get_errno()


def call(number, *args):
    result, error = raw(number, *args)
    return "ok" if result >= 0 else errno.errorcode.get(error, str(error))


def in_child(action):
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write_end, action().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as answer:
        text = answer.read()
    os.waitpid(pid, 0)
    return text or "child died"


kept = []


def address(value):
    return ctypes.addressof(value)


def c_string(text):
    kept.append(ctypes.create_string_buffer(text))
    return address(kept[-1])


def zeroed(size=4096):
    kept.append(ctypes.create_string_buffer(size))
    return address(kept[-1])
"""

# Every denied call x86_64 has, with arguments that would do no harm were it allowed.
DENIED_PROBE = (
    PROBE_HELPERS
    + """
AT_FDCWD = -100
CLONE_NEWUSER, SIGCHLD = 0x10000000, 17
parent = os.getppid()
pidfd_self, pidfd_parent = raw(434, os.getpid(), 0)[0], raw(434, parent, 0)[0]
buffer = ctypes.create_string_buffer(128)
word = ctypes.c_ulong(0)


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


def readable_address(pid):
    try:
        with open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                span, permissions = line.split()[:2]
                if permissions.startswith("r"):
                    return int(span.split("-")[0], 16)
    except OSError:
        pass
    return 0


local = IoVec(address(buffer), 16)
in_parent = IoVec(readable_address(parent), 16)
in_self = IoVec(address(buffer) + 64, 16)


def attach(pid):
    answer = call(101, 16, pid, 0, 0)  # PTRACE_ATTACH
    if answer == "ok":  # only without the profile: let it go on at once
        os.waitpid(pid, 0x40000000)  # __WALL: the stop the attach caused
        raw(101, 17, pid, 0, 0)  # PTRACE_DETACH
    return answer


def clone_new_user():
    pid, error = raw(56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        os._exit(0)
    if pid > 0:
        os.waitpid(pid, 0)
        return "ok"
    return errno.errorcode[error]


results = {
    "ptrace PTRACE_ATTACH pid 1": in_child(lambda: attach(1)),
    "ptrace PTRACE_ATTACH parent": in_child(lambda: attach(parent)),
    "ptrace PTRACE_TRACEME": in_child(lambda: call(101, 0, 0, 0, 0)),
    "process_vm_readv parent": call(310, parent, address(local), 1, address(in_parent), 1, 0),
    "process_vm_writev self": call(311, os.getpid(), address(local), 1, address(in_self), 1, 0),
    "process_madvise self": call(440, pidfd_self, 0, 0, 20, 0),
    "process_mrelease self": call(448, pidfd_self, 0),
    "pidfd_getfd parent": call(438, pidfd_parent, 0, 0),
    "kcmp parent": call(312, os.getpid(), parent, 1, 0, 0),
    "get_robust_list parent": call(274, parent, address(word), address(word)),
    "unshare CLONE_NEWUSER": in_child(lambda: call(272, CLONE_NEWUSER)),
    "setns uts": call(308, os.open("/proc/self/ns/uts", os.O_RDONLY), 0),
    "clone CLONE_NEWUSER": in_child(clone_new_user),
    "mount tmpfs": call(165, c_string(b"none"), c_string(b"/tmp"), c_string(b"tmpfs"), 0, 0),
    "umount2": call(166, c_string(b"/tmp"), 0),
    "pivot_root": call(155, 0, 0),
    "chroot": call(161, c_string(b"/")),
    "fsopen": call(430, c_string(b"tmpfs"), 0),
    "fsconfig": call(431, -1, 0, 0, 0, 0),
    "fsmount": call(432, -1, 0, 0),
    "fspick": call(433, AT_FDCWD, c_string(b"/"), 0),
    "move_mount": call(429, -1, 0, -1, 0, 0),
    "open_tree": call(428, AT_FDCWD, c_string(b"/tmp"), 0),
    "open_tree_attr": call(467, AT_FDCWD, c_string(b"/tmp"), 0, 0, 0),
    "mount_setattr": call(442, -1, 0, 0, 0, 0),
    "statmount": call(457, 0, 0, 0, 0),
    "listmount": call(458, 0, 0, 0, 0),
    "init_module": call(175, 0, 0, 0),
    "finit_module": call(313, -1, 0, 0),
    "delete_module": call(176, c_string(b"prism"), 0),
    "kexec_load": call(246, 0, 0, 0, 0),
    "kexec_file_load": call(320, -1, -1, 0, 0, 0),
    "reboot": call(169, 0, 0, 0, 0),
    "swapon": call(167, 0, 0),
    "swapoff": call(168, 0),
    "acct": call(163, 0),
    "quotactl": call(179, 0, 0, 0, 0),
    "quotactl_fd": call(443, -1, 0, 0, 0),
    "settimeofday nothing": call(164, 0, 0),
    "clock_settime": call(227, 0, 0),
    "adjtimex read": call(159, zeroed()),
    "clock_adjtime read": call(305, 0, zeroed()),
    "sethostname": call(170, 0, 0),
    "setdomainname": call(171, 0, 0),
    "syslog size": call(103, 10, 0, 0),
    "vhangup": call(153),
    "iopl 0": call(172, 0),
    "ioperm off": call(173, 0x80, 1, 0),
    "add_key process keyring": call(248, c_string(b"user"), c_string(b"prism"), zeroed(), 1, -2),
    "request_key": call(249, c_string(b"user"), c_string(b"prism"), 0, 0),
    "keyctl user keyring": call(250, 0, -4, 0),
    "open_by_handle_at": call(304, AT_FDCWD, zeroed(), 0),
    "name_to_handle_at": call(303, AT_FDCWD, c_string(b"/"), zeroed(), address(word), 0),
    "bpf": call(321, 0, 0, 0),
    "userfaultfd": call(323, 0),
    "io_uring_setup": call(425, 1, zeroed()),
    "io_uring_enter": call(426, -1, 0, 0, 0, 0, 0),
    "io_uring_register": call(427, -1, 0, 0, 0),
    "modify_ldt read": call(154, 0, zeroed(), 16),
    "uselib": call(134, 0),
    "lookup_dcookie": call(212, 0, 0, 0),
    "perf_event_open": call(298, zeroed(), 0, -1, -1, 0),
    "fanotify_init": call(300, 0, 0),
    "socket vsock": call(41, 40, 1, 0),
    "fanotify_mark": call(301, -1, 0, 0, AT_FDCWD, 0),
    "cachestat": call(451, -1, 0, 0, 0),
    "personality READ_IMPLIES_EXEC": in_child(lambda: call(135, 0x0400000)),
    "mbind": call(237, 0, 0, 0, 0, 0, 0),
    "set_mempolicy default": call(238, 0, 0, 0),
    "set_mempolicy_home_node": call(450, 0, 0, 0, 0),
    "get_mempolicy": call(239, 0, 0, 0, 0, 0),
    "migrate_pages self": call(256, 0, 0, 0, 0),
    "move_pages self": call(279, 0, 0, 0, 0, 0, 0),
    # Not denied but not implemented here: ENOSYS.
    "clone3": call(435, 0, 0),
    "_sysctl": call(156, 0),
    "afs_syscall": call(183),
    "create_module": call(174, 0, 0),
    "epoll_ctl_old": call(214),
    "epoll_wait_old": call(215),
    "get_kernel_syms": call(177, 0),
    "getpmsg": call(181),
    "nfsservctl": call(180, 0, 0, 0),
    "putpmsg": call(182),
    "query_module": call(178, 0, 0, 0, 0, 0),
    "security": call(185),
    "tuxcall": call(184),
    "vserver": call(236),
}
print(json.dumps(results))
"""
)

# The same ideas through the 32-bit entry point (int 0x80), which the filter checks
# as its own architecture: x86 names and numbers.
INT80_PROBE = (
    PROBE_HELPERS
    + """
import mmap

# push rbx; mov eax, edi; mov ebx, esi; xchg ecx, edx; int 0x80; pop rbx; ret
CODE = bytes.fromhex("53 89f8 89f3 87ca cd80 5b c3")
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(CODE)
signature = ctypes.CFUNCTYPE(ctypes.c_int, *[ctypes.c_uint] * 4)
int80 = signature(ctypes.addressof(ctypes.c_char.from_buffer(page)))


def call32(number, first=0, second=0, third=0):
    result = int80(number, first, second, third)
    return "ok" if result >= 0 else errno.errorcode.get(-result, str(-result))


print(json.dumps({
    "getpid": in_child(lambda: "ok" if int80(20, 0, 0, 0) == os.getpid() else "wrong"),
    "ptrace PTRACE_TRACEME": in_child(lambda: call32(26)),
    "personality READ_IMPLIES_EXEC": in_child(lambda: call32(136, 0x0400000)),
    "unshare CLONE_NEWUSER": in_child(lambda: call32(310, 0x10000000)),
    "process_vm_readv": in_child(lambda: call32(347, os.getpid())),
    "io_uring_setup": in_child(lambda: call32(425)),
    "umount": in_child(lambda: call32(22)),
    "stime": in_child(lambda: call32(25)),
    "vm86old": in_child(lambda: call32(113)),
    "vm86": in_child(lambda: call32(166)),
    "clock_settime64": in_child(lambda: call32(404)),
    "clone3": in_child(lambda: call32(435)),
}))
"""
)

# Calls the engine's default profile allows on this kernel and ours denies.
IN_FORCE_PROBE = (
    PROBE_HELPERS
    + """
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
print(json.dumps({
    "seccomp": status["Seccomp"].strip(),
    "io_uring_setup": call(425, 1, zeroed(120)),
    "ptrace PTRACE_TRACEME": in_child(lambda: call(101, 0, 0, 0, 0)),
}))
"""
)

HEAVY_MODULES = """
import asyncio, concurrent.futures, ctypes, ctypes.util, json, sqlite3, ssl, sys

context = ssl.create_default_context()
db = sqlite3.connect("/workspace/heavy.db")
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE numbers (n)")
db.executemany("INSERT INTO numbers VALUES (?)", [(n,) for n in range(100)])
db.commit()
libc = ctypes.CDLL(ctypes.util.find_library("c"))


async def echo(reader, writer):
    writer.write(await reader.readline())
    await writer.drain()
    writer.close()


async def main():
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"over loopback\\n")
    line = await reader.readline()
    writer.close()
    server.close()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "print('child')", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await child.communicate()
    return line.decode().strip(), out.decode().strip()


with concurrent.futures.ProcessPoolExecutor(2) as executor:
    squares = list(executor.map(pow, range(5), [2] * 5))
print(json.dumps({
    "ssl": context.verify_mode == ssl.CERT_REQUIRED and len(ssl.RAND_bytes(8)) == 8,
    "sqlite": db.execute("SELECT sum(n) FROM numbers").fetchone()[0],
    "ctypes": libc.getpid() > 0,
    "asyncio": asyncio.run(main()),
    "process_pool": squares,
}))
"""

ORDINARY_WORK = f"""
import concurrent.futures, ctypes, ctypes.util, json, mmap, multiprocessing, os, select
import signal, socket, struct, subprocess, sys, threading, time


def square(n):
    return n * n


def threads():
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return sum(pool.map(square, range(100)))


def fork():
    pid = os.fork()
    if pid == 0:
        os._exit(5)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def subprocesses():
    python = subprocess.run(
        [sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True, check=True
    )
    shell = subprocess.run(
        "echo piped | tr a-z A-Z", shell=True, capture_output=True, text=True, check=True
    )
    return [python.stdout.strip(), shell.stdout.strip()]


def pool():
    with multiprocessing.Pool(2) as workers:
        return sum(workers.map(square, range(10)))


def posix_spawn():
    argv = [sys.executable, "-c", "raise SystemExit(3)"]
    pid = os.posix_spawn(sys.executable, argv, os.environ)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def memory_maps():
    with mmap.mmap(-1, 2**20) as anonymous:
        anonymous[-5:] = b"hello"
        first = anonymous[-5:]
    with open("mapped", "wb+") as f:
        f.write(bytes(4096))
        f.flush()
        with mmap.mmap(f.fileno(), 4096) as shared:
            shared[:5] = b"world"
            shared.flush()
        f.seek(0)
        second = f.read(5)
    return (first + second).decode()


def signals():
    got = []
    signal.signal(signal.SIGUSR1, lambda number, frame: got.append("SIGUSR1"))
    signal.signal(signal.SIGALRM, lambda number, frame: got.append("SIGALRM"))
    os.kill(os.getpid(), signal.SIGUSR1)
    signal.setitimer(signal.ITIMER_REAL, 0.05)
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    return got


def clocks():
    began = time.monotonic()
    time.sleep(0.05)
    return [
        time.time() > 1.6e9,
        time.monotonic() - began >= 0.05,
        time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID) > 0,
        time.localtime().tm_year >= 2024,
    ]


def sockets():
    left, right = socket.socketpair()
    left.sendall(b"pair")
    paired = right.recv(4)
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    client.sendall(b"tcp")
    received = accepted.recv(3)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.sendto(b"udp", udp.getsockname())
    datagram = udp.recv(3)
    for s in (left, right, server, client, accepted, udp):
        s.close()
    return (paired + received + datagram).decode()


def proc_self():
    with open("/proc/self/status") as status:
        seccomp = [line.split()[1] for line in status if line.startswith("Seccomp:")]
    return [seccomp, os.readlink("/proc/self/exe") == os.path.realpath(sys.executable),
            len(os.listdir("/proc/self/fd")) >= 3]


def heavy_modules():
    done = subprocess.run(
        [sys.executable, "-c", {HEAVY_MODULES!r}], capture_output=True, text=True, timeout=60
    )
    return json.loads(done.stdout) if done.returncode == 0 else done.stderr


def kernel_objects():
    random = os.getrandom(16)
    memfd = os.memfd_create("prism")
    os.write(memfd, b"in memory")
    in_memory = os.pread(memfd, 9, 0)
    counter = os.eventfd(0)
    os.eventfd_write(counter, 3)
    counted = os.eventfd_read(counter)
    read_end, write_end = os.pipe()
    poller = select.epoll()
    poller.register(read_end, select.EPOLLIN)
    os.write(write_end, b"x")
    polled = [fd for fd, _ in poller.poll(1)]
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    watcher = libc.inotify_init1(os.O_CLOEXEC)
    libc.inotify_add_watch(watcher, b"/workspace", 0x100)  # IN_CREATE
    open("/workspace/watched", "w").close()
    event = os.read(watcher, 4096)
    length = struct.unpack_from("iIII", event)[3]
    created = event[16 : 16 + length].rstrip(bytes(1)).decode()
    return [len(random), in_memory.decode(), counted, polled == [read_end], created]


started = threading.Thread(target=time.sleep, args=(0.01,))
started.start()
started.join()
print(json.dumps({{
    "threads": threads(),
    "fork": fork(),
    "subprocess": subprocesses(),
    "multiprocessing_pool": pool(),
    "posix_spawn": posix_spawn(),
    "mmap": memory_maps(),
    "signals": signals(),
    "time": clocks(),
    "sockets": sockets(),
    "proc_self": proc_self(),
    "heavy_modules": heavy_modules(),
    "kernel_objects": kernel_objects(),
}}))
"""


def denied_names() -> set[str]:
    return {name for names in DENIED.values() for name in names}


def test_every_call_is_decided_once() -> None:
    allowed, denied, not_implemented = set(ALLOWED), denied_names(), set(NOT_IMPLEMENTED)
    assert len(allowed) == len(ALLOWED)
    assert not allowed & denied and not allowed & not_implemented and not denied & not_implemented
    # What the issue names, and what a trial could use to freeze or read its bootstrap.
    assert {"ptrace", "process_vm_readv", "process_vm_writev", "personality"} <= denied
    assert {"pidfd_getfd", "process_madvise", "kcmp", "unshare", "setns"} <= denied
    assert "clone3" in not_implemented and "clone" not in allowed  # clone goes by its flags
    assert "socket" not in allowed  # socket goes by its family
    profile = json.loads(PROFILE_JSON)
    # A denied call is an error the program can handle, never a killed trial.
    assert {rule["action"] for rule in profile["syscalls"]} | {profile["defaultAction"]} == {
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
    }
    assert {rule.get("errnoRet") for rule in profile["syscalls"]} == {
        None,
        errno.EPERM,
        errno.ENOSYS,
    }
    socket_rules = [rule for rule in profile["syscalls"] if rule["names"] == ["socket"]]
    assert [(rule["action"], rule["args"]) for rule in socket_rules] == [
        ("SCMP_ACT_ALLOW", [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]),
        ("SCMP_ACT_ERRNO", [{"index": 0, "value": 40, "op": "SCMP_CMP_EQ"}]),
    ]
    clone_rules = [rule for rule in profile["syscalls"] if rule["names"] == ["clone"]]
    assert [(rule["action"], rule["args"][0]["valueTwo"]) for rule in clone_rules] == [
        ("SCMP_ACT_ALLOW", 0),
        *[("SCMP_ACT_ERRNO", flag) for flag in (1 << bit for bit in (17, 25, 26, 27, 28, 29, 30))],
    ]


def test_a_trial_gets_eperm_from_every_denied_call(box: Sandbox) -> None:
    answers = report(run(box, DENIED_PROBE))

    tried = {key.split()[0] for key in answers}
    assert tried | NOT_ON_X86_64 >= denied_names() | {"clone3"}
    expected = {
        key: (
            {"ENOSYS"}
            if key.split()[0] in NOT_IMPLEMENTED
            else {"EPERM", "ENOSYS"}
            if key.split()[0] in NEWER_THAN_ENGINE
            else {"EPERM"}
        )
        for key in answers
    }
    wrong = {key: answer for key, answer in answers.items() if answer not in expected[key]}
    assert wrong == {}


def test_the_32_bit_entry_point_is_filtered_by_the_same_names(box: Sandbox) -> None:
    answers = report(run(box, INT80_PROBE))
    if answers["getpid"] == "child died":
        pytest.skip("this kernel runs no 32-bit system calls (no IA32 emulation)")

    assert answers.pop("getpid") == "ok"  # the 32-bit architecture is in the filter
    assert answers.pop("clone3") == "ENOSYS"
    assert answers == dict.fromkeys(answers, "EPERM")


def test_the_profile_in_force_is_ours_not_the_engines_default(
    box: Sandbox, docker_client: docker.DockerClient, owner: str, sandbox_image: str
) -> None:
    ours_answers = report(run(box, IN_FORCE_PROBE))
    # The same probe under the engine's default profile, with the rest of the hardening.
    output = docker_client.containers.run(
        sandbox_image,
        ["python3", "-c", IN_FORCE_PROBE],
        user="65534:65534",
        network_mode="none",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        labels={OWNER_LABEL: owner},
        remove=True,
    )
    default_answers = json.loads(output)

    assert ours_answers["seccomp"] == default_answers["seccomp"] == "2"  # a filter, each time
    probes = ("io_uring_setup", "ptrace PTRACE_TRACEME")
    # The default lets at least one of them through on this engine and kernel, so
    # denying them all tells our profile apart from it.
    assert "ok" in {default_answers[name] for name in probes}
    assert {ours_answers[name] for name in probes} == {"EPERM"}


def test_ordinary_work_runs_under_the_profile(box: Sandbox) -> None:
    seen = report(run(box, ORDINARY_WORK))

    assert seen == {
        "threads": sum(n * n for n in range(100)),
        "fork": 5,
        "subprocess": ["42", "PIPED"],
        "multiprocessing_pool": sum(n * n for n in range(10)),
        "posix_spawn": 3,
        "mmap": "helloworld",
        "signals": ["SIGUSR1", "SIGALRM"],
        "time": [True, True, True, True],
        "sockets": "pairtcpudp",
        "proc_self": [["2"], True, True],
        "heavy_modules": {
            "ssl": True,
            "sqlite": sum(range(100)),
            "ctypes": True,
            "asyncio": ["over loopback", "child"],
            "process_pool": [0, 1, 4, 9, 16],
        },
        "kernel_objects": [16, "in memory", 3, True, "watched"],
    }
