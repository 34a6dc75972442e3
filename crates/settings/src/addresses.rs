//! Which addresses a webhook may go to (docs/protocol.md §4: "webhook URLs resolving to
//! private, loopback or link-local addresses are refused unless the configuration allows
//! them"). One table of ranges, used by `config check` for the literal addresses of
//! `webhook_url` and by the delivery guard for every address a name resolves to, so a URL
//! the configuration accepts is never refused on every send, nor the other way round.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use ipnet::IpNet;

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
    /// Unspecified, multicast, broadcast, documentation, benchmarking or
    /// reserved: never a webhook target, whatever the policy.
    Special,
}

impl Blocked {
    /// What the address is, and the setting that allows it (if any).
    pub fn describe(self) -> &'static str {
        match self {
            Blocked::Loopback => "a loopback address (webhooks.allow_loopback is off)",
            Blocked::Private => "a private or link-local address (webhooks.allow_private is off)",
            Blocked::Special => "an unspecified, multicast, broadcast, documentation or reserved address",
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

/// The ranges that are not ordinary public addresses, and what each is.
const RANGES: &[(&str, Blocked)] = &[
    ("127.0.0.0/8", Blocked::Loopback),
    ("10.0.0.0/8", Blocked::Private),
    ("172.16.0.0/12", Blocked::Private),
    ("192.168.0.0/16", Blocked::Private),
    // Link-local (cloud metadata lives at 169.254.169.254) and CGNAT shared space.
    ("169.254.0.0/16", Blocked::Private),
    ("100.64.0.0/10", Blocked::Private),
    // "This network" (0.0.0.0 reaches the local host), multicast, reserved and broadcast.
    ("0.0.0.0/8", Blocked::Special),
    ("224.0.0.0/4", Blocked::Special),
    ("240.0.0.0/4", Blocked::Special),
    // IETF protocol assignments, documentation (TEST-NET-1..3), benchmarking.
    ("192.0.0.0/24", Blocked::Special),
    ("192.0.2.0/24", Blocked::Special),
    ("198.51.100.0/24", Blocked::Special),
    ("203.0.113.0/24", Blocked::Special),
    ("198.18.0.0/15", Blocked::Special),
    ("::1/128", Blocked::Loopback),
    // Unique-local, link-local, the deprecated site-local, and local-use NAT64
    // (RFC 8215, which translates into the operator's own network).
    ("fc00::/7", Blocked::Private),
    ("fe80::/10", Blocked::Private),
    ("fec0::/10", Blocked::Private),
    ("64:ff9b:1::/48", Blocked::Private),
    // Unspecified, multicast, Teredo (tunnels to an IPv4 host it hides), documentation.
    ("::/128", Blocked::Special),
    ("ff00::/8", Blocked::Special),
    ("2001::/32", Blocked::Special),
    ("2001:db8::/32", Blocked::Special),
];

static TABLE: LazyLock<Vec<(IpNet, Blocked)>> = LazyLock::new(|| {
    RANGES
        .iter()
        .map(|(net, kind)| (net.parse().unwrap_or_else(|e| panic!("range {net}: {e}")), *kind))
        .collect()
});

/// The kind of a non-public address; `None` for an ordinary public one. An
/// IPv6 address that carries an IPv4 one is judged by the IPv4 address.
pub fn classify(ip: IpAddr) -> Option<Blocked> {
    let ip = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    TABLE.iter().find(|(net, _)| net.contains(&ip)).map(|(_, kind)| *kind)
}

/// The IPv4 address an IPv6 one reaches through a translation or tunnel:
/// IPv4-mapped `::ffff:0:0/96`, IPv4-translated `::ffff:0:0:0/96` (RFC 2765),
/// NAT64 `64:ff9b::/96` (RFC 6052), 6to4 `2002::/16` (RFC 3056), and
/// IPv4-compatible `::/96` (deprecated; not `::` or `::1`, IPv6's own).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(v4) = ip.to_ipv4_mapped() {
        Some(v4)
    } else if s[..6] == [0, 0, 0, 0, 0xffff, 0] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(low(s[6], s[7]))
    } else if s[0] == 0x2002 {
        Some(low(s[1], s[2]))
    } else if s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback() {
        Some(low(s[6], s[7]))
    } else {
        None
    }
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
            "::ffff:0:10.0.0.1",
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
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.255",
            "198.18.0.0",
            "198.19.255.255",
            "::ffff:0:192.0.2.1",
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
            "192.0.1.255",
            "192.0.3.0",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "203.0.114.0",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::ffff:0:8.8.8.8",
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
            ("::ffff:0:c0a8:1", Some(Blocked::Private)),
            ("::fffe:0:c0a8:1", None),
            ("::ffff:1:c0a8:1", None),
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
    fn descriptions_name_the_setting() {
        assert_eq!(Blocked::Loopback.describe(), "a loopback address (webhooks.allow_loopback is off)");
        assert_eq!(
            Blocked::Private.describe(),
            "a private or link-local address (webhooks.allow_private is off)"
        );
        assert_eq!(
            Blocked::Special.describe(),
            "an unspecified, multicast, broadcast, documentation or reserved address"
        );
    }
}
