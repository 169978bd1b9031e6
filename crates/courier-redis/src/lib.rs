//! Everything Redis: a Streams [`courier_core::Publisher`] that appends each message with `XADD`.

#![warn(clippy::unwrap_used)]
