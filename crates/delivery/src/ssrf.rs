//! The address guard (docs/protocol.md §4: "webhook URLs resolving to private, loopback
//! or link-local addresses are refused unless the configuration allows
//! them").
//!
//! Checking a URL's host name once and connecting later would let DNS answer
//! differently the second time (rebinding), so the check sits inside the HTTP
//! client: [`GuardedResolver`] is its DNS resolver, and it hands the client
//! only the addresses it accepted, which are the ones connected to. IP
//! literals never reach a resolver, so [`check_url`] checks them before each
//! send. Either refusal is final for the delivery (`AttemptResult::Refused`). What
//! is refused is settings' one table of ranges ([`settings::addresses`]), the one
//! `config check` uses too.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

pub use settings::addresses::{AddressPolicy, Blocked, classify};

/// A refused destination: the error the resolver returns (found again in
/// the HTTP client's error chain) and what [`check_url`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressRefused {
    /// The host as written in the URL.
    pub host: String,
    /// The refused addresses and why, or empty when the name had no address.
    pub refused: Vec<(IpAddr, Blocked)>,
}

impl fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.refused.first() {
            Some((ip, why)) if self.host == ip.to_string() => {
                write!(f, "refused: {} is {}", self.host, why.describe())
            }
            Some((ip, why)) => write!(f, "refused: {} resolves to {ip}, {}", self.host, why.describe()),
            None => write!(f, "refused: {} has no address", self.host),
        }
    }
}

impl std::error::Error for AddressRefused {}

/// Checks an IP-literal host before sending (host names are checked by
/// [`GuardedResolver`] when the client resolves them).
pub fn check_url(url: &Url, policy: AddressPolicy) -> Result<(), AddressRefused> {
    let ip = match url.host() {
        Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
        Some(Host::Domain(_)) => return Ok(()),
        None => return Err(AddressRefused { host: String::new(), refused: Vec::new() }),
    };
    match policy.check(ip) {
        None => Ok(()),
        Some(why) => Err(AddressRefused { host: ip.to_string(), refused: vec![(ip, why)] }),
    }
}

/// The HTTP client's DNS resolver: the system resolver (or a fixed table,
/// for tests), minus every address the policy refuses; an error when none
/// is left.
#[derive(Debug, Clone, Default)]
pub struct GuardedResolver {
    policy: AddressPolicy,
    /// Names answered from this table instead of DNS, lower-case.
    hosts: Arc<HashMap<String, Vec<IpAddr>>>,
}

impl GuardedResolver {
    /// A resolver enforcing `policy`, answering the names in `hosts` itself.
    pub fn new(policy: AddressPolicy, hosts: HashMap<String, Vec<IpAddr>>) -> Self {
        let hosts = hosts.into_iter().map(|(name, ips)| (name.to_ascii_lowercase(), ips)).collect();
        Self { policy, hosts: Arc::new(hosts) }
    }

    /// Resolves `host` and keeps the permitted addresses.
    pub async fn lookup(
        &self,
        host: &str,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let found: Vec<SocketAddr> = match self.hosts.get(&host.to_ascii_lowercase()) {
            Some(ips) => ips.iter().map(|ip| SocketAddr::new(*ip, 0)).collect(),
            None => tokio::net::lookup_host((host, 0)).await?.collect(),
        };
        let mut allowed = Vec::with_capacity(found.len());
        let mut refused = Vec::new();
        for addr in found {
            match self.policy.check(addr.ip()) {
                None => allowed.push(addr),
                Some(why) => refused.push((addr.ip(), why)),
            }
        }
        if allowed.is_empty() {
            return Err(Box::new(AddressRefused { host: host.to_owned(), refused }));
        }
        Ok(allowed)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.clone();
        Box::pin(async move {
            // The client fills in the URL's port; the one returned here is ignored.
            let addrs = resolver.lookup(name.as_str()).await?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The [`AddressRefused`] somewhere in an error's source chain, if any.
pub fn find_refusal<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a AddressRefused> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(refused) = error.downcast_ref::<AddressRefused>() {
            return Some(refused);
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn refusals_say_what_was_refused() {
        let refused =
            |host: &str, refused: Vec<(IpAddr, Blocked)>| AddressRefused { host: host.into(), refused };
        assert_eq!(refused("h.test", Vec::new()).to_string(), "refused: h.test has no address");
        assert_eq!(
            refused("::1", vec![(ip("::1"), Blocked::Loopback)]).to_string(),
            "refused: ::1 is a loopback address (webhooks.allow_loopback is off)"
        );
        assert_eq!(
            refused("m.test", vec![(ip("224.0.0.1"), Blocked::Special)]).to_string(),
            "refused: m.test resolves to 224.0.0.1, an unspecified, multicast, broadcast, documentation or reserved address"
        );
        let no_host = Url::parse("mailto:a@b.example").expect("url");
        assert_eq!(check_url(&no_host, AddressPolicy::default()), Err(refused("", Vec::new())));
        let literal = Url::parse("http://[fe80::1]/").expect("url");
        assert_eq!(
            check_url(&literal, AddressPolicy::default()),
            Err(refused("fe80::1", vec![(ip("fe80::1"), Blocked::Private)]))
        );
        let open = AddressPolicy { allow_loopback: true, allow_private: true };
        assert_eq!(check_url(&literal, open), Ok(()));
        // Found below the error that wraps it, as in the HTTP client's error chain.
        #[derive(Debug)]
        struct Wrapper(Option<AddressRefused>);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("request failed")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.0.as_ref().map(|e| e as _)
            }
        }
        let wrapped = Wrapper(Some(refused("x", Vec::new())));
        assert_eq!(find_refusal(&wrapped), Some(&refused("x", Vec::new())));
        assert_eq!(find_refusal(&Wrapper(None)), None);
    }

    #[test]
    fn literal_urls_are_checked() {
        let closed = AddressPolicy::default();
        let url = |s: &str| Url::parse(s).expect("url");
        let refused = check_url(&url("http://169.254.169.254/latest"), closed).expect_err("refused");
        assert_eq!(
            refused.to_string(),
            "refused: 169.254.169.254 is a private or link-local address (webhooks.allow_private is off)"
        );
        assert!(check_url(&url("http://[::1]:8080/"), closed).is_err());
        assert!(check_url(&url("http://[::ffff:10.0.0.1]/"), closed).is_err());
        assert!(check_url(&url("https://example.com/hook"), closed).is_ok(), "names are the resolver's job");
        assert!(check_url(&url("http://8.8.8.8/"), closed).is_ok());
    }

    #[tokio::test]
    async fn resolver_drops_refused_addresses() {
        let hosts = HashMap::from([
            ("Mixed.Test".to_owned(), vec![ip("10.0.0.1"), ip("93.184.216.34")]),
            ("internal.test".to_owned(), vec![ip("10.0.0.1")]),
        ]);
        let resolver = GuardedResolver::new(AddressPolicy::default(), hosts);
        let addrs = resolver.lookup("mixed.test").await.expect("one address left");
        assert_eq!(addrs, vec![SocketAddr::new(ip("93.184.216.34"), 0)]);
        let error = resolver.lookup("internal.test").await.expect_err("refused");
        assert_eq!(
            error.to_string(),
            "refused: internal.test resolves to 10.0.0.1, a private or link-local address (webhooks.allow_private is off)"
        );
        let error = resolver.lookup("localhost").await.expect_err("refused");
        assert!(find_refusal(error.as_ref()).is_some(), "{error}");
        // What the HTTP client calls: the same answer, names matched whatever their case.
        let name: Name = "MIXED.test".parse().expect("name");
        let addrs: Vec<SocketAddr> = resolver.resolve(name).await.expect("resolves").collect();
        assert_eq!(addrs, vec![SocketAddr::new(ip("93.184.216.34"), 0)]);
        let name: Name = "internal.test".parse().expect("name");
        assert!(resolver.resolve(name).await.is_err());
    }
}
