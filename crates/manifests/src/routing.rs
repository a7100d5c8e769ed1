//! Routing by rule in front of the weight: a request whose header or cookie matches
//! goes to the canary whatever the canary's weight (testers reaching v2 on purpose),
//! and the lab's failure demo, a hop in front of the router that strips what the rules
//! match on. Rendered into the one HAProxy configuration both platforms run
//! ([`crate::haproxy_config`]).

use serde::Serialize;

/// What a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchOn {
    Header,
    Cookie,
}

/// `NAME=VALUE` on a header or a cookie sends the request to the canary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteRule {
    pub on: MatchOn,
    pub name: String,
    pub value: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("routing rule `{0}`: expected NAME=VALUE, e.g. x-tester=1")]
    Shape(String),
    #[error(
        "routing rule `{0}`: the name may hold only letters, digits, `-` and `_`, and the value \
         only those and `.`, 1 to 64 characters each (they go into HAProxy's configuration)"
    )]
    Chars(String),
    #[error("routing rule `{0}`: x-canary is the router's own pin (always/never); pick another header")]
    Reserved(String),
}

impl RouteRule {
    /// Parses `NAME=VALUE`. The characters are limited because the rule is written into
    /// HAProxy's configuration: nothing in it may end a word or a line there.
    pub fn parse(on: MatchOn, s: &str) -> Result<RouteRule, RuleError> {
        let (name, value) = s.split_once('=').ok_or_else(|| RuleError::Shape(s.into()))?;
        let ok = |t: &str, extra: &[char]| {
            (1..=64).contains(&t.len())
                && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || extra.contains(&c))
        };
        if !ok(name, &[]) || !ok(value, &['.']) {
            return Err(RuleError::Chars(s.into()));
        }
        if on == MatchOn::Header && name.eq_ignore_ascii_case("x-canary") {
            return Err(RuleError::Reserved(s.into()));
        }
        let name = if on == MatchOn::Header { name.to_ascii_lowercase() } else { name.to_string() };
        Ok(RouteRule { on, name, value: value.into() })
    }

    /// HAProxy's fetch and match for this rule.
    pub fn acl(&self) -> String {
        match self.on {
            MatchOn::Header => format!("req.hdr({}) -m str {}", self.name, self.value),
            MatchOn::Cookie => format!("req.cook({}) -m str {}", self.name, self.value),
        }
    }

    /// The header a client sends to match the rule, as (name, value).
    pub fn header(&self) -> (String, String) {
        match self.on {
            MatchOn::Header => (self.name.clone(), self.value.clone()),
            MatchOn::Cookie => ("cookie".into(), format!("{}={}", self.name, self.value)),
        }
    }

    /// The header a stripping hop removes to defeat the rule.
    fn stripped_header(&self) -> &str {
        match self.on {
            MatchOn::Header => &self.name,
            MatchOn::Cookie => "cookie",
        }
    }

    pub fn describe(&self) -> String {
        match self.on {
            MatchOn::Header => format!("header {}: {}", self.name, self.value),
            MatchOn::Cookie => format!("cookie {}={}", self.name, self.value),
        }
    }
}

/// The rules of a run, and whether the stripping hop stands in front of the router.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Routing {
    pub rules: Vec<RouteRule>,
    /// A hop in front of the router that drops every header the rules match on (the
    /// lab's failure demo: an ingress or CDN that strips unknown headers).
    pub strip_hop: bool,
    /// Sticky sessions: the split hashes this header or cookie instead of drawing a
    /// random number per request, so a client stays on one side for a given weight.
    pub sticky: Option<StickyKey>,
}

/// What the sticky split hashes: a header or a cookie, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StickyKey {
    pub on: MatchOn,
    pub name: String,
}

impl StickyKey {
    /// A header or cookie name, limited like a rule's (it goes into the configuration).
    pub fn parse(on: MatchOn, name: &str) -> Result<StickyKey, RuleError> {
        let ok =
            (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(RuleError::Chars(name.into()));
        }
        let name = if on == MatchOn::Header { name.to_ascii_lowercase() } else { name.to_string() };
        Ok(StickyKey { on, name })
    }

    fn fetch(&self) -> String {
        match self.on {
            MatchOn::Header => format!("req.hdr({})", self.name),
            MatchOn::Cookie => format!("req.cook({})", self.name),
        }
    }
}

/// Where the stripping hop hands requests to the router's own frontend: an abstract
/// unix socket, private to the HAProxy process's network namespace.
const INNER: &str = "abns@zd-router";

impl Routing {
    /// The frontend lines that set `txn.r`, the number in 0..1000 compared with the
    /// weight: a fresh random number per request, or with `sticky`, a hash of the
    /// client's key (a request without the key still gets a random one).
    pub(crate) fn draw_lines(&self) -> String {
        let random = "    http-request set-var(txn.r) rand(1000)\n".to_string();
        match &self.sticky {
            None => random,
            Some(k) => format!(
                "{random}    http-request set-var(txn.r) {f},crc32(1),mod(1000) if {{ {f} -m found }}\n",
                f = k.fetch()
            ),
        }
    }

    /// The frontend lines that send a matching request to the canary.
    pub(crate) fn use_backend_lines(&self) -> String {
        self.rules.iter().map(|r| format!("    use_backend canary if {{ {} }}\n", r.acl())).collect()
    }

    /// With the stripping hop: the public frontend `edge` on `bind` that drops the
    /// rules' headers and passes the request to the router's frontend, and the address
    /// the router's frontend binds instead of `bind`. Without it: nothing, and `bind`.
    pub(crate) fn hop<'a>(&self, bind: &'a str) -> (String, &'a str) {
        if !self.strip_hop {
            return (String::new(), bind);
        }
        let mut names: Vec<&str> = self.rules.iter().map(RouteRule::stripped_header).collect();
        names.sort_unstable();
        names.dedup();
        let strip: String = names.iter().map(|n| format!("    http-request del-header {n}\n")).collect();
        let text = format!(
            "frontend edge\n    bind {bind}\n    # The lab's failure demo: a hop that drops the routing headers.\n\
             {strip}    default_backend hop\n\n\
             backend hop\n    server router {INNER}\n\n"
        );
        (text, INNER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_bad_ones_say_why() {
        let r = RouteRule::parse(MatchOn::Header, "X-Tester=1").unwrap();
        assert_eq!((r.name.as_str(), r.value.as_str()), ("x-tester", "1"));
        assert_eq!(r.acl(), "req.hdr(x-tester) -m str 1");
        assert_eq!(r.header(), ("x-tester".into(), "1".into()));
        let c = RouteRule::parse(MatchOn::Cookie, "zd_group=beta.1").unwrap();
        assert_eq!(c.acl(), "req.cook(zd_group) -m str beta.1");
        assert_eq!(c.header(), ("cookie".into(), "zd_group=beta.1".into()));
        assert_eq!(RouteRule::parse(MatchOn::Header, "x-tester"), Err(RuleError::Shape("x-tester".into())));
        for bad in ["x tester=1", "x-tester=1 }", "x-tester=", "=1", "x-tester=a\nb", "x-tester=a#b"] {
            assert_eq!(RouteRule::parse(MatchOn::Header, bad), Err(RuleError::Chars(bad.into())), "{bad:?}");
        }
        assert!(matches!(RouteRule::parse(MatchOn::Header, "X-Canary=always"), Err(RuleError::Reserved(_))));
    }

    #[test]
    fn the_sticky_split_hashes_the_key_and_falls_back_to_random_without_it() {
        assert_eq!(Routing::default().draw_lines(), "    http-request set-var(txn.r) rand(1000)\n");
        let sticky =
            Routing { sticky: Some(StickyKey::parse(MatchOn::Cookie, "zd_client").unwrap()), ..Routing::default() };
        assert_eq!(
            sticky.draw_lines(),
            "    http-request set-var(txn.r) rand(1000)\n    \
             http-request set-var(txn.r) req.cook(zd_client),crc32(1),mod(1000) if { req.cook(zd_client) -m found }\n"
        );
        assert_eq!(StickyKey::parse(MatchOn::Header, "X-ZD-Client").unwrap().name, "x-zd-client");
        assert!(StickyKey::parse(MatchOn::Header, "x client").is_err());
    }

    #[test]
    fn the_hop_strips_each_header_once_and_moves_the_router_inside() {
        let rules = vec![
            RouteRule::parse(MatchOn::Header, "x-tester=1").unwrap(),
            RouteRule::parse(MatchOn::Cookie, "a=1").unwrap(),
            RouteRule::parse(MatchOn::Cookie, "b=2").unwrap(),
        ];
        let off = Routing { rules: rules.clone(), ..Routing::default() };
        assert_eq!(off.hop("*:8000"), (String::new(), "*:8000"));
        let (text, inner) = Routing { rules, strip_hop: true, ..Routing::default() }.hop("*:8000");
        assert_eq!(inner, INNER);
        assert!(text.contains("frontend edge\n    bind *:8000\n"), "{text}");
        assert_eq!(text.matches("del-header cookie").count(), 1, "{text}");
        assert!(text.contains("del-header x-tester") && text.contains("server router abns@zd-router"), "{text}");
    }
}
