//! Helpers shared by the fuzz targets (each target uses some of them).

#![allow(dead_code)]

use serde_json::Value as J;
use std::sync::{mpsc, Mutex, OnceLock};

/// Stack size of the thread every check runs on.
///
/// libFuzzer calls the target on the 8 MiB main thread, while lnst-runner's parsers also run
/// on 2 MiB tokio and test threads. With inputs of at most 16–64 KiB, unbounded recursion
/// (one stack frame per `<`, `[` or `{`) rarely reaches 8 MiB; on a quarter of the smaller
/// stack it shows up as a crash. (This is how the pool XML nesting overflow was found.)
pub const CHECK_STACK: usize = 512 * 1024;

type Worker = (mpsc::Sender<Vec<u8>>, Mutex<mpsc::Receiver<()>>);

/// Run `check(data)` on a long-lived thread with a [`CHECK_STACK`]-byte stack and wait for
/// it. A panic there aborts the process (libfuzzer-sys's panic hook), a stack overflow is a
/// deadly signal: libFuzzer records both as crashes. A target passes the same `check`
/// every time.
pub fn on_small_stack(data: &[u8], check: fn(&[u8])) {
    static WORKER: OnceLock<Worker> = OnceLock::new();
    let (jobs, done) = WORKER.get_or_init(|| {
        // The two threads take turns and never run at once: keep them on one CPU, where a
        // hand-off is a local context switch instead of a cross-CPU wake-up (tens of µs on
        // a VM, which would cut throughput by three quarters).
        let cpu = pin_to_current_cpu(None);
        let (jobs, inbox) = mpsc::channel::<Vec<u8>>();
        let (finished, done) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("fuzz-check".into())
            .stack_size(CHECK_STACK)
            .spawn(move || {
                pin_to_current_cpu(cpu);
                catch_stack_overflow();
                for input in inbox {
                    check(&input);
                    if finished.send(()).is_err() {
                        break;
                    }
                }
            });
        if let Err(e) = spawned {
            panic!("cannot start the check thread: {e}");
        }
        (jobs, Mutex::new(done))
    });
    if jobs.send(data.to_vec()).is_err() {
        panic!("the check thread is gone");
    }
    let done = match done.lock() {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    if done.recv().is_err() {
        panic!("the check thread is gone");
    }
}

/// Pin the calling thread to `cpu`, or to the CPU it runs on; returns that CPU (None when
/// unknown or when pinning fails, which only costs speed).
fn pin_to_current_cpu(cpu: Option<usize>) -> Option<usize> {
    // SAFETY: plain libc calls on a zero-initialised cpu_set_t owned by this frame.
    unsafe {
        let cpu = match cpu {
            Some(c) => c,
            None => usize::try_from(libc::sched_getcpu()).ok()?,
        };
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let ok = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0;
        ok.then_some(cpu)
    }
}

/// Let libFuzzer's SIGSEGV handler run when this thread overflows its stack, so that the
/// crash is reported as a "deadly signal" with its input saved as an artifact (without a
/// sanitizer, libFuzzer installs the handler without an alternate stack and the process just
/// dies): give the thread an alternate signal stack and re-install the handler with
/// `SA_ONSTACK`.
fn catch_stack_overflow() {
    const ALT_STACK: usize = 256 * 1024;
    let alt: &'static mut [u8] = Box::leak(vec![0u8; ALT_STACK].into_boxed_slice());
    // SAFETY: `alt` lives for the rest of the process; the sigaction struct is read from
    // the kernel, changed in one flag and written back.
    unsafe {
        let ss = libc::stack_t {
            ss_sp: alt.as_mut_ptr().cast(),
            ss_flags: 0,
            ss_size: ALT_STACK,
        };
        if libc::sigaltstack(&ss, std::ptr::null_mut()) != 0 {
            return;
        }
        let mut act: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut act) != 0
            || act.sa_sigaction == libc::SIG_DFL
            || act.sa_sigaction == libc::SIG_IGN
        {
            return;
        }
        act.sa_flags |= libc::SA_ONSTACK;
        libc::sigaction(libc::SIGSEGV, &act, std::ptr::null_mut());
    }
}

/// Structural equality of two JSON values in which floats may differ in their last bits.
///
/// lnst-runner builds serde_json without its `float_roundtrip` feature, and serde_json's
/// default float parser is documented as "best effort": it reads some of its own shortest
/// round-trip output back a few ULPs off (e.g. `1.0713652565602211e+219`). Everything else
/// must match exactly.
pub fn json_close(a: &J, b: &J) -> bool {
    match (a, b) {
        (J::Number(x), J::Number(y)) => {
            if x.is_f64() != y.is_f64() {
                return false;
            }
            match (x.as_f64(), y.as_f64()) {
                (Some(p), Some(q)) if x.is_f64() => floats_close(p, q),
                _ => x == y,
            }
        }
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_close(p, q))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kp, p), (kq, q))| kp == kq && json_close(p, q))
        }
        _ => a == b,
    }
}

/// Equal, or at most 16 ULPs apart with the same sign.
pub fn floats_close(p: f64, q: f64) -> bool {
    if p == q {
        return true;
    }
    if !p.is_finite() || !q.is_finite() || p.is_sign_negative() != q.is_sign_negative() {
        return false;
    }
    let (a, b) = (p.abs().to_bits(), q.abs().to_bits());
    a.abs_diff(b) <= 16
}
