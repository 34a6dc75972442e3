//! `docker-compose.yml` and `docker-compose.cluster.yml` run what the binary
//! offers: their services are the roles users expect, each `command` is a
//! subcommand of `escalations` with flags that subcommand takes, and
//! `config/compose.toml` and `config/compose-cluster.toml`, which their
//! services mount, are valid settings for those networks. (`.ci/run` checks
//! the files themselves against the Compose Specification's JSON schema.)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `service → command` of the compose file's `services:` (flow-style lists).
fn services(file: &str) -> BTreeMap<String, Option<Vec<String>>> {
    let text = std::fs::read_to_string(repository().join(file)).expect(file);
    let mut services = BTreeMap::new();
    let mut in_services = false;
    let mut current: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() && !line.starts_with('#') {
            in_services = line.trim_end() == "services:";
            continue;
        }
        if !in_services {
            continue;
        }
        if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
            && !name.starts_with(' ')
        {
            current = Some(name.to_owned());
            services.insert(name.to_owned(), None);
        } else if let (Some(name), Some(list)) = (&current, line.trim().strip_prefix("command:")) {
            let list: Vec<String> = serde_json::from_str(list.trim()).expect("command is a flow list");
            services.insert(name.clone(), Some(list));
        }
    }
    services
}

fn help(args: &[&str]) -> String {
    let output =
        Command::new(env!("CARGO_BIN_EXE_escalations")).args(args).arg("--help").output().expect("run");
    assert!(output.status.success(), "escalations {args:?} --help");
    String::from_utf8(output.stdout).expect("utf-8")
}

#[test]
fn every_service_runs_a_subcommand_of_the_binary_with_flags_it_takes() {
    let services = services("docker-compose.yml");
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(names, ["ingress", "migrate", "postgres", "rabbitmq", "simulator", "worker-1", "worker-2"]);
    assert_eq!(roles(&services), ["ingress", "migrate", "simulate", "worker", "worker"]);
}

#[test]
fn the_cluster_file_runs_three_brokers_two_ingress_and_three_workers() {
    let services = services("docker-compose.cluster.yml");
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "ingress-1",
            "ingress-2",
            "migrate",
            "postgres",
            "rabbitmq-1",
            "rabbitmq-2",
            "rabbitmq-3",
            "simulator",
            "worker-1",
            "worker-2",
            "worker-3"
        ]
    );
    assert_eq!(roles(&services), ["ingress", "ingress", "migrate", "simulate", "worker", "worker", "worker"]);
    let text = std::fs::read_to_string(repository().join("config/compose-cluster.toml")).expect("settings");
    let settings = settings::Settings::from_sources(Some(&text), std::iter::empty()).expect("valid settings");
    let hosts: Vec<String> = settings
        .broker
        .urls()
        .iter()
        .map(|url| {
            url.split('@').nth(1).and_then(|rest| rest.split(':').next()).unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(
        hosts,
        ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"],
        "every node of the cluster, by service name"
    );
    assert_eq!(settings.broker.quorum_size, 3);
    let compose = std::fs::read_to_string(repository().join("docker-compose.cluster.yml")).expect("compose");
    assert!(
        compose.contains("./config/compose-cluster.toml:/etc/escalations/config.toml"),
        "settings mounted"
    );
    let nodes =
        std::fs::read_to_string(repository().join("deploy/rabbitmq/cluster.conf")).expect("node config");
    for n in 1..=3 {
        assert!(nodes.contains(&format!("rabbit@rabbitmq-{n}")), "node {n} in the peer list");
    }
}

/// The subcommand of each service that runs the binary, checked against
/// its `--help`, sorted.
fn roles(services: &BTreeMap<String, Option<Vec<String>>>) -> Vec<&str> {
    let subcommands = help(&[]);
    let mut roles = Vec::new();
    for (service, command) in services {
        let Some(command) = command else { continue };
        let (subcommand, flags) = command.split_first().expect("a subcommand");
        assert!(
            subcommands.lines().any(|l| l.trim_start().starts_with(&format!("{subcommand} "))),
            "{service}: `{subcommand}` is not a subcommand of escalations:\n{subcommands}"
        );
        let accepted = help(&[subcommand]);
        for flag in flags.iter().filter(|f| f.starts_with("--")) {
            assert!(accepted.contains(&format!("{flag} ")), "{service}: `{subcommand}` takes no {flag}");
        }
        roles.push(subcommand.as_str());
    }
    roles.sort_unstable();
    roles
}

#[test]
fn the_compose_settings_are_valid_and_point_at_the_compose_services() {
    let text =
        std::fs::read_to_string(repository().join("config/compose.toml")).expect("config/compose.toml");
    let settings = settings::Settings::from_sources(Some(&text), std::iter::empty()).expect("valid settings");
    assert!(settings.broker.url.contains("@rabbitmq:5672"));
    assert!(settings.database.url.contains("@postgres:5432"));
    assert!(settings.demo.enabled, "the demo is reachable in a browser");
    assert_eq!(settings.demo.exposed_key(&settings.http, &settings.bots), None, "no key off loopback");
    let bot = settings.bot(settings.demo.bot.as_deref().expect("demo bot")).expect("configured");
    assert_eq!(bot.webhook_url.as_ref().and_then(|u| u.host_str()), Some("simulator"));
    assert!(settings.webhooks.allow_private, "containers talk over private addresses");
    let compose = std::fs::read_to_string(repository().join("docker-compose.yml")).expect("compose");
    assert!(compose.contains("\"8080:8080\""), "the ingress (and /demo) is published");
    assert!(compose.contains("/etc/escalations/config.toml"), "the settings are mounted");
}
