"""The system calls a trial may make: the sandbox's own seccomp profile.

A profile passed to the engine replaces its default one, so this one keeps what the
default gives (an allow-list; ``clone`` only without namespace flags) and denies more.
Every call it names is decided here; denied calls answer EPERM:

- other processes: ``ptrace``, ``process_vm_readv``/``writev``, ``process_madvise``,
  ``process_mrelease``, ``pidfd_getfd``, ``kcmp``, ``get_robust_list``. The trial runs
  as the same user as the sandbox's bootstrap: these would let it freeze it, read or
  write its memory, take its files or learn its addresses.
- namespaces: ``unshare``, ``setns``, and ``clone`` with a ``CLONE_NEW*`` flag. A new
  user namespace grants every capability inside it, and with them kernel code written
  for root.
- mounts: the mount calls, old and new, ``pivot_root``, ``chroot``. The engine fixes
  the container's file tree.
- the machine: module loading, ``kexec``, ``reboot``, swap, ``acct``, quotas, setting
  the clock, host and domain names, the kernel log (``syslog``), ``vhangup``,
  ``iopl``/``ioperm``. They belong to the host; the trial lacks the capability anyway,
  and is kept out of the kernel code that checks it.
- keyrings: ``add_key``, ``request_key``, ``keyctl``. Keyrings are not namespaced and
  every container runs as the same host user: trials would share keys.
- file handles: ``open_by_handle_at`` opens a file by handle, past the container's root
  (a known escape); ``name_to_handle_at`` only makes handles for it.
- kernel surfaces a trial does not use, with a record of exploits: ``bpf``,
  ``userfaultfd`` (pauses the kernel mid-copy), ``io_uring`` (its operations never
  pass through seccomp), ``modify_ldt``, ``vm86``, ``uselib``, ``lookup_dcookie``,
  ``fanotify`` (inotify serves a trial); ``perf_event_open`` and ``cachestat`` also
  give side channels on what other processes do.
- ``personality``: READ_IMPLIES_EXEC makes readable memory executable, and
  ADDR_NO_RANDOMIZE turns address randomisation off for the programs it starts.
- memory placement (NUMA): ``mbind``, ``set_mempolicy`` and kin; ``move_pages`` and
  ``migrate_pages`` act on other processes of the same user. Placement is the host's.

``clone3`` answers ENOSYS: its flags are in memory, where a filter cannot look, and
ENOSYS makes glibc fall back to ``clone``, whose flags it can. Calls the kernel does
not (or no longer) implement answer ENOSYS too, as the kernel itself would.

A call the profile does not name meets its default: ENOSYS, so a newer libc falls back
cleanly. Docker 20.10 drops ``defaultErrnoRet`` (it answers EPERM instead), but its
runc answers ENOSYS for any call numbered above the highest one the profile names,
which covers calls newer than this list. Names this engine's libseccomp does not know
are skipped by runc, not refused, so the profile may name calls newer than the engine.

The allowed names were taken once from Linux 6.1's ``unistd_64.h``, ``unistd_32.h``
and ``unistd_x32.h`` (x86_64 with its x86 and x32 sub-architectures), plus the 32-bit
arm calls glibc needs and the calls of later kernels, decided one by one; a name that
does not exist on an architecture is skipped there. Nothing is read at run time.
"""

import errno
import json
from collections.abc import Mapping
from typing import Any

# The namespace flags of clone(2). CLONE_NEWTIME is left out: clone() takes that bit
# as part of the exit signal; only clone3() and unshare() read it as a flag.
_CLONE_NEW_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)

AF_VSOCK = 40

DENIED: Mapping[str, tuple[str, ...]] = {
    "other processes": (
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "process_madvise",
        "process_mrelease",
        "pidfd_getfd",
        "kcmp",
        "get_robust_list",
    ),
    "namespaces": ("unshare", "setns"),
    "mounts": (
        "mount",
        "umount",
        "umount2",
        "pivot_root",
        "chroot",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "move_mount",
        "open_tree",
        "open_tree_attr",
        "mount_setattr",
        "statmount",
        "listmount",
    ),
    "the machine": (
        "init_module",
        "finit_module",
        "delete_module",
        "kexec_load",
        "kexec_file_load",
        "reboot",
        "swapon",
        "swapoff",
        "acct",
        "quotactl",
        "quotactl_fd",
        "settimeofday",
        "stime",
        "clock_settime",
        "clock_settime64",
        "adjtimex",
        "clock_adjtime",
        "clock_adjtime64",
        "sethostname",
        "setdomainname",
        "syslog",
        "vhangup",
        "iopl",
        "ioperm",
    ),
    "keyrings": ("add_key", "request_key", "keyctl"),
    "file handles": ("open_by_handle_at", "name_to_handle_at"),
    "unused kernel surfaces": (
        "bpf",
        "userfaultfd",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "modify_ldt",
        "vm86",
        "vm86old",
        "uselib",
        "lookup_dcookie",
        "perf_event_open",
        "fanotify_init",
        "fanotify_mark",
        "cachestat",
    ),
    "personality": ("personality",),
    "memory placement": (
        "mbind",
        "set_mempolicy",
        "set_mempolicy_home_node",
        "get_mempolicy",
        "migrate_pages",
        "move_pages",
    ),
}

# clone3, and calls that exist only as numbers: never implemented, or retired.
NOT_IMPLEMENTED = tuple(
    """
    clone3 _sysctl afs_syscall bdflush break create_module epoll_ctl_old epoll_wait_old
    ftime get_kernel_syms getpmsg gtty idle lock mpx nfsservctl prof profil putpmsg
    query_module security stty tuxcall ulimit vserver
    """.split()
)

# clone is not here: it is allowed by its flags (see _CLONE_NEW_FLAGS).
ALLOWED = tuple(
    """
    _llseek _newselect accept accept4 access alarm arch_prctl arm_fadvise64_64
    arm_sync_file_range bind breakpoint brk cacheflush capget capset chdir chmod chown
    chown32 clock_getres clock_getres_time64 clock_gettime clock_gettime64 clock_nanosleep
    clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2 dup3
    epoll_create epoll_create1 epoll_ctl epoll_pwait epoll_pwait2 epoll_wait eventfd
    eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64
    fallocate fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64
    fdatasync fgetxattr file_getattr file_setattr flistxattr flock fork fremovexattr
    fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex
    futex_requeue futex_time64 futex_wait futex_waitv futex_wake futimesat get_thread_area
    getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32
    getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority
    getrandom getresgid getresgid32 getresuid getresuid32 getrlimit getrusage getsid
    getsockname getsockopt gettid gettimeofday getuid getuid32 getxattr getxattrat
    inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel io_destroy
    io_getevents io_pgetevents io_pgetevents_time64 io_setup io_submit ioctl ioprio_get
    ioprio_set ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self
    lchown lchown32 lgetxattr link linkat listen listxattr listxattrat llistxattr
    lremovexattr lseek lsetxattr lsm_get_self_attr lsm_list_modules lsm_set_self_attr lstat
    lstat64 madvise map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir
    mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify
    mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64
    mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync munlock munlockall munmap
    nanosleep newfstatat nice oldfstat oldlstat oldolduname oldstat olduname open openat
    openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free
    pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64 pselect6
    pselect6_time64 pwrite64 pwritev pwritev2 read readahead readdir readlink readlinkat
    readv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr
    removexattrat rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction
    rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
    rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_get_priority_max sched_get_priority_min
    sched_getaffinity sched_getattr sched_getparam sched_getscheduler sched_rr_get_interval
    sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
    sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
    semtimedop_time64 sendfile sendfile64 sendmmsg sendmsg sendto set_robust_list
    set_thread_area set_tid_address set_tls setfsgid setfsgid32 setfsuid setfsuid32 setgid
    setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid setregid32
    setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit setsid
    setsockopt setuid setuid32 setxattr setxattrat sgetmask shmat shmctl shmdt shmget
    shutdown sigaction sigaltstack signal signalfd signalfd4 sigpending sigprocmask
    sigreturn sigsuspend socketcall socketpair splice ssetmask stat stat64 statfs
    statfs64 statx symlink symlinkat sync sync_file_range sync_file_range2 syncfs sysfs
    sysinfo tee tgkill time timer_create timer_delete timer_getoverrun timer_gettime
    timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime
    timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64
    ugetrlimit umask uname unlink unlinkat uprobe uretprobe ustat utime utimensat
    utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
    """.split()
)


def _errno(names: tuple[str, ...], code: int) -> dict[str, Any]:
    return {"names": list(names), "action": "SCMP_ACT_ERRNO", "errnoRet": code}


def _clone_flags(mask: int, value: int) -> list[dict[str, Any]]:
    # The engine's masked compare: (argument & value) == valueTwo.
    return [{"index": 0, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}]


def _profile() -> dict[str, Any]:
    """The profile in the engine's JSON form (what ``--security-opt seccomp=`` reads)."""
    any_namespace = 0
    for flag in _CLONE_NEW_FLAGS:
        any_namespace |= flag
    denied = tuple(name for names in DENIED.values() for name in names)
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno.ENOSYS,
        "archMap": [
            {
                "architecture": "SCMP_ARCH_X86_64",
                "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            },
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        ],
        "syscalls": [
            {"names": list(ALLOWED), "action": "SCMP_ACT_ALLOW"},
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": _clone_flags(any_namespace, 0),
            },
            # A masked compare tests for one value, so "any of these flags" takes a
            # rule per flag; without them a namespace flag would meet the default.
            *(
                {**_errno(("clone",), errno.EPERM), "args": _clone_flags(flag, flag)}
                for flag in _CLONE_NEW_FLAGS
            ),
            # socket() for every family but vsock, which network_mode=none does not
            # cut: on a virtual machine it reaches the host's and the hypervisor's
            # services. (32-bit socketcall() hides its family in memory; like the
            # engine's default, this profile lets it be.)
            {
                "names": ["socket"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}],
            },
            {
                **_errno(("socket",), errno.EPERM),
                "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_EQ"}],
            },
            _errno(denied, errno.EPERM),
            _errno(NOT_IMPLEMENTED, errno.ENOSYS),
        ],
    }


# What the engine gets, inline: ``seccomp=<this>`` in the container's security options.
PROFILE_JSON = json.dumps(_profile(), separators=(",", ":"))
