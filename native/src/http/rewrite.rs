//! Rewrites and redirects: Istio's HTTPRewrite and HTTPRedirect.

use http::header::{HeaderValue, HOST, LOCATION};
use http::uri::PathAndQuery;
use http::{Response, StatusCode};
use regex::Regex;

use crate::http::headers::strip_port;
use crate::http::matcher::StringMatcher;
use crate::snapshot;

/// Splits `path?query` into the path and the `?query` suffix (empty if none).
fn split(path_and_query: &str) -> (&str, &str) {
    match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    }
}

#[derive(Debug, Clone)]
pub struct Rewrite {
    uri: Option<String>,
    authority: Option<HeaderValue>,
    uri_regex: Option<(Regex, String)>,
}

impl Rewrite {
    pub fn compile(spec: &snapshot::Rewrite) -> Result<Self, String> {
        let authority = spec
            .authority
            .as_deref()
            .map(|a| HeaderValue::from_str(a).map_err(|_| format!("bad rewrite authority {a:?}")))
            .transpose()?;
        let uri_regex = spec
            .uri_regex
            .as_ref()
            .map(|r| {
                let re = Regex::new(&r.pattern)
                    .map_err(|e| format!("bad rewrite regex {:?}: {e}", r.pattern))?;
                Ok::<_, String>((re, re2_substitution(&r.substitution)))
            })
            .transpose()?;
        Ok(Self {
            uri: spec.uri.clone(),
            authority,
            uri_regex,
        })
    }

    /// The new `path?query`, or `None` when the path stays. As Envoy's
    /// prefix_rewrite: a prefix condition has its matched prefix replaced; an
    /// exact or regex condition has the whole path replaced; with no uri
    /// condition the implicit prefix is `/`.
    pub fn path(&self, path_and_query: &str, matched: Option<&StringMatcher>) -> Option<String> {
        let (path, query) = split(path_and_query);
        let new_path = if let Some(value) = &self.uri {
            let rest = match matched {
                Some(StringMatcher::Prefix(prefix)) => path.get(prefix.len()..).unwrap_or(""),
                Some(_) => "",
                None => path.get(1..).unwrap_or(""),
            };
            format!("{value}{rest}")
        } else if let Some((re, substitution)) = &self.uri_regex {
            re.replace_all(path, substitution.as_str()).into_owned()
        } else {
            return None;
        };
        Some(format!("{new_path}{query}"))
    }

    pub fn apply(&self, parts: &mut http::request::Parts, matched: Option<&StringMatcher>) {
        let current = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        if let Some(new) = self.path(current, matched) {
            // A rewrite to something that is not a valid path keeps the original.
            if let Ok(pq) = PathAndQuery::try_from(new) {
                let mut uri = std::mem::take(&mut parts.uri).into_parts();
                uri.path_and_query = Some(pq);
                parts.uri = http::Uri::from_parts(uri).unwrap_or_default();
            }
        }
        if let Some(authority) = &self.authority {
            parts.headers.insert(HOST, authority.clone());
        }
    }
}

/// RE2 writes groups as `\1`; the regex crate as `${1}`. A literal `$` is `$$`.
fn re2_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    out.push(d);
                }
                out.push('}');
            }
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct Redirect {
    uri: Option<String>,
    authority: Option<String>,
    port: Option<u16>,
    scheme: Option<String>,
    code: StatusCode,
}

impl Redirect {
    pub fn compile(spec: &snapshot::Redirect) -> Result<Self, String> {
        let code = StatusCode::from_u16(spec.code)
            .ok()
            .filter(StatusCode::is_redirection)
            .ok_or_else(|| format!("redirect code {} is not a 3xx status", spec.code))?;
        Ok(Self {
            uri: spec.uri.clone(),
            authority: spec.authority.clone(),
            port: spec.port,
            scheme: spec.scheme.clone(),
            code,
        })
    }

    /// The Location for a request: each part the redirect sets replaces the
    /// request's own; the query is kept unless the new uri carries one.
    pub fn location(&self, authority: &str, path_and_query: &str) -> String {
        let scheme = self.scheme.as_deref().unwrap_or("http");
        let authority = self.authority.as_deref().unwrap_or(authority);
        let host = match self.port {
            Some(port) => format!("{}:{port}", strip_port(authority)),
            None => authority.to_owned(),
        };
        let (path, query) = split(path_and_query);
        let target = match &self.uri {
            Some(uri) if uri.contains('?') => uri.clone(),
            Some(uri) => format!("{uri}{query}"),
            None => format!("{path}{query}"),
        };
        format!("{scheme}://{host}{target}")
    }

    pub fn response<B: Default>(&self, authority: &str, path_and_query: &str) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.status_mut() = self.code;
        if let Ok(location) = HeaderValue::from_str(&self.location(authority, path_and_query)) {
            response.headers_mut().insert(LOCATION, location);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(uri: Option<&str>, regex: Option<(&str, &str)>) -> Rewrite {
        Rewrite::compile(&snapshot::Rewrite {
            uri: uri.map(Into::into),
            authority: None,
            uri_regex: regex.map(|(p, s)| snapshot::RegexRewrite {
                pattern: p.into(),
                substitution: s.into(),
            }),
        })
        .unwrap()
    }

    #[test]
    fn uri_rewrite_replaces_what_matched() {
        let r = rewrite(Some("/v2/"), None);
        let prefix = StringMatcher::Prefix("/api/".into());
        let exact = StringMatcher::Exact("/api/x".into());
        assert_eq!(r.path("/api/x?q=1", Some(&prefix)).unwrap(), "/v2/x?q=1");
        assert_eq!(r.path("/api/x?q=1", Some(&exact)).unwrap(), "/v2/?q=1");
        // No uri condition: Envoy's implicit prefix is "/".
        assert_eq!(r.path("/ratings", None).unwrap(), "/v2/ratings");
        assert!(rewrite(None, None).path("/a", None).is_none());
    }

    #[test]
    fn regex_rewrite_uses_re2_groups() {
        let r = rewrite(None, Some(("^/service/([^/]+)(/.*)$", "\\2/instance/\\1")));
        assert_eq!(
            r.path("/service/foo/v1/api?x", None).unwrap(),
            "/v1/api/instance/foo?x"
        );
        assert_eq!(re2_substitution("a$b\\10"), "a$$b${10}");
    }

    #[test]
    fn redirect_location_replaces_each_part_it_sets() {
        let redirect = |uri: Option<&str>, authority: Option<&str>, port, scheme: Option<&str>| {
            Redirect::compile(&snapshot::Redirect {
                uri: uri.map(Into::into),
                authority: authority.map(Into::into),
                port,
                scheme: scheme.map(Into::into),
                code: 301,
            })
            .unwrap()
        };
        assert_eq!(
            redirect(Some("/v1/bookRatings"), None, None, None)
                .location("ratings:9080", "/v1/getProductRatings?x=1"),
            "http://ratings:9080/v1/bookRatings?x=1"
        );
        assert_eq!(
            redirect(None, Some("new.example"), Some(8443), Some("https")).location("old:80", "/a"),
            "https://new.example:8443/a"
        );
        assert_eq!(
            redirect(None, None, Some(81), None).location("old:80", "/"),
            "http://old:81/"
        );
        assert!(Redirect::compile(&snapshot::Redirect {
            uri: None,
            authority: None,
            port: None,
            scheme: None,
            code: 200
        })
        .is_err());
    }
}
