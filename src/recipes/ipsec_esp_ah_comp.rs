//! IpsecEspAhCompRecipe (upstream `ENRT/IpsecEspAhCompRecipe.py`): IPComp (deflate), ESP
//! (`enc` cipher) and AH (`auth` hash) together between host1.eth0 and host2.eth0, one
//! sub-configuration per IP version × cipher × hash. Each ping host1 → host2 is watched on
//! host2.eth0 for packets carrying both AH and ESP with the configured SPIs — at least twice
//! the ping count, requests and replies use the same SPIs — and is followed by a ping of size
//! 1500, which in tunnel mode is watched for `IPComp` (at least one per ping).
//!
//! SAs (the same on both hosts; `spi_values` s0..s3): IPComp host1→host2 s3 and host2→host1
//! s0, ESP s1 and AH s2 in both directions. Policies: host1 sends host1→host2 `out` and
//! takes host2→host1 `in`, host2 the reverse; templates comp (optional on `in`), esp, ah.
//!
//! Deliberate differences (docs/UPSTREAM-DIFFERENCES.md): random keys per
//! sub-configuration, never logged (upstream: `0x0b…0b`); the SPIs are the parameters
//! `spi_values`/`spi_values_host2`; removal deletes only our states and policies (upstream
//! flushes); both pings keep the standard evaluators and the size-1500 ping is evaluated in
//! transport mode too (upstream: no evaluators, the second ping is reported only in tunnel
//! mode); `ipsec_mode` is a choice of `transport`/`tunnel`.

use super::common::config::Configured;
use super::common::packet_assert::PacketAssertConf;
use super::common::ping::PingConf;
use super::context::{RecipeError, RunContext};
use super::enrt::params::{BaremetalEnrtParams, CommonHwParams, DeviceReqParams};
use super::ipsec::{self, AlgoBits, IpsecNets, ALGO_BITS, SPIS4};
use crate::param_set;
use crate::params::Value;
use crate::protocol::{
    CaptureFilter, XfrmAlgo, XfrmDir, XfrmMode, XfrmPolicy, XfrmProto, XfrmState, XfrmTmpl,
};
use std::net::IpAddr;

fn pairs(p: &[(&str, i64)]) -> Value {
    Value::List(
        p.iter()
            .map(|(n, b)| Value::Tuple(vec![Value::from(*n), Value::Int(*b)]))
            .collect(),
    )
}

param_set! {
    /// IpsecEspAhCompRecipe's parameters.
    pub struct IpsecEspAhCompRecipe {
        group nets: IpsecNets,
        param ciphers: Vec<AlgoBits> = dflt(
            Seq(Box::new(Any)),
            pairs(&[("aes", 128), ("aes", 256)]),
            "ESP ciphers with their key bits; one sub-configuration per cipher × hash",
        )
        .check(ALGO_BITS),
        param hashes: Vec<AlgoBits> = dflt(
            Seq(Box::new(Any)),
            pairs(&[("hmac(md5)", 128), ("sha256", 256)]),
            "AH hashes with their key bits",
        )
        .check(ALGO_BITS),
        param spi_values: Vec<String> = dflt(
            List(Some(Box::new(Str))),
            Value::List(
                ["0x00000001", "0x00000002", "0x00000003", "0x00000004"]
                    .map(Value::from)
                    .to_vec(),
            ),
            "SPIs: IPComp host2→host1, ESP, AH, IPComp host1→host2",
        )
        .check(SPIS4),
        param spi_values_host2: Option<Vec<String>> = opt(
            List(Some(Box::new(Str))),
            "host2's SPIs (default: spi_values); different ones break the SAs on purpose",
        )
        .check(SPIS4),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        group hw: CommonHwParams,
    }
}

/// The parameters this recipe has beyond upstream's.
pub const ADDED: [&str; 2] = ["spi_values", "spi_values_host2"];

/// One sub-configuration's algorithms and keys.
pub struct Keys {
    pub cipher: (String, crate::protocol::Secret),
    pub hash: (String, crate::protocol::Secret),
}

impl IpsecEspAhCompRecipe {
    fn spis(&self) -> Result<[Vec<u32>; 2], RecipeError> {
        ipsec::host_spis(&self.spi_values, self.spi_values_host2.as_deref(), 4)
    }

    /// Before anything is configured: valid SPIs.
    fn check(&self) -> Result<(), RecipeError> {
        self.spis().map(drop)
    }

    /// (IP version, cipher, hash) of variant `v`.
    fn variant(&self, v: usize) -> (super::typed::IpVersion, &AlgoBits, &AlgoBits) {
        let nh = self.hashes.len().max(1);
        let nc = self.ciphers.len().max(1);
        let (ipv, rest) = (v / (nc * nh), v % (nc * nh));
        (
            self.base.enrt.ip_versions[ipv],
            &self.ciphers[rest / nh],
            &self.hashes[rest % nh],
        )
    }

    /// XfrmTools' `configure_ipsec_esp_ah_comp` on one host (`i` 0: host1).
    pub fn host_config(
        &self,
        i: usize,
        [ip1, ip2]: [IpAddr; 2],
        s: &[u32],
        keys: &Keys,
    ) -> (Vec<XfrmState>, Vec<XfrmPolicy>) {
        let mode = self.nets.mode();
        let sa = |src, dst, proto, spi, algo| XfrmState {
            src,
            dst,
            proto,
            spi,
            mode,
            algo,
            sel: None,
        };
        let comp = || XfrmAlgo::Comp {
            name: "deflate".into(),
        };
        let enc = || XfrmAlgo::Enc {
            name: keys.cipher.0.clone(),
            key: keys.cipher.1.clone(),
        };
        let auth = || XfrmAlgo::Auth {
            name: keys.hash.0.clone(),
            key: keys.hash.1.clone(),
        };
        let tmpl = |src, dst, proto, spi, optional| XfrmTmpl {
            src,
            dst,
            proto,
            spi: Some(spi),
            mode,
            optional,
        };
        let policy = |src, dst, dir, comp_spi| XfrmPolicy {
            src,
            dst,
            dir,
            tmpls: vec![
                tmpl(src, dst, XfrmProto::Comp, comp_spi, dir == XfrmDir::In),
                tmpl(src, dst, XfrmProto::Esp, s[1], false),
                tmpl(src, dst, XfrmProto::Ah, s[2], false),
            ],
        };
        let (d1, d2) = if i == 0 {
            (XfrmDir::Out, XfrmDir::In)
        } else {
            (XfrmDir::In, XfrmDir::Out)
        };
        (
            vec![
                sa(ip1, ip2, XfrmProto::Comp, s[3], comp()),
                sa(ip2, ip1, XfrmProto::Comp, s[0], comp()),
                sa(ip1, ip2, XfrmProto::Esp, s[1], enc()),
                sa(ip2, ip1, XfrmProto::Esp, s[1], enc()),
                sa(ip1, ip2, XfrmProto::Ah, s[2], auth()),
                sa(ip2, ip1, XfrmProto::Ah, s[2], auth()),
            ],
            vec![policy(ip1, ip2, d1, s[3]), policy(ip2, ip1, d2, s[0])],
        )
    }
}

ipsec::ipsec_recipe!(
    IpsecEspAhCompRecipe,
    "ping and flows over IPComp + ESP + AH between two hosts, AH/ESP (and IPComp) checked on host2",
    {
        fn variants(&self) -> usize {
            self.base.enrt.ip_versions.len() * self.ciphers.len() * self.hashes.len()
        }

        async fn apply_variant(
            &self,
            ctx: &mut RunContext,
            config: &Configured,
            v: usize,
        ) -> Result<(Option<Configured>, Vec<String>), RecipeError> {
            let nics = self.nics();
            let (ipv, cipher, hash) = self.variant(v);
            let spis = self.spis()?;
            let keys = Keys {
                cipher: (cipher.name.clone(), ipsec::random_key(cipher.bits)),
                hash: (hash.name.clone(), ipsec::random_key(hash.bits)),
            };
            let ips = ipsec::apply(ctx, config, &nics, ipv, |i, addrs| {
                self.host_config(i, addrs, &spis[i], &keys)
            })
            .await?;
            let desc = vec![format!(
                "Configured IPsec {} mode: IPComp deflate, ESP {} ({} bits), AH {} ({} bits) \
                 between {} and {}",
                self.nets.ipsec_mode,
                cipher.name,
                cipher.bits,
                hash.name,
                hash.bits,
                ips[0].addr,
                ips[1].addr
            )];
            Ok((Some(ipsec::variant_config(&nics, ips)), desc))
        }

        fn packet_assert(&self, _config: &Configured, ping: &PingConf) -> Option<PacketAssertConf> {
            let n2 = ipsec::host1_pinging(self.nics(), ping)?;
            let s = self.spis().ok()?;
            // Both directions (upstream's filter `ah`): every packet of the family is captured
            // and the lines with AH and ESP of our SPIs counted.
            Some(PacketAssertConf {
                dev: n2,
                filter: CaptureFilter::default(),
                grep_for: vec![
                    format!("AH(spi={:#010x}", s[0][2]),
                    format!("ESP(spi={:#010x}", s[0][1]),
                ],
                p_min: 2 * u64::from(ping.count),
                p_max: None,
            })
        }

        fn extra_pings(
            &self,
            _config: &Configured,
            ping: &PingConf,
        ) -> Vec<(PingConf, Option<PacketAssertConf>)> {
            let Some(n2) = ipsec::host1_pinging(self.nics(), ping) else {
                return Vec::new();
            };
            let big = PingConf {
                size: Some(1500),
                ..ping.clone()
            };
            let assert = (self.nets.mode() == XfrmMode::Tunnel).then(|| PacketAssertConf {
                dev: n2,
                filter: CaptureFilter::default(),
                grep_for: vec!["IPComp".into()],
                p_min: u64::from(ping.count),
                p_max: None,
            });
            vec![(big, assert)]
        }
    }
);
