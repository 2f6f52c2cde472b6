//! IpsecEspAeadRecipe (upstream `ENRT/IpsecEspAeadRecipe.py`): ESP with the AEAD algorithm
//! `rfc4106(gcm(aes))` (160-bit key, 96-bit ICV) between host1.eth0 and host2.eth0, in
//! transport or tunnel mode, one sub-configuration per IP version; each ping host1 → host2 is
//! watched on host2.eth0 for the replies' ESP packets (`ESP(spi=<host2's second SPI>`, at
//! least one per ping sent).
//!
//! ```text
//!   host1.eth0 (net1 .1, ::1) ═══ host routes ═══ (net2 .1, ::1) host2.eth0
//!     SAs: host1→host2 spi_values[0], host2→host1 spi_values[1] (the same on both hosts)
//! ```
//!
//! Deliberate differences (docs/UPSTREAM-DIFFERENCES.md): the key is random per
//! sub-configuration, never logged (upstream: the constant `0x0b…0b`); the SPIs are the
//! parameters `spi_values`/`spi_values_host2`; removal deletes only our states and policies
//! (upstream flushes all of both hosts'); the pings keep the standard evaluators (upstream has
//! none, so an IPsec path that drops everything passed there); `ipsec_mode` is a choice of
//! `transport`/`tunnel` (upstream passes any text to `mode`); `ipsec_offload_modprobe=True`
//! fails the test as unsupported (the agent loads no offload modules on request).

use super::common::config::Configured;
use super::common::packet_assert::PacketAssertConf;
use super::common::ping::PingConf;
use super::context::{RecipeError, RunContext};
use super::enrt::params::{BaremetalEnrtParams, CommonHwParams, DeviceReqParams};
use super::ipsec::{self, IpsecNets, SPIS2};
use crate::param_set;
use crate::protocol::{
    CaptureFilter, XfrmAlgo, XfrmDir, XfrmPolicy, XfrmProto, XfrmState, XfrmTmpl,
};

/// Upstream's algorithm: (name, key bits, ICV bits).
pub const ALGORITHM: (&str, u32, u32) = ("rfc4106(gcm(aes))", 160, 96);

param_set! {
    /// IpsecEspAeadRecipe's parameters.
    pub struct IpsecEspAeadRecipe {
        group nets: IpsecNets,
        param ipsec_offload_modprobe: bool = dflt(
            Bool,
            false,
            "load esp4_offload/esp6_offload first (not supported here: the test FAILs)",
        ),
        param spi_values: Vec<String> = dflt(
            List(Some(Box::new(Str))),
            crate::params::Value::List(vec!["0x00001000".into(), "0x00001001".into()]),
            "SPIs of the host1→host2 and host2→host1 SAs",
        )
        .check(SPIS2),
        param spi_values_host2: Option<Vec<String>> = opt(
            List(Some(Box::new(Str))),
            "host2's SPIs (default: spi_values); different ones break the SAs on purpose",
        )
        .check(SPIS2),
        group base: BaremetalEnrtParams,
        group reqs: DeviceReqParams,
        group hw: CommonHwParams,
    }
}

/// The parameters this recipe has beyond upstream's.
pub const ADDED: [&str; 2] = ["spi_values", "spi_values_host2"];

impl IpsecEspAeadRecipe {
    /// host1's and host2's SPIs.
    fn spis(&self) -> Result<[Vec<u32>; 2], RecipeError> {
        ipsec::host_spis(&self.spi_values, self.spi_values_host2.as_deref(), 2)
    }

    /// Before anything is configured: no ESP offload modules, valid SPIs.
    fn check(&self) -> Result<(), RecipeError> {
        if self.ipsec_offload_modprobe {
            return Err(RecipeError::Unsupported(
                "ipsec_offload_modprobe=True: the agents load no ESP offload modules on request"
                    .into(),
            ));
        }
        self.spis().map(drop)
    }

    /// XfrmTools' `configure_ipsec_esp_aead` on one host (`i` 0: host1): the same two SAs on
    /// both, with selectors; the policies of host1 send ip1→ip2 out, of host2 in.
    pub fn host_config(
        &self,
        i: usize,
        ips: [std::net::IpAddr; 2],
        spis: &[u32],
        key: &crate::protocol::Secret,
    ) -> (Vec<XfrmState>, Vec<XfrmPolicy>) {
        let [ip1, ip2] = ips;
        let mode = self.nets.mode();
        let (name, _, icv) = ALGORITHM;
        let sa = |src, dst, spi| XfrmState {
            src,
            dst,
            proto: XfrmProto::Esp,
            spi,
            mode,
            algo: XfrmAlgo::Aead {
                name: name.to_string(),
                key: key.clone(),
                icv_bits: icv,
            },
            sel: Some((src, dst)),
        };
        let policy = |src, dst, dir| XfrmPolicy {
            src,
            dst,
            dir,
            tmpls: vec![XfrmTmpl {
                src,
                dst,
                proto: XfrmProto::Esp,
                spi: None,
                mode,
                optional: false,
            }],
        };
        // Upstream's loop: (m1, in1=ip2, in2=ip1), (m2, in1=ip1, in2=ip2).
        let (in1, in2) = if i == 0 { (ip2, ip1) } else { (ip1, ip2) };
        (
            vec![sa(ip2, ip1, spis[1]), sa(ip1, ip2, spis[0])],
            vec![
                policy(in1, in2, XfrmDir::In),
                policy(in2, in1, XfrmDir::Out),
            ],
        )
    }
}

ipsec::ipsec_recipe!(
    IpsecEspAeadRecipe,
    "ping and flows over IPsec ESP (rfc4106(gcm(aes))) between two hosts, ESP checked on host2",
    {
        fn variants(&self) -> usize {
            self.base.enrt.ip_versions.len()
        }

        async fn apply_variant(
            &self,
            ctx: &mut RunContext,
            config: &Configured,
            v: usize,
        ) -> Result<(Option<Configured>, Vec<String>), RecipeError> {
            let nics = self.nics();
            let ipv = self.base.enrt.ip_versions[v];
            let spis = self.spis()?;
            let (name, bits, icv) = ALGORITHM;
            let key = ipsec::random_key(bits);
            let ips = ipsec::apply(ctx, config, &nics, ipv, |i, addrs| {
                self.host_config(i, addrs, &spis[i], &key)
            })
            .await?;
            let desc = vec![format!(
                "Configured IPsec {} mode with {name} algorithm using key length of {bits} and \
                 icv length of {icv} between {} and {}",
                self.nets.ipsec_mode, ips[0].addr, ips[1].addr
            )];
            Ok((Some(ipsec::variant_config(&nics, ips)), desc))
        }

        fn packet_assert(&self, _config: &Configured, ping: &PingConf) -> Option<PacketAssertConf> {
            let n2 = ipsec::host1_pinging(self.nics(), ping)?;
            let spi = self.spis().ok()?[1][1];
            Some(PacketAssertConf {
                dev: n2,
                filter: CaptureFilter {
                    proto: Some(50),
                    src: Some(ping.dst.addr),
                    dst: Some(ping.src.addr),
                    udp_dport: None,
                },
                grep_for: vec![format!("ESP(spi={spi:#010x}")],
                p_min: u64::from(ping.count),
                p_max: None,
            })
        }
    }
);
