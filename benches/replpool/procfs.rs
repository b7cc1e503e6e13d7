//! CPU time of processes, read from `/proc/<pid>/stat` as the issue measured it: user + system
//! time of every thread the process has or had (not its children's).

use std::time::Duration;

/// `/proc` reports CPU time in clock ticks of USER_HZ, which Linux fixes at 100 for user space
/// whatever the kernel's own tick rate.
const TICKS_PER_SECOND: u64 = 100;

/// utime + stime of `pid`, or None when it is gone or unreadable.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields are counted after
    // its closing parenthesis, where field 3 (the state) is the first.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SECOND,
    ))
}

/// CPU time of a set of processes between two moments.
pub struct CpuMeter {
    pids: Vec<u32>,
    start: Vec<Option<Duration>>,
}

impl CpuMeter {
    pub fn start(pids: &[u32]) -> CpuMeter {
        CpuMeter {
            pids: pids.to_vec(),
            start: pids.iter().map(|&p| cpu_time(p)).collect(),
        }
    }

    /// The CPU time the processes used since `start`, summed; None when one of them could not
    /// be read at either end (a figure with a process missing would be wrong, not smaller).
    pub fn used(&self) -> Option<Duration> {
        self.pids
            .iter()
            .zip(&self.start)
            .map(|(&pid, start)| Some(cpu_time(pid)?.saturating_sub((*start)?)))
            .sum()
    }
}
