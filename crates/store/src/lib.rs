//! PostgreSQL: the pool, the migrations, and one function per query.
//!
//! Everything lives in one configured schema. The worker's write path is
//! batch-shaped: for the deliveries of one shard it opens a transaction on
//! [`Store::client`], locks and loads the conversations, filters the event ids
//! already recorded, runs the state machine, writes everything and commits.
//! Each batch function is one statement taking arrays (`UNNEST`), whatever the
//! batch size. Read-side queries (for the query endpoints, the CLI and tests)
//! and the shard leases are methods on [`Store`], each on a pooled connection.
//!
//! - [`pool`]: [`Store`], the pool and its schema.
//! - [`migrations`]: [`Store::migrate`], the embedded, ordered migrations.
//! - [`executor`]: [`Executor`], what the batch functions run on.
//! - [`key`]: [`ConvKey`], the key of every per-conversation row.
//! - [`conversations`]: the state of each conversation.
//! - [`events`]: the dedupe store and transition/rejection log.
//! - [`deliveries`]: the widget stream and the webhook outbox.
//! - [`outbox`]: the webhook dispatcher's claims of conversations' heads.
//! - [`settle`]: settling claimed deliveries, many in one transaction.
//! - [`dead_letters`]: dead letters (list, show, replay, skip, purge) and a
//!   conversation's deliveries with their attempts.
//! - [`timers`]: durable timers, claimed by pollers.
//! - [`leases`]: workers and the shards they hold.
//! - [`gauges`]: what the admin listener's gauges read, in capped index walks.
//! - [`listen`]: [`OutboxListener`], `LISTEN` for new deliveries.
//! - [`error`]: [`Error`] and [`Result`].

pub mod batch_tx;
mod codec;
pub mod conversations;
pub mod dead_letters;
pub mod deliveries;
pub mod error;
pub mod events;
pub mod executor;
pub mod gauges;
pub mod key;
pub mod leases;
pub mod listen;
pub mod migrations;
pub mod outbox;
pub mod pool;
pub mod settle;
pub mod timers;

pub use batch_tx::BatchTransaction;
pub use conversations::{StoredConversation, lock_conversations, save_conversations};
pub use dead_letters::{AttemptRecord, DeadLetterChange, DeadLetterFilter, DeliveryRecord};
pub use deliveries::{
    ClaimAtInsert, Queued, WebhookDeliveryRow, insert_webhook_deliveries, insert_widget_events,
    outbox_channel, queue_webhook_deliveries,
};
pub use error::{Error, Result};
pub use events::{EventRecord, applied_event_ids, record_events};
pub use executor::Executor;
pub use gauges::BotOutbox;
pub use key::ConvKey;
pub use leases::{Lease, LeaseFence, check_lease};
pub use listen::OutboxListener;
pub use outbox::{ClaimGroup, Claimed, ClaimedDelivery, DeadReason, UnsendableHead};
pub use pool::Store;
pub use settle::{NewAttempt, Settle, SettleJob};
pub use timers::{DueTimer, claim_due_timers, delete_fired_timer, delete_timers, upsert_timers};
