//! Signatures verify with an independent Standard Webhooks implementation,
//! with either secret during a rotation.

use std::time::Duration;

use delivery::webhook_id;
use standardwebhooks::Webhook;

use crate::support::{
    Receiver, bot, eventually, fast_config, insert, key, message, secret, settings, start, with_store,
};

#[tokio::test]
async fn signatures_verify_with_either_secret_during_a_rotation() {
    with_store(|store| async move {
        let receiver = Receiver::start().await;
        let (old, new) = (secret(1), secret(2));
        let settings = settings(vec![bot("rotating", &receiver.url(), &[old.clone(), new.clone()])]);
        let running = start(&settings, &store, None, fast_config());
        let conv = key("rotating", "conv-1");
        insert(&store, &[(conv.clone(), message(1, "hello")), (conv.clone(), message(2, "ünïcode ✓"))]).await;
        eventually(Duration::from_secs(10), "two deliveries", || async { receiver.acked().len() == 2 }).await;
        running.stop().await;

        let stranger = Webhook::new(&secret(3)).expect("secret");
        for (request, sequence) in receiver.received().iter().zip(1u64..) {
            for secret in [&old, &new] {
                let verifier = Webhook::new(secret).expect("secret");
                verifier.verify(&request.body, &request.headers).expect("signature verifies");
            }
            assert!(
                stranger.verify(&request.body, &request.headers).is_err(),
                "a third secret must not verify"
            );
            assert_eq!(request.header("webhook-signature").split(' ').count(), 2);
            assert_eq!(request.id(), webhook_id("rotating", "conv-1", sequence));
            assert_eq!(request.header("content-type"), "application/json");
            let body = request.json();
            assert_eq!(body["botId"], "rotating");
            assert_eq!(body["channel"], "chat");
            assert_eq!(body["data"]["eventType"], "widgetMessage");
            assert_eq!(body["data"]["platformConversationId"], "conv-1");
            assert_eq!(body["data"]["sequence"], sequence);
            assert_eq!(body["data"]["escalationId"], "esc-1");
        }
        // A tampered body fails.
        let request = &receiver.received()[0];
        let mut tampered = request.body.to_vec();
        tampered.push(b' ');
        assert!(Webhook::new(&old).expect("secret").verify(&tampered, &request.headers).is_err());
    })
    .await;
}
