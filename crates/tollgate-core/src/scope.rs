//! What a key may do: model scope, endpoints, providers, source addresses. Parsed and
//! validated once (at creation, edit, and snapshot build); checked per request in memory.
//! Empty lists mean "no restriction" (PRODUCT §2).

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{Endpoint, ModelType};

/// Which public models a key may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelScope {
    #[default]
    All,
    /// Chat models only.
    Chat,
    /// Only the ids in `models`.
    List,
}

impl ModelScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Chat => "chat",
            Self::List => "list",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "all" => Self::All,
            "chat" => Self::Chat,
            "list" => Self::List,
            _ => return None,
        })
    }
}

/// An IP network (`10.0.0.0/8`, `2001:db8::/32`, or a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("{s:?} has a bad prefix length"))?
            }
        };
        Ok(Self { addr, prefix })
    }

    /// Whether every address of `self` is inside `outer`.
    pub fn is_within(&self, outer: &IpNet) -> bool {
        self.prefix >= outer.prefix && outer.contains(self.addr)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client seen on an IPv6 socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[full] & mask == b[full] & mask
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The endpoints a key may be restricted to, by their path under `/v1`. Listing models
/// is always allowed (and shows only what the key may use), so it is not among them.
pub const SCOPABLE_ENDPOINTS: &[Endpoint] = &[
    Endpoint::ChatCompletions,
    Endpoint::Completions,
    Endpoint::Embeddings,
    Endpoint::ImagesGenerations,
    Endpoint::Responses,
    Endpoint::Messages,
];

/// Accepts `/v1/embeddings`, `/embeddings` or `embeddings`.
pub fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let trimmed = s.trim().trim_start_matches("/v1").trim_start_matches('/');
    SCOPABLE_ENDPOINTS.iter().copied().find(|e| e.path().trim_start_matches("/v1/") == trimmed).ok_or_else(|| {
        let known: Vec<_> = SCOPABLE_ENDPOINTS.iter().map(|e| e.path()).collect();
        format!("{s:?} is not an endpoint (known: {})", known.join(", "))
    })
}

/// A key's restrictions in checkable form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyScopes {
    pub model_scope: ModelScope,
    pub models: BTreeSet<String>,
    pub endpoints: Vec<Endpoint>,
    /// True when the stored endpoint list was not empty (even if `endpoints` is).
    pub endpoints_restricted: bool,
    pub providers: BTreeSet<String>,
    pub ip_allowlist: Vec<IpNet>,
    /// True when the stored allowlist was not empty (even if `ip_allowlist` is).
    pub ip_restricted: bool,
}

impl KeyScopes {
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        !self.ip_restricted || self.ip_allowlist.iter().any(|n| n.contains(ip))
    }

    pub fn allows_endpoint(&self, e: Endpoint) -> bool {
        !self.endpoints_restricted || self.endpoints.contains(&e)
    }

    pub fn allows_model(&self, id: &str, model_type: ModelType) -> bool {
        match self.model_scope {
            ModelScope::All => true,
            ModelScope::Chat => model_type == ModelType::Chat,
            ModelScope::List => self.models.contains(id),
        }
    }

    pub fn allows_provider(&self, provider: &str) -> bool {
        self.providers.is_empty() || self.providers.contains(provider)
    }
}

/// The client's address: the TCP peer, or — when the peer is a trusted proxy — the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(peer: Option<IpAddr>, headers: &http::HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let Ok(v) = v.to_str() else { return Some(peer) };
        for part in v.split(',') {
            match part.trim().parse() {
                Ok(ip) => hops.push(ip),
                // A malformed chain cannot be trusted beyond the proxy itself.
                Err(_) => return Some(peer),
            }
        }
    }
    Some(hops.into_iter().rev().find(|ip| !is_trusted(*ip)).unwrap_or(peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_match_v4_v6_and_mapped() {
        let n = IpNet::parse("192.168.1.0/24").unwrap();
        assert!(n.contains(ip("192.168.1.77")));
        assert!(!n.contains(ip("192.168.2.1")));
        assert!(n.contains(ip("::ffff:192.168.1.5")));
        let one = IpNet::parse("10.0.0.1").unwrap();
        assert!(one.contains(ip("10.0.0.1")) && !one.contains(ip("10.0.0.2")));
        let v6 = IpNet::parse("2001:db8::/33").unwrap();
        assert!(v6.contains(ip("2001:db8:7fff::1")));
        assert!(!v6.contains(ip("2001:db8:8000::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(IpNet::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "abc", "10.0.0.0/x", "::/129"] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints_parse_in_every_spelling() {
        for s in ["/v1/embeddings", "/embeddings", "embeddings"] {
            assert_eq!(parse_endpoint(s), Ok(Endpoint::Embeddings));
        }
        assert_eq!(parse_endpoint("/v1/images/generations"), Ok(Endpoint::ImagesGenerations));
        assert_eq!(parse_endpoint("/v1/messages"), Ok(Endpoint::Messages));
        assert!(parse_endpoint("/v1/files").is_err());
    }

    #[test]
    fn empty_scopes_allow_everything() {
        let s = KeyScopes::default();
        assert!(s.allows_ip(ip("1.2.3.4")) && s.allows_endpoint(Endpoint::Embeddings));
        assert!(s.allows_model("x", ModelType::Image) && s.allows_provider("p"));
        let chat = KeyScopes { model_scope: ModelScope::Chat, ..Default::default() };
        assert!(chat.allows_model("x", ModelType::Chat) && !chat.allows_model("e", ModelType::Embedding));
        let list = KeyScopes { model_scope: ModelScope::List, models: ["a".to_owned()].into(), ..Default::default() };
        assert!(list.allows_model("a", ModelType::Embedding) && !list.allows_model("b", ModelType::Chat));
    }

    fn xff(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", http::HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = [IpNet::parse("10.0.0.0/8").unwrap()];
        let h = xff("1.1.1.1, 203.0.113.9, 10.0.0.2");
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("192.0.2.1"), &h, &trusted), ip("192.0.2.1"), "untrusted peer: header ignored");
        assert_eq!(client_ip(ip("10.0.0.1"), &http::HeaderMap::new(), &trusted), ip("10.0.0.1"));
        assert_eq!(client_ip(ip("10.0.0.1"), &xff("junk"), &trusted), ip("10.0.0.1"));
    }
}
