//! The seccomp filter installed on the command, as the very last step
//! before execve.
//!
//! # The profile
//!
//! Default deny. [`PROFILE`] (and [`PROFILE_ARCH`] for the old x86_64-only
//! names) is the one reviewed table: groups of syscall names, each with
//! what the filter does with them and why. A syscall is
//! - allowed: what ordinary programs need (a shell, coreutils, python3
//!   with threads, subprocess, asyncio and sockets, C with pthreads and
//!   mmap, the usual language runtimes);
//! - refused with EPERM: the kernel surface a sandboxed program has no
//!   business with (namespaces, mounts, debugging other processes, kernel
//!   modules and programs, keyrings, clock setting, ...), so programs fail
//!   the way they fail without a privilege;
//! - allowed only for some argument values ([`Guard`]): `clone` without
//!   namespace flags, `ioctl` except TIOCSTI/TIOCLINUX, `personality` with
//!   harmless values, `socket` and `socketpair` for the families a workload
//!   uses; other values get EPERM;
//! - `clone3`: ENOSYS, so that the C library falls back to `clone`, whose
//!   flags the filter can read (clone3 passes them in memory).
//!
//! Every syscall not in the table (new, exotic or obsolete ones) fails with
//! ENOSYS, like a syscall this kernel does not have: programs probe with it
//! and fall back.
//!
//! # The policy
//!
//! `[syscalls] allow` lifts a refusal (or adds a name the table does not
//! have); names in [`syscalls::NEVER_ALLOWED`] (namespaces, mounts) and the
//! argument-guarded ones ([`syscalls::ARGUMENT_GUARDED`]) cannot be
//! allowed. `deny` applies `action` to its names, and wins over `allow`:
//! - `"errno"`: the syscall fails with EPERM (one that fails already keeps
//!   its errno, so denying `clone3` keeps the ENOSYS fallback);
//! - `"kill"`: SECCOMP_RET_KILL_PROCESS, the process dies of SIGSYS;
//! - `"log"`: SECCOMP_RET_LOG, allowed and logged by the kernel's audit.
//!   Only an allowed syscall can be logged: naming a refused one is an
//!   error (allow it too, to allow it and log each use).
//!
//! # The program
//!
//! seccompiler 0.5 gives a `SeccompFilter` one match action, and the
//! profile needs several (allow, log, EPERM, ENOSYS, kill) and per-argument
//! outcomes. Two or three filters could be chained (the kernel runs every
//! installed filter and keeps the most restrictive result), but that splits
//! one decision across programs, runs them all on every syscall, and a
//! guarded syscall would need its refused values spelled out as the
//! complement of the allowed ones. So the program is ONE classic BPF
//! program assembled here from seccompiler's pieces: each [`SeccompRule`]
//! is compiled by seccompiler (argument loads, 64-bit halves, the jumps
//! inside a rule) and followed by its own return; this module only strings
//! the blocks together:
//!
//! ```text
//! x32 guard: nr & 0x40000000          -> EPERM
//! arch != AUDIT_ARCH_{X86_64,AARCH64}  -> KILL_PROCESS   (i386 int 0x80)
//! load nr
//! nr == ioctl  -> [rule -> RET]* RET fallback            (guarded first)
//! nr == read   -> RET ALLOW                              (2 instructions)
//! ...
//! RET ERRNO(ENOSYS)
//! ```
//!
//! Every block ends in a return, so no block falls into the next. The
//! kernel (5.11+) caches syscalls whose result is a constant ALLOW, so the
//! linear scan costs nothing for them; the guarded ones come first.
//!
//! # API
//!
//! [`validate`] checks a policy (before any side effect), [`compile_policy`]
//! returns the programs in install order (one today), [`apply_programs`]
//! installs them, [`describe`] says what is enforced in one line.
//! [`compile`] and [`apply`] keep the old signatures (default profile, one
//! program) until workload.rs calls the new ones.

use std::collections::BTreeMap;

use purple_common::policy::{SyscallAction, SyscallPolicy};
use purple_common::syscalls;
use seccompiler::{
    sock_filter, BpfProgram, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule,
};

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("syscall {name:?} does not exist on {arch}")]
    UnknownSyscall { name: String, arch: &'static str },
    #[error("syscalls.allow: {name} cannot be allowed: {reason}")]
    NotAllowable { name: String, reason: &'static str },
    #[error(
        "syscalls.deny: {name} cannot be logged, the profile refuses it with {errno} \
         ({why}); add it to syscalls.allow as well to allow it and log each call"
    )]
    LogOfRefused {
        name: String,
        errno: &'static str,
        why: &'static str,
    },
    #[error("building the seccomp filter: {0}")]
    Build(String),
    #[error("the seccomp filter has {0} instructions; the kernel takes at most {BPF_MAXINSNS}")]
    TooLong(usize),
    #[error("this CPU architecture has no seccomp profile")]
    UnsupportedArch,
}

/// What the default profile does with one syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allow,
    /// Fails with EPERM.
    Refuse,
    /// Fails with ENOSYS, as if the kernel did not have it.
    NotImplemented,
    /// Allowed for some argument values, EPERM for the others.
    Guarded(Guard),
}

/// The argument checks. Every compared argument is an `int` or `unsigned
/// int` in the kernel (clone's flags are cut to their low 32 bits), so the
/// checks compare the low 32 bits only: a value with high bits set is the
/// same value to the kernel and must not slip past a 64-bit compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// `clone(flags, ...)`: allowed when `flags & NAMESPACE_FLAGS == 0`.
    CloneWithoutNamespaces,
    /// `ioctl(fd, request, ...)`: refused for TIOCSTI and TIOCLINUX.
    NoTerminalInjection,
    /// `personality(persona)`: allowed for [`HARMLESS_PERSONALITIES`].
    HarmlessPersonality,
    /// `socket(family, type, protocol)`: [`SOCKETS`].
    SocketFamilies,
    /// `socketpair(family, ...)`: AF_UNIX only.
    SocketpairUnix,
}

/// One reviewed line of the profile.
#[derive(Debug)]
struct Group {
    verdict: Verdict,
    /// Why; docs/seccomp.md says the same at more length.
    why: &'static str,
    names: &'static [&'static str],
}

const fn allow(why: &'static str, names: &'static [&'static str]) -> Group {
    Group {
        verdict: Verdict::Allow,
        why,
        names,
    }
}

const fn refuse(why: &'static str, names: &'static [&'static str]) -> Group {
    Group {
        verdict: Verdict::Refuse,
        why,
        names,
    }
}

const fn guard(guard: Guard, why: &'static str, names: &'static [&'static str]) -> Group {
    Group {
        verdict: Verdict::Guarded(guard),
        why,
        names,
    }
}

/// The default profile, names common to x86_64 and aarch64.
const PROFILE: &[Group] = &[
    // ---- allowed ----
    allow(
        "memory: map, protect, advise and release the process's own memory",
        &[
            "brk",
            "madvise",
            "membarrier",
            "memfd_create",
            "mincore",
            "mlock",
            "mlock2",
            "mlockall",
            "mmap",
            "mprotect",
            "mremap",
            "mseal",
            "msync",
            "munlock",
            "munlockall",
            "munmap",
            "pkey_alloc",
            "pkey_free",
            "pkey_mprotect",
        ],
    ),
    allow(
        "file I/O on descriptors the process holds",
        &[
            "close",
            "close_range",
            "copy_file_range",
            "dup",
            "dup3",
            "fadvise64",
            "fallocate",
            "fcntl",
            "fdatasync",
            "flock",
            "fsync",
            "ftruncate",
            "lseek",
            "openat",
            "openat2",
            "pread64",
            "preadv",
            "preadv2",
            "pwrite64",
            "pwritev",
            "pwritev2",
            "read",
            "readahead",
            "readv",
            "sendfile",
            "splice",
            "sync",
            "sync_file_range",
            "syncfs",
            "tee",
            "truncate",
            "vmsplice",
            "write",
            "writev",
        ],
    ),
    allow(
        "directories and file metadata; permission checks stay the kernel's \
         (the sandbox runs as the caller's uid, without capabilities)",
        &[
            "chdir",
            "faccessat",
            "faccessat2",
            "fchdir",
            "fchmod",
            "fchmodat",
            "fchown",
            "fchownat",
            "fstat",
            "fstatfs",
            "getcwd",
            "getdents64",
            "linkat",
            "mkdirat",
            "mknodat",
            "newfstatat",
            "readlinkat",
            "renameat",
            "renameat2",
            "statfs",
            "statx",
            "symlinkat",
            "umask",
            "unlinkat",
            "utimensat",
        ],
    ),
    allow(
        "extended attributes (cp -a, tar, rsync keep user.* attributes)",
        &[
            "fgetxattr",
            "flistxattr",
            "fremovexattr",
            "fsetxattr",
            "getxattr",
            "lgetxattr",
            "listxattr",
            "llistxattr",
            "lremovexattr",
            "lsetxattr",
            "removexattr",
            "setxattr",
        ],
    ),
    allow(
        "file change notification (build tools, dev servers, watchers)",
        &["inotify_add_watch", "inotify_init1", "inotify_rm_watch"],
    ),
    allow(
        "waiting for events: poll, select, epoll, eventfd, signalfd, timerfd \
         (every event loop: asyncio, libuv, tokio, the JVM)",
        &[
            "epoll_create1",
            "epoll_ctl",
            "epoll_pwait",
            "epoll_pwait2",
            "eventfd2",
            "pselect6",
            "ppoll",
            "signalfd4",
            "timerfd_create",
            "timerfd_gettime",
            "timerfd_settime",
        ],
    ),
    allow(
        "Linux native AIO (databases, libaio); io_uring is refused below",
        &[
            "io_cancel",
            "io_destroy",
            "io_getevents",
            "io_setup",
            "io_submit",
        ],
    ),
    allow(
        "processes: run programs, wait for and signal them; signals reach only \
         the sandbox's own pid namespace",
        &[
            "execve",
            "execveat",
            "exit",
            "exit_group",
            "getpid",
            "getppid",
            "gettid",
            "kill",
            "pidfd_open",
            "pidfd_send_signal",
            "tgkill",
            "tkill",
            "wait4",
            "waitid",
        ],
    ),
    allow(
        "threads and synchronisation (pthreads, every runtime's locks)",
        &[
            "futex",
            "futex_waitv",
            "get_robust_list",
            "rseq",
            "sched_yield",
            "set_robust_list",
            "set_tid_address",
        ],
    ),
    allow(
        "scheduling of the process's own threads: affinity, priority, policy \
         (raising them needs a capability the sandbox lacks)",
        &[
            "getcpu",
            "getpriority",
            "ioprio_get",
            "ioprio_set",
            "sched_get_priority_max",
            "sched_get_priority_min",
            "sched_getaffinity",
            "sched_getattr",
            "sched_getparam",
            "sched_getscheduler",
            "sched_rr_get_interval",
            "sched_setaffinity",
            "sched_setattr",
            "sched_setparam",
            "sched_setscheduler",
            "setpriority",
        ],
    ),
    allow(
        "identity and sessions: inside the user namespace only the mapped ids \
         exist and no capability is held, so set*id can only shuffle them",
        &[
            "capget",
            "capset",
            "getegid",
            "geteuid",
            "getgid",
            "getgroups",
            "getpgid",
            "getresgid",
            "getresuid",
            "getsid",
            "getuid",
            "setfsgid",
            "setfsuid",
            "setgid",
            "setgroups",
            "setpgid",
            "setregid",
            "setresgid",
            "setresuid",
            "setreuid",
            "setsid",
            "setuid",
        ],
    ),
    allow(
        "signals and interval timers",
        &[
            "getitimer",
            "restart_syscall",
            "rt_sigaction",
            "rt_sigpending",
            "rt_sigprocmask",
            "rt_sigqueueinfo",
            "rt_sigreturn",
            "rt_sigsuspend",
            "rt_sigtimedwait",
            "rt_tgsigqueueinfo",
            "setitimer",
            "sigaltstack",
        ],
    ),
    allow(
        "reading clocks, sleeping, POSIX timers (setting clocks is refused below)",
        &[
            "clock_getres",
            "clock_gettime",
            "clock_nanosleep",
            "gettimeofday",
            "nanosleep",
            "timer_create",
            "timer_delete",
            "timer_getoverrun",
            "timer_gettime",
            "timer_settime",
        ],
    ),
    allow(
        "limits, usage, system information, randomness, prctl (the options that \
         matter need capabilities; no_new_privs cannot be undone)",
        &[
            "getrandom",
            "getrlimit",
            "getrusage",
            "prctl",
            "prlimit64",
            "setrlimit",
            "sysinfo",
            "times",
            "uname",
        ],
    ),
    allow(
        "IPC inside the sandbox's own IPC namespace: pipes, System V and POSIX \
         message queues, semaphores, shared memory (PostgreSQL, multiprocessing)",
        &[
            "mq_getsetattr",
            "mq_notify",
            "mq_open",
            "mq_timedreceive",
            "mq_timedsend",
            "mq_unlink",
            "msgctl",
            "msgget",
            "msgrcv",
            "msgsnd",
            "pipe2",
            "semctl",
            "semget",
            "semop",
            "semtimedop",
            "shmat",
            "shmctl",
            "shmdt",
            "shmget",
        ],
    ),
    allow(
        "using sockets; which sockets can exist is the socket guard's question, \
         where they can reach is the network namespace's",
        &[
            "accept",
            "accept4",
            "bind",
            "connect",
            "getpeername",
            "getsockname",
            "getsockopt",
            "listen",
            "recvfrom",
            "recvmmsg",
            "recvmsg",
            "sendmmsg",
            "sendmsg",
            "sendto",
            "setsockopt",
            "shutdown",
        ],
    ),
    allow(
        "restricting oneself further (browsers, test runners, nested sandboxes): \
         a filter or ruleset can only take rights away",
        &[
            "landlock_add_rule",
            "landlock_create_ruleset",
            "landlock_restrict_self",
            "seccomp",
        ],
    ),
    // ---- allowed for some arguments ----
    guard(
        Guard::CloneWithoutNamespaces,
        "fork, vfork, posix_spawn and threads use clone; a namespace flag would \
         give the child a fresh user namespace with full capabilities (EPERM)",
        &["clone"],
    ),
    guard(
        Guard::NoTerminalInjection,
        "ioctl on the process's own descriptors, except TIOCSTI and TIOCLINUX, \
         which push keystrokes into a terminal the caller may still be reading (EPERM)",
        &["ioctl"],
    ),
    guard(
        Guard::HarmlessPersonality,
        "personality queries and the 32-bit uname personas; others turn off \
         address randomisation or make data executable (EPERM)",
        &["personality"],
    ),
    guard(
        Guard::SocketFamilies,
        "AF_UNIX, TCP/UDP/ping over AF_INET and AF_INET6, netlink route \
         (getifaddrs); raw IP, packet sockets, AF_ALG, AF_VSOCK, AF_KEY, other \
         netlink and every other family are a large kernel surface nothing \
         ordinary needs (EPERM)",
        &["socket"],
    ),
    guard(
        Guard::SocketpairUnix,
        "socketpair works only for AF_UNIX; another family would still load \
         and run that family's socket code (EPERM)",
        &["socketpair"],
    ),
    // ---- ENOSYS on purpose ----
    Group {
        verdict: Verdict::NotImplemented,
        why: "clone3 passes its flags in memory the filter cannot read; ENOSYS \
              makes glibc fall back to clone, whose flags it can",
        names: &["clone3"],
    },
    // ---- refused (EPERM) ----
    refuse(
        "namespaces: a new user namespace holds every capability over itself \
         (the usual first step of a kernel exploit); setns would join another",
        &["setns", "unshare"],
    ),
    refuse(
        "the mount family: a mount could hide or reveal parts of the tree the \
         sandbox built",
        &[
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "pivot_root",
            "umount2",
        ],
    ),
    refuse(
        "reaching into other processes: memory, descriptors, kernel objects \
         (debuggers; a large surface with a history of escapes)",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    refuse(
        "loading code into the kernel: modules, kexec, eBPF programs, perf events",
        &[
            "bpf",
            "delete_module",
            "finit_module",
            "init_module",
            "kexec_file_load",
            "kexec_load",
            "perf_event_open",
        ],
    ),
    refuse(
        "kernel interfaces that exploits lean on: userfaultfd stalls the kernel \
         mid-copy, io_uring has had a long run of privilege escalations",
        &[
            "io_uring_enter",
            "io_uring_register",
            "io_uring_setup",
            "userfaultfd",
        ],
    ),
    refuse(
        "kernel keyrings: not namespaced, shared with the caller's sessions on the host",
        &["add_key", "keyctl", "request_key"],
    ),
    refuse(
        "file handles: open_by_handle_at opens any inode of a filesystem by \
         number, past the sandbox's mount tree (the 'shocker' escape)",
        &["name_to_handle_at", "open_by_handle_at"],
    ),
    refuse(
        "host-wide administration: accounting, swap, reboot, quotas, the \
         kernel log, terminal hangup, chroot, host and domain names",
        &[
            "acct",
            "chroot",
            "lookup_dcookie",
            "quotactl",
            "quotactl_fd",
            "reboot",
            "setdomainname",
            "sethostname",
            "swapoff",
            "swapon",
            "syslog",
            "vhangup",
        ],
    ),
    refuse(
        "setting the system clock: the clocks are the host's, not namespaced",
        &["adjtimex", "clock_adjtime", "clock_settime", "settimeofday"],
    ),
];

/// The old x86_64 syscalls that aarch64 never had (the generic ABI has only
/// the `*at` and `p*` forms), so programs built for x86_64 keep working.
#[cfg(target_arch = "x86_64")]
const PROFILE_ARCH: &[Group] = &[
    allow(
        "the same operations under their older x86_64 names",
        &[
            "access",
            "alarm",
            "chmod",
            "chown",
            "creat",
            "dup2",
            "epoll_create",
            "epoll_wait",
            "eventfd",
            "fchmodat2",
            "fork",
            "futimesat",
            "getdents",
            "getpgrp",
            "inotify_init",
            "lchown",
            "link",
            "lstat",
            "mkdir",
            "mknod",
            "open",
            "pause",
            "pipe",
            "poll",
            "readlink",
            "rename",
            "rmdir",
            "select",
            "signalfd",
            "stat",
            "symlink",
            "time",
            "unlink",
            "utime",
            "utimes",
            "vfork",
        ],
    ),
    allow(
        "x86_64 thread-local storage (ARCH_SET_FS) and CPU feature queries",
        &["arch_prctl"],
    ),
    refuse(
        "x86 I/O ports and segment tables: hardware access, and the LDT a \
         source of old kernel bugs",
        &["ioperm", "iopl", "modify_ldt"],
    ),
];

#[cfg(not(target_arch = "x86_64"))]
const PROFILE_ARCH: &[Group] = &[];

/// Namespace flags of `clone` (CLONE_NEWTIME cannot be passed to clone:
/// its bit is part of the exit signal there).
const NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;

/// ioctl requests that inject input into a terminal. The kernel takes the
/// request as an `unsigned int`, so the low 32 bits are compared: a request
/// with high bits set is still TIOCSTI to the kernel.
// The request type differs between libcs (c_ulong on glibc, c_int on musl).
#[allow(clippy::unnecessary_cast)]
const TERMINAL_INJECTION: &[u32] = &[libc::TIOCSTI as u32, libc::TIOCLINUX as u32];

/// PER_LINUX, PER_LINUX32, UNAME26, UNAME26 | PER_LINUX32, and 0xffffffff
/// (query the current persona without changing it).
const HARMLESS_PERSONALITIES: &[u32] = &[
    0x0000_0000,
    0x0000_0008,
    0x0002_0000,
    0x0002_0008,
    0xffff_ffff,
];

/// SOCK_TYPE_MASK: the type argument also carries SOCK_CLOEXEC and
/// SOCK_NONBLOCK.
const SOCK_TYPE_MASK: u32 = 0xf;

/// The allowed `socket(family, type, protocol)` shapes; `None` means any.
/// Protocol 0 is the family's default (TCP for stream, UDP for datagram).
const SOCKETS: &[(i32, Option<i32>, Option<i32>)] = &[
    (libc::AF_UNIX, None, None),
    (libc::AF_INET, Some(libc::SOCK_STREAM), Some(0)),
    (
        libc::AF_INET,
        Some(libc::SOCK_STREAM),
        Some(libc::IPPROTO_TCP),
    ),
    (
        libc::AF_INET,
        Some(libc::SOCK_STREAM),
        Some(libc::IPPROTO_MPTCP),
    ),
    (libc::AF_INET, Some(libc::SOCK_DGRAM), Some(0)),
    (
        libc::AF_INET,
        Some(libc::SOCK_DGRAM),
        Some(libc::IPPROTO_UDP),
    ),
    (
        libc::AF_INET,
        Some(libc::SOCK_DGRAM),
        Some(libc::IPPROTO_ICMP),
    ),
    (libc::AF_INET6, Some(libc::SOCK_STREAM), Some(0)),
    (
        libc::AF_INET6,
        Some(libc::SOCK_STREAM),
        Some(libc::IPPROTO_TCP),
    ),
    (
        libc::AF_INET6,
        Some(libc::SOCK_STREAM),
        Some(libc::IPPROTO_MPTCP),
    ),
    (libc::AF_INET6, Some(libc::SOCK_DGRAM), Some(0)),
    (
        libc::AF_INET6,
        Some(libc::SOCK_DGRAM),
        Some(libc::IPPROTO_UDP),
    ),
    (
        libc::AF_INET6,
        Some(libc::SOCK_DGRAM),
        Some(libc::IPPROTO_ICMPV6),
    ),
    // NETLINK_ROUTE: getifaddrs, and glibc's getaddrinfo with AI_ADDRCONFIG.
    (libc::AF_NETLINK, None, Some(0)),
];

/// What a syscall not in the table gets.
const UNLISTED: Action = Action::Errno(libc::ENOSYS);

/// Bit 30 of the syscall number marks the x32 ABI on x86_64. The
/// architecture check cannot see it (x32 shares AUDIT_ARCH_X86_64).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The kernel's limit on one classic BPF program.
const BPF_MAXINSNS: usize = 4096;

// Classic BPF opcodes (linux/bpf_common.h) and seccomp_data offsets.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;

// AUDIT_ARCH_* of linux/audit.h: EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
const AUDIT_ARCH_AARCH64: u32 = 183 | 0x8000_0000 | 0x4000_0000;

fn audit_arch() -> Result<u32, FilterError> {
    if cfg!(target_arch = "x86_64") {
        Ok(AUDIT_ARCH_X86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(AUDIT_ARCH_AARCH64)
    } else {
        Err(FilterError::UnsupportedArch)
    }
}

/// What the program returns for one outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Allow,
    Log,
    Errno(i32),
    KillProcess,
}

impl Action {
    fn ret(self) -> u32 {
        match self {
            Action::Allow => libc::SECCOMP_RET_ALLOW,
            Action::Log => libc::SECCOMP_RET_LOG,
            Action::Errno(errno) => {
                libc::SECCOMP_RET_ERRNO | (errno.unsigned_abs() & libc::SECCOMP_RET_DATA)
            }
            Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        }
    }
}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOSYS => "ENOSYS",
        _ => "an errno",
    }
}

/// The final decision for one syscall, after the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Always(Action),
    /// `pass` is what the allowed argument values get (Allow, or Log).
    Guarded {
        guard: Guard,
        pass: Action,
    },
}

/// Checks a policy against the profile without building anything: unknown
/// names, names no policy may allow, and `log` on a refused syscall.
// Called by request checking once it is wired (compile_policy checks too).
pub fn validate(policy: &SyscallPolicy) -> Result<(), FilterError> {
    decisions(policy).map(|_| ())
}

/// One line for the exit report and `doctor`: what the filter enforces.
// Used by report.rs once it is wired.
pub fn describe(policy: &SyscallPolicy) -> String {
    let names = |verdict: fn(Verdict) -> bool| -> Vec<&'static str> {
        groups()
            .filter(|g| verdict(g.verdict))
            .flat_map(|g| g.names.iter().copied())
            .collect()
    };
    let allowed = names(|v| v == Verdict::Allow).len();
    let guarded = names(|v| matches!(v, Verdict::Guarded(_))).join(", ");
    let refused = names(|v| v == Verdict::Refuse).len();
    let mut text = format!(
        "default-deny profile ({arch}): {allowed} syscalls allowed, {guarded} allowed for \
         some arguments only, {refused} refused with EPERM, clone3 and every other syscall \
         ENOSYS; x32 syscalls EPERM, i386 syscalls kill the process",
        arch = syscalls::ARCH
    );
    let list = |names: &[purple_common::policy::SyscallName]| {
        names
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !policy.allow.is_empty() {
        text.push_str(&format!("; the policy allows {}", list(&policy.allow)));
    }
    if !policy.deny.is_empty() {
        let action = match policy.action {
            SyscallAction::Errno => "EPERM",
            SyscallAction::Kill => "kill the process",
            SyscallAction::Log => "allowed and logged",
        };
        text.push_str(&format!(
            "; the policy denies {} ({action})",
            list(&policy.deny)
        ));
    }
    text
}

/// Builds the seccomp programs for `policy`, in install order.
pub fn compile_policy(policy: &SyscallPolicy) -> Result<Vec<BpfProgram>, FilterError> {
    let arch = audit_arch()?;
    let decisions = decisions(policy)?;
    Ok(vec![assemble(arch, decisions)?])
}

/// What the sandbox's PID 1 calls once it reaps: wait, report over its
/// pipe, allocate for the report, exit. Everything else fails with ENOSYS.
/// A short program: cheap to load and to JIT on the start-up path.
const REAPER_SYSCALLS: &[&str] = &[
    "wait4",
    "waitid",
    "read",
    "write",
    "close",
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "madvise",
    "rt_sigreturn",
    "restart_syscall",
    "exit",
    "exit_group",
];

/// The filter of the sandbox's PID 1 (the reaper), in install order.
pub fn compile_reaper() -> Result<Vec<BpfProgram>, FilterError> {
    let arch = audit_arch()?;
    let mut map = BTreeMap::new();
    for name in REAPER_SYSCALLS {
        if let Some(nr) = purple_common::syscalls::number(name) {
            map.insert(nr, Decision::Always(Action::Allow));
        }
    }
    Ok(vec![assemble(arch, map)?])
}

/// Installs `programs` on the calling thread, in order. no_new_privs must
/// be set (seccompiler sets it again). An empty list is refused: a caller
/// that meant to filter must not run unfiltered.
pub fn apply_programs(programs: &[BpfProgram]) -> Result<(), nix::errno::Errno> {
    if programs.is_empty() {
        return Err(nix::errno::Errno::EINVAL);
    }
    for program in programs {
        seccompiler::apply_filter(program).map_err(|e| match e {
            seccompiler::Error::Seccomp(io) | seccompiler::Error::Prctl(io) => {
                nix::errno::Errno::from_raw(io.raw_os_error().unwrap_or(libc::EINVAL))
            }
            _ => nix::errno::Errno::EINVAL,
        })?;
    }
    Ok(())
}

fn known(name: &str) -> Result<i64, FilterError> {
    syscalls::number(name).ok_or_else(|| FilterError::UnknownSyscall {
        name: name.to_owned(),
        arch: syscalls::ARCH,
    })
}

/// The profile's groups for this architecture.
fn groups() -> impl Iterator<Item = &'static Group> {
    PROFILE.iter().chain(PROFILE_ARCH)
}

/// The group of the profile that names `name`.
fn group_of(name: &str) -> Option<&'static Group> {
    groups().find(|group| group.names.contains(&name))
}

/// The profile with the policy applied, by syscall number.
fn decisions(policy: &SyscallPolicy) -> Result<BTreeMap<i64, Decision>, FilterError> {
    audit_arch()?;
    for name in policy.allow.iter().chain(&policy.deny) {
        known(name.as_str())?;
    }
    let mut map = BTreeMap::new();
    for group in groups() {
        let decision = match group.verdict {
            Verdict::Allow => Decision::Always(Action::Allow),
            Verdict::Refuse => Decision::Always(Action::Errno(libc::EPERM)),
            Verdict::NotImplemented => Decision::Always(Action::Errno(libc::ENOSYS)),
            Verdict::Guarded(guard) => Decision::Guarded {
                guard,
                pass: Action::Allow,
            },
        };
        for name in group.names {
            map.insert(known(name)?, decision);
        }
    }
    for name in &policy.allow {
        let name = name.as_str();
        if let Some(reason) = syscalls::allow_refusal(name) {
            return Err(FilterError::NotAllowable {
                name: name.to_owned(),
                reason,
            });
        }
        map.insert(known(name)?, Decision::Always(Action::Allow));
    }
    for name in &policy.deny {
        let nr = known(name.as_str())?;
        let current = map.get(&nr).copied().unwrap_or(Decision::Always(UNLISTED));
        let next = match (policy.action, current) {
            // What fails already keeps its errno (clone3 keeps ENOSYS).
            (SyscallAction::Errno, Decision::Always(Action::Errno(_) | Action::KillProcess)) => {
                current
            }
            (SyscallAction::Errno, _) => Decision::Always(Action::Errno(libc::EPERM)),
            (SyscallAction::Kill, _) => Decision::Always(Action::KillProcess),
            (SyscallAction::Log, Decision::Always(Action::Allow | Action::Log)) => {
                Decision::Always(Action::Log)
            }
            (SyscallAction::Log, Decision::Guarded { guard, .. }) => Decision::Guarded {
                guard,
                pass: Action::Log,
            },
            (SyscallAction::Log, Decision::Always(Action::Errno(errno))) => {
                return Err(FilterError::LogOfRefused {
                    name: name.as_str().to_owned(),
                    errno: errno_name(errno),
                    why: group_of(name.as_str()).map_or(
                        "not in the profile: unlisted syscalls fail with ENOSYS",
                        |group| group.why,
                    ),
                })
            }
            (SyscallAction::Log, Decision::Always(Action::KillProcess)) => current,
        };
        map.insert(nr, next);
    }
    Ok(map)
}

fn build_error(e: seccompiler::BackendError) -> FilterError {
    FilterError::Build(e.to_string())
}

/// `arg` (low 32 bits) `& mask == value`.
fn arg_masked(arg: u8, mask: u32, value: u32) -> Result<SeccompCondition, FilterError> {
    SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(u64::from(mask)),
        u64::from(value),
    )
    .map_err(build_error)
}

/// `arg` (low 32 bits) `== value`.
fn arg_eq(arg: u8, value: u32) -> Result<SeccompCondition, FilterError> {
    SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        u64::from(value),
    )
    .map_err(build_error)
}

/// A guard as rules tried in order (conditions, outcome) and the outcome
/// when none matches.
type Rules = Vec<(Vec<SeccompCondition>, Action)>;

fn guard_rules(guard: Guard, pass: Action) -> Result<(Rules, Action), FilterError> {
    let eperm = Action::Errno(libc::EPERM);
    Ok(match guard {
        Guard::CloneWithoutNamespaces => (
            vec![(vec![arg_masked(0, NAMESPACE_FLAGS, 0)?], pass)],
            eperm,
        ),
        Guard::NoTerminalInjection => (
            TERMINAL_INJECTION
                .iter()
                .map(|request| Ok((vec![arg_eq(1, *request)?], eperm)))
                .collect::<Result<_, FilterError>>()?,
            pass,
        ),
        Guard::HarmlessPersonality => (
            HARMLESS_PERSONALITIES
                .iter()
                .map(|persona| Ok((vec![arg_eq(0, *persona)?], pass)))
                .collect::<Result<_, FilterError>>()?,
            eperm,
        ),
        Guard::SocketFamilies => (
            SOCKETS
                .iter()
                .map(|(family, kind, protocol)| {
                    let mut conditions = vec![arg_eq(0, *family as u32)?];
                    if let Some(kind) = kind {
                        conditions.push(arg_masked(1, SOCK_TYPE_MASK, *kind as u32)?);
                    }
                    if let Some(protocol) = protocol {
                        conditions.push(arg_eq(2, *protocol as u32)?);
                    }
                    Ok((conditions, pass))
                })
                .collect::<Result<_, FilterError>>()?,
            eperm,
        ),
        Guard::SocketpairUnix => (vec![(vec![arg_eq(0, libc::AF_UNIX as u32)?], pass)], eperm),
    })
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn ret(action: Action) -> sock_filter {
    stmt(BPF_RET_K, action.ret())
}

/// The program: x32 guard, architecture check, one block per syscall, and
/// ENOSYS for the rest. Guarded syscalls come first (ioctl leading: it is
/// the most frequent one the kernel cannot cache), then by number.
fn assemble(arch: u32, decisions: BTreeMap<i64, Decision>) -> Result<BpfProgram, FilterError> {
    let mut ordered: Vec<(i64, Decision)> = decisions.into_iter().collect();
    ordered.sort_by_key(|(nr, decision)| match decision {
        Decision::Guarded {
            guard: Guard::NoTerminalInjection,
            ..
        } => (0, *nr),
        Decision::Guarded { .. } => (1, *nr),
        Decision::Always(_) => (2, *nr),
    });

    let mut program = Vec::with_capacity(3 + 3 + 1 + 2 * ordered.len() + 256);
    // x32: any syscall number with bit 30 set fails before anything else.
    program.push(stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR));
    program.push(jump(BPF_JMP_JSET_K, X32_SYSCALL_BIT, 0, 1));
    program.push(ret(Action::Errno(libc::EPERM)));
    // Another ABI (i386 through int 0x80): its numbers mean other syscalls.
    program.push(stmt(BPF_LD_W_ABS, SECCOMP_DATA_ARCH));
    program.push(jump(BPF_JMP_JEQ_K, arch, 1, 0));
    program.push(ret(Action::KillProcess));
    program.push(stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR));

    for (nr, decision) in ordered {
        let nr = u32::try_from(nr)
            .map_err(|_| FilterError::Build(format!("syscall number {nr} out of range")))?;
        match decision {
            Decision::Always(action) => {
                program.push(jump(BPF_JMP_JEQ_K, nr, 0, 1));
                program.push(ret(action));
            }
            Decision::Guarded { guard, pass } => {
                let (rules, otherwise) = guard_rules(guard, pass)?;
                // Each rule falls through to its return when every condition
                // holds, and jumps past that return when one fails.
                let mut body = Vec::new();
                for (conditions, action) in rules {
                    let rule = SeccompRule::new(conditions).map_err(build_error)?;
                    body.extend(BpfProgram::from(rule));
                    body.push(ret(action));
                }
                body.push(ret(otherwise));
                let skip =
                    u32::try_from(body.len()).map_err(|_| FilterError::TooLong(body.len()))?;
                program.push(jump(BPF_JMP_JEQ_K, nr, 1, 0));
                program.push(stmt(BPF_JMP_JA, skip));
                program.extend(body);
            }
        }
    }
    program.push(ret(UNLISTED));
    if program.len() > BPF_MAXINSNS {
        return Err(FilterError::TooLong(program.len()));
    }
    Ok(program)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::undocumented_unsafe_blocks
)]
mod tests {
    use std::collections::BTreeSet;
    use std::ffi::CString;

    use purple_common::policy::SyscallName;

    use super::*;

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const LOG: u32 = libc::SECCOMP_RET_LOG;
    const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

    fn policy(allow: &[&str], deny: &[&str], action: SyscallAction) -> SyscallPolicy {
        let names = |list: &[&str]| {
            list.iter()
                .map(|n| n.parse::<SyscallName>().unwrap())
                .collect()
        };
        SyscallPolicy {
            allow: names(allow),
            deny: names(deny),
            action,
        }
    }

    fn default_program() -> BpfProgram {
        let mut programs = compile_policy(&SyscallPolicy::default()).unwrap();
        assert_eq!(programs.len(), 1);
        programs.pop().unwrap()
    }

    fn nr(name: &str) -> u32 {
        u32::try_from(syscalls::number(name).unwrap()).unwrap()
    }

    /// A classic BPF interpreter for what `assemble` and seccompiler emit,
    /// run on a `struct seccomp_data` (little-endian).
    fn run(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, arg) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_le_bytes());
        }
        let mut acc: u32 = 0;
        let mut pc = 0usize;
        loop {
            let insn = program.get(pc).expect("ran off the end of the program");
            let k = insn.k;
            let step = |taken: bool| 1 + usize::from(if taken { insn.jt } else { insn.jf });
            pc += match insn.code {
                0x20 => {
                    let at = k as usize;
                    acc = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
                    1
                }
                0x54 => {
                    acc &= k;
                    1
                }
                0x05 => 1 + k as usize,
                0x15 => step(acc == k),
                0x25 => step(acc > k),
                0x35 => step(acc >= k),
                0x45 => step(acc & k != 0),
                0x06 => return k,
                code => panic!("unexpected BPF opcode {code:#x} at {pc}"),
            };
        }
    }

    fn native(program: &[sock_filter], name: &str, args: [u64; 6]) -> u32 {
        run(program, audit_arch().unwrap(), nr(name), args)
    }

    fn names_with(verdict: impl Fn(Verdict) -> bool) -> Vec<&'static str> {
        groups()
            .filter(|g| verdict(g.verdict))
            .flat_map(|g| g.names.iter().copied())
            .collect()
    }

    #[test]
    fn table_has_no_duplicates_and_every_name_is_known() {
        let mut seen = BTreeSet::new();
        for group in groups() {
            assert!(!group.why.is_empty());
            assert!(!group.names.is_empty());
            for name in group.names {
                assert!(seen.insert(*name), "{name} is listed twice");
                assert!(
                    syscalls::is_known(name),
                    "{name} is not a syscall on {}",
                    syscalls::ARCH
                );
            }
        }
        assert!(seen.len() > 250, "only {} names", seen.len());
    }

    #[test]
    fn guarded_and_never_allowed_names_agree_with_purple_common() {
        let guarded: BTreeSet<&str> =
            names_with(|v| matches!(v, Verdict::Guarded(_) | Verdict::NotImplemented))
                .into_iter()
                .collect();
        let common: BTreeSet<&str> = syscalls::ARGUMENT_GUARDED.iter().map(|(n, _)| *n).collect();
        assert_eq!(guarded, common);
        let refused = names_with(|v| v == Verdict::Refuse);
        for name in syscalls::NEVER_ALLOWED {
            assert!(refused.contains(name), "{name} is not refused");
        }
    }

    #[test]
    fn the_issue_refusals_are_in_the_table() {
        let refused = names_with(|v| v == Verdict::Refuse);
        for name in [
            "unshare",
            "setns",
            "mount",
            "umount2",
            "pivot_root",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "pidfd_getfd",
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
            "open_by_handle_at",
            "name_to_handle_at",
            "acct",
            "swapon",
            "swapoff",
            "reboot",
            "settimeofday",
            "clock_settime",
            "clock_adjtime",
            "adjtimex",
            "quotactl",
            "quotactl_fd",
            "lookup_dcookie",
        ] {
            assert!(refused.contains(&name), "{name} is not refused");
        }
    }

    #[test]
    fn the_docs_name_every_refused_and_guarded_syscall() {
        let docs = include_str!("../../../docs/seccomp.md");
        for name in names_with(|v| v != Verdict::Allow) {
            assert!(
                docs.contains(&format!("`{name}`")),
                "docs/seccomp.md lacks `{name}`"
            );
        }
    }

    #[test]
    fn program_starts_with_the_x32_guard_then_the_arch_check() {
        let program = default_program();
        assert_eq!(program[0].code, BPF_LD_W_ABS);
        assert_eq!(program[0].k, SECCOMP_DATA_NR);
        assert_eq!(program[1].code, BPF_JMP_JSET_K);
        assert_eq!(program[1].k, X32_SYSCALL_BIT);
        assert_eq!(program[2].k, EPERM);
        assert_eq!(program[3].k, SECCOMP_DATA_ARCH);
        assert_eq!(program[5].k, KILL);
        assert_eq!(program.last().unwrap().k, ENOSYS);
        assert!(program.len() <= BPF_MAXINSNS);
    }

    #[test]
    fn describe_says_what_is_enforced() {
        let text = describe(&SyscallPolicy::default());
        assert!(text.starts_with("default-deny profile"), "{text}");
        assert!(
            text.contains("clone, ioctl, personality, socket, socketpair"),
            "{text}"
        );
        assert!(!text.contains("policy"), "{text}");
        let text = describe(&policy(
            &["ptrace"],
            &["getppid", "bpf"],
            SyscallAction::Kill,
        ));
        assert!(text.contains("the policy allows ptrace"), "{text}");
        assert!(
            text.contains("the policy denies getppid, bpf (kill the process)"),
            "{text}"
        );
    }

    #[test]
    fn default_outcomes_by_table_entry() {
        let program = default_program();
        for name in names_with(|v| v == Verdict::Allow) {
            assert_eq!(native(&program, name, [0; 6]), ALLOW, "{name}");
        }
        for name in names_with(|v| v == Verdict::Refuse) {
            assert_eq!(native(&program, name, [0; 6]), EPERM, "{name}");
            assert_eq!(native(&program, name, [u64::MAX; 6]), EPERM, "{name}");
        }
        assert_eq!(native(&program, "clone3", [0; 6]), ENOSYS);
        // Unlisted numbers, and the syscall numbers nobody has.
        for unlisted in [1000, 100_000, 0x3fff_ffff] {
            assert_eq!(
                run(&program, audit_arch().unwrap(), unlisted, [0; 6]),
                ENOSYS
            );
        }
        if let Some(nr) = syscalls::number("kcmp") {
            let _ = nr; // refused, checked above
        }
        if let Some(nr) = syscalls::number("fanotify_init") {
            let nr = u32::try_from(nr).unwrap();
            assert_eq!(run(&program, audit_arch().unwrap(), nr, [0; 6]), ENOSYS);
        }
    }

    #[test]
    fn foreign_abis_are_stopped() {
        let program = default_program();
        let arch = audit_arch().unwrap();
        // x32: the native arch with bit 30 in the number, whatever the call.
        for name in ["read", "getpid", "unshare"] {
            assert_eq!(
                run(&program, arch, X32_SYSCALL_BIT | nr(name), [0; 6]),
                EPERM
            );
        }
        assert_eq!(run(&program, arch, u32::MAX, [0; 6]), EPERM);
        // i386 (AUDIT_ARCH_I386) and any other arch: killed.
        const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
        for n in [0, 20, 39, 310] {
            assert_eq!(run(&program, AUDIT_ARCH_I386, n, [0; 6]), KILL);
        }
        assert_eq!(
            run(
                &program,
                AUDIT_ARCH_AARCH64 ^ AUDIT_ARCH_X86_64 ^ arch,
                0,
                [0; 6]
            ),
            KILL
        );
    }

    #[test]
    fn clone_is_allowed_without_namespace_flags_only() {
        let program = default_program();
        let sigchld = libc::SIGCHLD as u64;
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        let vfork = (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | sigchld;
        for flags in [sigchld, thread, vfork, libc::CLONE_PIDFD as u64 | sigchld] {
            assert_eq!(native(&program, "clone", [flags, 0, 0, 0, 0, 0]), ALLOW);
        }
        for ns in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWCGROUP,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
        ] {
            let flags = ns as u32 as u64 | sigchld;
            assert_eq!(native(&program, "clone", [flags, 0, 0, 0, 0, 0]), EPERM);
            // High bits do not hide it: the kernel reads the low 32.
            let high = flags | 0xffff_ffff_0000_0000;
            assert_eq!(native(&program, "clone", [high, 0, 0, 0, 0, 0]), EPERM);
        }
        // High bits alone are ignored by the kernel, and by the filter.
        assert_eq!(
            native(&program, "clone", [sigchld | (1 << 40), 0, 0, 0, 0, 0]),
            ALLOW
        );
    }

    #[test]
    fn ioctl_refuses_terminal_injection_on_the_low_32_bits() {
        let program = default_program();
        #[allow(clippy::unnecessary_cast)]
        for request in [libc::TIOCSTI as u64, libc::TIOCLINUX as u64] {
            for high in [0u64, 1 << 32, 0xdead_beef << 32, u64::MAX << 32] {
                assert_eq!(
                    native(&program, "ioctl", [0, request | high, 0, 0, 0, 0]),
                    EPERM,
                    "{request:#x} | {high:#x}"
                );
            }
        }
        #[allow(clippy::unnecessary_cast)]
        for request in [
            libc::TCGETS as u64,
            libc::TIOCGWINSZ as u64,
            libc::FIONREAD as u64,
            libc::FIOCLEX as u64,
            libc::TIOCSCTTY as u64,
        ] {
            assert_eq!(native(&program, "ioctl", [1, request, 0, 0, 0, 0]), ALLOW);
        }
    }

    #[test]
    fn personality_allows_the_harmless_values_only() {
        let program = default_program();
        for persona in [0u64, 8, 0x20000, 0x20008, 0xffff_ffff] {
            assert_eq!(
                native(&program, "personality", [persona, 0, 0, 0, 0, 0]),
                ALLOW
            );
        }
        const ADDR_NO_RANDOMIZE: u64 = 0x0040000;
        const READ_IMPLIES_EXEC: u64 = 0x0400000;
        for persona in [ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, 0x0400008, 1] {
            assert_eq!(
                native(&program, "personality", [persona, 0, 0, 0, 0, 0]),
                EPERM
            );
        }
    }

    #[test]
    fn socket_families() {
        let program = default_program();
        let socket = |family: i32, kind: i32, protocol: i32| {
            native(
                &program,
                "socket",
                [family as u64, kind as u32 as u64, protocol as u64, 0, 0, 0],
            )
        };
        let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        for kind in [libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET] {
            assert_eq!(socket(libc::AF_UNIX, kind | flags, 0), ALLOW);
        }
        for family in [libc::AF_INET, libc::AF_INET6] {
            for extra in [0, libc::SOCK_CLOEXEC, flags] {
                assert_eq!(socket(family, libc::SOCK_STREAM | extra, 0), ALLOW);
                assert_eq!(
                    socket(family, libc::SOCK_STREAM | extra, libc::IPPROTO_TCP),
                    ALLOW
                );
                assert_eq!(socket(family, libc::SOCK_DGRAM | extra, 0), ALLOW);
                assert_eq!(
                    socket(family, libc::SOCK_DGRAM | extra, libc::IPPROTO_UDP),
                    ALLOW
                );
                assert_eq!(socket(family, libc::SOCK_RAW | extra, 0), EPERM);
                assert_eq!(
                    socket(family, libc::SOCK_RAW | extra, libc::IPPROTO_ICMP),
                    EPERM
                );
                assert_eq!(
                    socket(family, libc::SOCK_RAW | extra, libc::IPPROTO_RAW),
                    EPERM
                );
                assert_eq!(socket(family, libc::SOCK_SEQPACKET | extra, 132), EPERM);
                assert_eq!(socket(family, libc::SOCK_STREAM | extra, 132), EPERM);
            }
        }
        assert_eq!(
            socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
            ALLOW
        );
        assert_eq!(
            socket(libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_ICMPV6),
            ALLOW
        );
        assert_eq!(socket(libc::AF_NETLINK, libc::SOCK_RAW | flags, 0), ALLOW);
        assert_eq!(socket(libc::AF_NETLINK, libc::SOCK_DGRAM, 0), ALLOW);
        for protocol in [libc::NETLINK_AUDIT, 2, 4, 12, 15, 16] {
            assert_eq!(socket(libc::AF_NETLINK, libc::SOCK_RAW, protocol), EPERM);
        }
        for family in [
            libc::AF_PACKET,
            libc::AF_VSOCK,
            libc::AF_KEY,
            libc::AF_ALG,
            libc::AF_UNSPEC,
            libc::AF_BLUETOOTH,
            libc::AF_CAN,
            libc::AF_TIPC,
            libc::AF_RDS,
            libc::AF_XDP,
            45,
            63,
        ] {
            assert_eq!(socket(family, libc::SOCK_STREAM, 0), EPERM, "{family}");
            assert_eq!(socket(family, libc::SOCK_RAW, 0), EPERM, "{family}");
        }
        // A family with high bits is that family to the kernel (int).
        assert_eq!(
            native(
                &program,
                "socket",
                [(1 << 32) | libc::AF_PACKET as u64, 3, 0, 0, 0, 0]
            ),
            EPERM
        );
        let pair = |family: i32| native(&program, "socketpair", [family as u64, 1, 0, 0, 0, 0]);
        assert_eq!(pair(libc::AF_UNIX), ALLOW);
        assert_eq!(pair(libc::AF_INET), EPERM);
        assert_eq!(pair(libc::AF_ALG), EPERM);
    }

    #[test]
    fn compile_succeeds_for_policies_and_every_action() {
        for action in [
            SyscallAction::Errno,
            SyscallAction::Kill,
            SyscallAction::Log,
        ] {
            let p = policy(
                &["ptrace", "kcmp", "mbind"],
                &["getppid", "socket", "ioctl"],
                action,
            );
            validate(&p).unwrap();
            let programs = compile_policy(&p).unwrap();
            assert_eq!(programs.len(), 1);
            assert!(programs[0].len() <= BPF_MAXINSNS);
        }
    }

    #[test]
    fn policy_outcomes() {
        let one = |p: &SyscallPolicy| compile_policy(p).unwrap().pop().unwrap();
        // allow lifts a refusal and adds an unlisted name.
        let program = one(&policy(&["ptrace", "mbind"], &[], SyscallAction::Errno));
        assert_eq!(native(&program, "ptrace", [0; 6]), ALLOW);
        assert_eq!(native(&program, "mbind", [0; 6]), ALLOW);
        assert_eq!(native(&program, "bpf", [0; 6]), EPERM);

        // errno: allowed and guarded names fail with EPERM; refused ones keep
        // their errno; deny wins over allow.
        let program = one(&policy(
            &["ptrace"],
            &["getppid", "socket", "clone3", "ptrace", "mbind"],
            SyscallAction::Errno,
        ));
        assert_eq!(native(&program, "getppid", [0; 6]), EPERM);
        assert_eq!(
            native(&program, "socket", [libc::AF_UNIX as u64, 1, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(native(&program, "clone3", [0; 6]), ENOSYS);
        assert_eq!(native(&program, "ptrace", [0; 6]), EPERM);
        assert_eq!(native(&program, "mbind", [0; 6]), ENOSYS);
        assert_eq!(native(&program, "getpid", [0; 6]), ALLOW);

        // kill: whatever it was.
        let program = one(&policy(
            &[],
            &["getppid", "bpf", "mbind", "clone"],
            SyscallAction::Kill,
        ));
        for name in ["getppid", "bpf", "mbind", "clone"] {
            assert_eq!(native(&program, name, [0; 6]), KILL, "{name}");
        }
        assert_eq!(native(&program, "getpid", [0; 6]), ALLOW);

        // log: allowed calls are logged; guarded ones keep their refusals.
        let program = one(&policy(
            &["ptrace"],
            &["getppid", "ptrace", "socket", "ioctl"],
            SyscallAction::Log,
        ));
        assert_eq!(native(&program, "getppid", [0; 6]), LOG);
        assert_eq!(native(&program, "ptrace", [0; 6]), LOG);
        assert_eq!(
            native(&program, "socket", [libc::AF_INET as u64, 1, 0, 0, 0, 0]),
            LOG
        );
        assert_eq!(
            native(&program, "socket", [libc::AF_PACKET as u64, 3, 0, 0, 0, 0]),
            EPERM
        );
        #[allow(clippy::unnecessary_cast)]
        let tiocsti = libc::TIOCSTI as u64;
        assert_eq!(native(&program, "ioctl", [0, tiocsti, 0, 0, 0, 0]), EPERM);
        assert_eq!(native(&program, "ioctl", [0, 0x5401, 0, 0, 0, 0]), LOG);
    }

    #[test]
    fn validate_refuses_unknown_names() {
        for p in [
            policy(&["no_such_call"], &[], SyscallAction::Errno),
            policy(&[], &["no_such_call"], SyscallAction::Kill),
        ] {
            let err = validate(&p).unwrap_err();
            assert!(
                matches!(&err, FilterError::UnknownSyscall { name, .. } if name == "no_such_call")
            );
            assert!(err.to_string().contains(syscalls::ARCH), "{err}");
        }
        #[cfg(target_arch = "aarch64")]
        assert!(validate(&policy(&["open"], &[], SyscallAction::Errno)).is_err());
    }

    #[test]
    fn validate_refuses_what_no_policy_may_allow() {
        for name in syscalls::NEVER_ALLOWED
            .iter()
            .copied()
            .chain(syscalls::ARGUMENT_GUARDED.iter().map(|(n, _)| *n))
        {
            let err = validate(&policy(&[name], &[], SyscallAction::Errno)).unwrap_err();
            assert!(
                matches!(&err, FilterError::NotAllowable { name: n, .. } if n == name),
                "{name}: {err}"
            );
        }
        let err = validate(&policy(&["unshare"], &[], SyscallAction::Errno)).unwrap_err();
        assert!(err.to_string().contains("namespaces"), "{err}");
        let err = validate(&policy(&["mount"], &[], SyscallAction::Errno)).unwrap_err();
        assert!(err.to_string().contains("mount family"), "{err}");
        // Denying them is fine: it only adds to the refusal.
        validate(&policy(
            &[],
            &["unshare", "clone3", "ioctl"],
            SyscallAction::Kill,
        ))
        .unwrap();
        validate(&policy(&[], &["unshare", "clone3"], SyscallAction::Errno)).unwrap();
    }

    #[test]
    fn validate_refuses_logging_a_refused_syscall() {
        let err = validate(&policy(&[], &["ptrace"], SyscallAction::Log)).unwrap_err();
        assert!(
            matches!(&err, FilterError::LogOfRefused { errno: "EPERM", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("syscalls.allow"), "{err}");
        let err = validate(&policy(&[], &["mbind"], SyscallAction::Log)).unwrap_err();
        assert!(
            matches!(
                &err,
                FilterError::LogOfRefused {
                    errno: "ENOSYS",
                    ..
                }
            ),
            "{err}"
        );
        let err = validate(&policy(&[], &["clone3"], SyscallAction::Log)).unwrap_err();
        assert!(
            matches!(
                &err,
                FilterError::LogOfRefused {
                    errno: "ENOSYS",
                    ..
                }
            ),
            "{err}"
        );
        validate(&policy(
            &["ptrace", "mbind"],
            &["ptrace", "mbind"],
            SyscallAction::Log,
        ))
        .unwrap();
    }

    #[test]
    fn compile_is_fast() {
        let p = policy(&["ptrace"], &["getppid", "socket"], SyscallAction::Log);
        let rounds = 200u32;
        for (what, policy) in [("default", SyscallPolicy::default()), ("with a policy", p)] {
            let start = std::time::Instant::now();
            let mut length = 0;
            for _ in 0..rounds {
                length = compile_policy(&policy).unwrap()[0].len();
            }
            let each = start.elapsed() / rounds;
            println!("compile_policy ({what}): {each:?} per call, {length} instructions");
            assert!(each < std::time::Duration::from_millis(50), "{each:?}");
        }
    }

    // ---- in the kernel: a forked child installs the filter ----

    fn sys(nr: i64, a: [u64; 6]) -> Result<i64, i32> {
        // SAFETY: only called with arguments that are integers or invalid
        // pointers the kernel checks (EFAULT); see each call site.
        let ret = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
        if ret == -1 {
            Err(nix::errno::Errno::last_raw())
        } else {
            Ok(ret)
        }
    }

    fn say(text: &str) {
        // SAFETY: writes a valid buffer to stderr (async-signal-safe).
        unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
    }

    /// Forks; the child sets no_new_privs, installs `programs` (if any),
    /// runs `body` and exits with its result. Returns the raw wait status.
    /// (The test harness is multithreaded: the child only makes syscalls,
    /// and allocates nothing before it execs or exits.)
    fn in_child(programs: Option<&[BpfProgram]>, body: impl FnOnce() -> i32) -> i32 {
        // SAFETY: fork; the child below only makes syscalls and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: prctl with integer arguments.
            let code = if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                120
            } else if programs.is_some_and(|p| apply_programs(p).is_err()) {
                121
            } else {
                body()
            };
            // SAFETY: ends the child without running the parent's atexit.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid);
        status
    }

    fn in_filtered_child(programs: &[BpfProgram], body: impl FnOnce() -> i32) -> i32 {
        in_child(Some(programs), body)
    }

    fn exit_code(status: i32) -> Option<i32> {
        libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
    }

    fn killed_by(status: i32) -> Option<i32> {
        libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
    }

    fn n(name: &str) -> i64 {
        syscalls::number(name).unwrap()
    }

    /// The default profile, checked from inside. Each check's number is
    /// the exit code when it fails.
    fn default_profile_checks() -> i32 {
        let eperm = Err(libc::EPERM);
        let enosys = Err(libc::ENOSYS);
        // SAFETY: no controlling terminal from here on (vhangup below).
        unsafe { libc::setsid() };
        if sys(n("getpid"), [0; 6]).map_or(true, |pid| pid <= 0) {
            return 1;
        }
        if sys(n("unshare"), [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]) != eperm {
            return 2;
        }
        if sys(1000, [0; 6]) != enosys {
            return 3;
        }
        // clone3(NULL, 0): EINVAL from the kernel, ENOSYS from the filter.
        if sys(n("clone3"), [0; 6]) != enosys {
            return 4;
        }
        let socket = |family: i32, kind: i32, protocol: i32| {
            sys(
                n("socket"),
                [family as u64, kind as u64, protocol as u64, 0, 0, 0],
            )
        };
        let close = |fd: i64| sys(n("close"), [fd as u64, 0, 0, 0, 0, 0]);
        if socket(libc::AF_PACKET, libc::SOCK_RAW, 0) != eperm {
            return 5;
        }
        match socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) {
            Ok(fd) => {
                let _ = close(fd);
            }
            Err(_) => return 6,
        }
        if socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) != eperm
            || socket(libc::AF_ALG, libc::SOCK_SEQPACKET, 0) != eperm
            || socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) != eperm
            || socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT) != eperm
        {
            return 7;
        }
        match socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) {
            Ok(fd) => {
                let _ = close(fd);
            }
            Err(_) => return 8,
        }
        let mut pair = [0i32; 2];
        if sys(
            n("socketpair"),
            [libc::AF_INET as u64, 1, 0, pair.as_mut_ptr() as u64, 0, 0],
        ) != eperm
        {
            return 9;
        }
        if sys(
            n("socketpair"),
            [libc::AF_UNIX as u64, 1, 0, pair.as_mut_ptr() as u64, 0, 0],
        )
        .is_err()
        {
            return 10;
        }
        // ioctl on fd -1: EBADF from the kernel, EPERM from the filter.
        #[allow(clippy::unnecessary_cast)]
        let tiocsti = libc::TIOCSTI as u64;
        let bad_fd = u64::from(u32::MAX);
        if sys(n("ioctl"), [bad_fd, tiocsti, 0, 0, 0, 0]) != eperm
            || sys(n("ioctl"), [bad_fd, tiocsti | (1 << 32), 0, 0, 0, 0]) != eperm
        {
            return 11;
        }
        #[allow(clippy::unnecessary_cast)]
        let fionread = libc::FIONREAD as u64;
        if sys(n("ioctl"), [bad_fd, fionread, 0, 0, 0, 0]) != Err(libc::EBADF) {
            return 12;
        }
        // x32 numbering of getpid.
        if sys(i64::from(X32_SYSCALL_BIT) | n("getpid"), [0; 6]) != eperm {
            return 13;
        }
        // CLONE_NEWUSER | CLONE_THREAD: EINVAL from the kernel (no child),
        // EPERM from the filter; with high bits too.
        let bad_clone = (libc::CLONE_NEWUSER | libc::CLONE_THREAD) as u64;
        if sys(n("clone"), [bad_clone, 0, 0, 0, 0, 0]) != eperm
            || sys(n("clone"), [bad_clone | (1 << 32), 0, 0, 0, 0, 0]) != eperm
        {
            return 14;
        }
        // fork through plain clone works.
        match sys(n("clone"), [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]) {
            Ok(0) => {
                // SAFETY: the grandchild exits at once.
                unsafe { libc::_exit(0) }
            }
            Ok(child) => {
                let mut status = 0;
                // SAFETY: waits for the grandchild just created.
                unsafe { libc::waitpid(child as i32, &mut status, 0) };
                if exit_code(status) != Some(0) {
                    return 15;
                }
            }
            Err(_) => return 15,
        }
        // A thread: glibc tries clone3, gets ENOSYS and falls back to clone.
        extern "C" fn thread(_: *mut libc::c_void) -> *mut libc::c_void {
            std::ptr::null_mut()
        }
        // SAFETY: pthread_t is plain data; the thread is joined below.
        let mut handle: libc::pthread_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointer, default attributes, a function that
        // returns at once.
        if unsafe {
            libc::pthread_create(&mut handle, std::ptr::null(), thread, std::ptr::null_mut())
        } != 0
        {
            return 16;
        }
        // SAFETY: joins the thread created above.
        unsafe { libc::pthread_join(handle, std::ptr::null_mut()) };
        if sys(n("personality"), [0xffff_ffff, 0, 0, 0, 0, 0]).is_err()
            || sys(n("personality"), [0x0040000, 0, 0, 0, 0, 0]) != eperm
        {
            return 17;
        }
        // Every refused syscall, with all-ones arguments (fd -1, pointer
        // -1, invalid flags): EBADF, EFAULT or EINVAL would mean it reached
        // the kernel.
        for group in groups().filter(|g| g.verdict == Verdict::Refuse) {
            for name in group.names {
                let Some(nr) = syscalls::number(name) else {
                    return 18;
                };
                if sys(nr, [u64::MAX; 6]) != eperm {
                    say("refused syscall got through: ");
                    say(name);
                    say("\n");
                    return 18;
                }
            }
        }
        0
    }

    #[test]
    fn the_default_profile_in_the_kernel() {
        let programs = compile_policy(&SyscallPolicy::default()).unwrap();
        let status = in_filtered_child(&programs, default_profile_checks);
        assert_eq!(exit_code(status), Some(0), "raw wait status {status:#x}");
    }

    #[test]
    fn policy_actions_in_the_kernel() {
        let getppid = || match sys(n("getppid"), [0; 6]) {
            Ok(_) => 0,
            Err(libc::EPERM) => 1,
            Err(_) => 2,
        };
        let errno = compile_policy(&policy(&[], &["getppid"], SyscallAction::Errno)).unwrap();
        assert_eq!(exit_code(in_filtered_child(&errno, getppid)), Some(1));
        let log = compile_policy(&policy(&[], &["getppid"], SyscallAction::Log)).unwrap();
        assert_eq!(exit_code(in_filtered_child(&log, getppid)), Some(0));
        let kill = compile_policy(&policy(&[], &["getppid"], SyscallAction::Kill)).unwrap();
        assert_eq!(
            killed_by(in_filtered_child(&kill, getppid)),
            Some(libc::SIGSYS)
        );
    }

    /// getpid through the i386 entry point (`int 0x80`, number 20).
    #[cfg(target_arch = "x86_64")]
    fn int80_getpid() -> i32 {
        let ret: i32;
        // SAFETY: a syscall through the 32-bit entry point with no pointer
        // arguments; the kernel clobbers r8-r11 on that path.
        unsafe {
            std::arch::asm!(
                "int 0x80",
                inlateout("eax") 20 => ret,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                options(nostack)
            );
        }
        if ret > 0 {
            0
        } else {
            1
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn i386_syscalls_kill_the_process() {
        // Without a filter, to learn whether this kernel has the i386 ABI.
        // SAFETY: fork; the child makes one syscall and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: see int80_getpid; then exit.
            unsafe { libc::_exit(int80_getpid()) };
        }
        let mut status = 0;
        // SAFETY: waits for that child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let programs = compile_policy(&SyscallPolicy::default()).unwrap();
        let filtered = in_filtered_child(&programs, int80_getpid);
        if exit_code(status) == Some(0) {
            assert_eq!(killed_by(filtered), Some(libc::SIGSYS));
        } else {
            // No ia32 emulation: int 0x80 faults before seccomp sees it.
            println!(
                "this kernel has no i386 ABI (int 0x80 -> {status:#x}); only the fault is checked"
            );
            assert_eq!(killed_by(filtered), killed_by(status));
        }
    }

    /// Runs `argv` under the default profile; its exit status.
    fn exec_under_filter(argv: &[&str]) -> i32 {
        let programs = compile_policy(&SyscallPolicy::default()).unwrap();
        let argv: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let env: Vec<CString> = std::env::vars()
            .filter(|(k, _)| {
                [
                    "PATH",
                    "HOME",
                    "LANG",
                    "PYENV_ROOT",
                    "PYENV_VERSION",
                    "TMPDIR",
                ]
                .contains(&k.as_str())
            })
            .map(|(k, v)| CString::new(format!("{k}={v}")).unwrap())
            .collect();
        let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
        env_ptrs.push(std::ptr::null());
        in_filtered_child(&programs, || {
            // SAFETY: NULL-terminated arrays of valid C strings, built before fork.
            unsafe { libc::execve(argv_ptrs[0], argv_ptrs.as_ptr(), env_ptrs.as_ptr()) };
            127
        })
    }

    fn find_program(name: &str) -> Option<String> {
        std::env::var("PATH")
            .ok()?
            .split(':')
            .map(|dir| format!("{dir}/{name}"))
            .find(|path| std::path::Path::new(path).is_file())
    }

    #[test]
    fn sh_and_coreutils_work_under_the_filter() {
        let script = r#"set -e
x=$(echo hi | tr a-z A-Z); [ "$x" = HI ]
d=$(mktemp -d); echo a > "$d/f"; cp -a "$d/f" "$d/g"; mv "$d/g" "$d/h"
chmod 600 "$d/h"; ln -s h "$d/l"; [ "$(readlink "$d/l")" = h ]; stat "$d/h" >/dev/null
touch "$d/h"; ls -la "$d" >/dev/null; du -s "$d" >/dev/null; df / >/dev/null
tar -cf "$d/t.tar" -C "$d" h; rm -r "$d"
(sleep 0 &); wait; seq 3 | xargs echo >/dev/null; sort </dev/null
date >/dev/null; id >/dev/null; uname -a >/dev/null; nproc >/dev/null
head -c 10 /dev/urandom | wc -c >/dev/null; timeout 5 true"#;
        let status = exec_under_filter(&["/bin/sh", "-c", script]);
        assert_eq!(exit_code(status), Some(0), "raw wait status {status:#x}");
    }

    #[test]
    fn python3_works_under_the_filter() {
        let Some(python) = find_program("python3") else {
            println!("skipped: no python3 on PATH");
            return;
        };
        let script = r#"
import asyncio, socket, subprocess, threading, concurrent.futures, tempfile, os
got = []
threads = [threading.Thread(target=got.append, args=(i,)) for i in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
assert sorted(got) == [0, 1, 2, 3]
assert subprocess.run(["sh", "-c", "echo hi"], capture_output=True, check=True).stdout == b"hi\n"
async def main():
    async def echo(r, w):
        w.write(await r.read(5)); await w.drain(); w.close()
    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"hello"); await w.drain()
    assert await r.read(5) == b"hello"
    w.close(); srv.close(); await srv.wait_closed()
    p = await asyncio.create_subprocess_exec("true"); assert await p.wait() == 0
asyncio.run(main())
with concurrent.futures.ProcessPoolExecutor(2) as ex:
    assert list(ex.map(abs, [-1, -2])) == [1, 2]
with tempfile.TemporaryDirectory() as d:
    open(os.path.join(d, "f"), "w").write("x")
socket.getaddrinfo("localhost", 80)
"#;
        let status = exec_under_filter(&[&python, "-c", script]);
        assert_eq!(exit_code(status), Some(0), "raw wait status {status:#x}");
    }

    #[test]
    fn a_c_program_with_pthreads_and_mmap_works_under_the_filter() {
        let Some(gcc) = find_program("gcc").or_else(|| find_program("cc")) else {
            println!("skipped: no C compiler on PATH");
            return;
        };
        let dir = std::env::temp_dir().join(format!("purple-seccomp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("t.c");
        let binary = dir.join("t");
        std::fs::write(
            &source,
            r#"#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
static void *work(void *arg) {
    size_t len = 1 << 20;
    char *m = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return arg;
    memset(m, 1, len);
    if (mprotect(m, len, PROT_READ) != 0) return arg;
    munmap(m, len);
    free(malloc(1 << 22));
    return NULL;
}
int main(void) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        if (pthread_create(&t[i], NULL, work, &t[i]) != 0) return 2;
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        if (r) return 3;
    }
    return system("exit 0");
}
"#,
        )
        .unwrap();
        let built = std::process::Command::new(gcc)
            .args(["-O2", "-pthread", "-o"])
            .arg(&binary)
            .arg(&source)
            .status()
            .unwrap();
        assert!(built.success());
        let status = exec_under_filter(&[binary.to_str().unwrap()]);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(exit_code(status), Some(0), "raw wait status {status:#x}");
    }
}
