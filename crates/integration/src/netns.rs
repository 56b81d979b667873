//! Machines for cluster fault tests, made of Linux network namespaces: one namespace per
//! node with its own address, all plugged into a bridge in a hub namespace, and a link
//! from the test's own namespace to that bridge so that the test's clients reach every
//! node. A test cuts a node off (its link down) and heals it, and everything is torn
//! down when the `Network` is dropped. (Packet loss with `tc netem` needs the kernel's
//! sch_netem, which this CI machine's kernel lacks; pauses are SIGSTOP, by the test.) Needs root (CI runs as root);
//! when namespaces cannot be made, [`Network::create`] says why, and the test fails.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};

/// Networks made by this process, so that two at once get their own subnets.
static NETWORKS: AtomicU8 = AtomicU8::new(0);

pub struct Network {
    prefix: String,
    hub: String,
    nodes: Vec<String>,
    /// The subnet's first three octets.
    subnet: [u8; 3],
    /// The test side's interface in its own namespace.
    client_link: String,
}

fn run(args: &[&str]) -> Result<(), String> {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args[0]))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Network {
    /// Makes `count` node namespaces on one bridge, and the test's link to it.
    pub fn create(count: usize) -> Result<Network, String> {
        let n = NETWORKS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let prefix = format!("wf{}x{n}", pid % 100_000);
        let subnet = [10, 100 + (pid % 100) as u8, n];
        let mut network = Network {
            hub: format!("{prefix}h"),
            nodes: (0..count).map(|i| format!("{prefix}n{i}")).collect(),
            client_link: format!("{prefix}c"),
            prefix,
            subnet,
        };
        network.build().map_err(|e| {
            format!(
                "cannot make the network namespaces these cluster tests need ({e}); they run \
                 as root with iproute2 (ip, tc): run them as root, as CI does"
            )
        })?;
        Ok(network)
    }

    fn build(&mut self) -> Result<(), String> {
        let hub = self.hub.clone();
        run(&["ip", "netns", "add", &hub])?;
        run(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &hub, "link", "set", "br0", "up"])?;
        for (i, ns) in self.nodes.clone().iter().enumerate() {
            let port = format!("p{i}");
            run(&["ip", "netns", "add", ns])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            run(&[
                "ip", "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ])?;
            run(&[
                "ip", "-n", &hub, "link", "set", &port, "master", "br0", "up",
            ])?;
            let address = format!("{}/24", self.address(i));
            run(&["ip", "-n", ns, "addr", "add", &address, "dev", "eth0"])?;
            run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
        }
        // The test's own link: one end here, the other on the bridge.
        let link = self.client_link.clone();
        run(&[
            "ip", "link", "add", &link, "type", "veth", "peer", "name", "pc", "netns", &hub,
        ])?;
        run(&["ip", "-n", &hub, "link", "set", "pc", "master", "br0", "up"])?;
        let client = format!("{}/24", self.client_address());
        run(&["ip", "addr", "add", &client, "dev", &link])?;
        run(&["ip", "link", "set", &link, "up"])?;
        Ok(())
    }

    /// Node `i`'s address.
    pub fn address(&self, i: usize) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, i as u8 + 1)
    }

    /// The test's address on the nodes' network.
    pub fn client_address(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 254)
    }

    pub fn namespace(&self, i: usize) -> &str {
        &self.nodes[i]
    }

    /// A command that runs `program` inside node `i`'s namespace (`ip netns exec` execs
    /// it: the child's pid is the program's, for signals).
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.nodes[i], program]);
        command
    }

    /// Cuts node `i` off from every other node and from the test (its link goes down).
    pub fn cut(&self, i: usize) {
        run(&[
            "ip",
            "-n",
            &self.hub,
            "link",
            "set",
            &format!("p{i}"),
            "down",
        ])
        .expect("a link goes down");
    }

    /// Plugs node `i` back in.
    pub fn heal(&self, i: usize) {
        run(&["ip", "-n", &self.hub, "link", "set", &format!("p{i}"), "up"])
            .expect("a link comes up");
    }

    /// Cuts node `i` off from the other nodes only: the test's clients still reach it
    /// (the routes between it and each other node lead nowhere, both ways).
    pub fn isolate(&self, i: usize) {
        self.blackholes(i, "add");
    }

    /// Undoes [`Network::isolate`].
    pub fn rejoin(&self, i: usize) {
        self.blackholes(i, "del");
    }

    fn blackholes(&self, i: usize, action: &str) {
        for j in (0..self.nodes.len()).filter(|j| *j != i) {
            for (from, to) in [(i, j), (j, i)] {
                let target = format!("{}/32", self.address(to));
                run(&[
                    "ip",
                    "-n",
                    &self.nodes[from],
                    "route",
                    action,
                    "blackhole",
                    &target,
                ])
                .expect("a blackhole route changes");
            }
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and so their peers.
        for ns in &self.nodes {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = run(&["ip", "netns", "del", &self.hub]);
        let _ = run(&["ip", "link", "del", &self.client_link]);
    }
}
