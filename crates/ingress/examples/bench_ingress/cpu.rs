//! Where the CPU went: this process's load-generator threads, the rest of
//! this process, and the RabbitMQ node.

/// CPU seconds used so far, from `/proc` (Linux; zeros elsewhere): by the
/// HTTP load generator's threads (`bench-client`), by the rest of this
/// process (ingress server, publisher, raw publishers), and by the RabbitMQ
/// node (`beam.smp`). Shows where the machine's CPU went in each phase.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cpu {
    clients: f64,
    process: f64,
    broker: f64,
}

impl Cpu {
    pub(crate) fn now() -> Self {
        let clients = std::fs::read_dir("/proc/self/task")
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter(|t| {
                        std::fs::read_to_string(t.path().join("comm"))
                            .is_ok_and(|c| c.starts_with("bench-client"))
                    })
                    .filter_map(|t| stat_seconds(&t.path().join("stat")))
                    .sum()
            })
            .unwrap_or(0.0);
        let broker = std::fs::read_dir("/proc")
            .ok()
            .and_then(|dir| {
                dir.filter_map(Result::ok).find_map(|p| {
                    let comm = std::fs::read_to_string(p.path().join("comm")).ok()?;
                    (comm.trim() == "beam.smp").then(|| stat_seconds(&p.path().join("stat"))).flatten()
                })
            })
            .unwrap_or(0.0);
        let process = stat_seconds(std::path::Path::new("/proc/self/stat")).unwrap_or(0.0);
        Self { clients, process, broker }
    }

    pub(crate) fn since(self, before: Cpu) -> String {
        let clients = self.clients - before.clients;
        format!(
            "CPU: HTTP clients {:.1} s, rest of this process {:.1} s, RabbitMQ {:.1} s",
            clients,
            self.process - before.process - clients,
            self.broker - before.broker
        )
    }
}

/// utime + stime of a `/proc/.../stat` file, in seconds.
fn stat_seconds(path: &std::path::Path) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}
