//! Throughput of the ingress against the broker's own limit.
//!
//! `cargo run --release -p ingress --example bench_ingress -- [--events N]
//! [--clients N] [--conversations N] [--channels N] [--text-bytes N]
//! [--http-client hyper|reqwest]`
//!
//! 1. Starts the ingress in-process on a real socket, under a prefix of its own
//!    (`bench-{uuid}`, 32 quorum shard queues), and drives it with `--clients`
//!    concurrent HTTP clients (one keep-alive connection each; each waits for
//!    its 200 before sending the next) over `--conversations` conversations,
//!    for `--events` events. Prints accepted events/s and p50/p99 latency.
//!    The clients share the machine with the ingress and RabbitMQ, so they
//!    are plain hyper HTTP/1.1 connections by default (`--http-client reqwest`
//!    for reqwest, which costs noticeably more CPU per request); the CPU line
//!    shows what they used.
//! 2. Publishes the same number of messages of the same size and headers
//!    straight with lapin: as many concurrent publishers as clients, one
//!    confirm-mode channel each, each awaiting its confirm, to the same shard
//!    queues. Prints the rate and the ratio ingress/raw.
//! 3. Deletes its queues and exchanges.
//!
//! RabbitMQ: `AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`.

mod cpu;
mod load;
mod raw;

use std::sync::Arc;
use std::time::Duration;

use broker::Publisher;
use ingress::{AppState, publisher_config, router};
use settings::Settings;
use tokio_util::sync::CancellationToken;

use cpu::Cpu;
use load::{ms, run_ingress};
use raw::{delete, purge, raw_message, run_raw};

const BOT: &str = "bench";
const KEY: &str = "bench-key-0123456789";
const SEND: &str = "/agent/converse/send-message-to-widget";

#[derive(Debug, Clone, Copy)]
struct Args {
    events: usize,
    clients: usize,
    conversations: usize,
    channels: usize,
    text_bytes: usize,
    reqwest: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        events: 40_000,
        clients: 64,
        conversations: 10_000,
        channels: 8,
        text_bytes: 100,
        reqwest: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let raw = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        if flag == "--http-client" {
            args.reqwest = match raw.as_str() {
                "hyper" => false,
                "reqwest" => true,
                other => return Err(format!("--http-client: {other:?} is not hyper or reqwest")),
            };
            continue;
        }
        let value: usize = raw.parse().map_err(|e| format!("{flag}: {e}"))?;
        match flag.as_str() {
            "--events" => args.events = value,
            "--clients" => args.clients = value.max(1),
            "--conversations" => args.conversations = value.max(1),
            "--channels" => args.channels = value.max(1),
            "--text-bytes" => args.text_bytes = value.max(1),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn settings(args: &Args) -> Settings {
    let toml = format!(
        r#"
        [broker]
        url = "{url}"
        prefix = "bench-{id}"
        publish_channels = {channels}

        [widget]
        token_secret = "bench-widget-token-secret-of-32-bytes-or-more"

        [[bots]]
        id = "{BOT}"
        api_keys = ["{KEY}"]
        overrides = {{ rate_limit_per_sec = 100000000, rate_limit_burst = 100000000 }}
        "#,
        url = amqp_url(),
        id = uuid::Uuid::new_v4().simple(),
        channels = args.channels,
    );
    Settings::from_sources(Some(&toml), Vec::new()).expect("bench settings are valid")
}
#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("bench_ingress: {e}");
            std::process::exit(2);
        }
    };
    let settings = settings(&args);
    let config = publisher_config(&settings);
    let topology = config.topology.clone();
    let publisher = Arc::new(Publisher::connect(config));
    assert!(publisher.wait_until_connected(Duration::from_secs(30)).await, "publisher connects");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let app = router(AppState::new(settings, publisher.clone()));
    let server = tokio::spawn(ingress::serve(listener, app, Duration::from_secs(5), shutdown.clone()));
    // The load generator runs on threads of its own so its CPU can be told
    // apart from the ingress's.
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .expect("client runtime");

    let size = raw_message(0, &args, topology.shards).0.len();
    println!(
        "bench_ingress: {} events, {} {} clients, {} conversations, {} shards, {} publish channels, message body {} bytes",
        args.events,
        args.clients,
        if args.reqwest { "reqwest" } else { "hyper" },
        args.conversations,
        topology.shards,
        args.channels,
        size
    );

    // Warm-up: connections, JIT-free but caches and queue leaders.
    let warmup =
        clients.spawn(run_ingress(addr, args, (args.events / 20).max(args.clients))).await.expect("warm-up");
    assert_eq!(warmup.failed, 0, "warm-up requests failed");
    purge(&topology).await;

    let cpu = Cpu::now();
    let ingress = clients.spawn(run_ingress(addr, args, args.events)).await.expect("load");
    let ingress_cpu = Cpu::now().since(cpu);
    println!(
        "ingress:   {} accepted, {} failed in {:.2} s = {:.0} events/s; latency p50 {:.2} ms, p99 {:.2} ms",
        ingress.ok,
        ingress.failed,
        ingress.elapsed.as_secs_f64(),
        ingress.rate(),
        ms(ingress.percentile(0.50)),
        ms(ingress.percentile(0.99)),
    );
    println!("           {ingress_cpu}");
    shutdown.cancel();
    let _ = server.await;
    publisher.shutdown().await;
    purge(&topology).await;

    let cpu = Cpu::now();
    let raw = run_raw(&topology, args).await;
    let raw_cpu = Cpu::now().since(cpu);
    println!(
        "raw lapin: {} confirmed, {} failed in {:.2} s = {:.0} msgs/s ({} publishers, one confirm channel each); latency p50 {:.2} ms, p99 {:.2} ms",
        raw.ok,
        raw.failed,
        raw.elapsed.as_secs_f64(),
        raw.rate(),
        args.clients,
        ms(raw.percentile(0.50)),
        ms(raw.percentile(0.99)),
    );
    println!("           {raw_cpu}");
    println!("ratio ingress/raw: {:.2}", ingress.rate() / raw.rate());

    delete(&topology).await;
    clients.shutdown_background();
}
