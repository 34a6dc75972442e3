//! `escalations all` without `--config` runs the built-in development
//! configuration, whose widget token secret is public: the binary refuses it
//! on any address but loopback, before touching RabbitMQ or PostgreSQL.

use std::process::Command;

#[test]
fn the_development_secret_is_refused_off_loopback() {
    for role in ["all", "ingress"] {
        let output = Command::new(env!("CARGO_BIN_EXE_escalations"))
            .arg(role)
            .env_remove("ESCALATIONS_CONFIG")
            .env("ESCALATIONS__HTTP__BIND", "0.0.0.0:0")
            .env("ESCALATIONS__WIDGET__TOKEN_SECRET", "development-only-token-secret-refused-off-loopback")
            .output()
            .expect("run escalations");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{role}: refused");
        assert!(stderr.contains("is not a loopback address"), "{role}: {stderr}");
    }
}
