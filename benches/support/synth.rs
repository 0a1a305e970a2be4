//! A seeded generator of synthetic Marathon clusters for benchmarks: `/v2/apps?embed=apps.tasks`
//! answers shaped like the fixtures (portDefinitions with `VIP_n` labels, Docker bridge
//! `portMappings`, IP-per-task apps with `ipAddresses`, `HAPROXY_*` labels, health checks and
//! results), with a few tasks killing or unhealthy.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

/// Shape of the generated cluster.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub apps: usize,
    pub tasks: usize,
    pub agents: usize,
    pub seed: u64,
}

impl Shape {
    /// The benchmark cluster: 10 000 apps, 100 000 tasks on 1 000 agents.
    pub const LARGE: Shape = Shape {
        apps: 10_000,
        tasks: 100_000,
        agents: 1_000,
        seed: 42,
    };
}

fn agent_ip(i: usize) -> String {
    format!("10.0.{}.{}", (i / 250) % 256, i % 250 + 1)
}

/// A Marathon `/v2/apps?embed=apps.tasks` answer as JSON.
pub fn marathon_apps(shape: Shape) -> Value {
    let mut rng = ChaCha8Rng::seed_from_u64(shape.seed);
    let per_app = shape.tasks / shape.apps.max(1);
    let mut extra = shape.tasks - per_app * shape.apps;
    let mut apps = Vec::with_capacity(shape.apps);
    let mut container_ip: u32 = 0;
    for a in 0..shape.apps {
        let n = per_app + usize::from(extra > 0);
        extra = extra.saturating_sub(1);
        let id = format!("/team-{}/svc-{a}", a % 97);
        let kind = a % 4; // 0,1 host networking; 2 docker bridge; 3 IP-per-task
        let vip = if a % 10 == 0 {
            format!("10.{}.{}.{}:5000", 10 + a / 65536, (a / 256) % 256, a % 256)
        } else {
            format!("/svc-{a}:80")
        };
        let protocol = if a % 50 == 0 { "udp,tcp" } else { "tcp" };
        let service_port = 10_000 + a as u64;
        let healthy_checked = a % 2 == 0;
        let version = format!(
            "2024-{:02}-{:02}T{:02}:{:02}:00.000Z",
            a % 12 + 1,
            a % 28 + 1,
            a % 24,
            a % 60
        );
        let mut labels = json!({"HAPROXY_GROUP": "external"});
        if a % 3 == 0 {
            labels["HAPROXY_0_VHOST"] = json!(format!("svc-{a}.example.com"));
        }
        let mut tasks = Vec::with_capacity(n);
        for t in 0..n {
            let agent = rng.random_range(0..shape.agents);
            let host = agent_ip(agent);
            let state = match rng.random_range(0..100) {
                0..=1 => "TASK_KILLING",
                2 => "TASK_STAGING",
                _ => "TASK_RUNNING",
            };
            let alive = rng.random_range(0..100) >= 3;
            let host_port = rng.random_range(31_000..32_000);
            let mut task = json!({
                "id": format!("team-{}_svc-{a}.{:08x}-{t:04}", a % 97, rng.random::<u32>()),
                "appId": id,
                "host": host,
                "slaveId": format!("0c2d-S{agent}"),
                "state": state,
                "stagedAt": "2024-01-01T00:00:00.000Z",
                "startedAt": "2024-01-01T00:00:05.000Z",
                "version": version,
                "ports": if kind == 3 { json!([]) } else { json!([host_port]) },
            });
            let ip = if kind >= 2 {
                container_ip += 1;
                format!(
                    "172.{}.{}.{}",
                    16 + (container_ip >> 16) % 16,
                    (container_ip >> 8) % 256,
                    container_ip % 256
                )
            } else {
                host.clone()
            };
            task["ipAddresses"] = json!([{"ipAddress": ip, "protocol": "IPv4"}]);
            if healthy_checked && state == "TASK_RUNNING" {
                task["healthCheckResults"] = json!([{
                    "alive": alive, "consecutiveFailures": if alive { 0 } else { 3 },
                    "firstSuccess": "2024-01-01T00:00:10.000Z", "lastFailure": null,
                    "lastSuccess": "2024-01-01T00:01:10.000Z", "taskId": task["id"].clone()
                }]);
            }
            tasks.push(task);
        }
        let mut app = json!({
            "id": id,
            "version": version,
            "instances": n,
            "cpus": 0.1,
            "mem": 64,
            "labels": labels,
            "healthChecks": if healthy_checked {
                json!([{"protocol": "HTTP", "path": "/health", "portIndex": 0, "intervalSeconds": 10,
                        "timeoutSeconds": 5, "maxConsecutiveFailures": 3}])
            } else { json!([]) },
            "tasks": tasks,
        });
        let port_labels = json!({"VIP_0": vip});
        match kind {
            0 | 1 => {
                app["portDefinitions"] = json!([{"port": service_port, "protocol": protocol, "name": "http", "labels": port_labels}]);
            }
            2 => {
                app["container"] = json!({"type": "DOCKER", "docker": {"image": "nginx", "network": "BRIDGE"},
                    "portMappings": [{"containerPort": 80, "hostPort": 0, "servicePort": service_port,
                                       "protocol": protocol, "name": "http", "labels": port_labels}]});
            }
            _ => {
                app["container"] = json!({"type": "DOCKER", "docker": {"image": "nginx"},
                    "portMappings": [{"containerPort": 8080, "servicePort": service_port,
                                       "protocol": protocol, "name": "http", "labels": port_labels}]});
                app["networks"] = json!([{"mode": "container", "name": "dcos"}]);
            }
        }
        apps.push(app);
    }
    json!({ "apps": apps })
}
