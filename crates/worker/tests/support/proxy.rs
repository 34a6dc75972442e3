//! A TCP forwarder in front of PostgreSQL, so a test can cut a worker off
//! from the database (or start it before the database is reachable) without
//! touching the machine's PostgreSQL.

use std::str::FromStr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running forwarder; [`Proxy::cut`] (or dropping it) closes its port and
/// every connection through it.
pub struct Proxy {
    pub port: u16,
    stop: CancellationToken,
}

impl Proxy {
    /// Forwards `127.0.0.1:port` (0: any free port) to the database of
    /// `database_url`.
    pub async fn start(port: u16, database_url: &str) -> Self {
        let upstream = upstream(database_url);
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind the proxy port");
        let port = listener.local_addr().expect("address").port();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stopped.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else { continue };
                let (stopped, upstream) = (stopped.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        () = stopped.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Self { port, stop }
    }

    /// Closes the port and drops every connection: the database is gone.
    pub fn cut(&self) {
        self.stop.cancel();
    }

    /// `database_url` with its host and port replaced by this proxy's.
    pub fn url(&self, database_url: &str) -> String {
        via_port(database_url, self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A port nothing listens on (free a moment ago).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind").local_addr().expect("address").port()
}

/// `database_url` pointed at `127.0.0.1:port`.
pub fn via_port(database_url: &str, port: u16) -> String {
    let config = tokio_postgres::Config::from_str(database_url).expect("database url");
    let user = config.get_user().unwrap_or("postgres");
    let dbname = config.get_dbname().unwrap_or("postgres");
    let password =
        config.get_password().map(|p| format!(":{}", String::from_utf8_lossy(p))).unwrap_or_default();
    format!("postgres://{user}{password}@127.0.0.1:{port}/{dbname}")
}

fn upstream(database_url: &str) -> String {
    let config = tokio_postgres::Config::from_str(database_url).expect("database url");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}
