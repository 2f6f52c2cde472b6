//! IPsec states and policies (`XfrmAdd`, `XfrmDel`): `ip xfrm` run with an argv (no shell).
//! Everything added is journaled and deleted by its selector (states by src, dst, proto and
//! SPI; policies by src, dst and direction) in reverse order at EndRecipe and when the
//! connection ends — never a flush: a lab machine keeps its own IPsec configuration.
//!
//! Keys never leave this module in a text: the logged argv shows `<redacted>` and `ip`'s
//! error output has every key of the request replaced the same way.

use super::OpError;
use crate::protocol::{
    ErrorKind, MacsecSas, XfrmAlgo, XfrmPolicy, XfrmPolicyId, XfrmProto, XfrmState, XfrmStateId,
    REDACTED,
};
use std::sync::Mutex;

/// The modules an IPsec configuration may need on a VM agent (the stock module tree): ESP,
/// AH and IPComp of both families, the tunnel-mode helpers and the algorithms the recipes
/// use (GCM for `rfc4106(gcm(aes))`, CBC/authenc for `enc`, deflate for IPComp).
pub const MODULES: &[&str] = &[
    "esp4",
    "esp6",
    "ah4",
    "ah6",
    "ipcomp",
    "ipcomp6",
    "xfrm4_tunnel",
    "xfrm6_tunnel",
    "gcm",
    "ghash_generic",
    "ctr",
    "seqiv",
    "echainiv",
    "authenc",
    "cbc",
    "deflate",
    "md5",
];

/// One thing this session added.
#[derive(Debug, Clone, PartialEq)]
enum Added {
    State(XfrmStateId),
    Policy(XfrmPolicyId),
}

impl Added {
    fn delete_argv(&self) -> Vec<String> {
        match self {
            Added::State(s) => s.argv(),
            Added::Policy(p) => p.argv(),
        }
    }
}

/// The session's IPsec journal.
#[derive(Debug, Default)]
pub struct Xfrm {
    added: Mutex<Vec<Added>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The keys of a state, to scrub from texts.
fn keys(s: &XfrmState) -> Vec<String> {
    match &s.algo {
        XfrmAlgo::Aead { key, .. } | XfrmAlgo::Enc { key, .. } | XfrmAlgo::Auth { key, .. } => {
            vec![key.0.clone()]
        }
        XfrmAlgo::Comp { .. } => Vec::new(),
    }
}

/// `text` with every key replaced by `<redacted>`.
fn scrub(text: &str, keys: &[String]) -> String {
    let mut t = text.to_string();
    for k in keys.iter().filter(|k| !k.is_empty()) {
        t = t.replace(k.as_str(), REDACTED);
        if let Some(bare) = k.strip_prefix("0x") {
            if !bare.is_empty() {
                t = t.replace(bare, REDACTED);
            }
        }
    }
    t
}

/// The kernel feature a state needs, for the error when the kernel lacks it.
fn feature(s: &XfrmState) -> String {
    let (what, modules) = match s.proto {
        XfrmProto::Esp => ("IPsec ESP", "esp4/esp6"),
        XfrmProto::Ah => ("IPsec AH", "ah4/ah6"),
        XfrmProto::Comp => ("IPComp", "ipcomp/ipcomp6"),
    };
    let algo = match &s.algo {
        XfrmAlgo::Aead { name, .. }
        | XfrmAlgo::Enc { name, .. }
        | XfrmAlgo::Auth { name, .. }
        | XfrmAlgo::Comp { name } => name,
    };
    format!("{what} (modules {modules}) with algorithm {algo}")
}

/// Whether `ip`'s error says the kernel lacks a type or an algorithm.
fn is_missing_feature(stderr: &str) -> bool {
    let e = stderr.to_ascii_lowercase();
    [
        "requested type not found",
        "algorithm not found",
        "protocol not supported",
        "no such file or directory",
        "function not implemented",
    ]
    .iter()
    .any(|m| e.contains(m))
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "this host".into())
}

/// Run `ip ARGV`; Err(stderr) when it fails.
async fn ip(argv: &[String], shown: &str) -> Result<(), OpError> {
    tracing::info!("ip {shown}");
    let out = tokio::process::Command::new("ip")
        .args(argv)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                OpError::new(ErrorKind::Failed, "ip: not found in PATH (iproute2)")
            } else {
                OpError::new(ErrorKind::Failed, format!("ip: {e}"))
            }
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(OpError::new(
        ErrorKind::Failed,
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    ))
}

fn check_state(s: &XfrmState) -> Result<(), OpError> {
    let bad = |m: String| Err(OpError::new(ErrorKind::BadRequest, m));
    if s.src.is_ipv4() != s.dst.is_ipv4() {
        return bad(format!(
            "xfrm state {} > {}: mixed address families",
            s.src, s.dst
        ));
    }
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 64
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "()-_,".contains(c))
    };
    let key_ok = |k: &str| {
        let h = k.strip_prefix("0x").unwrap_or(k);
        !h.is_empty() && h.len() % 2 == 0 && h.chars().all(|c| c.is_ascii_hexdigit())
    };
    match &s.algo {
        XfrmAlgo::Aead { name, key, .. }
        | XfrmAlgo::Enc { name, key }
        | XfrmAlgo::Auth { name, key } => {
            if !name_ok(name) {
                return bad(format!("xfrm state: bad algorithm name '{name}'"));
            }
            if !key_ok(&key.0) {
                return bad(format!(
                    "xfrm state {} > {} spi {:#x}: the key is not hexadecimal bytes",
                    s.src, s.dst, s.spi
                ));
            }
        }
        XfrmAlgo::Comp { name } => {
            if !name_ok(name) {
                return bad(format!("xfrm state: bad algorithm name '{name}'"));
            }
        }
    }
    let proto_ok = matches!(
        (&s.algo, s.proto),
        (XfrmAlgo::Aead { .. } | XfrmAlgo::Enc { .. }, XfrmProto::Esp)
            | (XfrmAlgo::Auth { .. }, XfrmProto::Ah)
            | (XfrmAlgo::Comp { .. }, XfrmProto::Comp)
    );
    if !proto_ok {
        return bad(format!(
            "xfrm state: the algorithm does not fit proto {}",
            s.proto.as_str()
        ));
    }
    Ok(())
}

fn check_policy(p: &XfrmPolicy) -> Result<(), OpError> {
    if p.tmpls.is_empty() {
        return Err(OpError::new(
            ErrorKind::BadRequest,
            format!("xfrm policy {} > {}: no template", p.src, p.dst),
        ));
    }
    if p.src.is_ipv4() != p.dst.is_ipv4() {
        return Err(OpError::new(
            ErrorKind::BadRequest,
            format!("xfrm policy {} > {}: mixed address families", p.src, p.dst),
        ));
    }
    Ok(())
}

impl Xfrm {
    /// Add the states, then the policies; on a failure what this call added is deleted
    /// again and the error names the host and the missing feature when that is the cause.
    pub async fn add(
        &self,
        states: Vec<XfrmState>,
        policies: Vec<XfrmPolicy>,
    ) -> Result<(), OpError> {
        states.iter().try_for_each(check_state)?;
        policies.iter().try_for_each(check_policy)?;
        super::kmod::ensure_each(MODULES).await;
        let all_keys: Vec<String> = states.iter().flat_map(keys).collect();
        let mut done: Vec<Added> = Vec::new();
        let mut result = Ok(());
        for s in &states {
            let shown = s.argv(true).join(" ");
            if let Err(e) = ip(&s.argv(false), &shown).await {
                let msg = scrub(&e.message, &all_keys);
                result = Err(if is_missing_feature(&msg) {
                    OpError::new(
                        ErrorKind::Unsupported,
                        format!(
                            "{}: the kernel lacks {} (ip {shown}: {msg})",
                            host(),
                            feature(s)
                        ),
                    )
                } else {
                    OpError::new(e.kind, format!("ip {shown}: {msg}"))
                });
                break;
            }
            done.push(Added::State(s.id()));
        }
        if result.is_ok() {
            for p in &policies {
                let argv = p.argv();
                let shown = argv.join(" ");
                if let Err(e) = ip(&argv, &shown).await {
                    result = Err(OpError::new(e.kind, format!("ip {shown}: {}", e.message)));
                    break;
                }
                done.push(Added::Policy(p.id()));
            }
        }
        if result.is_err() {
            for a in done.iter().rev() {
                let argv = a.delete_argv();
                let _ = ip(&argv, &argv.join(" ")).await;
            }
            return result;
        }
        lock(&self.added).extend(done);
        Ok(())
    }

    /// Delete policies, then states; each must be one this session added.
    pub async fn delete(
        &self,
        states: Vec<XfrmStateId>,
        policies: Vec<XfrmPolicyId>,
    ) -> Result<(), OpError> {
        let wanted: Vec<Added> = policies
            .into_iter()
            .map(Added::Policy)
            .chain(states.into_iter().map(Added::State))
            .collect();
        for w in &wanted {
            if !lock(&self.added).contains(w) {
                return Err(OpError::new(
                    ErrorKind::NotAllowed,
                    format!(
                        "{} was not added by this session; only what XfrmAdd added can be \
                         deleted",
                        w.delete_argv()[3..].join(" ")
                    ),
                ));
            }
        }
        let mut errors = Vec::new();
        for w in wanted {
            let argv = w.delete_argv();
            match ip(&argv, &argv.join(" ")).await {
                Ok(()) => {}
                Err(e) => errors.push(format!("ip {}: {}", argv.join(" "), e.message)),
            }
            let mut added = lock(&self.added);
            if let Some(i) = added.iter().rposition(|a| *a == w) {
                added.remove(i);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(OpError::new(ErrorKind::Failed, errors.join("; ")))
        }
    }

    /// Delete everything still added, newest first.
    pub async fn undo_all(&self, errors: &mut Vec<String>) {
        let all: Vec<Added> = std::mem::take(&mut *lock(&self.added));
        for a in all.iter().rev() {
            let argv = a.delete_argv();
            if let Err(e) = ip(&argv, &argv.join(" ")).await {
                errors.push(format!("ip {}: {}", argv.join(" "), e.message));
            }
        }
    }
}

/// Check a MACsec request: a 48-bit peer MAC, association number 0–3, packet number from 1,
/// key identifiers of up to 16 hexadecimal bytes and 128- or 256-bit keys.
fn check_macsec(ifname: &str, m: &MacsecSas) -> Result<(), OpError> {
    let bad = |msg: String| Err(OpError::new(ErrorKind::BadRequest, msg));
    super::net::check_ifname(ifname)?;
    let mac_ok = m.peer_mac.split(':').count() == 6
        && m.peer_mac
            .split(':')
            .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()));
    if !mac_ok {
        return bad(format!("macsec {ifname}: bad peer MAC {:?}", m.peer_mac));
    }
    if m.an > 3 || m.pn == 0 || m.port == 0 {
        return bad(format!(
            "macsec {ifname}: association number 0-3, packet number and port from 1"
        ));
    }
    let hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
    for (what, k) in [("tx", &m.tx), ("rx", &m.rx)] {
        if !hex(&k.id) || k.id.len() > 32 || k.id.len() % 2 != 0 {
            return bad(format!(
                "macsec {ifname}: {what} key id {:?} is not 1 to 16 hexadecimal bytes",
                k.id
            ));
        }
        if !hex(&k.key.0) || !(k.key.0.len() == 32 || k.key.0.len() == 64) {
            return bad(format!(
                "macsec {ifname}: the {what} key is not 16 or 32 hexadecimal bytes"
            ));
        }
    }
    Ok(())
}

/// `MacsecConfigure`: the receive channel, the transmit SA and the receive SA, in that order
/// (upstream's order); they are deleted with the link.
pub async fn macsec_configure(ifname: &str, m: &MacsecSas) -> Result<(), OpError> {
    check_macsec(ifname, m)?;
    let keys = [m.tx.key.0.clone(), m.rx.key.0.clone()];
    for (argv, shown) in m.argvs(ifname, false).iter().zip(m.argvs(ifname, true)) {
        let shown = shown.join(" ");
        if let Err(e) = ip(argv, &shown).await {
            let msg = scrub(&e.message, &keys);
            return Err(OpError::new(e.kind, format!("ip {shown}: {msg}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Secret, XfrmMode};

    fn state(algo: XfrmAlgo, proto: XfrmProto) -> XfrmState {
        XfrmState {
            src: "198.18.190.1".parse().unwrap(),
            dst: "198.18.191.1".parse().unwrap(),
            proto,
            spi: 0x1000,
            mode: XfrmMode::Transport,
            algo,
            sel: None,
        }
    }

    #[test]
    fn keys_are_scrubbed_with_or_without_their_prefix() {
        let k = vec!["0xabcdef0123".to_string()];
        assert_eq!(
            scrub("argument \"0xabcdef0123\" is wrong; abcdef0123", &k),
            "argument \"<redacted>\" is wrong; <redacted>"
        );
    }

    #[test]
    fn bad_states_are_refused_without_showing_the_key() {
        let s = state(
            XfrmAlgo::Aead {
                name: "rfc4106(gcm(aes))".into(),
                key: Secret("0xnothex-secret".into()),
                icv_bits: 96,
            },
            XfrmProto::Esp,
        );
        let e = check_state(&s).err().map(|e| e.message).unwrap_or_default();
        assert!(
            e.contains("not hexadecimal") && !e.contains("secret"),
            "{e}"
        );
        let s = state(
            XfrmAlgo::Auth {
                name: "sha256".into(),
                key: Secret("0x0b0b".into()),
            },
            XfrmProto::Esp,
        );
        assert!(check_state(&s).is_err());
        let s = state(
            XfrmAlgo::Comp {
                name: "deflate; rm".into(),
            },
            XfrmProto::Comp,
        );
        assert!(check_state(&s).is_err());
    }

    #[test]
    fn missing_kernel_features_are_recognised() {
        assert!(is_missing_feature(
            "Error: Requested AEAD algorithm not found."
        ));
        assert!(is_missing_feature("Error: Requested type not found."));
        assert!(!is_missing_feature("RTNETLINK answers: File exists"));
        let s = state(
            XfrmAlgo::Comp {
                name: "deflate".into(),
            },
            XfrmProto::Comp,
        );
        assert_eq!(
            feature(&s),
            "IPComp (modules ipcomp/ipcomp6) with algorithm deflate"
        );
    }
}
