//! Helpers shared by the fuzz targets.

use serde_json::Value as J;

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
