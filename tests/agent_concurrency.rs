//! One controller's requests run concurrently in the agent (the runner waits for DAD on all
//! devices at once, configures hosts in lanes): requests that dump netlink tables at the same
//! time must each get their answer. The kernel runs one dump per netlink socket at a time and
//! answers a second dump started while the first is unfinished with EBUSY; a dump is left
//! unfinished when it does not fit in one message batch, so the namespace here has enough
//! links and addresses for several batches.

mod common;

use common::agent_ns::Netns;
use common::{is_root, require};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_that_dump_all_succeed() {
    if !require(is_root(), "needs root (network namespaces)") {
        return;
    }
    let ns = Netns::new(format!("lnst-conc-{}", std::process::id()));
    for i in 0..40 {
        ns.ip(&[
            "link",
            "add",
            &format!("a{i}"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("b{i}"),
        ])
        .unwrap();
        ns.ip(&[
            "addr",
            "add",
            &format!("fd00:77:{i}::1/64"),
            "dev",
            &format!("a{i}"),
        ])
        .unwrap();
        ns.ip(&[
            "addr",
            "add",
            &format!("198.18.77.{i}/32"),
            "dev",
            &format!("a{i}"),
        ])
        .unwrap();
    }
    let (_child, c) = ns.agent("host1").await;
    let mut calls = Vec::new();
    for i in 0..16 {
        let c = c.clone();
        calls.push(tokio::spawn(async move {
            let list = c.list_interfaces().await.map(|l| l.len());
            // An address on a down link stays tentative no matter how long one waits: the
            // wait fails, but with the timeout, never with EBUSY.
            let dad = c
                .wait_dad(&format!("a{i}"), Duration::from_millis(100))
                .await;
            (list, dad)
        }));
    }
    for call in calls {
        let (list, dad) = call.await.unwrap();
        let n = list.unwrap_or_else(|e| panic!("list_interfaces: {e}"));
        assert!(n >= 81, "{n} interfaces listed");
        if let Err(e) = dad {
            let text = e.to_string();
            assert!(text.contains("still tentative"), "{text}");
        }
    }
}
