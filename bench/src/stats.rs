//! Pure measurement helpers: latency percentiles and `/proc` parsing.

use std::time::Duration;

/// Latency summary of one run (nanoseconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

/// The `q`-quantile (0.0..=1.0) of an ascending slice by the nearest-rank
/// method: the smallest value with at least `q` of the samples at or below it.
pub(crate) fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sorts `samples` in place and summarises them.
pub(crate) fn summarize(samples: &mut [u64]) -> Latency {
    samples.sort_unstable();
    Latency {
        p50: percentile(samples, 0.50),
        p90: percentile(samples, 0.90),
        p99: percentile(samples, 0.99),
        max: samples.last().copied().unwrap_or(0),
    }
}

/// The fields of `/proc/PID/stat` the harness uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    pub ppid: u32,
    pub pgrp: u32,
    /// `utime + stime`, in clock ticks.
    pub ticks: u64,
    /// `stime` alone: the part spent in the kernel.
    pub sys_ticks: u64,
}

/// Parses the text of `/proc/PID/stat`.
///
/// The command name (field 2) is parenthesised and may itself contain spaces
/// and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After the comm: state is field 3, ppid 4, pgrp 5, utime 14, stime 15.
    let ppid = fields.nth(1)?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let utime: u64 = fields.nth(8)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Stat {
        ppid,
        pgrp,
        ticks: utime + stime,
        sys_ticks: stime,
    })
}

/// The KiB value of a `Key:   123 kB` line.
fn parse_kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_ascii_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `VmRSS` in KiB from the text of `/proc/PID/status`.
pub(crate) fn parse_vmrss_kib(status: &str) -> Option<u64> {
    parse_kib_field(status, "VmRSS")
}

/// Proportional set size of a process in KiB (`/proc/PID/smaps_rollup`):
/// shared pages divided among their sharers, so a group's sum is not inflated.
pub(crate) fn pss_kib(pid: u32) -> Option<u64> {
    parse_kib_field(
        &std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?,
        "Pss",
    )
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`); 100 on every Linux
/// configuration in practice, asked of `getconf` to be sure.
pub(crate) fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// Busy clock ticks of the whole machine (all CPUs), from the text of
/// `/proc/stat`: user + nice + system + irq + softirq + steal.
pub(crate) fn parse_machine_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    if v.len() < 8 {
        return None;
    }
    Some(v[0] + v[1] + v[2] + v[5] + v[6] + v[7])
}

/// CPU time the whole machine has been busy so far (summed over CPUs).
pub(crate) fn machine_busy(ticks_per_sec: u64) -> Option<Duration> {
    let ticks = parse_machine_busy(&std::fs::read_to_string("/proc/stat").ok()?)?;
    Some(ticks_to_duration(ticks, ticks_per_sec))
}

fn ticks_to_duration(ticks: u64, ticks_per_sec: u64) -> Duration {
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / ticks_per_sec.max(1))
}

fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Resident set size of a process, in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    parse_vmrss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Every live process: `(pid, stat)`.
fn all_processes() -> Vec<(u32, Stat)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, read_stat(pid)?)))
        .collect()
}

/// The pids of a process group.
pub(crate) fn group_members(pgrp: u32) -> Vec<u32> {
    all_processes()
        .into_iter()
        .filter(|(_, s)| s.pgrp == pgrp)
        .map(|(pid, _)| pid)
        .collect()
}

/// The direct children of a process.
pub(crate) fn children(ppid: u32) -> Vec<u32> {
    all_processes()
        .into_iter()
        .filter(|(_, s)| s.ppid == ppid)
        .map(|(pid, _)| pid)
        .collect()
}

/// What a CPU/RSS probe watches: one process, or every process of a group
/// (a pre-forking server such as gunicorn).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    Pid(u32),
    Group(u32),
}

impl Probe {
    fn pids(self) -> Vec<u32> {
        match self {
            Probe::Pid(p) => vec![p],
            Probe::Group(g) => group_members(g),
        }
    }
    /// CPU time used so far, summed over the watched processes.
    pub(crate) fn cpu(self, ticks_per_sec: u64) -> Option<Duration> {
        Some(self.cpu_split(ticks_per_sec)?.0)
    }

    /// (user + system, system) CPU time used so far, summed over the watched processes.
    pub(crate) fn cpu_split(self, ticks_per_sec: u64) -> Option<(Duration, Duration)> {
        let stats: Vec<Stat> = self.pids().into_iter().filter_map(read_stat).collect();
        (!stats.is_empty()).then(|| {
            (
                ticks_to_duration(stats.iter().map(|s| s.ticks).sum(), ticks_per_sec),
                ticks_to_duration(stats.iter().map(|s| s.sys_ticks).sum(), ticks_per_sec),
            )
        })
    }

    /// Resident set size in KiB: a process's VmRSS; for a group, the sum of
    /// its members' PSS (their RSS would count shared pages once per member).
    pub(crate) fn rss_kib(self) -> Option<u64> {
        let rss: Vec<u64> = match self {
            Probe::Pid(p) => rss_kib(p).into_iter().collect(),
            Probe::Group(g) => group_members(g)
                .into_iter()
                .filter_map(|p| pss_kib(p).or_else(|| rss_kib(p)))
                .collect(),
        };
        (!rss.is_empty()).then(|| rss.iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let l = summarize(&mut v);
        assert_eq!(
            l,
            Latency {
                p50: 50,
                p90: 90,
                p99: 99,
                max: 100
            }
        );
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[1, 2], 0.5), 1);
        assert_eq!(percentile(&[1, 2], 0.51), 2);
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(percentile(&[3, 4, 5], 0.0), 3);
        assert_eq!(percentile(&[3, 4, 5], 1.0), 5);
    }

    #[test]
    fn stat_fields_counted_after_the_last_paren() {
        // A comm with spaces and a ')' inside: the naive split would be off.
        let stat = "4242 (we ird) (name) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 3 4 20 0 5 0 123456 10000000 2000 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                ppid: 1,
                pgrp: 4242,
                ticks: 325,
                sys_ticks: 75
            })
        );
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn machine_busy_from_proc_stat() {
        let stat = "cpu  100 5 50 9000 20 3 2 1 0 0\ncpu0 50 2 25 4500 10 1 1 0 0 0\nintr 1\n";
        assert_eq!(parse_machine_busy(stat), Some(161));
        assert_eq!(parse_machine_busy("cpu  1 2 3\n"), None);
        assert!(machine_busy(100).is_some());
    }

    #[test]
    fn vmrss_from_status() {
        let status = "Name:\tsluice\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss_kib(status), Some(12345));
        assert_eq!(parse_vmrss_kib("Name:\tx\n"), None);
        assert_eq!(parse_vmrss_kib("VmRSSX:\t1 kB\n"), None);
        assert_eq!(parse_kib_field("Rss: 10 kB\nPss:  7 kB\n", "Pss"), Some(7));
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(Probe::Pid(pid).cpu(clock_ticks_per_sec()).is_some());
        let (all, sys) = Probe::Pid(pid).cpu_split(clock_ticks_per_sec()).unwrap();
        assert!(sys <= all);
        assert!(children(std::os::unix::process::parent_id()).contains(&pid));
    }
}
