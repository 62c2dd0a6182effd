//! Request matchers: Istio's HTTPMatchRequest compiled once, evaluated per request.

use http::HeaderMap;
use regex::Regex;

use crate::snapshot;

/// What a matcher looks at; borrowed from the request, no copies.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// The path without the query.
    pub path: &'a str,
    /// The path with the query, as the request line carried it.
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
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
        Ok(match spec {
            snapshot::StringMatch::Exact(s) => Self::Exact(s.clone()),
            snapshot::StringMatch::Prefix(s) => Self::Prefix(s.clone()),
            snapshot::StringMatch::Regex(re) => Self::Regex(
                Regex::new(&format!("^(?:{re})$")).map_err(|e| format!("bad regex {re:?}: {e}"))?,
            ),
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

#[derive(Debug, Clone)]
struct HeaderMatcher {
    name: http::HeaderName,
    value: StringMatcher,
}

/// One HTTPMatchRequest: every condition it names must hold.
#[derive(Debug, Clone, Default)]
pub struct RequestMatcher {
    uri: Option<StringMatcher>,
    method: Option<StringMatcher>,
    headers: Vec<HeaderMatcher>,
}

impl RequestMatcher {
    pub fn compile(spec: &snapshot::RequestMatch) -> Result<Self, String> {
        let headers = spec
            .headers
            .iter()
            .map(|h| {
                Ok(HeaderMatcher {
                    name: http::HeaderName::from_bytes(h.name.as_bytes())
                        .map_err(|_| format!("bad header name {:?}", h.name))?,
                    value: StringMatcher::compile(&h.value)?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            uri: spec.uri.as_ref().map(StringMatcher::compile).transpose()?,
            method: spec
                .method
                .as_ref()
                .map(StringMatcher::compile)
                .transpose()?,
            headers,
        })
    }

    pub fn is_match(&self, req: &RequestView<'_>) -> bool {
        if let Some(uri) = &self.uri {
            // As Envoy: a prefix sees the query too; exact and regex see the path alone.
            let subject = match uri {
                StringMatcher::Prefix(_) => req.path_and_query,
                _ => req.path,
            };
            if !uri.is_match(subject) {
                return false;
            }
        }
        if let Some(method) = &self.method {
            if !method.is_match(req.method) {
                return false;
            }
        }
        self.headers.iter().all(|h| header_matches(req.headers, h))
    }
}

/// A header present several times is matched on its values joined by ",", as
/// Envoy does; an absent header never matches.
fn header_matches(headers: &HeaderMap, matcher: &HeaderMatcher) -> bool {
    let mut values = headers.get_all(&matcher.name).iter();
    let Some(first) = values.next() else {
        return false;
    };
    let Ok(first) = first.to_str() else {
        return false;
    };
    match values.next() {
        None => matcher.value.is_match(first),
        Some(second) => {
            let mut joined = format!("{first},{}", second.to_str().unwrap_or(""));
            for v in values {
                joined.push(',');
                joined.push_str(v.to_str().unwrap_or(""));
            }
            matcher.value.is_match(&joined)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{HeaderMatch, RequestMatch, StringMatch};

    fn view<'a>(method: &'a str, pq: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            method,
            path: pq.split('?').next().unwrap(),
            path_and_query: pq,
            headers,
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
            uri: None,
            method: Some(StringMatch::Exact("POST".into())),
            headers: vec![
                HeaderMatch {
                    name: "end-user".into(),
                    value: StringMatch::Exact("jason".into()),
                },
                HeaderMatch {
                    name: "x-version".into(),
                    value: StringMatch::Regex("v[12]".into()),
                },
            ],
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
    fn repeated_headers_are_joined() {
        let m = RequestMatcher::compile(&RequestMatch {
            headers: vec![HeaderMatch {
                name: "x-tag".into(),
                value: StringMatch::Exact("a,b".into()),
            }],
            ..Default::default()
        })
        .unwrap();
        let mut h = HeaderMap::new();
        h.append("x-tag", "a".parse().unwrap());
        h.append("x-tag", "b".parse().unwrap());
        assert!(m.is_match(&view("GET", "/", &h)));
    }

    #[test]
    fn bad_regex_is_a_compile_error() {
        let err = StringMatcher::compile(&StringMatch::Regex("(".into())).unwrap_err();
        assert!(err.contains("bad regex"), "{err}");
    }
}
