//! The seccomp filter installed on the command, as the very last step
//! before execve.
//!
//! This version refuses only what the sandbox's other layers cannot stop:
//! typing into a terminal (TIOCSTI, TIOCLINUX: a command can make a
//! session-less tty on its stdin its controlling terminal, and TIOCSTI on a
//! controlling terminal is allowed), and every syscall of a foreign ABI,
//! which the rest of a filter could not reason about: x32 numbers (bit
//! 0x40000000) fail with EPERM, and an i386 syscall (`int 0x80`) kills the
//! process (seccompiler's architecture check). Everything else is allowed here: the
//! default-deny profile is the syscall-filter issue's work, and the exit
//! report says so.

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("building the seccomp filter: {0}")]
    Build(String),
    #[error("this CPU architecture has no seccomp profile")]
    UnsupportedArch,
}

/// Bit 30 of the syscall number marks the x32 ABI on x86_64. seccompiler's
/// architecture check cannot see it (x32 shares AUDIT_ARCH_X86_64).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn target_arch() -> Result<TargetArch, FilterError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else {
        Err(FilterError::UnsupportedArch)
    }
}

/// ioctl requests that inject input into a terminal. Compared on the low
/// 32 bits only: the kernel truncates the request to an unsigned int, so a
/// 64-bit compare could be bypassed by setting high bits.
// The request type differs between libcs (c_ulong on glibc, c_int on musl).
#[allow(clippy::unnecessary_cast)]
const TERMINAL_INJECTION: &[u64] = &[libc::TIOCSTI as u64, libc::TIOCLINUX as u64];

pub fn compile() -> Result<BpfProgram, FilterError> {
    let build = |e: seccompiler::BackendError| FilterError::Build(e.to_string());
    let mut ioctl_rules = Vec::new();
    for request in TERMINAL_INJECTION {
        let condition =
            SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *request)
                .map_err(build)?;
        ioctl_rules.push(SeccompRule::new(vec![condition]).map_err(build)?);
    }
    let rules: BTreeMap<i64, Vec<SeccompRule>> =
        [(libc::SYS_ioctl, ioctl_rules)].into_iter().collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        target_arch()?,
    )
    .map_err(build)?;
    let program: BpfProgram = filter.try_into().map_err(build)?;
    Ok(with_x32_guard(program))
}

/// Prepends: load the syscall number; if the x32 bit is set, fail with
/// EPERM. seccompiler's program follows unchanged (its jumps are relative).
fn with_x32_guard(program: BpfProgram) -> BpfProgram {
    // BPF_LD | BPF_W | BPF_ABS, BPF_JMP | BPF_JSET | BPF_K, BPF_RET | BPF_K.
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JMP_JSET_K: u16 = 0x45;
    const BPF_RET_K: u16 = 0x06;
    const SECCOMP_DATA_NR_OFFSET: u32 = 0;
    let mut guarded = Vec::with_capacity(program.len() + 3);
    guarded.push(sock_filter {
        code: BPF_LD_W_ABS,
        jt: 0,
        jf: 0,
        k: SECCOMP_DATA_NR_OFFSET,
    });
    guarded.push(sock_filter {
        code: BPF_JMP_JSET_K,
        jt: 0,
        jf: 1,
        k: X32_SYSCALL_BIT,
    });
    guarded.push(sock_filter {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
    });
    guarded.extend(program);
    guarded
}

/// Installs the filter on the calling thread (no_new_privs must be set).
pub fn apply(program: &BpfProgram) -> Result<(), nix::errno::Errno> {
    seccompiler::apply_filter(program).map_err(|e| match e {
        seccompiler::Error::Seccomp(io) => {
            nix::errno::Errno::from_raw(io.raw_os_error().unwrap_or(libc::EINVAL))
        }
        _ => nix::errno::Errno::EINVAL,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_starts_with_the_x32_guard() {
        let program = compile().unwrap_or_default();
        assert!(program.len() > 3);
        assert_eq!(program[1].k, X32_SYSCALL_BIT);
        assert_eq!(program[2].k, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
    }
}
