//! Mirroring: sample, admit within bounds, build the copy, send it, read and
//! drop the answer within the drain limit (or, for a compared copy, keep it
//! within the capture limit and the compare budget and queue it with the
//! primary's), count the outcome. Nothing here ever delays the primary, and
//! what a copy costs does not grow with what the mirror sends.

pub mod compare;
mod copy;
mod ended;
mod policy;

pub use copy::{CompareSlot, Gate};
pub use policy::MirrorPolicy;
