//! PingFloodRecipe (upstream `ENRT/PingFloodRecipe.py`): one ping from host1.eth0 to
//! host2.eth0, judged by the rate evaluator. Not an ENRT recipe upstream (it derives from
//! `PingTestAndEvaluate` only): no parameter summary, sub-configurations or perf phase.

use super::common::config::{self, TestWide};
use super::common::ping::{ping_test_and_evaluate, PingConf, PingEvaluator};
use super::context::{Dev, RecipeError, RunContext};
use super::enrt::params::U32_MAX;
use super::reqs::two_hosts_one_nic;
use super::typed::IfAddr;
use super::Recipe;
use crate::param_set;
use crate::requirements::Requirements;
use crate::schema::SchemaError;
use std::collections::BTreeMap;

param_set! {
    /// PingFloodRecipe's parameters, in upstream's order.
    pub struct PingFloodRecipe {
        param driver: Option<String> = opt(Str, "match only NICs with this driver"),
        param src_addr: IfAddr = dflt(Str, "192.168.1.1/24", "address of host1.eth0, the ping source"),
        param dst_addr: IfAddr = dflt(
            Str,
            "192.168.1.2/24",
            "address of host2.eth0, the ping destination",
        ),
        param count: u32 = dflt(Int, 100i64, "ping -c").range(1.0, U32_MAX),
        param interval: f64 = dflt(Float, 0.2, "ping -i, seconds").range(0.001, 86_400.0),
        param size: Option<u32> = opt(Int, "ping -s, payload bytes").range(0.0, 65_535.0),
        param mtu: Option<u32> = opt(Int, "MTU set on host1.eth0 and host2.eth0").range(68.0, 65_535.0),
    }
}

impl PingFloodRecipe {
    fn nics(&self) -> (Requirements, [Dev; 2]) {
        let mut dev = BTreeMap::new();
        if let Some(d) = &self.driver {
            dev.insert("driver".to_string(), d.clone());
        }
        two_hosts_one_nic(&dev)
    }
}

impl Recipe for PingFloodRecipe {
    const NAME: &'static str = "PingFloodRecipe";
    const DOC: &'static str =
        "one ping test between one NIC on each of two hosts, judged by its rate";

    /// The two addresses must be of one IP version (upstream would ping and fail).
    fn validate(&self) -> Result<(), SchemaError> {
        if self.src_addr.version() != self.dst_addr.version() {
            return Err(SchemaError::Type {
                name: "dst_addr".into(),
                message: format!(
                    "{} is {}, but src_addr {} is {}",
                    self.dst_addr,
                    self.dst_addr.version(),
                    self.src_addr,
                    self.src_addr.version()
                ),
            });
        }
        Ok(())
    }

    fn requirements(&self) -> Requirements {
        self.nics().0
    }

    fn layout() -> Requirements {
        two_hosts_one_nic(&BTreeMap::new()).0
    }

    async fn run(&self, ctx: &mut RunContext) -> Result<(), RecipeError> {
        let [h1, h2] = self.nics().1;
        ctx.progress("configuring the test network");
        let mut tw = TestWide::new();
        tw.address(&h1, self.src_addr).address(&h2, self.dst_addr);
        if let Some(mtu) = self.mtu {
            tw.mtu(&h1, mtu).mtu(&h2, mtu);
        }
        tw.up(&h1).up(&h2);
        let configured = config::apply(ctx, &tw.steps).await?;
        let first = |dev: &Dev| {
            configured
                .ips(dev, None)
                .first()
                .copied()
                .ok_or_else(|| RecipeError::Run(format!("{dev} has no address to ping with")))
        };
        let conf = PingConf {
            client: h1.host.clone(),
            src: first(&h1)?,
            dst_host: h2.host.clone(),
            dst: first(&h2)?,
            count: self.count,
            interval: self.interval,
            size: self.size,
            evaluators: vec![PingEvaluator::Rate { min_rate: 50 }],
        };
        ping_test_and_evaluate(ctx, &[conf], "").await
    }
}
