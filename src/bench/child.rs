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

/// Waits for the child and reads its resource usage (wait4(2): std's
/// `wait` discards it).
pub fn wait(child: Child) -> std::io::Result<Usage> {
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data the kernel fills in; status and rusage
    // outlive the call; pid is our unreaped child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = loop {
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    if reaped != pid {
        return Err(std::io::Error::last_os_error());
    }
    let exit_code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Usage {
        exit_code,
        // Linux reports kilobytes.
        peak_rss_bytes: usage.ru_maxrss.max(0) as u64 * 1024,
        cpu_seconds: seconds(usage.ru_utime) + seconds(usage.ru_stime),
    })
}
