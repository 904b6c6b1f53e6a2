//! `accrual health`: asks a running engine's `/healthz` (or `/readyz`) and
//! exits 0 only on 200, so a container's HEALTHCHECK or a probe needs no
//! other tool in the image.

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The engine's HTTP listener; default: `ACCRUAL_HTTP__LISTEN` with an
    /// unspecified address taken as this host, else 127.0.0.1:9464.
    #[arg(long)]
    address: Option<String>,
    /// Ask `/readyz` (every partition consuming) instead of `/healthz`.
    #[arg(long)]
    ready: bool,
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
}

pub fn run(Args { address, ready, timeout_ms }: Args) -> Result<ExitCode> {
    let address = address.unwrap_or_else(|| {
        let listen = std::env::var("ACCRUAL_HTTP__LISTEN").unwrap_or_else(|_| "127.0.0.1:9464".into());
        listen.replacen("0.0.0.0:", "127.0.0.1:", 1).replacen("[::]:", "[::1]:", 1)
    });
    let path = if ready { "/readyz" } else { "/healthz" };
    let timeout = Duration::from_millis(timeout_ms);
    let target = address
        .to_socket_addrs()
        .with_context(|| format!("--address {address}"))?
        .next()
        .with_context(|| format!("--address {address}: no such address"))?;
    let mut stream =
        TcpStream::connect_timeout(&target, timeout).with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response).with_context(|| format!("reading {path}"))?;
    let text = String::from_utf8_lossy(&response);
    let status = text.split(' ').nth(1).unwrap_or("");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
    if status != "200" {
        bail!("{address}{path}: {} {body}", if status.is_empty() { "no HTTP answer" } else { status });
    }
    println!("{address}{path}: {body}");
    Ok(ExitCode::SUCCESS)
}
