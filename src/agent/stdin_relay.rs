//! The agent's standard input (the control channel of `--stdio`), read by a thread that never
//! sleeps on it for longer than [`CHECK`]: it waits with `poll(2)` and a timeout, and every
//! `poll` asks the device again whether it has data.
//!
//! A guard against lost wake-ups. A VM agent's standard input is a virtio-serial port, and
//! virtio_console wakes a sleeping reader only from the interrupt of a delivered buffer; when
//! anyone else polls the port first, the buffer is taken into the port without a wake-up and
//! the reader sleeps on with data waiting. Until 2026-11-27 the VM init polled the port for a
//! hang-up, and about one VM handshake in 40 to 80 stalled that way (docs/VM.md, "A handshake
//! that stalled"); the init no longer does. Should it ever happen again, a bounded wait finds
//! the data within [`CHECK`] and says so in the debug log ("a wake-up may have been lost").
//!
//! The bytes go to the agent through a socket pair, so the rest of the agent reads an ordinary
//! tokio stream; end of input (the host side of the port closed, the pipe's writer gone) is
//! passed on as end of stream, also while a write to the channel is blocked.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// The longest a read of standard input sleeps before it asks the device again.
pub const CHECK: Duration = Duration::from_millis(250);

/// Standard input as a tokio stream, fed by a relay thread (see the module documentation).
pub fn stdin() -> std::io::Result<tokio::net::UnixStream> {
    let (ours, theirs) = UnixStream::pair()?;
    std::thread::Builder::new()
        .name("stdin-relay".into())
        .spawn(move || relay(std::io::stdin().lock(), ours))?;
    theirs.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(theirs)
}

/// Copy `input` to `out` until end of input, an error, or the agent closing its end.
fn relay<R: Read + AsRawFd>(mut input: R, mut out: UnixStream) {
    let fd = input.as_raw_fd();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let started = Instant::now();
        let timeout = CHECK.as_millis() as libc::c_int;
        // SAFETY: poll on one pollfd of a descriptor `input` keeps open.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout) };
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::warn!(
                "control input: poll: {}; reading it stops",
                std::io::Error::last_os_error()
            );
            break;
        }
        if r == 0 {
            continue;
        }
        // Readable, or hung up / in error: a read tells data from end of input.
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::warn!("control input: {e}; reading it stops");
                break;
            }
        };
        // poll asks the device once more when its timeout expires: data found then may have
        // waited with nobody woken for it (or came, or was scheduled, just then: on a loaded
        // host a wake-up can be that late too, so this is a debug line, not a warning).
        if started.elapsed() >= CHECK {
            tracing::debug!(
                "control input: {n} bytes found when the {} ms wait ran out (a wake-up may \
                 have been lost)",
                CHECK.as_millis()
            );
        }
        if out.write_all(&buf[..n]).is_err() {
            // The agent is done with its input.
            break;
        }
    }
    let _ = out.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Bytes written to the input arrive in order, with nothing lost, also across reads that
    /// wait longer than one check; closing the input ends the stream.
    #[tokio::test]
    async fn relays_everything_then_end_of_stream() {
        let (input, mut writer) = UnixStream::pair().unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        std::thread::spawn(move || relay(input, ours));
        theirs.set_nonblocking(true).unwrap();
        let mut reader = tokio::net::UnixStream::from_std(theirs).unwrap();
        let sender = std::thread::spawn(move || {
            for i in 0..200u32 {
                writer.write_all(&i.to_be_bytes()).unwrap();
                if i % 50 == 0 {
                    // Longer than a check: the relay times out and polls again.
                    std::thread::sleep(CHECK + Duration::from_millis(50));
                }
            }
        });
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        sender.join().unwrap();
        let want: Vec<u8> = (0..200u32).flat_map(|i| i.to_be_bytes()).collect();
        assert_eq!(got, want);
    }

    /// The agent closing its end stops the relay (it does not spin on a dead reader).
    #[test]
    fn stops_when_the_agent_end_is_closed() {
        let (input, mut writer) = UnixStream::pair().unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        let t = std::thread::spawn(move || relay(input, ours));
        writer.write_all(b"x").unwrap();
        t.join().unwrap();
    }
}
