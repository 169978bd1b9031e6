//! HTTP push: a [`courier_core::Publisher`] that POSTs each message as a CloudEvent in binary
//! mode, and one that enqueues into a `courier serve` over its HTTP API.

#![warn(clippy::unwrap_used)]
