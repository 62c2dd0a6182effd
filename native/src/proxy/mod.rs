//! One request's way through the proxy, in named phases (`request`), over the
//! state its connection shares (`shared`) and what its requests are doing
//! (`activity`, for the idle timeout); the requests that become spliced
//! sessions (`session`: upgrades and CONNECT tunnels); primary forwarding with
//! retries (`forward`); and serving a tcp route's connection (`tcp`).

pub mod activity;
mod answer_fields;
mod fan_out;
pub mod fault;
pub mod forward;
pub mod guard;
mod prepare;
pub mod request;
mod selected;
pub mod session;
pub mod shared;
pub mod tcp;
pub mod tunnel;
pub mod upgrade;

pub use activity::Activity;
pub use request::handle;
pub use shared::{Connection, Published, Shared};
