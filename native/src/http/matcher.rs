//! Request matchers: Istio's HTTPMatchRequest compiled once, evaluated per request.

use regex::Regex;

use crate::http::headers::visible_text;
use crate::http::request_head::Fields;
use crate::snapshot;

/// The method of a tunnel request, served only by routes that name it.
pub const CONNECT: &str = "CONNECT";

/// What a matcher looks at; borrowed from the request, no copies.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// The path without the query.
    pub path: &'a str,
    /// The path with the query, as the request line carried it.
    pub path_and_query: &'a str,
    /// The Host (or absolute-form authority), port included, as sent.
    pub authority: &'a str,
    /// The fields, in the map or as they came.
    pub fields: Fields<'a>,
    /// The port of the listener the request arrived on.
    pub port: u16,
}

impl RequestView<'_> {
    fn query(&self) -> &str {
        self.path_and_query.split_once('?').map_or("", |(_, q)| q)
    }
}

#[derive(Debug, Clone)]
pub enum StringMatcher {
    Exact(String),
    Prefix(String),
    /// Anchored at both ends: Istio's regex matches the whole value.
    Regex(Regex),
}

impl StringMatcher {
    pub fn compile(spec: &snapshot::StringMatch) -> Result<Self, String> {
        Self::compile_with_case(spec, false)
    }

    /// With `ignore_case`, exact and prefix compare lower-cased (the spec
    /// value is lowered once here) and the regex is case-insensitive.
    fn compile_with_case(spec: &snapshot::StringMatch, ignore_case: bool) -> Result<Self, String> {
        let fold = |s: &str| {
            if ignore_case {
                s.to_lowercase()
            } else {
                s.to_owned()
            }
        };
        Ok(match spec {
            snapshot::StringMatch::Exact(s) => Self::Exact(fold(s)),
            snapshot::StringMatch::Prefix(s) => Self::Prefix(fold(s)),
            snapshot::StringMatch::Regex(re) => {
                let flags = if ignore_case { "(?i)" } else { "" };
                Self::Regex(
                    Regex::new(&format!("{flags}^(?:{re})$"))
                        .map_err(|e| format!("bad regex {re:?}: {e}"))?,
                )
            }
        })
    }

    #[inline]
    pub fn is_match(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value == s,
            Self::Prefix(s) => value.starts_with(s.as_str()),
            Self::Regex(re) => re.is_match(value),
        }
    }
}

/// A header or query-parameter condition; `None` only asks for presence.
#[derive(Debug, Clone)]
struct NamedMatcher {
    name: String,
    value: Option<StringMatcher>,
}

impl NamedMatcher {
    fn compile(spec: &snapshot::HeaderMatch) -> Result<Self, String> {
        Ok(Self {
            name: spec.name.clone(),
            value: spec
                .value
                .as_ref()
                .map(StringMatcher::compile)
                .transpose()?,
        })
    }
}

/// One HTTPMatchRequest: every condition it names must hold.
#[derive(Debug, Clone, Default)]
pub struct RequestMatcher {
    uri: Option<StringMatcher>,
    ignore_uri_case: bool,
    scheme: Option<StringMatcher>,
    method: Option<StringMatcher>,
    authority: Option<StringMatcher>,
    headers: Vec<(http::HeaderName, Option<StringMatcher>)>,
    without_headers: Vec<(http::HeaderName, Option<StringMatcher>)>,
    query_params: Vec<NamedMatcher>,
    port: Option<u16>,
}

fn header_matchers(
    specs: &[snapshot::HeaderMatch],
) -> Result<Vec<(http::HeaderName, Option<StringMatcher>)>, String> {
    specs
        .iter()
        .map(|h| {
            let m = NamedMatcher::compile(h)?;
            let name = http::HeaderName::from_bytes(m.name.as_bytes())
                .map_err(|_| format!("bad header name {:?}", m.name))?;
            Ok((name, m.value))
        })
        .collect()
}

impl RequestMatcher {
    pub fn compile(spec: &snapshot::RequestMatch) -> Result<Self, String> {
        let optional =
            |m: &Option<snapshot::StringMatch>| m.as_ref().map(StringMatcher::compile).transpose();
        Ok(Self {
            uri: spec
                .uri
                .as_ref()
                .map(|u| StringMatcher::compile_with_case(u, spec.ignore_uri_case))
                .transpose()?,
            ignore_uri_case: spec.ignore_uri_case,
            scheme: optional(&spec.scheme)?,
            method: optional(&spec.method)?,
            authority: optional(&spec.authority)?,
            headers: header_matchers(&spec.headers)?,
            without_headers: header_matchers(&spec.without_headers)?,
            query_params: spec
                .query_params
                .iter()
                .map(NamedMatcher::compile)
                .collect::<Result<_, _>>()?,
            port: spec.port,
        })
    }

    /// Whether this match says `method: {exact: CONNECT}`.
    pub fn names_connect(&self) -> bool {
        matches!(&self.method, Some(StringMatcher::Exact(m)) if m == CONNECT)
    }

    /// The uri condition, for rewrites that replace what it matched.
    pub fn uri(&self) -> Option<&StringMatcher> {
        self.uri.as_ref()
    }

    pub fn is_match(&self, req: &RequestView<'_>) -> bool {
        // A tunnel carries requests no rule reads any more (paths, headers):
        // only a match that asks for CONNECT by name takes one.
        if req.method == CONNECT && !self.names_connect() {
            return false;
        }
        if let Some(uri) = &self.uri {
            // As Envoy: a prefix sees the query too; exact and regex see the path alone.
            let subject = match uri {
                StringMatcher::Prefix(_) => req.path_and_query,
                _ => req.path,
            };
            let folded;
            let subject = if self.ignore_uri_case && !matches!(uri, StringMatcher::Regex(_)) {
                folded = subject.to_lowercase();
                folded.as_str()
            } else {
                subject
            };
            if !uri.is_match(subject) {
                return false;
            }
        }
        let holds =
            |m: &Option<StringMatcher>, value: &str| m.as_ref().is_none_or(|m| m.is_match(value));
        if !holds(&self.scheme, "http")
            || !holds(&self.method, req.method)
            || !holds(&self.authority, req.authority)
            || self.port.is_some_and(|p| p != req.port)
        {
            return false;
        }
        self.headers
            .iter()
            .all(|(name, value)| header_matches(req.fields, name, value.as_ref()))
            && !self
                .without_headers
                .iter()
                .any(|(name, value)| header_matches(req.fields, name, value.as_ref()))
            && self
                .query_params
                .iter()
                .all(|q| query_matches(req.query(), q))
    }
}

/// A header present several times is matched on its values joined by ",", as
/// Envoy does; an absent header never matches.
fn header_matches(
    fields: Fields<'_>,
    name: &http::HeaderName,
    matcher: Option<&StringMatcher>,
) -> bool {
    let mut values = fields.values(name);
    let Some(first) = values.next() else {
        return false;
    };
    let Some(matcher) = matcher else {
        return true;
    };
    let Some(first) = visible_text(first) else {
        return false;
    };
    match values.next() {
        None => matcher.is_match(first),
        Some(second) => {
            let mut joined = format!("{first},{}", visible_text(second).unwrap_or(""));
            for v in values {
                joined.push(',');
                joined.push_str(visible_text(v).unwrap_or(""));
            }
            matcher.is_match(&joined)
        }
    }
}

/// Query parameters are compared as sent (no percent-decoding, as Envoy); the
/// first occurrence of a name counts.
fn query_matches(query: &str, matcher: &NamedMatcher) -> bool {
    query
        .split('&')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name == matcher.name).then_some(value)
        })
        .next()
        .is_some_and(|value| matcher.value.as_ref().is_none_or(|m| m.is_match(value)))
}

/// Why the core's regex engine refuses `pattern`, as a route's match (anchored at both
/// ends) or as a rewrite's pattern; `None`: it compiles. The control plane asks this
/// for every regex of a configuration, so one engine decides and the answer carries the
/// file position. (Its caller is the Python binding.)
#[cfg_attr(not(feature = "python"), allow(dead_code))]
pub fn regex_problem(pattern: &str) -> Option<String> {
    Regex::new(pattern)
        .and_then(|_| Regex::new(&format!("^(?:{pattern})$")))
        .err()
        .map(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{HeaderMatch, RequestMatch, StringMatch};
    use http::HeaderMap;

    fn view<'a>(method: &'a str, pq: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            method,
            path: pq.split('?').next().unwrap(),
            path_and_query: pq,
            authority: "reviews:8080",
            fields: Fields::Map(headers),
            port: 8080,
        }
    }

    fn header(name: &str, value: Option<StringMatch>) -> HeaderMatch {
        HeaderMatch {
            name: name.into(),
            value,
        }
    }

    #[test]
    fn uri_exact_prefix_regex() {
        let h = HeaderMap::new();
        let exact = RequestMatcher::compile(&RequestMatch {
            uri: Some(StringMatch::Exact("/reviews".into())),
            ..Default::default()
        })
        .unwrap();
        assert!(exact.is_match(&view("GET", "/reviews?x=1", &h)));
        assert!(!exact.is_match(&view("GET", "/reviews/1", &h)));

        let prefix = RequestMatcher::compile(&RequestMatch {
            uri: Some(StringMatch::Prefix("/api/".into())),
            ..Default::default()
        })
        .unwrap();
        assert!(prefix.is_match(&view("GET", "/api/v1", &h)));
        assert!(!prefix.is_match(&view("GET", "/apix", &h)));

        let regex = RequestMatcher::compile(&RequestMatch {
            uri: Some(StringMatch::Regex("/reviews/[0-9]+".into())),
            ..Default::default()
        })
        .unwrap();
        assert!(regex.is_match(&view("GET", "/reviews/12?q", &h)));
        // Full match: a regex that matches only part of the path does not hold.
        assert!(!regex.is_match(&view("GET", "/reviews/12/x", &h)));
    }

    #[test]
    fn method_and_headers_all_must_hold() {
        let m = RequestMatcher::compile(&RequestMatch {
            method: Some(StringMatch::Exact("POST".into())),
            headers: vec![
                header("end-user", Some(StringMatch::Exact("jason".into()))),
                header("x-version", Some(StringMatch::Regex("v[12]".into()))),
            ],
            ..Default::default()
        })
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("end-user", "jason".parse().unwrap());
        assert!(!m.is_match(&view("POST", "/", &h)), "x-version absent");
        h.insert("x-version", "v2".parse().unwrap());
        assert!(m.is_match(&view("POST", "/", &h)));
        assert!(!m.is_match(&view("GET", "/", &h)));
        h.insert("x-version", "v3".parse().unwrap());
        assert!(!m.is_match(&view("POST", "/", &h)));
    }

    #[test]
    fn only_a_match_naming_connect_takes_a_connect() {
        let h = HeaderMap::new();
        let any = RequestMatcher::compile(&RequestMatch::default()).unwrap();
        assert!(any.is_match(&view("GET", "/", &h)));
        assert!(!any.is_match(&view("CONNECT", "/", &h)));
        let prefix = RequestMatcher::compile(&RequestMatch {
            method: Some(StringMatch::Regex(".*".into())),
            ..Default::default()
        })
        .unwrap();
        assert!(!prefix.is_match(&view("CONNECT", "/", &h)), "not by name");
        let connect = RequestMatcher::compile(&RequestMatch {
            method: Some(StringMatch::Exact("CONNECT".into())),
            ..Default::default()
        })
        .unwrap();
        assert!(connect.is_match(&view("CONNECT", "/", &h)));
        assert!(!connect.is_match(&view("GET", "/", &h)));
    }

    #[test]
    fn repeated_headers_are_joined() {
        let m = RequestMatcher::compile(&RequestMatch {
            headers: vec![header("x-tag", Some(StringMatch::Exact("a,b".into())))],
            ..Default::default()
        })
        .unwrap();
        let mut h = HeaderMap::new();
        h.append("x-tag", "a".parse().unwrap());
        h.append("x-tag", "b".parse().unwrap());
        assert!(m.is_match(&view("GET", "/", &h)));
    }

    #[test]
    fn presence_absence_query_authority_port_and_case() {
        let m = RequestMatcher::compile(&RequestMatch {
            uri: Some(StringMatch::Prefix("/API/".into())),
            ignore_uri_case: true,
            authority: Some(StringMatch::Prefix("reviews".into())),
            scheme: Some(StringMatch::Exact("http".into())),
            headers: vec![header("x-present", None)],
            without_headers: vec![header("x-canary", Some(StringMatch::Exact("yes".into())))],
            query_params: vec![
                QueryMatch("lang", Some(StringMatch::Exact("en".into()))).into(),
                QueryMatch("debug", None).into(),
            ],
            port: Some(8080),
            ..Default::default()
        })
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-present", "".parse().unwrap());
        assert!(m.is_match(&view("GET", "/api/x?lang=en&debug", &h)));
        assert!(
            !m.is_match(&view("GET", "/api/x?lang=fr&debug", &h)),
            "query value"
        );
        assert!(
            !m.is_match(&view("GET", "/api/x?lang=en", &h)),
            "query presence"
        );
        assert!(!m.is_match(&view("GET", "/other?lang=en&debug", &h)), "uri");
        h.insert("x-canary", "yes".parse().unwrap());
        assert!(
            !m.is_match(&view("GET", "/api/x?lang=en&debug", &h)),
            "withoutHeaders"
        );
        h.remove("x-canary");
        h.remove("x-present");
        assert!(
            !m.is_match(&view("GET", "/api/x?lang=en&debug", &h)),
            "header presence"
        );
        h.insert("x-present", "1".parse().unwrap());
        let mut v = view("GET", "/api/x?lang=en&debug", &h);
        v.port = 9090;
        assert!(!m.is_match(&v), "port");
    }

    struct QueryMatch(&'static str, Option<StringMatch>);

    impl From<QueryMatch> for HeaderMatch {
        fn from(q: QueryMatch) -> Self {
            header(q.0, q.1)
        }
    }

    #[test]
    fn the_core_says_which_regexes_it_refuses() {
        assert_eq!(regex_problem("/reviews/[0-9]+"), None);
        // Python's `\Z` is no RE2; Rust's engine refuses it as Istio's would.
        assert!(regex_problem("/reviews\\Z").is_some());
        // Unbalanced alone, balanced once wrapped: still refused.
        assert!(regex_problem("a)(b").is_some());
    }

    #[test]
    fn bad_regex_is_a_compile_error() {
        let err = StringMatcher::compile(&StringMatch::Regex("(".into())).unwrap_err();
        assert!(err.contains("bad regex"), "{err}");
    }
}
