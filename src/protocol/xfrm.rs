//! IPsec states and policies (`XfrmAdd`, `XfrmDel`; docs/PROTOCOL.md): what the IPsec recipes
//! configure with `ip xfrm`. Key material is a [`Secret`]: it crosses the wire (the agent
//! needs it) but never shows in a `Debug` or `Display` text, so no log line, result or error
//! message carries it.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Key material: serialized as is, shown as `<redacted>`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The shown form of a key in argv logs.
pub const REDACTED: &str = "<redacted>";

/// An IPsec protocol (`proto esp|ah|comp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XfrmProto {
    Esp,
    Ah,
    Comp,
}

impl XfrmProto {
    pub fn as_str(self) -> &'static str {
        match self {
            XfrmProto::Esp => "esp",
            XfrmProto::Ah => "ah",
            XfrmProto::Comp => "comp",
        }
    }
}

/// `mode transport|tunnel`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XfrmMode {
    #[default]
    Transport,
    Tunnel,
}

impl XfrmMode {
    pub fn as_str(self) -> &'static str {
        match self {
            XfrmMode::Transport => "transport",
            XfrmMode::Tunnel => "tunnel",
        }
    }
}

/// A policy direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XfrmDir {
    In,
    Out,
    Fwd,
}

impl XfrmDir {
    pub fn as_str(self) -> &'static str {
        match self {
            XfrmDir::In => "in",
            XfrmDir::Out => "out",
            XfrmDir::Fwd => "fwd",
        }
    }
}

/// A state's algorithm; keys are hexadecimal (`0x…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum XfrmAlgo {
    /// `aead NAME KEY ICV_BITS` (ESP).
    Aead {
        name: String,
        key: Secret,
        icv_bits: u32,
    },
    /// `enc NAME KEY` (ESP).
    Enc { name: String, key: Secret },
    /// `auth NAME KEY` (AH).
    Auth { name: String, key: Secret },
    /// `comp NAME` (IPComp).
    Comp { name: String },
}

/// One security association (`ip xfrm state add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XfrmState {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: XfrmProto,
    pub spi: u32,
    #[serde(default)]
    pub mode: XfrmMode,
    pub algo: XfrmAlgo,
    /// `sel src A dst B` (host selectors).
    #[serde(default)]
    pub sel: Option<(IpAddr, IpAddr)>,
}

/// One template of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XfrmTmpl {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: XfrmProto,
    #[serde(default)]
    pub spi: Option<u32>,
    #[serde(default)]
    pub mode: XfrmMode,
    /// `level use` (optional transform).
    #[serde(default)]
    pub optional: bool,
}

/// One policy (`ip xfrm policy add src A dst B dir D tmpl …`), host selectors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XfrmPolicy {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub dir: XfrmDir,
    pub tmpls: Vec<XfrmTmpl>,
}

/// What identifies a state (`ip xfrm state delete src dst proto spi`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XfrmStateId {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: XfrmProto,
    pub spi: u32,
}

/// What identifies a policy (`ip xfrm policy delete src dst dir`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XfrmPolicyId {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub dir: XfrmDir,
}

impl XfrmState {
    pub fn id(&self) -> XfrmStateId {
        XfrmStateId {
            src: self.src,
            dst: self.dst,
            proto: self.proto,
            spi: self.spi,
        }
    }

    /// `ip xfrm state add …` arguments (after `ip`); keys as given, or [`REDACTED`]
    /// (`shown`).
    pub fn argv(&self, shown: bool) -> Vec<String> {
        let key = |k: &Secret| {
            if shown {
                REDACTED.to_string()
            } else {
                k.0.clone()
            }
        };
        let mut a: Vec<String> = ["xfrm", "state", "add", "src"].map(String::from).to_vec();
        a.push(self.src.to_string());
        a.push("dst".into());
        a.push(self.dst.to_string());
        a.extend(["proto".into(), self.proto.as_str().into()]);
        a.extend(["spi".into(), format!("{:#010x}", self.spi)]);
        match &self.algo {
            XfrmAlgo::Aead {
                name,
                key: k,
                icv_bits,
            } => a.extend(["aead".into(), name.clone(), key(k), icv_bits.to_string()]),
            XfrmAlgo::Enc { name, key: k } => a.extend(["enc".into(), name.clone(), key(k)]),
            XfrmAlgo::Auth { name, key: k } => a.extend(["auth".into(), name.clone(), key(k)]),
            XfrmAlgo::Comp { name } => a.extend(["comp".into(), name.clone()]),
        }
        a.extend(["mode".into(), self.mode.as_str().into()]);
        if let Some((s, d)) = self.sel {
            a.extend(["sel".into(), "src".into(), s.to_string()]);
            a.extend(["dst".into(), d.to_string()]);
        }
        a
    }
}

impl XfrmStateId {
    /// `ip xfrm state delete …` arguments.
    pub fn argv(&self) -> Vec<String> {
        vec![
            "xfrm".into(),
            "state".into(),
            "delete".into(),
            "src".into(),
            self.src.to_string(),
            "dst".into(),
            self.dst.to_string(),
            "proto".into(),
            self.proto.as_str().into(),
            "spi".into(),
            format!("{:#010x}", self.spi),
        ]
    }
}

impl XfrmPolicy {
    pub fn id(&self) -> XfrmPolicyId {
        XfrmPolicyId {
            src: self.src,
            dst: self.dst,
            dir: self.dir,
        }
    }

    /// `ip xfrm policy add …` arguments.
    pub fn argv(&self) -> Vec<String> {
        let mut a: Vec<String> = ["xfrm", "policy", "add", "src"].map(String::from).to_vec();
        a.push(self.src.to_string());
        a.extend(["dst".into(), self.dst.to_string()]);
        a.extend(["dir".into(), self.dir.as_str().into()]);
        for t in &self.tmpls {
            a.extend(["tmpl".into(), "src".into(), t.src.to_string()]);
            a.extend(["dst".into(), t.dst.to_string()]);
            a.extend(["proto".into(), t.proto.as_str().into()]);
            if let Some(spi) = t.spi {
                a.extend(["spi".into(), format!("{spi:#010x}")]);
            }
            a.extend(["mode".into(), t.mode.as_str().into()]);
            if t.optional {
                a.extend(["level".into(), "use".into()]);
            }
        }
        a
    }
}

impl XfrmPolicyId {
    /// `ip xfrm policy delete …` arguments.
    pub fn argv(&self) -> Vec<String> {
        vec![
            "xfrm".into(),
            "policy".into(),
            "delete".into(),
            "src".into(),
            self.src.to_string(),
            "dst".into(),
            self.dst.to_string(),
            "dir".into(),
            self.dir.as_str().into(),
        ]
    }
}

/// A MACsec key: its identifier and the key, both hexadecimal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MacsecKey {
    pub id: String,
    pub key: Secret,
}

/// A MACsec device's transmit SA and its peer's receive channel and SA (`ip macsec add`):
/// `rx port PORT address PEER_MAC`, `tx sa AN pn PN on key TX.ID TX.KEY`, `rx port PORT
/// address PEER_MAC sa AN pn PN on key RX.ID RX.KEY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MacsecSas {
    pub peer_mac: String,
    #[serde(default = "one_u16")]
    pub port: u16,
    /// Association number (0–3).
    #[serde(default)]
    pub an: u8,
    #[serde(default = "one_u32")]
    pub pn: u32,
    pub tx: MacsecKey,
    pub rx: MacsecKey,
}

fn one_u16() -> u16 {
    1
}
fn one_u32() -> u32 {
    1
}

impl MacsecSas {
    /// The three `ip macsec add …` argvs (after `ip`); keys as given or [`REDACTED`]
    /// (`shown`).
    pub fn argvs(&self, ifname: &str, shown: bool) -> [Vec<String>; 3] {
        let key = |k: &Secret| {
            if shown {
                REDACTED.to_string()
            } else {
                k.0.clone()
            }
        };
        let head = |v: &[&str]| -> Vec<String> {
            ["macsec", "add", ifname]
                .iter()
                .chain(v)
                .map(|s| s.to_string())
                .collect()
        };
        let port = self.port.to_string();
        let (an, pn) = (self.an.to_string(), self.pn.to_string());
        let rx = ["rx", "port", &port, "address", &self.peer_mac];
        let mut tx_sa = head(&["tx", "sa", &an, "pn", &pn, "on", "key", &self.tx.id]);
        tx_sa.push(key(&self.tx.key));
        let mut rx_sa = head(&rx);
        rx_sa.extend(["sa", &an, "pn", &pn, "on", "key", &self.rx.id].map(String::from));
        rx_sa.push(key(&self.rx.key));
        [head(&rx), tx_sa, rx_sa]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esp() -> XfrmState {
        XfrmState {
            src: "198.18.190.1".parse().unwrap(),
            dst: "198.18.191.1".parse().unwrap(),
            proto: XfrmProto::Esp,
            spi: 0x1001,
            mode: XfrmMode::Transport,
            algo: XfrmAlgo::Aead {
                name: "rfc4106(gcm(aes))".into(),
                key: Secret("0xdeadbeef".into()),
                icv_bits: 96,
            },
            sel: Some((
                "198.18.190.1".parse().unwrap(),
                "198.18.191.1".parse().unwrap(),
            )),
        }
    }

    #[test]
    fn keys_cross_the_wire_but_never_show() {
        let s = esp();
        let wire = serde_json::to_string(&s).unwrap();
        assert!(wire.contains("0xdeadbeef"), "{wire}");
        let back: XfrmState = serde_json::from_str(&wire).unwrap();
        assert_eq!(back, s);
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("deadbeef") && dbg.contains("<redacted>"),
            "{dbg}"
        );
        assert!(!s.argv(true).join(" ").contains("deadbeef"));
        assert_eq!(
            s.argv(false).join(" "),
            "xfrm state add src 198.18.190.1 dst 198.18.191.1 proto esp spi 0x00001001 \
             aead rfc4106(gcm(aes)) 0xdeadbeef 96 mode transport sel src 198.18.190.1 \
             dst 198.18.191.1"
        );
        assert_eq!(
            s.id().argv().join(" "),
            "xfrm state delete src 198.18.190.1 dst 198.18.191.1 proto esp spi 0x00001001"
        );
    }

    #[test]
    fn macsec_commands_hide_their_keys() {
        let m = MacsecSas {
            peer_mac: "02:00:00:00:00:02".into(),
            port: 1,
            an: 0,
            pn: 1,
            tx: MacsecKey {
                id: "00".into(),
                key: Secret("7a16780284000775d4f0a3c0f0e092c0".into()),
            },
            rx: MacsecKey {
                id: "01".into(),
                key: Secret("3212ef5c4cc5d0e4210b17208e88779e".into()),
            },
        };
        let real = m.argvs("t_msec0", false).map(|a| a.join(" "));
        assert_eq!(
            real,
            [
                "macsec add t_msec0 rx port 1 address 02:00:00:00:00:02",
                "macsec add t_msec0 tx sa 0 pn 1 on key 00 7a16780284000775d4f0a3c0f0e092c0",
                "macsec add t_msec0 rx port 1 address 02:00:00:00:00:02 sa 0 pn 1 on key 01 \
                 3212ef5c4cc5d0e4210b17208e88779e",
            ]
        );
        let shown = m.argvs("t_msec0", true).map(|a| a.join(" ")).join("\n");
        assert!(
            !shown.contains("7a1678") && !shown.contains("3212ef"),
            "{shown}"
        );
        assert!(!format!("{m:?}").contains("7a1678"));
    }

    #[test]
    fn policies_have_their_templates_in_order() {
        let a: IpAddr = "fd00:190::1".parse().unwrap();
        let b: IpAddr = "fd00:191::1".parse().unwrap();
        let p = XfrmPolicy {
            src: a,
            dst: b,
            dir: XfrmDir::In,
            tmpls: vec![
                XfrmTmpl {
                    src: a,
                    dst: b,
                    proto: XfrmProto::Comp,
                    spi: Some(4),
                    mode: XfrmMode::Tunnel,
                    optional: true,
                },
                XfrmTmpl {
                    src: a,
                    dst: b,
                    proto: XfrmProto::Esp,
                    spi: Some(2),
                    mode: XfrmMode::Tunnel,
                    optional: false,
                },
            ],
        };
        assert_eq!(
            p.argv().join(" "),
            "xfrm policy add src fd00:190::1 dst fd00:191::1 dir in tmpl src fd00:190::1 \
             dst fd00:191::1 proto comp spi 0x00000004 mode tunnel level use tmpl src \
             fd00:190::1 dst fd00:191::1 proto esp spi 0x00000002 mode tunnel"
        );
        assert_eq!(
            p.id().argv().join(" "),
            "xfrm policy delete src fd00:190::1 dst fd00:191::1 dir in"
        );
    }
}
