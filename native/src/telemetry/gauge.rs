//! One guard type for gauges: a place is taken in the gauge when the guard is
//! made and given back when it is dropped, however its holder ends (returned
//! early, cancelled, panicked), so that no gauge can drift.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Something that leads to one gauge.
pub trait Gauge {
    fn gauge(&self) -> &AtomicU64;
}

impl Gauge for &AtomicU64 {
    fn gauge(&self) -> &AtomicU64 {
        self
    }
}

/// A gauge inside a shared counter set: the set and the field.
pub struct Field<T>(pub Arc<T>, pub fn(&T) -> &AtomicU64);

impl<T> Gauge for Field<T> {
    fn gauge(&self) -> &AtomicU64 {
        (self.1)(&self.0)
    }
}

impl<T> std::fmt::Debug for Field<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Field")
    }
}

/// A place held in a gauge.
#[derive(Debug)]
pub struct Held<G: Gauge>(G);

impl<G: Gauge> Held<G> {
    pub fn new(gauge: G) -> Self {
        gauge.gauge().fetch_add(1, Relaxed);
        Self(gauge)
    }
}

impl<G: Gauge> Drop for Held<G> {
    fn drop(&mut self) {
        self.0.gauge().fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_place_is_given_back_however_the_holder_ends() {
        let gauge = AtomicU64::new(0);
        {
            let _a = Held::new(&gauge);
            let _b = Held::new(&gauge);
            assert_eq!(gauge.load(Relaxed), 2);
        }
        assert_eq!(gauge.load(Relaxed), 0);
        struct Set {
            active: AtomicU64,
        }
        let set = Arc::new(Set {
            active: AtomicU64::new(0),
        });
        let held = Held::new(Field(set.clone(), |s: &Set| &s.active));
        assert_eq!(set.active.load(Relaxed), 1);
        drop(held);
        assert_eq!(set.active.load(Relaxed), 0);
    }
}
