//! Splicing: the relay that copies a connection's bytes both ways, and the
//! mirror feeds (a byte-bounded queue each) that copy the client's side to a
//! mirror. Tcp routes, upgraded sessions and CONNECT tunnels all run here.

pub mod feed;
pub mod queue;
pub mod relay;
