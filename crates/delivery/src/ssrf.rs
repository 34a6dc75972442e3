//! The address guard (docs/protocol.md §4: "webhook URLs resolving to private, loopback
//! or link-local addresses are refused unless the configuration allows
//! them").
//!
//! Checking a URL's host name once and connecting later would let DNS answer
//! differently the second time (rebinding), so the check sits inside the HTTP
//! client: [`GuardedResolver`] is its DNS resolver, and it hands the client
//! only the addresses it accepted, which are the ones connected to. IP
//! literals never reach a resolver, so [`check_url`] checks them before each
//! send. Either refusal is final for the delivery (`AttemptResult::Refused`).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Which kinds of addresses deliveries may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddressPolicy {
    /// `127.0.0.0/8`, `::1` (`webhooks.allow_loopback`).
    pub allow_loopback: bool,
    /// RFC 1918, CGNAT `100.64/10`, link-local `169.254/16` and `fe80::/10`,
    /// unique-local `fc00::/7` (`webhooks.allow_private`).
    pub allow_private: bool,
}

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// Loopback.
    Loopback,
    /// Private, shared, link-local or unique-local.
    Private,
    /// Unspecified, multicast, broadcast or reserved: never a webhook target.
    Special,
}

impl Blocked {
    fn describe(self) -> &'static str {
        match self {
            Blocked::Loopback => "a loopback address (webhooks.allow_loopback is off)",
            Blocked::Private => "a private or link-local address (webhooks.allow_private is off)",
            Blocked::Special => "an unspecified, multicast, broadcast or reserved address",
        }
    }
}

impl AddressPolicy {
    /// `None` when `ip` may be connected to, else why not.
    pub fn check(self, ip: IpAddr) -> Option<Blocked> {
        match classify(ip) {
            Some(Blocked::Loopback) if self.allow_loopback => None,
            Some(Blocked::Private) if self.allow_private => None,
            other => other,
        }
    }
}

/// The kind of a non-public address; `None` for an ordinary public one.
pub fn classify(ip: IpAddr) -> Option<Blocked> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        // `::ffff:10.0.0.1`, `64:ff9b::a00:1` and `2002:a00:1::` all reach
        // 10.0.0.1: an address that carries an IPv4 one is judged by it.
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

/// The IPv4 address an IPv6 one reaches through a translation or tunnel:
/// IPv4-mapped `::ffff:0:0/96`, NAT64 `64:ff9b::/96` (RFC 6052), 6to4
/// `2002::/16` (RFC 3056), and IPv4-compatible `::/96` (deprecated; not `::`
/// or `::1`, which are IPv6's own).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(v4) = ip.to_ipv4_mapped() {
        Some(v4)
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(low(s[6], s[7]))
    } else if s[0] == 0x2002 {
        Some(low(s[1], s[2]))
    } else if s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback() {
        Some(low(s[6], s[7]))
    } else {
        None
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Blocked> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some(Blocked::Loopback)
    } else if ip.is_private() || ip.is_link_local() || (a == 100 && (b & 0xc0) == 64) {
        Some(Blocked::Private)
    } else if a == 0 || ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        // 0/8 "this network" (0.0.0.0 reaches the local host), 224/4, 240/4.
        Some(Blocked::Special)
    } else {
        None
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<Blocked> {
    let s = ip.segments();
    if ip.is_loopback() {
        Some(Blocked::Loopback)
    } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xffc0) == 0xfec0 {
        // Unique-local, link-local, and the deprecated site-local.
        Some(Blocked::Private)
    } else if s[..3] == [0x64, 0xff9b, 1] {
        // Local-use NAT64 (RFC 8215): translates into the operator's own network.
        Some(Blocked::Private)
    } else if ip.is_unspecified() || ip.is_multicast() || s[..2] == [0x2001, 0] || s[..2] == [0x2001, 0xdb8] {
        // Teredo `2001::/32` tunnels to an IPv4 host it hides; `2001:db8::/32`
        // is for documentation.
        Some(Blocked::Special)
    } else {
        None
    }
}

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
    fn classifies_the_ranges() {
        for loopback in
            ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::"]
        {
            assert_eq!(classify(ip(loopback)), Some(Blocked::Loopback), "{loopback}");
        }
        for private in [
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b::192.168.0.1",
            "2002:a9fe:a9fe::1",
            "::10.0.0.1",
            "64:ff9b:1::1",
            "fec0::1",
        ] {
            assert_eq!(classify(ip(private)), Some(Blocked::Private), "{private}");
        }
        for special in [
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "ff02::1",
            "2001:0:4136:e378::1",
            "2001:db8::1",
            "64:ff9b::",
        ] {
            assert_eq!(classify(ip(special)), Some(Blocked::Special), "{special}");
        }
        for public in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(classify(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn range_edges_and_embedded_addresses() {
        let table = [
            ("100.63.255.255", None),
            ("100.64.0.0", Some(Blocked::Private)),
            ("100.127.255.255", Some(Blocked::Private)),
            ("101.64.0.1", None),
            ("1.0.0.0", None),
            ("223.255.255.255", None),
            ("239.255.255.255", Some(Blocked::Special)),
            ("fbff::1", None),
            ("fe7f::1", None),
            ("feff::1", Some(Blocked::Private)),
            ("ff00::1", Some(Blocked::Special)),
            ("2001:1::1", None),
            ("2001:4860::8888", None),
            ("2001:db9::1", None),
            ("64:ff9b:2::1", None),
            ("64:ff9b:0:0:0:1::1", None),
            // The IPv4 address is read from the right bits of each form.
            ("::ffff:192.168.0.1", Some(Blocked::Private)),
            ("64:ff9b::c0a8:1", Some(Blocked::Private)),
            ("64:ff9b::808:c0a8", None),
            ("2002:c0a8:1::", Some(Blocked::Private)),
            ("2002:808:c0a8::", None),
            ("2002::c0a8:1", Some(Blocked::Special)),
            ("::c0a8:1", Some(Blocked::Private)),
            ("::808:808", None),
            ("::0.0.0.2", Some(Blocked::Special)),
            ("1::c0a8:1", None),
        ];
        for (address, expected) in table {
            assert_eq!(classify(ip(address)), expected, "{address}");
        }
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
            "refused: m.test resolves to 224.0.0.1, an unspecified, multicast, broadcast or reserved address"
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
    fn policy_allows_what_is_configured_and_never_the_special_ones() {
        let open = AddressPolicy { allow_loopback: true, allow_private: true };
        assert_eq!(open.check(ip("127.0.0.1")), None);
        assert_eq!(open.check(ip("10.0.0.1")), None);
        assert_eq!(open.check(ip("0.0.0.0")), Some(Blocked::Special));
        let loopback_only = AddressPolicy { allow_loopback: true, allow_private: false };
        assert_eq!(loopback_only.check(ip("169.254.169.254")), Some(Blocked::Private));
        assert_eq!(loopback_only.check(ip("::1")), None);
        let private_only = AddressPolicy { allow_loopback: false, allow_private: true };
        assert_eq!(private_only.check(ip("127.0.0.1")), Some(Blocked::Loopback));
        assert_eq!(private_only.check(ip("fd00::1")), None);
        assert_eq!(AddressPolicy::default().check(ip("8.8.8.8")), None);
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
