//! The files of the compose stack (deploy/) read as the programs that load
//! them will: every YAML and JSON file parses, and the pieces agree with
//! each other, since no Docker engine runs here to find out on `up`:
//!
//! - every image is pinned to a version (never `latest`), the Dockerfile's
//!   too, and the image's COPY sources get past .dockerignore;
//! - `depends_on` names services that exist, waits on health
//!   (`service_healthy` on a service with a health check,
//!   `service_completed_successfully` on a one-shot), and has no cycle;
//! - bind mounts exist, named volumes are declared and used, host ports are
//!   on 127.0.0.1 and unique;
//! - every address one file gives for another service matches what that
//!   service listens on: Prometheus targets, the collector's exporters,
//!   Grafana's datasources, Alertmanager's webhook, the OTLP endpoints;
//! - the collector enables its health_check extension, every pipeline has
//!   memory_limiter first and batch, traces go to Jaeger, metrics to the
//!   Prometheus exporter, logs to Loki, and every component is used;
//! - four sensors, one per RPC kind; the dashboards' datasources exist.

use std::collections::{BTreeMap, BTreeSet};

use deploy_stack::{
    command_of, compose, dashboard_files, deploy, environment_of, files_under, json, repo,
    sensor_services, yaml,
};
use serde_norway::Value;

use crate::support::deploy_stack;

fn services(compose: &Value) -> BTreeMap<String, Value> {
    compose["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|s| {
            s.iter()
                .map(|v| v.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// "host:port" → (host, port).
fn host_port(address: &str) -> (String, u16) {
    let address = address
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let address = address.split('/').next().unwrap();
    let (host, port) = address
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("no port in {address:?}"));
    (host.to_owned(), port.parse().expect("a port number"))
}

#[test]
fn every_yaml_and_json_file_parses() {
    let yamls = files_under(&deploy(), &[".yml", ".yaml"]);
    assert!(yamls.len() >= 12, "{yamls:?}");
    for file in &yamls {
        deploy_stack::yaml(file);
    }
    let jsons = files_under(&deploy(), &[".json"]);
    assert!(jsons.len() >= 4, "{jsons:?}");
    for file in &jsons {
        json(file);
    }
}

#[test]
fn every_image_is_pinned_and_the_dockerfile_builds_from_what_it_may_see() {
    let compose = compose();
    for (name, service) in services(&compose) {
        let image = service["image"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no image"));
        let (_, tag) = image
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{name}: {image} has no tag"));
        assert!(
            !tag.is_empty() && tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()),
            "{name}: {image} is not pinned to a version"
        );
        if let Some(build) = service.get("build") {
            assert_eq!(build["context"].as_str(), Some(".."), "{name}");
            let dockerfile = build["dockerfile"].as_str().expect("dockerfile");
            assert!(repo().join(dockerfile).is_file(), "{name}: no {dockerfile}");
        }
    }

    // Every other image takes its version from deploy/.env, the one place
    // versions are written, and every version there is used.
    let raw = std::fs::read_to_string(deploy().join("compose.yaml")).unwrap();
    let versions = deploy_stack::versions();
    let mut used = BTreeSet::new();
    for line in raw.lines().map(str::trim) {
        let Some(image) = line.strip_prefix("image: ") else {
            continue;
        };
        if image.starts_with("sensorhub:") {
            continue;
        }
        let name = image
            .split_once(":${")
            .and_then(|(_, t)| t.split([':', '}']).next())
            .unwrap_or_else(|| panic!("{image}: its version is not from deploy/.env"));
        assert!(
            versions.contains_key(name),
            "{image}: deploy/.env has no {name}"
        );
        used.insert(name.to_owned());
    }
    for name in versions.keys() {
        assert!(
            used.contains(name),
            "deploy/.env: {name} is used by no image"
        );
    }

    let dockerfile = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert!(froms.len() >= 2, "not a multi-stage build: {froms:?}");
    for from in &froms {
        let image = from.split_whitespace().next().unwrap();
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            tag.chars().any(|c| c.is_ascii_digit()) && !tag.contains("latest"),
            "Dockerfile: FROM {image} is not pinned"
        );
    }
    assert!(dockerfile.contains("\nUSER "), "the image runs as root");
    assert!(
        dockerfile.contains("\nHEALTHCHECK "),
        "the image has no health check"
    );

    // .dockerignore excludes everything but what is re-included; each COPY
    // source from the build context must be re-included, and exist.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let included: Vec<&str> = ignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    assert!(
        ignore.lines().any(|l| l.trim() == "*"),
        ".dockerignore must start from nothing"
    );
    let mut copies = 0;
    for line in dockerfile.lines() {
        let Some(rest) = line.strip_prefix("COPY ") else {
            continue;
        };
        if rest.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            copies += 1;
            assert!(repo().join(source).exists(), "COPY {source}: no such path");
            assert!(
                included
                    .iter()
                    .any(|inc| source == inc || source.starts_with(&format!("{inc}/"))),
                "COPY {source} is excluded by .dockerignore ({included:?})"
            );
        }
    }
    assert!(copies >= 5, "{copies}");
}

#[test]
fn services_wait_for_health_and_depend_on_what_exists() {
    let compose = compose();
    let services = services(&compose);
    let has_healthcheck = |name: &str| -> bool {
        let service = &services[name];
        match service.get("healthcheck") {
            Some(check) if check["disable"].as_bool() == Some(true) => false,
            Some(check) => check["test"].is_sequence(),
            // The sensorhub image's own HEALTHCHECK.
            None => service.get("build").is_some(),
        }
    };
    let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, service) in &services {
        let Some(depends) = service.get("depends_on") else {
            continue;
        };
        let depends = depends
            .as_mapping()
            .unwrap_or_else(|| panic!("{name}: depends_on must name conditions"));
        for (dep, how) in depends {
            let dep = dep.as_str().unwrap();
            assert!(
                services.contains_key(dep),
                "{name} depends on unknown {dep}"
            );
            let condition = how["condition"].as_str().expect("condition");
            match condition {
                "service_healthy" => assert!(
                    has_healthcheck(dep),
                    "{name} waits for {dep} to be healthy, but {dep} has no health check"
                ),
                "service_completed_successfully" => assert_eq!(
                    services[dep]["restart"].as_str(),
                    Some("no"),
                    "{name} waits for {dep} to complete: it must be a one-shot"
                ),
                // Only the probe of a distroless image may wait for less.
                "service_started" => assert!(
                    name.ends_with("-health"),
                    "{name} starts after {dep} without waiting for its health"
                ),
                other => panic!("{name}: unknown condition {other}"),
            }
            edges.entry(name.clone()).or_default().push(dep.to_owned());
        }
        // Nothing starts with a `sleep` to wait for something.
        let command = strings(&service["command"]).join(" ");
        assert!(
            !command.contains("sleep") || name.ends_with("-health"),
            "{name} sleeps: {command}"
        );
    }
    // No cycle: a depth-first walk from every service.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, Vec<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(node) {
            return;
        }
        assert!(
            !path.contains(&node.to_owned()),
            "dependency cycle: {path:?} -> {node}"
        );
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, path, done);
        }
        path.pop();
        done.insert(node.to_owned());
    }
    let mut done = BTreeSet::new();
    for name in services.keys() {
        visit(name, &edges, &mut Vec::new(), &mut done);
    }

    // The server, the sensors and the collector wait as the stack needs.
    let waits = |name: &str, dep: &str, condition: &str| {
        assert_eq!(
            services[name]["depends_on"][dep]["condition"].as_str(),
            Some(condition),
            "{name} must wait for {dep} ({condition})"
        );
    };
    waits(
        "sensorhub",
        "sensorhub-init",
        "service_completed_successfully",
    );
    waits("sensorhub", "otel-collector-health", "service_healthy");
    for store in ["jaeger", "tempo", "loki", "prometheus"] {
        waits("otel-collector", store, "service_healthy");
    }
    waits("tempo", "prometheus", "service_healthy");
    waits("grafana", "prometheus", "service_healthy");
    waits("prometheus", "alertmanager", "service_healthy");
    for sensor in sensor_services(&compose) {
        waits(&sensor, "sensorhub", "service_healthy");
        assert_eq!(
            services[&sensor]["healthcheck"]["disable"].as_bool(),
            Some(true),
            "{sensor} has no HTTP listener: the image's health check must be off"
        );
    }
    assert_eq!(
        services["sensorhub-init"]["healthcheck"]["disable"].as_bool(),
        Some(true)
    );
}

#[test]
fn volumes_mounts_and_ports_are_consistent() {
    let compose = compose();
    let declared: BTreeSet<String> = compose["volumes"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let mut used = BTreeSet::new();
    let mut host_ports = BTreeSet::new();
    for (name, service) in services(&compose) {
        for mount in strings(&service["volumes"]) {
            let source = mount.split(':').next().unwrap();
            if source.starts_with('.') || source.starts_with('/') {
                assert!(
                    deploy().join(source).exists(),
                    "{name}: bind mount {source} does not exist"
                );
            } else {
                assert!(
                    declared.contains(source),
                    "{name}: volume {source} is not declared"
                );
                used.insert(source.to_owned());
            }
        }
        for port in strings(&service["ports"]) {
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name}: {port} is published on every interface"
            );
            let host = port.split(':').nth(1).unwrap().to_owned();
            assert!(
                host_ports.insert(host.clone()),
                "host port {host} published twice"
            );
        }
    }
    assert_eq!(declared, used, "declared volumes that nothing mounts");
    for expected in ["3000", "9090", "9093", "16686", "50051", "4317"] {
        assert!(
            host_ports.contains(expected),
            "port {expected} is not published"
        );
    }
}

/// What each service listens on (container ports), read from its own config.
fn listening() -> BTreeMap<String, BTreeSet<u16>> {
    let compose = compose();
    let mut ports: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    let mut add = |service: &str, port: u16| {
        ports.entry(service.to_owned()).or_default().insert(port);
    };
    let server = environment_of(&compose, "sensorhub");
    add("sensorhub", host_port(&server["SENSORHUB_LISTEN"]).1);
    add("sensorhub", host_port(&server["SENSORHUB_HTTP"]).1);
    // The `scale` profile's replicas, and the proxy before them.
    for replica in SCALE_REPLICAS {
        let env = environment_of(&compose, replica);
        add(replica, host_port(&env["SENSORHUB_LISTEN"]).1);
        add(replica, host_port(&env["SENSORHUB_HTTP"]).1);
    }
    for port in nginx_listen_ports() {
        add("nginx", port);
    }

    let collector = yaml(&deploy().join("otel-collector/config.yaml"));
    for protocol in ["grpc", "http"] {
        let endpoint = collector["receivers"]["otlp"]["protocols"][protocol]["endpoint"]
            .as_str()
            .unwrap();
        add("otel-collector", host_port(endpoint).1);
    }
    add(
        "otel-collector",
        host_port(
            collector["extensions"]["health_check"]["endpoint"]
                .as_str()
                .unwrap(),
        )
        .1,
    );
    let reader = &collector["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"];
    assert_eq!(
        reader["host"].as_str(),
        Some("0.0.0.0"),
        "the collector's own metrics must be reachable"
    );
    add("otel-collector", reader["port"].as_u64().unwrap() as u16);

    let loki = yaml(&deploy().join("loki/loki.yaml"));
    add(
        "loki",
        loki["server"]["http_listen_port"].as_u64().unwrap() as u16,
    );

    let tempo = yaml(&deploy().join("tempo/tempo.yaml"));
    add(
        "tempo",
        tempo["server"]["http_listen_port"].as_u64().unwrap() as u16,
    );
    add(
        "tempo",
        host_port(
            tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
                .as_str()
                .unwrap(),
        )
        .1,
    );

    let alert_log = command_of(&compose, "alert-log");
    let port_at = alert_log.iter().position(|w| w == "--port").unwrap() + 1;
    add("alert-log", alert_log[port_at].parse().unwrap());

    // Images' defaults (Jaeger v2 all-in-one: OTLP 4317, UI 16686, health
    // 13133; Pyroscope's single binary: 4040).
    for (service, port) in [
        ("jaeger", 4317),
        ("jaeger", 16686),
        ("jaeger", 13133),
        ("prometheus", 9090),
        ("alertmanager", 9093),
        ("grafana", 3000),
        ("pyroscope", 4040),
        ("postgres", 5432),
    ] {
        add(service, port);
    }
    ports
}

/// The `scale` profile's replicas.
const SCALE_REPLICAS: [&str; 3] = ["sensorhub-1", "sensorhub-2", "sensorhub-3"];

/// deploy/nginx/sensorhub.conf's directives (`name args;`), comments dropped.
fn nginx_directives(name: &str) -> Vec<String> {
    std::fs::read_to_string(deploy().join("nginx/sensorhub.conf"))
        .unwrap()
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        // `server {` opens a block; `server host:port;` is a directive.
        .filter(|args| args.ends_with(';'))
        .map(|args| args.trim_end_matches(';').trim().to_owned())
        .collect()
}

/// The ports nginx's `listen` directives open.
fn nginx_listen_ports() -> Vec<u16> {
    nginx_directives("listen")
        .iter()
        .map(|args| args.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

fn assert_reaches(origin: &str, address: &str, ports: &BTreeMap<String, BTreeSet<u16>>) {
    let (host, port) = host_port(address);
    let listening = ports
        .get(&host)
        .unwrap_or_else(|| panic!("{origin}: {address}: no service {host}"));
    assert!(
        listening.contains(&port),
        "{origin}: {address}: {host} listens on {listening:?}"
    );
}

#[test]
fn every_address_points_at_a_service_that_listens_there() {
    let compose = compose();
    let services = services(&compose);
    let ports = listening();

    // Published ports map onto what the service listens on.
    for (name, service) in &services {
        for port in strings(&service["ports"]) {
            let container: u16 = port.rsplit(':').next().unwrap().parse().unwrap();
            assert!(
                ports.get(name).is_some_and(|p| p.contains(&container)),
                "{name} publishes {port} but listens on {:?}",
                ports.get(name)
            );
        }
    }

    let prometheus = yaml(&deploy().join("prometheus/prometheus.yml"));
    for job in prometheus["scrape_configs"].as_sequence().unwrap() {
        let name = job["job_name"].as_str().unwrap();
        for target in strings(&job["static_configs"][0]["targets"]) {
            if target.starts_with("localhost:") {
                assert_eq!(name, "prometheus");
                continue;
            }
            assert_reaches(&format!("prometheus job {name}"), &target, &ports);
        }
    }
    for target in
        strings(&prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"])
    {
        assert_reaches("prometheus alerting", &target, &ports);
    }

    let collector = yaml(&deploy().join("otel-collector/config.yaml"));
    for (name, exporter) in collector["exporters"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        if let Some(endpoint) = exporter["endpoint"].as_str() {
            if endpoint.starts_with("0.0.0.0") {
                continue;
            }
            assert_reaches(&format!("collector exporter {name}"), endpoint, &ports);
        }
    }

    let datasources = yaml(&deploy().join("grafana/provisioning/datasources/datasources.yaml"));
    for ds in datasources["datasources"].as_sequence().unwrap() {
        let url = ds["url"].as_str().unwrap();
        assert_reaches(&format!("grafana datasource {:?}", ds["name"]), url, &ports);
    }

    let alertmanager = yaml(&deploy().join("alertmanager/alertmanager.yml"));
    for receiver in alertmanager["receivers"].as_sequence().unwrap() {
        for hook in receiver["webhook_configs"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            assert_reaches(
                "alertmanager webhook",
                hook["url"].as_str().unwrap(),
                &ports,
            );
        }
    }

    // OTLP from the server and every sensor goes to the collector's gRPC receiver.
    for (name, service) in &services {
        if let Some(endpoint) = service["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"].as_str() {
            assert_eq!(
                endpoint, "http://otel-collector:4317",
                "{name} exports elsewhere than the collector"
            );
            assert_reaches(name, endpoint, &ports);
        }
    }
    // Sensors reach the server over TLS with the stack's CA and token.
    for sensor in sensor_services(&compose) {
        let env = environment_of(&compose, &sensor);
        assert_reaches(&sensor, &env["SENSORHUB_SERVER"], &ports);
        assert!(env["SENSORHUB_SERVER"].starts_with("https://"), "{sensor}");
        assert_eq!(env["SENSORHUB_CA"], "/certs/ca.pem");
        assert_eq!(env["SENSORHUB_TOKEN_FILE"], "/certs/token");
    }
    let server = environment_of(&compose, "sensorhub");
    assert_eq!(server["SENSORHUB_TLS_CERT"], "/certs/server.pem");
    assert_eq!(server["SENSORHUB_TOKENS_FILE"], "/certs/tokens");

    // The `scale` profile: nginx proxies to exactly the three replicas, on
    // their gRPC port, over TLS with the stack's certificates (which carry
    // the name it verifies), and the replicas use the database URL the init
    // writes, which points at the postgres service.
    let upstreams: BTreeSet<String> = nginx_directives("server")
        .iter()
        .map(|args| args.split_whitespace().next().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = SCALE_REPLICAS
        .iter()
        .map(|r| {
            format!(
                "{r}:{}",
                host_port(&environment_of(&compose, r)["SENSORHUB_LISTEN"]).1
            )
        })
        .collect();
    assert_eq!(upstreams, expected);
    for upstream in &upstreams {
        assert_reaches("nginx upstream", upstream, &ports);
    }
    assert_eq!(nginx_directives("grpc_pass"), ["grpcs://sensorhub_grpc"]);
    assert_eq!(nginx_directives("ssl_certificate"), ["/certs/server.pem"]);
    assert_eq!(
        nginx_directives("ssl_certificate_key"),
        ["/certs/server.key"]
    );
    assert_eq!(
        nginx_directives("grpc_ssl_trusted_certificate"),
        ["/certs/ca.pem"]
    );
    let init = environment_of(&compose, "sensorhub-init");
    for name in nginx_directives("grpc_ssl_name") {
        assert!(
            init["CERT_NAMES"].split_whitespace().any(|n| n == name),
            "{name}"
        );
    }
    assert!(
        strings(&services["nginx"]["volumes"])
            .contains(&"./nginx/sensorhub.conf:/etc/nginx/conf.d/sensorhub.conf:ro".to_owned())
    );
    let init_script = std::fs::read_to_string(deploy().join("sensorhub/init.sh")).unwrap();
    assert!(
        init_script.contains("@postgres:5432/sensorhub"),
        "the init's database URL"
    );
    for replica in SCALE_REPLICAS {
        let env = environment_of(&compose, replica);
        assert_eq!(
            env["SENSORHUB_DATABASE_URL_FILE"], "/certs/database-url",
            "{replica}"
        );
        assert_eq!(
            strings(&services[replica]["profiles"]),
            ["scale"],
            "{replica}"
        );
    }
    // The collector's health sidecar probes the health_check extension.
    let probe = strings(&services["otel-collector-health"]["healthcheck"]["test"]).join(" ");
    let endpoint = collector["extensions"]["health_check"]["endpoint"]
        .as_str()
        .unwrap();
    assert!(
        probe.contains(&format!("http://otel-collector:{}/", host_port(endpoint).1)),
        "{probe}"
    );
}

#[test]
fn the_collector_pipelines_are_complete() {
    let collector = yaml(&deploy().join("otel-collector/config.yaml"));
    let service = &collector["service"];
    assert!(
        strings(&service["extensions"]).contains(&"health_check".to_owned()),
        "the health_check extension is defined but not enabled in service.extensions"
    );
    let mut used: BTreeSet<(String, String)> = BTreeSet::new();
    for (kind, key) in [("extensions", "extensions")] {
        for name in strings(&service[key]) {
            used.insert((kind.to_owned(), name));
        }
    }
    let pipelines = service["pipelines"].as_mapping().unwrap();
    let expect_exporter = [
        ("traces", "otlp_grpc/jaeger"),
        ("traces", "otlp_grpc/tempo"),
        ("traces", "span_metrics"),
        ("metrics", "otlp_http/prometheus"),
        ("logs", "otlp_http/loki"),
    ];
    for signal in ["traces", "metrics", "logs"] {
        let pipeline = &pipelines[&Value::String(signal.to_owned())];
        let processors = strings(&pipeline["processors"]);
        assert_eq!(
            processors.first().map(String::as_str),
            Some("memory_limiter"),
            "{signal}: memory_limiter must come first"
        );
        // Batching is the exporters' sending_queue (below), not the
        // batch processor, which is heading for deprecation.
        assert!(
            !processors.contains(&"batch".to_owned()),
            "{signal}: the batch processor instead of sending_queue.batch"
        );
        assert!(
            strings(&pipeline["receivers"]).contains(&"otlp".to_owned()),
            "{signal}: no OTLP receiver"
        );
        for (kind, key) in [
            ("receivers", "receivers"),
            ("processors", "processors"),
            ("exporters", "exporters"),
        ] {
            for name in strings(&pipeline[key]) {
                // A connector is an exporter of one pipeline and a receiver of another.
                let kind = if collector["connectors"].get(name.as_str()).is_some() {
                    "connectors"
                } else {
                    kind
                };
                assert!(
                    collector[kind].get(name.as_str()).is_some(),
                    "{signal}: {name} is not defined under {kind}"
                );
                used.insert((kind.to_owned(), name));
            }
        }
    }
    for (signal, exporter) in expect_exporter {
        let pipeline = &pipelines[&Value::String(signal.to_owned())];
        assert!(
            strings(&pipeline["exporters"]).contains(&exporter.to_owned()),
            "{signal} does not go to {exporter}"
        );
    }
    assert!(
        strings(&pipelines[&Value::String("metrics".into())]["receivers"])
            .contains(&"span_metrics".to_owned()),
        "the span metrics never reach the metrics pipeline"
    );
    // Every exporter that sends batches them in its own queue.
    for (name, exporter) in collector["exporters"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        let queue = &exporter["sending_queue"];
        assert!(
            queue["batch"].is_mapping(),
            "{name}: no sending_queue.batch"
        );
        assert_eq!(queue["sizer"].as_str(), Some("items"), "{name}");
        let min = queue["batch"]["min_size"].as_u64().unwrap();
        assert!(
            min <= queue["queue_size"].as_u64().unwrap(),
            "{name}: a batch larger than its queue"
        );
    }
    assert!(
        collector["processors"].get("batch").is_none(),
        "the batch processor is defined"
    );
    // `spanmetrics` is the deprecated alias of `span_metrics`.
    assert!(collector["connectors"].get("spanmetrics").is_none());
    for kind in [
        "receivers",
        "processors",
        "exporters",
        "connectors",
        "extensions",
    ] {
        for name in collector[kind]
            .as_mapping()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            let name = name.as_str().unwrap().to_owned();
            assert!(
                used.contains(&(kind.to_owned(), name.clone())),
                "{kind}/{name} is defined but no pipeline uses it"
            );
        }
    }
    // The names deploy_stack::SPAN_METRICS expects.
    let spanmetrics = &collector["connectors"]["span_metrics"];
    assert_eq!(
        spanmetrics["namespace"].as_str(),
        Some("traces.span.metrics")
    );
    assert_eq!(spanmetrics["histogram"]["unit"].as_str(), Some("s"));
    assert_eq!(spanmetrics["exemplars"]["enabled"].as_bool(), Some(true));
    // Metrics go to Prometheus's own OTLP receiver, which keeps the
    // exemplars; Tempo's service graph arrives over remote write.
    assert_eq!(
        collector["exporters"]["otlp_http/prometheus"]["endpoint"].as_str(),
        Some("http://prometheus:9090/api/v1/otlp")
    );
    let compose = compose();
    let flags = strings(&compose["services"]["prometheus"]["command"]);
    for flag in [
        "--enable-feature=exemplar-storage",
        "--web.enable-otlp-receiver",
        "--web.enable-remote-write-receiver",
    ] {
        assert!(flags.contains(&flag.to_owned()), "prometheus lacks {flag}");
    }
    let tempo = yaml(&deploy().join("tempo/tempo.yaml"));
    assert_eq!(
        tempo["metrics_generator"]["storage"]["remote_write"][0]["url"].as_str(),
        Some("http://prometheus:9090/api/v1/write")
    );
    assert_eq!(
        strings(&tempo["overrides"]["defaults"]["metrics_generator"]["processors"]),
        ["service-graphs"],
        "span metrics are the collector's; Tempo makes the service graph only"
    );
}

#[test]
fn four_sensors_one_per_rpc_kind() {
    let compose = compose();
    let mut modes = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for sensor in sensor_services(&compose) {
        let command = command_of(&compose, &sensor);
        let at = |flag: &str| {
            command
                .iter()
                .position(|w| w == flag)
                .map(|i| command[i + 1].clone())
        };
        let mode = at("--mode").unwrap_or_else(|| panic!("{sensor}: no --mode"));
        let replicas = compose["services"][&sensor]["scale"].as_u64().unwrap_or(1);
        if replicas > 0 {
            modes.insert(mode.clone(), sensor.clone());
        }
        if let Some(id) = at("--sensor-id") {
            assert!(ids.insert(id.clone()), "sensor id {id} used twice");
        }
        if let Some(queried) = at("--query-sensor") {
            assert!(
                sensor_services(&compose)
                    .iter()
                    .any(|s| command_of(&compose, s).contains(&queried)),
                "{sensor} reads {queried}, which no sensor writes"
            );
        }
    }
    for mode in ["unary", "client-stream", "server-stream", "chat"] {
        assert!(
            modes.contains_key(mode),
            "no sensor runs --mode {mode}: {modes:?}"
        );
    }
}

#[test]
fn grafana_provisions_the_datasources_the_dashboards_use() {
    let compose = compose();
    let datasources = yaml(&deploy().join("grafana/provisioning/datasources/datasources.yaml"));
    let uids: BTreeMap<String, String> = datasources["datasources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|ds| {
            (
                ds["uid"].as_str().unwrap().to_owned(),
                ds["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (uid, kind) in [
        ("prometheus", "prometheus"),
        ("jaeger", "jaeger"),
        ("tempo", "tempo"),
        ("loki", "loki"),
        ("pyroscope", "grafana-pyroscope-datasource"),
    ] {
        assert_eq!(uids.get(uid).map(String::as_str), Some(kind), "{uids:?}");
    }
    let by_uid = |uid: &str| {
        datasources["datasources"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|ds| ds["uid"].as_str() == Some(uid))
            .unwrap()
            .clone()
    };
    // Exemplars and log lines link to traces in both stores; spans link to
    // their logs, Tempo's also to their metrics and the service graph.
    let targets = |list: &Value| -> Vec<String> {
        list.as_sequence()
            .unwrap()
            .iter()
            .map(|d| d["datasourceUid"].as_str().unwrap().to_owned())
            .collect()
    };
    let exemplars = &by_uid("prometheus")["jsonData"]["exemplarTraceIdDestinations"];
    assert_eq!(targets(exemplars), ["tempo", "jaeger"]);
    for destination in exemplars.as_sequence().unwrap() {
        assert_eq!(destination["name"].as_str(), Some("trace_id"));
    }
    let derived = &by_uid("loki")["jsonData"]["derivedFields"];
    assert_eq!(targets(derived), ["tempo", "jaeger"]);
    for field in derived.as_sequence().unwrap() {
        assert_eq!(field["matcherType"].as_str(), Some("label"));
        assert_eq!(field["matcherRegex"].as_str(), Some("trace_id"));
        // Grafana expands $VAR in provisioning: a Grafana variable must be $${...}.
        assert_eq!(field["url"].as_str(), Some("$${__value.raw}"));
    }
    for store in ["jaeger", "tempo"] {
        assert_eq!(
            by_uid(store)["jsonData"]["tracesToLogsV2"]["datasourceUid"].as_str(),
            Some("loki"),
            "{store}"
        );
    }
    let tempo = &by_uid("tempo")["jsonData"];
    assert_eq!(
        tempo["tracesToMetrics"]["datasourceUid"].as_str(),
        Some("prometheus")
    );
    assert_eq!(
        tempo["serviceMap"]["datasourceUid"].as_str(),
        Some("prometheus")
    );
    for query in tempo["tracesToMetrics"]["queries"].as_sequence().unwrap() {
        let query = query["query"].as_str().unwrap();
        assert!(query.contains("traces_span_metrics_"), "{query}");
    }

    // The dashboards provider reads the directory compose mounts.
    let provider = yaml(&deploy().join("grafana/provisioning/dashboards/dashboards.yaml"));
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let mounts = strings(&compose["services"]["grafana"]["volumes"]);
    assert!(
        mounts.contains(&format!("./grafana/dashboards:{path}:ro")),
        "{path} is not where compose mounts the dashboards: {mounts:?}"
    );
    let home =
        environment_of(&compose, "grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].clone();
    let home_file = home
        .strip_prefix(&format!("{path}/"))
        .expect("home in the dashboards dir");
    assert!(
        deploy()
            .join("grafana/dashboards")
            .join(home_file)
            .is_file(),
        "{home}"
    );

    let mut dashboard_uids = BTreeSet::new();
    let mut titles = Vec::new();
    for file in dashboard_files() {
        let dashboard = json(&file);
        let uid = dashboard["uid"].as_str().expect("a fixed uid").to_owned();
        assert!(dashboard_uids.insert(uid.clone()), "uid {uid} twice");
        titles.push(dashboard["title"].as_str().unwrap().to_owned());
        let text = serde_json::to_string(&dashboard).unwrap();
        // Every datasource reference names a provisioned uid.
        for (at, _) in text.match_indices("\"uid\":\"") {
            let rest = &text[at + 7..];
            let uid = &rest[..rest.find('"').unwrap()];
            assert!(
                uid == dashboard["uid"].as_str().unwrap()
                    || uid == "-- Grafana --"
                    || uids.contains_key(uid),
                "{}: datasource uid {uid} is not provisioned",
                file.display()
            );
        }
        // Panels do not overlap.
        let mut cells = BTreeSet::new();
        fn panels(value: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
            for p in value["panels"].as_array().into_iter().flatten() {
                out.push(p.clone());
                panels(p, out);
            }
        }
        let mut all = Vec::new();
        panels(&dashboard, &mut all);
        for panel in &all {
            let g = &panel["gridPos"];
            let (x, y, w, h) = (
                g["x"].as_u64().unwrap(),
                g["y"].as_u64().unwrap(),
                g["w"].as_u64().unwrap(),
                g["h"].as_u64().unwrap(),
            );
            assert!(
                x + w <= 24,
                "{}: {:?} is too wide",
                file.display(),
                panel["title"]
            );
            for cx in x..x + w {
                for cy in y..y + h {
                    assert!(
                        cells.insert((cx, cy)),
                        "{}: {:?} overlaps another panel",
                        file.display(),
                        panel["title"]
                    );
                }
            }
        }
    }
    // The server's own latency histogram is scraped in OpenMetrics with
    // exemplars: a time series of its quantiles shows them (a dot per sampled
    // call, which the datasource links to its trace).
    let grpc = json(&deploy().join("grafana/dashboards/grpc.json"));
    let shows_exemplars = grpc["panels"].as_array().unwrap().iter().any(|panel| {
        panel["type"] == "timeseries"
            && panel["targets"].as_array().into_iter().flatten().any(|t| {
                t["exemplar"] == true
                    && t["expr"]
                        .as_str()
                        .is_some_and(|e| e.contains("grpc_server_call_duration_seconds_bucket"))
            })
    });
    assert!(
        shows_exemplars,
        "no latency panel of grpc.json shows the server's exemplars"
    );
    for wanted in ["gRPC", "Sensors", "SLO", "Telemetry pipeline"] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no {wanted} dashboard: {titles:?}"
        );
    }
}
