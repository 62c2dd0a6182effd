//! Istio's header operations (set, add, remove), compiled once, applied per request.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::snapshot;

#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

fn pairs(pairs: &[snapshot::HeaderPair]) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    pairs
        .iter()
        .map(|p| {
            let name = HeaderName::from_bytes(p.name.as_bytes())
                .map_err(|_| format!("bad header name {:?}", p.name))?;
            let value = HeaderValue::from_str(&p.value)
                .map_err(|_| format!("bad value for header {:?}", p.name))?;
            Ok((name, value))
        })
        .collect()
}

impl HeaderOps {
    pub fn compile(spec: &snapshot::HeaderOps) -> Result<Self, String> {
        Ok(Self {
            remove: spec
                .remove
                .iter()
                .map(|n| {
                    HeaderName::from_bytes(n.as_bytes())
                        .map_err(|_| format!("bad header name {n:?}"))
                })
                .collect::<Result<_, _>>()?,
            set: pairs(&spec.set)?,
            add: pairs(&spec.add)?,
        })
    }

    /// Remove first, then set, then add (Envoy's order: a header both removed
    /// and added ends up with the added value).
    /// Inlined: most routes have none, and a call to find that out costs
    /// more than the look (four per request, callgrind).
    #[inline]
    pub fn apply(&self, headers: &mut HeaderMap) {
        if !self.is_empty() {
            self.apply_all(headers);
        }
    }

    /// No operation at all.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    fn apply_all(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::HeaderPair;

    fn pair(name: &str, value: &str) -> HeaderPair {
        HeaderPair {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn remove_then_set_then_add() {
        let ops = HeaderOps::compile(&snapshot::HeaderOps {
            set: vec![pair("x-set", "new")],
            add: vec![pair("x-add", "2"), pair("x-gone", "back")],
            remove: vec!["x-gone".into(), "x-remove".into()],
        })
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-set", "old".parse().unwrap());
        h.insert("x-add", "1".parse().unwrap());
        h.insert("x-remove", "1".parse().unwrap());
        h.insert("x-gone", "1".parse().unwrap());
        ops.apply(&mut h);
        assert_eq!(h["x-set"], "new");
        let added: Vec<_> = h.get_all("x-add").iter().collect();
        assert_eq!(added, ["1", "2"]);
        assert!(!h.contains_key("x-remove"));
        assert_eq!(h["x-gone"], "back");
    }

    #[test]
    fn invalid_names_and_values_are_refused() {
        let bad_name = snapshot::HeaderOps {
            remove: vec!["bad name".into()],
            ..Default::default()
        };
        assert!(HeaderOps::compile(&bad_name).is_err());
        let bad_value = snapshot::HeaderOps {
            set: vec![pair("x", "line\nbreak")],
            ..Default::default()
        };
        assert!(HeaderOps::compile(&bad_value).is_err());
    }
}
