//! Wire protocol: the frame reader (`read_frame_bytes` via `read_message`, the real async
//! code driven over a `&[u8]` reader on a current-thread runtime built once) and the serde
//! decoding of `Message`.
//!
//! Each input is used as:
//! * A. a byte stream of frames (4-byte big-endian length + JSON), read until EOF or the
//!   first error, as a connection would be;
//! * B. the JSON payload of one correctly framed message (so the fuzzer reaches the
//!   decoder without having to guess the length prefix);
//! * C. a handshake stream (limit `MAX_HANDSHAKE_FRAME`): `TooLarge` names that limit;
//! * D. a shared secret: `normalize_secret` strips ASCII whitespace, never returns a blank
//!   secret, and returns a slice of its input;
//! * E. a `SysctlWrite` path (as UTF-8): an accepted key is below /proc/sys/net or is
//!   vm/drop_caches and has no empty, `.` or `..` component; value checks never panic.
//!
//! Invariants checked besides "no panic, no hang, no OOM": a clean EOF happens only at a
//! frame boundary; every frame consumes its prefix and payload; `TooLarge` only above
//! MAX_FRAME; a byte slice never gives an I/O error; B decodes exactly as `serde_json` does
//! on the payload and consumes the whole frame; every decoded message re-encodes to a frame
//! that decodes to the same message (floats to within a few ULPs, see common.rs).
//!
//! Checks run on a 512 KiB stack (common.rs) so that deep recursion shows up as a crash.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use lnst_runner::agent::sysctl::Key;
use lnst_runner::protocol::{
    encode_message, normalize_secret, read_message, read_message_limited, FrameError, Message,
    MAX_FRAME, MAX_HANDSHAKE_FRAME,
};

thread_local! {
    static RT: tokio::runtime::Runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
}

fuzz_target!(|data: &[u8]| common::on_small_stack(data, run));

fn run(data: &[u8]) {
    RT.with(|rt| rt.block_on(check(data)));
}

async fn check(data: &[u8]) {
    // A. A stream of frames.
    let mut rd = data;
    loop {
        let before = rd.len();
        match read_message(&mut rd).await {
            Ok(None) => {
                assert_eq!(before, 0, "clean EOF reported inside a frame");
                break;
            }
            Ok(Some(m)) => {
                assert!(
                    before - rd.len() >= 4,
                    "a frame consumed less than its prefix"
                );
                round_trip(&m).await;
            }
            Err(FrameError::TooLarge { len, max }) => {
                assert!(len > MAX_FRAME && max == MAX_FRAME);
                break;
            }
            Err(FrameError::Truncated) => {
                assert!(before > 0);
                break;
            }
            Err(FrameError::Json(_)) => break,
            Err(FrameError::Io(e)) => panic!("I/O error from a byte slice: {e}"),
        }
    }

    // B. The input as one frame's payload.
    let Ok(len) = u32::try_from(data.len()) else {
        return;
    };
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(data);
    let direct = serde_json::from_slice::<Message>(data);
    let mut rd = framed.as_slice();
    match (read_message(&mut rd).await, direct) {
        (Ok(Some(m)), Ok(d)) => {
            assert_eq!(m, d);
            round_trip(&m).await;
        }
        (Err(FrameError::Json(_)), Err(_)) => {}
        (got, direct) => panic!("frame reader gave {got:?}, serde_json gave {direct:?}"),
    }
    assert!(rd.is_empty(), "frame not fully consumed");
    assert!(matches!(read_message(&mut rd).await, Ok(None)));

    // C. A handshake stream: the limit in force is the one reported.
    let mut rd = data;
    loop {
        match read_message_limited(&mut rd, MAX_HANDSHAKE_FRAME).await {
            Ok(Some(_)) => {}
            Err(FrameError::TooLarge { len, max }) => {
                assert!(len > MAX_HANDSHAKE_FRAME && max == MAX_HANDSHAKE_FRAME);
                let msg = FrameError::TooLarge { len, max }.to_string();
                assert!(msg.ends_with("exceeds the 65536-byte limit"), "{msg}");
                break;
            }
            Ok(None) | Err(_) => break,
        }
    }

    // D. A secret.
    if let Some(sec) = normalize_secret(data) {
        assert!(!sec.is_empty());
        assert!(!sec.first().is_some_and(u8::is_ascii_whitespace));
        assert!(!sec.last().is_some_and(u8::is_ascii_whitespace));
        assert!(data.windows(sec.len()).any(|w| w == sec.as_slice()));
        if let Ok(t) = std::str::from_utf8(&sec) {
            assert!(!t.chars().all(char::is_whitespace), "blank secret {t:?}");
        }
    }

    // E. A sysctl path, and the input as its value.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = Key::parse(text) {
            let path = key.to_string();
            assert!(
                path.starts_with("/proc/sys/net/") || path == "/proc/sys/vm/drop_caches",
                "{text:?} resolved to {path}"
            );
            let rel = path.trim_start_matches("/proc/sys/");
            assert!(
                rel.split('/')
                    .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0')),
                "{text:?} resolved to {path}"
            );
            let _ = key.check_value(text);
        }
    }
}

/// Re-encode a decoded message and decode it again.
async fn round_trip(m: &Message) {
    let frame = match encode_message(m) {
        Ok(f) => f,
        Err(e) => panic!("cannot re-encode {m:?}: {e}"),
    };
    let prefix: [u8; 4] = match frame.get(..4).map(<[u8; 4]>::try_from) {
        Some(Ok(p)) => p,
        _ => panic!("frame without a prefix"),
    };
    assert_eq!(u32::from_be_bytes(prefix) as usize, frame.len() - 4);
    let mut rd = frame.as_slice();
    let back = match read_message(&mut rd).await {
        Ok(Some(b)) => b,
        other => panic!("re-encoded {m:?} decodes as {other:?}"),
    };
    assert!(rd.is_empty());
    if &back != m {
        let (a, b) = (serde_json::to_value(m), serde_json::to_value(&back));
        match (a, b) {
            (Ok(a), Ok(b)) => assert!(common::json_close(&a, &b), "{a} != {b}"),
            other => panic!("{other:?}"),
        }
    }
}
