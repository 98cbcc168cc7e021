"""The kernel's layers, applied by the worker to itself before it runs any program: resource limits, Landlock
(filesystem, TCP, signal and abstract-socket scoping) and a seccomp filter. Stdlib plus `landlockpy` and
`pyseccomp` (libseccomp); imported by the worker only, never by the app.

Each `apply_*` returns what it enforced (for the app to report) or raises `ConfineError` saying what is missing.
"""

from __future__ import annotations

import errno
import os
import resource
import sys
import sysconfig

MB = 1024 * 1024


class ConfineError(Exception):
    """A kernel layer could not be applied; the message says which and how to get it."""


def apply_rlimits(limits: dict) -> list[str]:
    """Memory (address space), file size, open files, processes, core dumps and a lifetime CPU cap."""
    pairs = {
        "RLIMIT_AS": limits["memory_mb"] * MB,
        "RLIMIT_FSIZE": limits["file_size_mb"] * MB,
        "RLIMIT_NOFILE": limits["open_files"],
        "RLIMIT_NPROC": limits["processes"],
        "RLIMIT_CORE": 0,
        "RLIMIT_CPU": limits["worker_cpu_s"],
    }
    for name, value in pairs.items():
        resource.setrlimit(getattr(resource, name), (value, value))
    return [name.removeprefix("RLIMIT_").lower() for name in pairs]


def read_only_paths() -> list[str]:
    """The Python standard library (lazy imports read it); nothing of the user's, the app's or the store's."""
    paths = {sysconfig.get_paths()["stdlib"], os.path.dirname(os.__file__)}
    dynload = os.path.join(sysconfig.get_paths()["stdlib"], "lib-dynload")
    if os.path.isdir(dynload):
        paths.add(dynload)
    return sorted(p for p in paths if os.path.isdir(p))


def apply_landlock(scratch: str) -> int:
    """Deny every filesystem right but reading the stdlib and using `scratch`; deny TCP bind/connect (UDP too where
    the kernel handles it); scope signals and abstract UNIX sockets to the worker. Returns the ABI used."""
    try:
        import landlockpy
        from landlockpy import AccessFS, AccessNet, Ruleset, Scope
    except ImportError as exc:
        raise ConfineError("Landlock needs the 'landlockpy' package: pip install landlockpy") from exc
    abi = landlockpy.abi_version()
    if abi < 1:
        raise ConfineError("this kernel has no Landlock (Linux >= 5.13 with landlock in the LSM list)")
    with Ruleset(scoped=Scope.ABSTRACT_UNIX_SOCKET | Scope.SIGNAL) as rules:
        read = AccessFS.READ_FILE | AccessFS.READ_DIR
        for path in read_only_paths():
            rules.allow_path(path, read)
        rules.allow_path(scratch, rules.handled_fs & ~AccessFS.EXECUTE)
        rules.restrict()  # also sets no_new_privs; nothing in `handled_net` is allowed back: no TCP at all
        if abi >= 4 and not rules.handled_net & (AccessNet.BIND_TCP | AccessNet.CONNECT_TCP):
            raise ConfineError(f"Landlock ABI {abi} did not handle TCP")
    return abi


# Syscalls a pure function never needs and a hostile one would use; denied with EPERM. The default is allow:
# CPython needs many calls and the filesystem and network are already Landlock's (this is the second wall).
DENIED_SYSCALLS = (
    "execve",
    "execveat",
    "fork",
    "vfork",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_open",
    "pidfd_getfd",
    "pidfd_send_signal",
    "socket",
    "socketpair",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "sendto",
    "sendmsg",
    "sendmmsg",
    "setrlimit",
    "prlimit64",
    "setpriority",
    "sched_setaffinity",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "utime",
    "utimes",
    "utimensat",
    "futimesat",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "mknod",
    "mknodat",
    "swapon",
    "swapoff",
    "reboot",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "acct",
    "quotactl",
    "syslog",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "personality",
    "iopl",
    "ioperm",
    "name_to_handle_at",
    "open_by_handle_at",
    "lookup_dcookie",
    "move_pages",
    "migrate_pages",
    "mbind",
    "set_mempolicy",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setgroups",
    "setfsuid",
    "setfsgid",
    "capset",
    "memfd_create",
    "memfd_secret",
    # System V and POSIX IPC, which Landlock does not cover: another process's shared memory or queues
    "shmget",
    "shmat",
    "shmctl",
    "shmdt",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "semget",
    "semop",
    "semtimedop",
    "semctl",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedreceive",
    "mq_notify",
    "mq_getsetattr",
    # the new mount API, watching other files, comparing other processes' kernel objects
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "quotactl_fd",
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "fanotify_init",
    "fanotify_mark",
    "kcmp",
)
CLONE_THREAD = 0x00010000


def apply_seccomp() -> int:
    """Load the filter: the calls above fail with EPERM, a new process (clone without CLONE_THREAD) too, clone3
    answers ENOSYS (its flags are out of a filter's reach, so libc falls back to clone). Returns the rule count."""
    try:
        import pyseccomp as seccomp
    except (ImportError, RuntimeError) as exc:  # RuntimeError: libseccomp.so.2 is not installed
        raise ConfineError(
            f"seccomp needs 'pyseccomp' and libseccomp ({exc}); pip install pyseccomp, apt-get install libseccomp2"
        ) from exc
    denied = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    count = 0
    for name in DENIED_SYSCALLS:
        try:
            rules.add_rule(denied, name)
            count += 1
        except (OSError, ValueError, RuntimeError):
            continue  # not a syscall on this architecture / libseccomp version
    rules.add_rule(denied, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    rules.load()
    return count + 2


CAPABILITY_VERSION_3 = 0x20080522


def drop_capabilities() -> bool:
    """Empty the effective, permitted and inheritable capability sets (they are only non-empty when the app runs as
    root): root without capabilities cannot override permissions, raise limits or escape RLIMIT_NPROC. Returns
    whether there were any to drop."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(CAPABILITY_VERSION_3, 0), (Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise ConfineError(f"capget failed: {os.strerror(ctypes.get_errno())}")
    had = any(d.effective or d.permitted or d.inheritable for d in data)
    if had and libc.capset(ctypes.byref(header), (Data * 2)()) != 0:
        raise ConfineError(f"capset failed: {os.strerror(ctypes.get_errno())}")
    return had


def isolate_fds(protocol_in: int, protocol_out: int) -> None:
    """Close every descriptor the worker inherited but its protocol pipes, then point stdout/stderr at /dev/null
    (a program's prints go nowhere instead of into the protocol)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        if fd not in (protocol_in, protocol_out):
            os.dup2(devnull, fd)
    os.close(devnull)
    keep = {0, 1, 2, protocol_in, protocol_out}
    for fd in range(3, 256):
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def ensure_linux() -> None:
    if not sys.platform.startswith("linux"):
        raise ConfineError(f"kernel isolation needs Linux (Landlock, seccomp); this is {sys.platform!r}")
