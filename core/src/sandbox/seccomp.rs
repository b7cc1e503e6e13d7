//! The system calls user code may not make: a seccomp filter each worker installs on itself
//! (all its threads) after its own privileged set-up and before it runs any user code.
//!
//! Everything else is allowed: the list is of what the kernel offers beyond what notebook
//! code needs, and what has let code out of sandboxes like this one (user and mount
//! namespaces, io_uring, keyrings, BPF, ptrace, kernel modules…). A denied call fails with
//! EPERM, so Python raises `PermissionError` and the worker lives on. The programs are built
//! here with `seccompiler` (Firecracker's pure-Rust compiler) and handed to `worker.py` in its
//! settings; the worker loads them with `seccomp(2)` through libc's `syscall`, since Python
//! has no binding for it.
//!
//! Three programs, since a `seccompiler` filter has a single action for what it matches:
//! - the denials (EPERM), including `clone` with any `CLONE_NEW*` flag and `personality`
//!   other than the common personas (Docker's rule);
//! - `clone3` answers ENOSYS: its flags are in memory, which a filter cannot read, and glibc
//!   falls back to `clone` on ENOSYS, whose flags the first program checks;
//! - on x86_64, x32 system calls (numbers with bit 30 set, the same audit architecture) answer
//!   ENOSYS, so that a kernel with the x32 ABI does not offer a second number for each call.
//!
//! A call made through another architecture's ABI (i386's `int 0x80`) kills the process: that
//! is `seccompiler`'s architecture check.

use std::collections::BTreeMap;

use base64::Engine;
use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

/// What `worker.py` needs to install the filter.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyscallFilter {
    /// The number of `seccomp(2)` on this architecture.
    pub syscall: i64,
    /// BPF programs (`struct sock_filter[]` in native byte order, base64), installed in order.
    pub programs: Vec<String>,
}

/// Calls denied outright, on every architecture built for.
const DENIED: &[i64] = &[
    // Namespaces and mounts: the way to a root of one's own, and to the mount table.
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    // Large kernel attack surfaces nobody's notebook needs.
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_fanotify_init,
    // Other processes' memory and descriptors.
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    libc::SYS_kcmp,
    // The machine's: kernels, modules, swap, power, logs, accounting, quotas, handles.
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_syslog,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_lookup_dcookie,
];

/// Calls that exist on x86_64 only.
#[cfg(target_arch = "x86_64")]
const DENIED_ARCH: &[i64] = &[
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_uselib,
    libc::SYS_ustat,
    libc::SYS_sysfs,
    libc::SYS__sysctl,
];

#[cfg(target_arch = "aarch64")]
const DENIED_ARCH: &[i64] = &[];

/// The `clone` flags that make a namespace.
const CLONE_NEW: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// The personas `personality` may set (and 0xffffffff, which only asks), as Docker allows:
/// PER_LINUX, PER_LINUX32, UNAME26, PER_LINUX32|UNAME26.
const PERSONAS: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

#[derive(Debug, thiserror::Error)]
#[error("cannot build the syscall filter: {0}")]
pub struct FilterError(String);

/// The worker's filter for the architecture built for; `None` on one it has no list for.
pub fn worker_filter() -> Result<Option<SyscallFilter>, FilterError> {
    let Some(arch) = target_arch() else {
        return Ok(None);
    };
    let mut programs = vec![denials(arch)?, clone3_unavailable(arch)?];
    if let Some(x32) = x32_unavailable() {
        programs.push(x32);
    }
    Ok(Some(SyscallFilter {
        syscall: libc::SYS_seccomp,
        programs: programs.iter().map(|p| encode(p)).collect(),
    }))
}

fn target_arch() -> Option<TargetArch> {
    #[cfg(target_arch = "x86_64")]
    return Some(TargetArch::x86_64);
    #[cfg(target_arch = "aarch64")]
    return Some(TargetArch::aarch64);
    #[allow(unreachable_code)]
    None
}

fn errno(value: i32) -> SeccompAction {
    SeccompAction::Errno(value as u32)
}

fn condition(op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, FilterError> {
    SeccompCondition::new(0, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| FilterError(e.to_string()))
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, FilterError> {
    SeccompRule::new(conditions).map_err(|e| FilterError(e.to_string()))
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    action: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram, FilterError> {
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, action, arch)
        .map_err(|e| FilterError(e.to_string()))?;
    BpfProgram::try_from(filter).map_err(|e| FilterError(e.to_string()))
}

/// Everything that answers EPERM.
fn denials(arch: TargetArch) -> Result<BpfProgram, FilterError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED
        .iter()
        .chain(DENIED_ARCH)
        .map(|&nr| (nr, Vec::new()))
        .collect();
    // One rule per flag: rules of a call match when any does.
    let clone = CLONE_NEW
        .iter()
        .map(|&flag| rule(vec![condition(SeccompCmpOp::MaskedEq(flag), flag)?]))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone);
    // The conditions of one rule must all hold: a persona that is none of these.
    let other_persona = PERSONAS
        .iter()
        .map(|&p| condition(SeccompCmpOp::Ne, p))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_personality, vec![rule(other_persona)?]);
    compile(rules, errno(libc::EPERM), arch)
}

fn clone3_unavailable(arch: TargetArch) -> Result<BpfProgram, FilterError> {
    let rules = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    compile(rules, errno(libc::ENOSYS), arch)
}

/// x32 calls are x86_64's audit architecture with bit 30 of the number set: a range, which
/// `seccompiler` (one number per rule) cannot say, so these four instructions are written
/// here. The architecture itself is checked by the other programs.
#[cfg(target_arch = "x86_64")]
fn x32_unavailable() -> Option<BpfProgram> {
    // From linux/filter.h: BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JGE|BPF_K, BPF_RET|BPF_K.
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JMP_JGE_K: u16 = 0x35;
    const BPF_RET_K: u16 = 0x06;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let stmt = |code, k| sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    Some(vec![
        stmt(BPF_LD_W_ABS, 0), // seccomp_data.nr
        sock_filter {
            code: BPF_JMP_JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        stmt(BPF_RET_K, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
    ])
}

#[cfg(not(target_arch = "x86_64"))]
fn x32_unavailable() -> Option<BpfProgram> {
    None
}

/// The program as the kernel reads it (`struct sock_filter`: u16, u8, u8, u32, native
/// order), in base64.
fn encode(program: &[sock_filter]) -> String {
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for insn in program {
        bytes.extend_from_slice(&insn.code.to_ne_bytes());
        bytes.push(insn.jt);
        bytes.push(insn.jf);
        bytes.extend_from_slice(&insn.k.to_ne_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_builds_and_encodes_whole_instructions() {
        let filter = worker_filter()
            .expect("builds")
            .expect("an architecture we cover");
        assert_eq!(filter.syscall, libc::SYS_seccomp);
        let expected = if cfg!(target_arch = "x86_64") { 3 } else { 2 };
        assert_eq!(filter.programs.len(), expected);
        for program in &filter.programs {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(program)
                .expect("base64");
            assert_eq!(bytes.len() % 8, 0);
            // The kernel refuses longer programs (BPF_MAXINSNS).
            assert!(bytes.len() / 8 <= 4096, "{} instructions", bytes.len() / 8);
        }
    }
}
