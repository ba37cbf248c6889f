//! Ports, randomness and waiting for an event.

use super::*;

pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// A TCP port that is free on 127.0.0.1 and that no other test in this process got: a
/// per-process counter from a random base (so parallel test binaries start far apart), plus a
/// bind test. The servers listen only on their private unix socket, where the port just names
/// the socket file, so a race with another program is harmless.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 40_000;
    static BASE: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = *BASE.get_or_init(|| (random_u64() % u64::from(SPAN)) as u32);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (base + n * 7) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found");
}

/// Polls `f` every 100 ms until it returns Ok. `f` returns Err(how things stand) while not
/// there yet; after `timeout` the last such Err is returned.
pub fn wait_for<T>(
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() > timeout => {
                return Err(format!("timed out after {timeout:?}; last state: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
