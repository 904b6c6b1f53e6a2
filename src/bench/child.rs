//! Benchmark runs as child processes of `accrual bench`, so each one's peak
//! memory and CPU time can be read from the kernel when it exits.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// What the kernel says about a finished child.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub exit_code: Option<i32>,
    pub peak_rss_bytes: u64,
    pub cpu_seconds: f64,
}

/// Starts `accrual <args>` with `env` added, its output to `log`.
pub fn spawn(args: &[&str], env: &[(String, String)], log: &Path) -> std::io::Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    Command::new(std::env::current_exe()?)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
}

/// Asks a child to stop as on Ctrl-C (the engine finishes its cycle).
pub fn terminate(child: &Child) {
    // SAFETY: kill(2) with a pid we spawned and have not yet reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

/// The child's own peak RSS so far (`VmHWM`), in bytes.
fn high_water_mark(pid: libc::pid_t) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Waits for the child and reads its resource usage (wait4(2): std's
/// `wait` discards it). Peak RSS is sampled from `/proc` while the child
/// runs (every 50 ms, so growth in its last 50 ms can be missed): the
/// kernel's `ru_maxrss` also counts the parent's memory at fork time, and
/// this parent holds the benchmark's events.
pub fn wait(child: Child) -> std::io::Result<Usage> {
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    let mut peak: Option<u64> = None;
    // SAFETY: rusage is plain data (all zeroes is a valid value).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = loop {
        // SAFETY: the kernel fills in status and rusage, which outlive the
        // call; pid is our unreaped child.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        match r {
            0 => {
                peak = peak.max(high_water_mark(pid));
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            -1 if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            r => break r,
        }
    };
    if reaped != pid {
        return Err(std::io::Error::last_os_error());
    }
    let exit_code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Usage {
        exit_code,
        // ru_maxrss (Linux reports kilobytes) only if no sample was taken.
        peak_rss_bytes: peak.unwrap_or(usage.ru_maxrss.max(0) as u64 * 1024),
        cpu_seconds: seconds(usage.ru_utime) + seconds(usage.ru_stime),
    })
}
