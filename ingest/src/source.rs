//! Who sent a webhook, and whether they may: the source address (the peer, or behind a
//! trusted reverse proxy the client it reports), the allowlist, and the per-source rate
//! limit.
//!
//! `X-Forwarded-For` is believed only from a trusted proxy, and then read from the
//! right: each proxy appends the address it saw, so the right-most address that is not
//! itself a trusted proxy is the first one no one we trust could have written. Anything
//! to its left came from the client and could say anything.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;

use axum::http::HeaderMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

use crate::error::ApiError;

/// A set of addresses and CIDR blocks, parsed from a comma-separated list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpNets(Vec<IpNet>);

impl IpNets {
    /// Parses `52.89.214.238, 10.0.0.0/8, ::1`: CIDRs, or bare addresses meaning one
    /// host. An empty list is the empty set.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                IpNet::from_str(item)
                    .or_else(|_| IpAddr::from_str(item).map(IpNet::from))
                    .map_err(|_| format!("`{item}` is not an IP address or CIDR block"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is in one of the blocks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// `HOOX_RATE_LIMIT_PER_MIN`: a number of webhooks a minute, or empty for no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RatePerMinute(pub Option<NonZeroU32>);

impl RatePerMinute {
    /// Parses a positive integer, or an empty string for "off".
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Self(None));
        }
        text.parse::<NonZeroU32>()
            .map(|n| Self(Some(n)))
            .map_err(|_| format!("`{text}` is not a positive integer (or empty for no limit)"))
    }
}

/// What the webhook checks about its caller's address.
pub struct Sources {
    allowlist: IpNets,
    trusted_proxies: IpNets,
    limiter: Option<(NonZeroU32, DefaultKeyedRateLimiter<IpAddr>)>,
}

impl Sources {
    /// Sources checked against `allowlist` (empty: everyone), with `X-Forwarded-For`
    /// believed from `trusted_proxies`, and at most `per_minute` webhooks a minute each.
    pub fn new(allowlist: IpNets, trusted_proxies: IpNets, per_minute: RatePerMinute) -> Self {
        Self {
            allowlist,
            trusted_proxies,
            limiter: per_minute
                .0
                .map(|n| (n, RateLimiter::keyed(Quota::per_minute(n)))),
        }
    }

    /// Everyone allowed, no proxy trusted, no rate limit.
    pub fn open() -> Self {
        Self::new(IpNets::default(), IpNets::default(), RatePerMinute(None))
    }

    /// Whether `peer` is a trusted proxy (exempt from the per-address connection cap).
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.contains(peer)
    }

    /// The source of a request from `peer`: the peer itself, or when the peer is a
    /// trusted proxy, the right-most untrusted address of `X-Forwarded-For`. `None`
    /// when a trusted proxy forwarded an address that does not parse: no one can say
    /// who sent it.
    pub fn source(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer.to_canonical();
        if !self.is_trusted_proxy(peer) {
            return Some(peer);
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|value| value.to_str().ok())
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let mut source = peer;
        for hop in hops.into_iter().rev() {
            let hop = IpAddr::from_str(hop).ok()?.to_canonical();
            source = hop;
            if !self.is_trusted_proxy(hop) {
                break;
            }
        }
        Some(source)
    }

    /// Refuses a source outside the allowlist, when one is configured.
    pub fn check_allowed(&self, source: Option<IpAddr>) -> Result<(), ApiError> {
        if self.allowlist.is_empty() || source.is_some_and(|ip| self.allowlist.contains(ip)) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    /// Counts one webhook from `source` (or from `peer` when the source is unknown)
    /// against the rate limit, when one is configured.
    pub fn check_rate(&self, source: Option<IpAddr>, peer: IpAddr) -> Result<(), ApiError> {
        let Some((per_minute, limiter)) = &self.limiter else {
            return Ok(());
        };
        limiter
            .check_key(&source.unwrap_or(peer))
            .map_err(|_| ApiError::RateLimited {
                per_minute: per_minute.get(),
            })
    }

    /// Forgets sources whose budget is full again, so the limiter's memory follows the
    /// number of recent senders rather than every address ever seen.
    pub fn forget_idle(&self) {
        if let Some((_, limiter)) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    fn behind(proxies: &str) -> Sources {
        Sources::new(
            IpNets::default(),
            IpNets::parse(proxies).unwrap(),
            RatePerMinute(None),
        )
    }

    #[test]
    fn lists_take_cidrs_and_bare_addresses() {
        let nets = IpNets::parse(" 52.89.214.238, 10.0.0.0/8,::1 ,").unwrap();
        assert!(nets.contains(ip("52.89.214.238")));
        assert!(nets.contains(ip("10.20.30.40")));
        assert!(nets.contains(ip("::1")));
        assert!(
            nets.contains(ip("::ffff:10.0.0.1")),
            "IPv4-mapped IPv6 is IPv4"
        );
        assert!(!nets.contains(ip("52.89.214.239")));
        assert!(IpNets::parse("").unwrap().is_empty());
        assert!(IpNets::parse("10.0.0.0/33").is_err());
        assert!(IpNets::parse("example.com").is_err());
    }

    #[test]
    fn forwarded_for_is_ignored_from_an_untrusted_peer() {
        let sources = behind("10.0.0.1");
        let source = sources.source(ip("203.0.113.9"), &xff("52.89.214.238"));
        assert_eq!(source, Some(ip("203.0.113.9")));
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_hop_is_the_source() {
        let sources = behind("10.0.0.0/8");
        let peer = ip("10.0.0.1");
        let spoofed = xff("52.89.214.238, 203.0.113.9, 10.0.0.2");
        assert_eq!(sources.source(peer, &spoofed), Some(ip("203.0.113.9")));
        assert_eq!(sources.source(peer, &HeaderMap::new()), Some(peer));
        assert_eq!(sources.source(peer, &xff("10.0.0.3")), Some(ip("10.0.0.3")));
        assert_eq!(sources.source(peer, &xff("junk, 10.0.0.3")), None);
        assert_eq!(
            sources.source(peer, &xff("junk, 203.0.113.9")),
            Some(ip("203.0.113.9")),
            "what the client wrote left of the proxy's hop does not matter"
        );
    }

    #[test]
    fn the_rate_limit_counts_per_source() {
        let sources = Sources::new(
            IpNets::default(),
            IpNets::default(),
            RatePerMinute::parse("2").unwrap(),
        );
        let (a, b) = (Some(ip("192.0.2.1")), Some(ip("192.0.2.2")));
        let peer = ip("127.0.0.1");
        assert!(sources.check_rate(a, peer).is_ok());
        assert!(sources.check_rate(a, peer).is_ok());
        assert!(matches!(
            sources.check_rate(a, peer),
            Err(ApiError::RateLimited { per_minute: 2 })
        ));
        assert!(sources.check_rate(b, peer).is_ok());
        assert_eq!(RatePerMinute::parse("").unwrap(), RatePerMinute(None));
        assert!(RatePerMinute::parse("0").is_err());
    }
}
