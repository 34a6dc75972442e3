//! Just enough W3C WebDriver to drive Debian's headless Chromium through
//! `chromedriver`: a session, navigation, elements, script, screenshots.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

/// The key W3C WebDriver names an element reference with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether Chromium and its driver are installed.
pub fn available() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

/// A chromedriver process and one headless browser session.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
}

impl Browser {
    /// Starts chromedriver on `port` and a headless Chromium session.
    pub async fn start(port: u16) -> Browser {
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let mut session = None;
        for _ in 0..100 {
            let capabilities = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-dev-shm-usage", "--window-size=520,900"],
            }}}});
            if let Ok(response) = http.post(format!("{base}/session")).json(&capabilities).send().await {
                let body: Value = response.json().await.expect("session json");
                session = Some(body["value"]["sessionId"].as_str().expect("session id").to_owned());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let session = format!("{base}/session/{}", session.expect("chromedriver answers"));
        Browser { driver, http, session }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("webdriver call");
        let value: Value = response.json().await.expect("webdriver json");
        if let Some(error) = value["value"].get("error") {
            panic!("webdriver {path}: {error}: {}", value["value"]["message"]);
        }
        value["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    pub async fn refresh(&self) {
        self.call(reqwest::Method::POST, "/refresh", Some(json!({}))).await;
    }

    /// Runs `script` (a function body) and returns what it returns.
    pub async fn run(&self, script: &str) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .call(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css})))
            .await;
        found[ELEMENT].as_str().expect("element id").to_owned()
    }

    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    pub async fn type_text(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{id}/value"), Some(json!({"text": text}))).await;
    }

    pub async fn text(&self, css: &str) -> String {
        let id = self.element(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Waits until the text of `css` contains `wanted`.
    pub async fn wait_text(&self, css: &str, wanted: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let text = self.text(css).await;
            if text.contains(wanted) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "`{css}` never showed {wanted:?}; it shows:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let data = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD.decode(data.as_str().expect("base64")).expect("png")
    }

    pub async fn quit(mut self) {
        let _ = self.http.delete(&self.session).send().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
