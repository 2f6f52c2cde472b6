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

use super::common::config::{Configured, TestWide};
use super::common::packet_assert::PacketAssertConf;
use super::common::ping::PingConf;
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::{BaremetalEnrtParams, CommonHwParams, DeviceReqParams, EnrtBase};
use super::enrt::{self, EnrtRecipe, HwConfig, SubConfigs};
use super::ipsec::{self, IpsecNets, SPIS2};
use super::reqs::simple_network_req;
use super::Recipe;
use crate::param_set;
use crate::protocol::{
    CaptureFilter, XfrmAlgo, XfrmDir, XfrmPolicy, XfrmProto, XfrmState, XfrmTmpl,
};
use crate::requirements::Requirements;

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
    fn nics(&self) -> [Dev; 2] {
        simple_network_req(&self.reqs).1
    }

    /// host1's and host2's SPIs.
    fn spis(&self) -> Result<[Vec<u32>; 2], RecipeError> {
        let one = ipsec::parse_spis("spi_values", &self.spi_values, 2)?;
        let two = match &self.spi_values_host2 {
            Some(s) => ipsec::parse_spis("spi_values_host2", s, 2)?,
            None => one.clone(),
        };
        Ok([one, two])
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

impl Recipe for IpsecEspAeadRecipe {
    const NAME: &'static str = "IpsecEspAeadRecipe";
    const DOC: &'static str =
        "ping and flows over IPsec ESP (rfc4106(gcm(aes))) between two hosts, ESP checked on host2";

    fn requirements(&self) -> Requirements {
        simple_network_req(&self.reqs).0
    }

    fn layout() -> Requirements {
        simple_network_req(&DeviceReqParams::NONE).0
    }

    async fn run(&self, ctx: &mut RunContext) -> Result<(), RecipeError> {
        if self.ipsec_offload_modprobe {
            return Err(RecipeError::Unsupported(
                "ipsec_offload_modprobe=True: the agents load no ESP offload modules on request"
                    .into(),
            ));
        }
        self.spis()?;
        enrt::run(self, ctx).await
    }

    fn kernel_modules(&self) -> super::HostModules {
        enrt::kernel_modules(self)
    }
}

impl EnrtRecipe for IpsecEspAeadRecipe {
    fn base(&self) -> EnrtBase<'_> {
        self.base.view()
    }

    fn test_wide_configuration(&self) -> Result<TestWide, RecipeError> {
        self.nets.test_wide(&self.nics())
    }

    fn pair(&self) -> Option<(Dev, Dev)> {
        let [a, b] = self.nics();
        Some((a, b))
    }

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
        let ips = ipsec::endpoints(config, &nics, ipv)?;
        let spis = self.spis()?;
        let (name, bits, icv) = ALGORITHM;
        let key = ipsec::random_key(bits);
        let addrs = [ips[0].addr, ips[1].addr];
        let per_host = [
            self.host_config(0, addrs, &spis[0], &key),
            self.host_config(1, addrs, &spis[1], &key),
        ];
        ipsec::configure(ctx, &nics, per_host).await?;
        let desc = vec![format!(
            "Configured IPsec {} mode with {name} algorithm using key length of {bits} and \
             icv length of {icv} between {} and {}",
            self.nets.ipsec_mode, ips[0].addr, ips[1].addr
        )];
        Ok((Some(ipsec::variant_config(&nics, ips)), desc))
    }

    fn packet_assert(&self, _config: &Configured, ping: &PingConf) -> Option<PacketAssertConf> {
        let [n1, n2] = self.nics();
        if ping.client != n1.host {
            return None;
        }
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

    fn sub_configurations(&self) -> SubConfigs<'_> {
        let nics = self.nics();
        SubConfigs {
            offloads: None,
            hw: Some(HwConfig {
                pause_frames_devs: Vec::new(),
                ..HwConfig::on(&self.hw, &nics)
            }),
        }
    }
}
