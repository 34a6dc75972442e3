//! Migrations are idempotent and safe to run from two processes at once.

mod support;

use store::{Error, Store};
use support::{database_url, fresh_store};

#[tokio::test]
async fn migrate_twice_applies_once() {
    let store = fresh_store();
    let first = store.migrate().await;
    let second = store.migrate().await;
    let count = store.count_events().await;
    store.drop_schema().await.expect("drop schema");
    assert!(first.expect("first migrate") >= 1, "the first run applies every migration");
    assert_eq!(second.expect("second migrate"), 0, "the second run finds nothing to do");
    assert_eq!(count.expect("tables exist"), 0);
}

#[tokio::test]
async fn concurrent_migrations_both_succeed() {
    let store = fresh_store();
    // Two pools, as two processes would have.
    let other = Store::connect(&database_url(), store.schema(), 2).expect("connect");
    let (a, b) = tokio::join!(store.migrate(), other.migrate());
    let count = store.count_widget_events().await;
    store.drop_schema().await.expect("drop schema");
    let (a, b) = (a.expect("first migrate"), b.expect("second migrate"));
    assert!(a + b >= 1 && (a == 0 || b == 0), "exactly one of them applied the migrations: {a}, {b}");
    assert_eq!(count.expect("tables exist"), 0);
}

#[tokio::test]
async fn a_bad_schema_name_is_refused() {
    let error = Store::connect(&database_url(), "x; DROP TABLE y", 1).expect_err("refused");
    assert!(matches!(error, Error::InvalidSchema(_)));
}
