//! Two namespaces playing lab machines for pool-XML tests.
use super::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `<security>` naming a secret file.
pub fn password_file_security(secret_file: &Path) -> String {
    format!(
        "<security>\n        <auth_type>password</auth_type>\n        <auth_password_file>{}</auth_password_file>\n    </security>",
        secret_file.display()
    )
}

/// `<security>` with the secret inline.
pub fn password_security(secret: &str) -> String {
    format!(
        "<security>\n        <auth_type>password</auth_type>\n        <auth_password>{secret}</auth_password>\n    </security>"
    )
}

/// Two "lab machines" with agents listening on their control addresses.
pub struct PoolLab {
    pub bed: Testbed,
    pub ctl: [String; 2],
    pub macs: [String; 2],
}

fn wait_port(addr: &str, ns: &str, br: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        match std::net::TcpStream::connect_timeout(
            &addr.parse().unwrap(),
            Duration::from_millis(500),
        ) {
            Ok(_) => return,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Say why: the route the root namespace takes, the bridge, and the agent's side.
    let ip = addr.split(':').next().unwrap_or(addr);
    let diag = [
        vec!["ip", "route", "get", ip],
        vec!["ip", "-br", "addr"],
        vec!["bridge", "link", "show", "master", br],
        vec!["ip", "-n", ns, "-br", "addr"],
        vec!["ip", "netns", "exec", ns, "ss", "-ltnp"],
        vec!["ip", "neigh", "show", ip],
        vec!["iptables", "-S"],
    ]
    .iter()
    .map(|a| {
        let o = Command::new(a[0]).args(&a[1..]).output();
        let text = o
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_else(|e| e.to_string());
        format!("$ {}\n{text}", a.join(" "))
    })
    .collect::<Vec<_>>()
    .join("\n");
    panic!("agent at {addr} never accepted a connection (last error: {last})\n{diag}");
}

pub fn build_lab(tag: &str, secret_file: &Path) -> PoolLab {
    let mut bed = Testbed::default();
    let ns = [format!("lnstt-{tag}-a"), format!("lnstt-{tag}-b")];
    let br = format!("lnstc{tag}br");
    for n in &ns {
        bed.add_ns(n);
    }
    // Control bridge in the root namespace.
    let _ = Command::new("ip").args(["link", "del", &br]).output();
    sh(&["ip", "link", "add", &br, "type", "bridge"]);
    bed.root_links.push(br.clone());
    sh(&["ip", "addr", "add", "198.18.0.254/24", "dev", &br]);
    sh(&["ip", "link", "set", &br, "up"]);
    let ctl = ["198.18.0.1".to_string(), "198.18.0.2".to_string()];
    for (i, n) in ns.iter().enumerate() {
        let root_end = format!("lnstc{tag}{i}");
        let _ = Command::new("ip").args(["link", "del", &root_end]).output();
        sh(&[
            "ip", "link", "add", &root_end, "type", "veth", "peer", "name", "ctl0", "netns", n,
        ]);
        bed.root_links.push(root_end.clone());
        sh(&["ip", "link", "set", &root_end, "master", &br, "up"]);
        sh(&[
            "ip",
            "-n",
            n,
            "addr",
            "add",
            &format!("{}/24", ctl[i]),
            "dev",
            "ctl0",
        ]);
        sh(&["ip", "-n", n, "link", "set", "ctl0", "up"]);
    }
    // The test link between the two machines.
    sh(&[
        "ip", "-n", &ns[0], "link", "add", "test0", "type", "veth", "peer", "name", "test0",
        "netns", &ns[1],
    ]);
    let macs = [mac_of(&ns[0], "test0"), mac_of(&ns[1], "test0")];
    for (i, n) in ns.iter().enumerate() {
        let child = Command::new("ip")
            .args(["netns", "exec", n])
            .arg(agent_bin())
            .args(["--port", "9999", "--bind", &ctl[i], "--secret-file"])
            .arg(secret_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        bed.children.push(child);
    }
    for (i, a) in ctl.iter().enumerate() {
        wait_port(&format!("{a}:9999"), &ns[i], &br);
    }
    PoolLab { bed, ctl, macs }
}

pub fn write_pool(dir: &Path, lab: &PoolLab, security: &str) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, name) in ["machine1", "machine2"].iter().enumerate() {
        let xml = format!(
            r#"<agentmachine>
    <params>
        <param name="hostname" value="{}"/>
        <param name="rpc_port" value="9999"/>
    </params>
    <interfaces>
        <eth id="test0" label="lab_net">
            <params>
                <param name="hwaddr" value="{}"/>
                <param name="driver" value="veth"/>
            </params>
        </eth>
    </interfaces>
    {}
</agentmachine>
"#,
            lab.ctl[i],
            lab.macs[i].to_uppercase(),
            security
        );
        std::fs::write(dir.join(format!("{name}.xml")), xml).unwrap();
    }
}
