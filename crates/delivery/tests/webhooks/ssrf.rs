//! The address guard: URLs that are, or resolve to, loopback, private or
//! link-local addresses are refused before any connection when the settings
//! do not allow them. Nothing is ever sent to 10.x or 169.254.x: literals are
//! refused before sending and names are answered by the test's host table,
//! whose refused answers never reach the connector.

use std::time::Duration;

use store::DeadReason;

use crate::support::{
    Receiver, bot, eventually, fast_config, hosts, insert, key, message, secret, settings, start, with_store,
};

#[tokio::test]
async fn refused_addresses_are_final_and_never_contacted() {
    with_store(|store| async move {
        let receiver = Receiver::start().await;
        let port = receiver.addr.port();
        let targets = [
            ("loop-literal", format!("http://127.0.0.1:{port}/hook")),
            ("loop-name", format!("http://localhost:{port}/hook")),
            ("private-literal", "http://10.0.0.1/hook".to_owned()),
            ("metadata-literal", "http://169.254.169.254/latest/meta-data".to_owned()),
            ("mapped-literal", "http://[::ffff:10.0.0.1]/hook".to_owned()),
            ("private-name", format!("http://internal.test:{port}/hook")),
            ("metadata-name", "http://metadata.test/latest".to_owned()),
        ];
        let mut settings =
            settings(targets.iter().map(|(id, url)| bot(id, url, &[secret(1)])).collect());
        settings.webhooks.allow_loopback = false;
        settings.webhooks.allow_private = false;
        let mut config = fast_config();
        config.hosts = hosts(&[("internal.test", "10.0.0.1"), ("metadata.test", "169.254.169.254")]);
        let running = start(&settings, &store, None, config);
        insert(&store, &targets.iter().map(|(id, _)| (key(id, "c"), message(1, "x"))).collect::<Vec<_>>()).await;

        for (id, _) in &targets {
            eventually(Duration::from_secs(10), &format!("{id} dead"), || async {
                store.deliveries_with_attempts(&key(id, "c")).await.expect("read")[0].0.status == "dead"
            })
            .await;
        }
        running.stop().await;
        assert_eq!(receiver.count(), 0, "the loopback receiver was never contacted");
        for (id, _) in &targets {
            let (delivery, attempts) = store.deliveries_with_attempts(&key(id, "c")).await.expect("read").remove(0);
            assert_eq!(delivery.reason, Some(DeadReason::FinalStatus), "{id}");
            assert_eq!(attempts.len(), 1, "{id}: refused at the first attempt");
            let error = attempts[0].error.clone().unwrap_or_default();
            assert!(error.starts_with("refused: "), "{id}: {error}");
            assert_eq!(attempts[0].status_code, None);
            println!("{id}: {error}");
        }
        let error = |id: &str| {
            let store = store.clone();
            let id = id.to_owned();
            async move { store.deliveries_with_attempts(&key(&id, "c")).await.expect("read")[0].0.last_error.clone() }
        };
        assert_eq!(
            error("private-name").await.as_deref(),
            Some("refused: internal.test resolves to 10.0.0.1, a private or link-local address (webhooks.allow_private is off)")
        );
        assert_eq!(
            error("metadata-literal").await.as_deref(),
            Some("refused: 169.254.169.254 is a private or link-local address (webhooks.allow_private is off)")
        );
    })
    .await;
}

#[tokio::test]
async fn allowed_loopback_names_connect_to_the_checked_address() {
    with_store(|store| async move {
        let receiver = Receiver::start().await;
        let port = receiver.addr.port();
        let settings = settings(vec![
            bot("alias", &format!("http://alias.test:{port}/hook"), &[secret(1)]),
            bot("localhost", &format!("http://localhost:{port}/hook"), &[secret(1)]),
        ]);
        let mut config = fast_config();
        config.hosts = hosts(&[("alias.test", "127.0.0.1")]);
        let running = start(&settings, &store, None, config);
        insert(&store, &[(key("alias", "c"), message(1, "x")), (key("localhost", "c"), message(1, "x"))])
            .await;
        eventually(Duration::from_secs(10), "delivered", || async { receiver.acked().len() == 2 }).await;
        running.stop().await;
    })
    .await;
}
