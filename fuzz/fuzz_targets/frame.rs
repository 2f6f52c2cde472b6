//! Wire protocol: the frame reader (`read_frame_bytes` via `read_message`, the real async
//! code driven over a `&[u8]` reader on a current-thread runtime built once) and the serde
//! decoding of `Message`.
//!
//! Each input is used twice:
//! * A. as a byte stream of frames (4-byte big-endian length + JSON), read until EOF or the
//!   first error, as a connection would be;
//! * B. as the JSON payload of one correctly framed message (so the fuzzer reaches the
//!   decoder without having to guess the length prefix).
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
use lnst_runner::protocol::{encode_message, read_message, FrameError, Message, MAX_FRAME};

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
            Err(FrameError::TooLarge(n)) => {
                assert!(n > MAX_FRAME);
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
