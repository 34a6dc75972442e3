//! Errors as one line of text for a log field or a stored note.

/// `error` with its sources, `outer: inner: innermost`: top-level messages
/// alone (a pool's, lapin's) often do not say what broke. A source whose
/// message the text already ends with (wrappers that repeat it) is said once.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper {
        message: String,
        source: Option<Box<dyn std::error::Error + 'static>>,
    }

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.message)
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.source.as_deref()
        }
    }

    fn wrap(message: &str, source: Option<Wrapper>) -> Wrapper {
        Wrapper { message: message.to_owned(), source: source.map(|s| Box::new(s) as Box<_>) }
    }

    #[test]
    fn lists_every_source_once_in_order() {
        let alone = wrap("db error", None);
        assert_eq!(error_chain(&alone), "db error");
        let nested = wrap("claiming", Some(wrap("db error", Some(wrap("connection reset", None)))));
        assert_eq!(error_chain(&nested), "claiming: db error: connection reset");
        // A wrapper that repeats its source's message: said once.
        let repeated = wrap("io: connection reset", Some(wrap("connection reset", None)));
        assert_eq!(error_chain(&repeated), "io: connection reset");
    }
}
