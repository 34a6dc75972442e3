//! The demo widget (`/demo`) in headless Chromium against the simulated
//! contact centre, as a person would use it: escalate, see the queue
//! position, the agent connects, messages both ways, a reload resumes the
//! stream after the last event seen, and the end of the session is shown.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).
//! Without them the test says so loudly and passes, except under CI
//! (`CI` set), where it fails. Set `DEMO_SCREENSHOT=path.png` to keep a
//! screenshot of the chat (the README's is `docs/demo.png`).

#[path = "support/deployment.rs"]
mod deployment;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::path::Path;
use std::time::Duration;

use deployment::{BOT, Deployment, Layout, free_port, wait_for};
use webdriver::Browser;

const AGENT: &str = "Alex Rivera";
const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_widget_escalates_chats_survives_a_reload_and_ends() {
    if !webdriver::available() {
        let message = "SKIPPED: /usr/bin/chromium or /usr/bin/chromedriver is missing \
                       (apt-get install chromium chromium-driver); the demo widget was NOT tested";
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("\n!!!!! {message} !!!!!\n");
        return;
    }
    let port = free_port();
    let simulator = format!("http://127.0.0.1:{port}");
    let layout = Layout {
        ingress: 1,
        workers: 1,
        webhook_url: Some(format!("{simulator}/webhooks")),
        extra: format!("[demo]\nenabled = true\nbot = \"{BOT}\"\n"),
        ..Layout::default()
    };
    let mut deployment = Deployment::start(Path::new(env!("CARGO_BIN_EXE_escalations")), &layout).await;
    let base = deployment.ingress[0].clone();
    deployment.spawn_extra(
        "simulate",
        &[
            "--bot",
            BOT,
            "--ingress",
            &base,
            "--agent",
            AGENT,
            "--queue-interval-ms",
            "1200",
            "--reply-delay-ms",
            "200",
            "--session-secs",
            "0",
        ],
    );
    let http = reqwest::Client::new();
    wait_for(WAIT, "the simulator to listen", || async { http.get(&simulator).send().await.is_ok() }).await;

    let browser = Browser::start(free_port()).await;
    let outcome = tokio::spawn(drive(browser, base)).await;
    if outcome.is_err() {
        eprintln!("{}", deployment.logs());
    }
    deployment.stop().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

async fn ready(browser: &Browser) {
    for _ in 0..100 {
        if browser.run("return document.body && document.body.dataset.ready === 'true';").await == true {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the demo page never became ready");
}

async fn drive(browser: Browser, base: String) {
    browser.goto(&format!("{base}/demo")).await;
    ready(&browser).await;
    browser.wait_text("#status", "not started", WAIT).await;
    browser.click("#escalate").await;

    // The queue: position 2, then 1, with the waiting time.
    browser.wait_text("#queue", "#2", WAIT).await;
    browser.wait_text("#queue", "~4 min", WAIT).await;
    browser.wait_text("#log", "You are number 2 in the queue", WAIT).await;
    // The agent connects and greets.
    browser.wait_text("#agent-name", AGENT, WAIT).await;
    browser.wait_text("#status", "connected", WAIT).await;
    browser.wait_text("#log", &format!("Hi, I'm {AGENT}"), WAIT).await;

    // Both ways.
    browser.type_text("#text", "Where is my order?").await;
    browser.click("#send").await;
    browser.wait_text("#log", "You said: Where is my order?", WAIT).await;

    // A reload resumes from the last event seen: nothing shown twice, nothing lost.
    let before: i64 = browser.text("#last-id").await.parse().expect("last id");
    assert!(before >= 6, "events seen before the reload: {before}");
    browser.refresh().await;
    ready(&browser).await;
    browser.wait_text("#log", &format!("resuming after event {before}"), WAIT).await;
    browser.wait_text("#log", "You said: Where is my order?", WAIT).await;
    browser.wait_text("#agent-name", AGENT, WAIT).await;
    browser.type_text("#text", "Thanks, that helps").await;
    browser.click("#send").await;
    browser.wait_text("#log", "You said: Thanks, that helps", WAIT).await;
    let log = browser.text("#log").await;
    assert_eq!(log.matches("You said: Where is my order?").count(), 1, "shown once after the reload:\n{log}");
    if let Some(path) = std::env::var_os("DEMO_SCREENSHOT") {
        std::fs::write(path, browser.screenshot().await).expect("screenshot");
    }

    // The end of the session.
    browser.type_text("#text", "bye").await;
    browser.click("#send").await;
    browser.wait_text("#log", "left the chat. The session has ended.", WAIT).await;
    browser.wait_text("#status", "ended", WAIT).await;
    browser.wait_text("#escalate", "Start a new chat", WAIT).await;
    browser.quit().await;
}
