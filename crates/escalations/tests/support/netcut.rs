//! A network cut between processes and a service, without touching the
//! service: a TCP proxy this test owns stands between them ([`Proxy`]);
//! cutting it closes its port and drops every connection through it, as a
//! broken link would, and restoring it listens on the same port again.
//! Shared by `tests/admin_readiness.rs` and the chaos scenarios.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// `host:port` of a URL's authority.
pub fn target_of(url: &str) -> String {
    let parsed = url::Url::parse(url).expect("url");
    format!("{}:{}", parsed.host_str().expect("host"), parsed.port_or_known_default().expect("port"))
}

/// `url` with its port replaced by `port` on 127.0.0.1.
pub fn through(url: &str, port: u16) -> String {
    let mut parsed = url::Url::parse(url).expect("url");
    parsed.set_host(Some("127.0.0.1")).expect("host");
    parsed.set_port(Some(port)).expect("port");
    parsed.to_string()
}

/// A TCP proxy on a fixed local port that can be cut and restored.
pub struct Proxy {
    pub addr: SocketAddr,
    target: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = Proxy { addr: listener.local_addr().expect("addr"), target, tasks: Arc::default() };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let (target, tasks) = (self.target.clone(), self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                let relay = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().unwrap_or_else(PoisonError::into_inner).push(relay);
            }
        });
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).push(accept);
    }

    /// Nothing listens on the port any more, and every relayed connection is dropped.
    pub fn cut(&self) {
        for task in self.tasks.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            task.abort();
        }
    }

    /// Listens on the same port again.
    pub async fn restore(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => return self.serve(listener),
                Err(error) if Instant::now() < deadline => {
                    println!("rebinding {}: {error}", self.addr);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("cannot rebind {}: {error}", self.addr),
            }
        }
    }
}
