//! A RabbitMQ cluster of three nodes on this machine, for failover tests: three more
//! `rabbitmq-server` processes beside the default broker (which is never touched), on
//! free ports, with their own cookie, data and config in a temporary directory, joined
//! into one cluster. Dropping it kills every node and deletes the directory, so a failed
//! test leaves nothing running.
//!
//! Starting three Erlang VMs takes seconds each on a busy machine: they boot together,
//! and every wait is a polled condition under [`START_DEADLINE`].

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

/// How long a node may take to boot or rejoin, and any `rabbitmqctl` call to answer.
const START_DEADLINE: Duration = Duration::from_secs(180);

/// The user the cluster's nodes are created with (its password is made per cluster).
const USER: &str = "hoox";

/// One node of the cluster.
pub struct Node {
    /// The Erlang node name, `hoox-<id>-<letter>@localhost`.
    pub name: String,
    /// Its AMQP port on 127.0.0.1.
    pub port: u16,
    /// The `rabbitmq-server` process, leader of its own process group; `None` once killed.
    process: Option<Child>,
}

/// Three joined RabbitMQ nodes.
pub struct Cluster {
    dir: PathBuf,
    password: String,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts three nodes, joins the second and third to the first, and waits until all
    /// three run as one cluster.
    pub async fn start() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let dir = std::env::temp_dir().join(format!("hoox-cluster-{id}"));
        std::fs::create_dir_all(&dir).expect("cluster directory");
        let mut cluster = Self {
            dir,
            password: uuid::Uuid::new_v4().simple().to_string(),
            nodes: Vec::new(),
        };
        cluster.write_shared_files();
        for letter in ["a", "b", "c"] {
            let node = cluster.spawn(&format!("hoox-{id}-{letter}@localhost"));
            cluster.nodes.push(node);
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_until_booted(i).await;
        }
        let first = cluster.nodes[0].name.clone();
        // One join at a time: concurrent joins race on the cluster's membership.
        for node in cluster.names().into_iter().skip(1) {
            cluster.ctl(&node, &["stop_app"]).await;
            cluster.ctl(&node, &["join_cluster", &first]).await;
            cluster.ctl(&node, &["start_app"]).await;
            cluster.ctl(&node, &["await_startup"]).await;
        }
        let status = cluster.ctl_json(&first, &["cluster_status"]).await;
        let mut running: Vec<String> = serde_json::from_value(status["running_nodes"].clone())
            .expect("cluster_status lists running nodes");
        running.sort();
        assert_eq!(
            running,
            cluster.names(),
            "all three nodes run as one cluster"
        );
        cluster
    }

    /// The node names, in order.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("{name} is not a node of this cluster"))
    }

    /// The URL of one node.
    pub fn node_url(&self, name: &str) -> String {
        let port = self.node(name).port;
        format!("amqp://{USER}:{}@127.0.0.1:{port}/%2f", self.password)
    }

    /// `AMQP_URL` for the cluster: every node's URL, comma-separated, in node order.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| self.node_url(&n.name))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The leader and the members of quorum queue `queue`, as a surviving node sees them.
    pub async fn queue_replicas(&self, queue: &str) -> (String, Vec<String>) {
        let queues = self
            .ctl_json(
                self.any_running(),
                &["list_queues", "name", "leader", "members"],
            )
            .await;
        let entry = queues
            .as_array()
            .and_then(|qs| qs.iter().find(|q| q["name"] == queue))
            .unwrap_or_else(|| panic!("{queue} is not declared: {queues}"));
        let leader = entry["leader"].as_str().unwrap_or_default().to_owned();
        let mut members: Vec<String> =
            serde_json::from_value(entry["members"].clone()).expect("members are node names");
        members.sort();
        (leader, members)
    }

    /// The client connections, as (connection name, the node's AMQP port), across the
    /// nodes still running.
    pub async fn connections(&self) -> Vec<(String, u16)> {
        let listed = self
            .ctl_json(
                self.any_running(),
                &["list_connections", "client_properties", "port"],
            )
            .await;
        listed
            .as_array()
            .expect("a list of connections")
            .iter()
            .map(|c| {
                let port = c["port"].as_u64().expect("a port");
                (
                    connection_name(&c["client_properties"]),
                    u16::try_from(port).expect("a port"),
                )
            })
            .collect()
    }

    /// Kills node `name` outright (SIGKILL to its whole process group), as a crash or a
    /// power cut would: no graceful handover of anything it leads.
    pub fn kill(&mut self, name: &str) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .expect("a node of this cluster");
        if let Some(mut process) = node.process.take() {
            kill_group(&mut process);
        }
    }

    fn any_running(&self) -> &str {
        self.nodes
            .iter()
            .find(|n| n.process.is_some())
            .map(|n| n.name.as_str())
            .expect("a running node")
    }

    /// The Erlang cookie, and empty environment, plugin and advanced-config files, so
    /// nothing of the machine's own RabbitMQ setup (its node name, its listener on 5672,
    /// its plugins' ports) reaches these nodes.
    fn write_shared_files(&self) {
        let cookie = self.dir.join(".erlang.cookie");
        std::fs::write(&cookie, uuid::Uuid::new_v4().simple().to_string()).expect("cookie");
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))
            .expect("cookie readable by its owner only, as Erlang requires");
        for empty in ["rabbitmq-env.conf", "enabled_plugins"] {
            std::fs::write(self.dir.join(empty), "").expect("empty file");
        }
    }

    fn spawn(&self, name: &str) -> Node {
        let port = free_port();
        let letter = name.split('@').next().unwrap_or(name);
        let base = self.dir.join(letter);
        std::fs::create_dir_all(&base).expect("node directory");
        let config = base.join("rabbitmq.conf");
        std::fs::write(
            &config,
            format!(
                "listeners.tcp.1 = 127.0.0.1:{port}\ndefault_user = {USER}\ndefault_pass = {}\n",
                self.password
            ),
        )
        .expect("node config");
        let output = std::fs::File::create(base.join("output.log")).expect("output log");
        let mut command = std::process::Command::new(script("rabbitmq-server"));
        self.environment(&mut command);
        command
            .env("RABBITMQ_NODENAME", name)
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_CONFIG_FILE", &config)
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                base.join("advanced.config"),
            )
            .env("RABBITMQ_MNESIA_BASE", base.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", base.join("log"))
            .env("RABBITMQ_PID_FILE", base.join("pid"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.join("enabled_plugins"),
            )
            // Node-to-node traffic on loopback only.
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("output log"))
            .stderr(output)
            // Its own group: the script, the Erlang VM and its helpers die together.
            .process_group(0);
        let process = command.spawn().expect("rabbitmq-server starts");
        Node {
            name: name.to_owned(),
            port,
            process: Some(process),
        }
    }

    /// What every RabbitMQ script of this cluster runs with: its home (the cookie) and
    /// an empty environment file in place of the machine's.
    fn environment(&self, command: &mut std::process::Command) {
        command
            .env("HOME", &self.dir)
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"));
    }

    /// Waits until node `i` takes AMQP connections, then until RabbitMQ says it has
    /// booted; fails at once, with its log, if it exits.
    async fn wait_until_booted(&mut self, i: usize) {
        let deadline = Instant::now() + START_DEADLINE;
        let (name, port) = (self.nodes[i].name.clone(), self.nodes[i].port);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            let process = self.nodes[i].process.as_mut().expect("a started node");
            if let Some(status) = process.try_wait().expect("node status") {
                panic!(
                    "{name} exited ({status}) while booting:\n{}",
                    self.log(&name)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not boot in time:\n{}",
                self.log(&name)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.ctl(&name, &["await_startup"]).await;
    }

    /// The end of a node's logs, for a failure message.
    fn log(&self, name: &str) -> String {
        let letter = name.split('@').next().unwrap_or(name);
        let base = self.dir.join(letter);
        let mut text = std::fs::read_to_string(base.join("output.log")).unwrap_or_default();
        if let Ok(entries) = std::fs::read_dir(base.join("log")) {
            for entry in entries.flatten() {
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Runs `rabbitmqctl -n <node> <args>` and returns its output; fails the test if it
    /// fails or outlasts [`START_DEADLINE`].
    async fn ctl(&self, node: &str, args: &[&str]) -> String {
        let mut command = std::process::Command::new(script("rabbitmqctl"));
        self.environment(&mut command);
        command.args(["-n", node, "-q"]).args(args);
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true);
        let output = tokio::time::timeout(START_DEADLINE, command.output())
            .await
            .unwrap_or_else(|_| panic!("rabbitmqctl {args:?} on {node} timed out"))
            .expect("rabbitmqctl runs");
        assert!(
            output.status.success(),
            "rabbitmqctl {args:?} on {node} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    async fn ctl_json(&self, node: &str, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["--formatter", "json"]);
        let output = self.ctl(node, &args).await;
        serde_json::from_str(&output)
            .unwrap_or_else(|err| panic!("rabbitmqctl {args:?} gave no JSON ({err}): {output}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut process) = node.process.take() {
                kill_group(&mut process);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The name a client gave its connection, from `rabbitmqctl`'s JSON of its properties
/// (a map, or a list of `[key, type, value]` triples, depending on the version).
fn connection_name(properties: &Value) -> String {
    let from_map = properties.get("connection_name").and_then(Value::as_str);
    let from_triples = properties.as_array().and_then(|entries| {
        entries.iter().find_map(|e| {
            let e = e.as_array()?;
            (e.first()?.as_str()? == "connection_name").then(|| e.last()?.as_str())?
        })
    });
    from_map.or(from_triples).unwrap_or_default().to_owned()
}

/// Kills `process` and everything in its process group, and reaps it.
fn kill_group(process: &mut Child) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", process.id())])
        .status();
    let _ = process.kill();
    let _ = process.wait();
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The RabbitMQ script `name` that runs as the calling user with its environment.
/// Debian links the names on `PATH` to a wrapper that switches to the `rabbitmq` user
/// and that user's home (and so its cookie and node name); the real scripts sit beside
/// the wrapper.
fn script(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH (.ci/run installs RabbitMQ)"));
    let real = std::fs::canonicalize(&on_path).unwrap_or_else(|_| on_path.clone());
    let beside = real.parent().map(|dir: &Path| dir.join(name));
    match beside {
        Some(script) if real.file_name() != Some(name.as_ref()) && script.is_file() => script,
        _ => on_path,
    }
}
