//! Provisioning benchmark: time from start to "every agent answered hello" for N hosts,
//! each with one interface on one L2 network, then teardown. Used by bench/podman.sh.
//!
//! `provision_bench podman N [URI] [IMAGE]` or `provision_bench netns N [AGENT_BIN]`.
//! Prints one JSON line: {"mode","hosts","ready_s","teardown_s"}.
//!
//! `provision_bench engine N [URI] [IMAGE]`: the engine's own floor, side by side: N containers
//! created and started at once on one internal network through the plain API, `sleep infinity`,
//! no agent, no attach, no inspect; "ready" is when every start call has returned.

use lnst_runner::provision::netns::NetnsProvisioner;
use lnst_runner::provision::podman::{PodmanOptions, PodmanProvisioner};
use lnst_runner::provision::Provisioner;
use lnst_runner::requirements::{HostReq, Requirements};
use lnst_runner::session::{AgentClient, ClientOptions};
use std::collections::BTreeMap;
use std::time::Instant;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // RUST_LOG=lnst_runner=debug shows each step with its time.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let mode = args.get(1).map(String::as_str).unwrap_or("podman");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    if mode == "engine" {
        let uri = args
            .get(3)
            .cloned()
            .unwrap_or_else(|| "unix:///run/podman/podman.sock".into());
        let image = args.get(4).cloned().unwrap_or_else(|| "lnst-agent".into());
        return engine_floor(n, &uri, &image).await;
    }
    let run_id = lnst_runner::runner::new_run_id();
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let mut reqs = Requirements::default();
    for i in 1..=n {
        reqs.hosts.insert(
            format!("host{i:02}"),
            HostReq::default().with_interface("eth0", "net1", BTreeMap::new()),
        );
    }
    let mut prov: Box<dyn Provisioner> = match mode {
        "netns" => {
            let agent = args
                .get(3)
                .cloned()
                .unwrap_or_else(|| "target/release/lnst-agent".into());
            Box::new(
                NetnsProvisioner::new(&run_id, vec![agent.into(), "--stdio".into()])
                    .with_agent_secret(&secret),
            )
        }
        _ => {
            let uri = args
                .get(3)
                .cloned()
                .unwrap_or_else(|| "unix:///run/podman/podman.sock".into());
            let image = args.get(4).cloned().unwrap_or_else(|| "lnst-agent".into());
            let p = PodmanProvisioner::connect(PodmanOptions {
                agent_secret: Some(secret.clone()),
                ..PodmanOptions::new(uri, image, &run_id)
            })?;
            p.preflight().await?;
            Box::new(p)
        }
    };
    let t0 = Instant::now();
    let result = async {
        let eps = prov.provision(&reqs).await?;
        // As the runner does: every agent proves the run's secret; all handshakes at once.
        let clients = futures::future::join_all(eps.into_iter().map(|ep| {
            let secret = secret.clone();
            async move {
                AgentClient::connect(
                    &ep.host_id,
                    ep.transport,
                    Some(secret.as_bytes()),
                    ClientOptions::default(),
                )
                .await
            }
        }))
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
        let ready = t0.elapsed().as_secs_f64();
        for c in &clients {
            let _ = c.bye().await;
        }
        anyhow::Ok(ready)
    }
    .await;
    let t1 = Instant::now();
    let td = prov.teardown().await;
    let teardown = t1.elapsed().as_secs_f64();
    let ready = result?;
    td?;
    println!(
        "{}",
        serde_json::json!({"mode": mode, "hosts": n, "ready_s": ready, "teardown_s": teardown})
    );
    Ok(())
}

/// Create and start `n` plain containers on one fresh internal network, all at once, and time
/// it; then remove everything (timed as teardown).
async fn engine_floor(n: usize, uri: &str, image: &str) -> anyhow::Result<()> {
    use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest};
    use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
    let path = uri.strip_prefix("unix://").unwrap_or(uri);
    let docker = bollard::Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)?;
    let tag = lnst_runner::runner::new_run_id();
    let net = format!("lnst-floor-{tag}");
    let labels =
        std::collections::HashMap::from([("lnst-runner.run".to_string(), format!("floor-{tag}"))]);
    docker
        .create_network(NetworkCreateRequest {
            name: net.clone(),
            internal: Some(true),
            ipam: Some(bollard::models::Ipam {
                config: Some(vec![bollard::models::IpamConfig {
                    subnet: Some("198.19.250.0/24".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            labels: Some(labels.clone()),
            ..Default::default()
        })
        .await?;
    let names: Vec<String> = (1..=n)
        .map(|i| format!("lnst-floor-{tag}-{i:02}"))
        .collect();
    let t0 = Instant::now();
    let started = futures::future::join_all(names.iter().map(|name| {
        let docker = docker.clone();
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(vec!["sleep".into(), "infinity".into()]),
            labels: Some(labels.clone()),
            host_config: Some(HostConfig {
                network_mode: Some(net.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        async move {
            docker
                .create_container(
                    Some(CreateContainerOptions {
                        name: Some(name.clone()),
                        ..Default::default()
                    }),
                    body,
                )
                .await?;
            docker.start_container(name, None).await
        }
    }))
    .await;
    let ready = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let removed = futures::future::join_all(names.iter().map(|name| {
        let docker = docker.clone();
        async move {
            let opts = RemoveContainerOptions {
                force: true,
                ..Default::default()
            };
            docker.remove_container(name, Some(opts)).await
        }
    }))
    .await;
    let net_removed = docker.remove_network(&net).await;
    let teardown = t1.elapsed().as_secs_f64();
    started.into_iter().collect::<Result<Vec<_>, _>>()?;
    removed.into_iter().collect::<Result<Vec<_>, _>>()?;
    net_removed?;
    println!(
        "{}",
        serde_json::json!({"mode": "engine", "hosts": n, "ready_s": ready, "teardown_s": teardown})
    );
    Ok(())
}
