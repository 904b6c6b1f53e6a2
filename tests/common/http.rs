//! A minimal HTTP/1.1 client for tests (no client library needed).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// GETs `path` from `address`; returns the status and the body.
pub fn get(address: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, String)> {
    get_with_head(address, path, headers).map(|(status, _, body)| (status, body))
}

/// Whether `/readyz` on `address` answers 200 within `patience` (asked
/// every 100 ms).
pub fn wait_ready(address: &str, patience: Duration) -> bool {
    let started = std::time::Instant::now();
    while !matches!(get(address, "/readyz", &[]), Ok((200, _))) {
        if started.elapsed() > patience {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// [`get_with_head`], asked again while the answer is 503 (which says to
/// retry: the engine does not know yet what it is asked), for up to
/// `patience`.
pub fn get_retrying(
    address: &str,
    path: &str,
    headers: &[(&str, &str)],
    patience: Duration,
) -> std::io::Result<(u16, String, String)> {
    let started = std::time::Instant::now();
    loop {
        let answer = get_with_head(address, path, headers)?;
        if answer.0 != 503 || started.elapsed() > patience {
            return Ok(answer);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// POSTs to `path` on `address`, without a body; returns the status and
/// the body.
pub fn post(address: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, String)> {
    let mut with_length = headers.to_vec();
    with_length.push(("Content-Length", "0"));
    ask("POST", address, path, &with_length).map(|(status, _, body)| (status, body))
}

/// [`get`], with the response's head (status line and headers) too.
pub fn get_with_head(
    address: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    ask("GET", address, path, headers)
}

/// `method` `path` on `address`: the status, the response's head and body.
fn ask(
    method: &str,
    address: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) =
        text.split_once("\r\n\r\n").map(|(h, b)| (h.to_string(), b.to_string())).unwrap_or_default();
    // Chunked bodies: join the chunks.
    if text.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut joined = String::new();
        let mut rest = body.as_str();
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            joined.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        return Ok((status, head, joined));
    }
    Ok((status, head, body))
}

/// The value of a Prometheus sample line `name{labels} value`, summed over
/// every series of `name` whose labels contain all of `with`.
pub fn metric(text: &str, name: &str, with: &[&str]) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let base = series.split('{').next().unwrap_or("");
        if base != name || !with.iter().all(|w| series.contains(w)) {
            continue;
        }
        if let Ok(v) = value.parse::<f64>() {
            total = Some(total.unwrap_or(0.0) + v);
        }
    }
    total
}
