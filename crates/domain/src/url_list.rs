//! A list of node URLs in one string (`broker.url = "amqp://a,amqp://b"`): the one
//! rule for where it splits, shared by the settings that validate it and the
//! broker client that connects to its nodes.

/// The URLs of `list`: split at each comma that starts a new `scheme://` URL
/// (a comma anywhere else, e.g. in a password, stays), trimmed, empty entries
/// dropped.
#[must_use]
pub fn split_urls(list: &str) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    for piece in list.split(',') {
        if piece.trim().is_empty() {
            continue;
        }
        match urls.last_mut() {
            Some(previous) if !starts_with_scheme(piece) => {
                previous.push(',');
                previous.push_str(piece);
            }
            _ => urls.push(piece.to_owned()),
        }
    }
    urls.into_iter().map(|url| url.trim().to_owned()).filter(|url| !url.is_empty()).collect()
}

/// Whether `piece` starts (after blanks) with `scheme://`.
#[must_use]
pub fn starts_with_scheme(piece: &str) -> bool {
    piece.trim_start().split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_is_one_node() {
        assert_eq!(
            split_urls("amqp://guest:guest@127.0.0.1:5672/%2f"),
            ["amqp://guest:guest@127.0.0.1:5672/%2f"]
        );
    }

    #[test]
    fn a_list_splits_at_each_new_url_only() {
        assert_eq!(
            split_urls(" amqp://a:1/%2f , amqps://u:p,w@b:2/v,amqp://c:3 ,"),
            ["amqp://a:1/%2f", "amqps://u:p,w@b:2/v", "amqp://c:3"]
        );
        assert_eq!(split_urls(""), Vec::<String>::new());
        assert_eq!(split_urls("nope,amqp://a"), ["nope", "amqp://a"]);
        assert_eq!(split_urls("amqp://u:a,b@h1/%2f, amqp://h2"), ["amqp://u:a,b@h1/%2f", "amqp://h2"]);
        assert_eq!(split_urls("amqp://u:p@h1,://h2"), ["amqp://u:p@h1,://h2"]);
    }

    #[test]
    fn a_scheme_is_letters_digits_plus_minus_dot() {
        assert!(starts_with_scheme("  amqps://h"));
        assert!(starts_with_scheme("a+b-c.d://h"));
        assert!(!starts_with_scheme("://h"));
        assert!(!starts_with_scheme("a b://h"), "a blank in the scheme");
        assert!(!starts_with_scheme("p@ss://h"));
        assert!(!starts_with_scheme("host:5672"));
    }
}
