//! RabbitMQ: a [`courier_core::Publisher`] sending persistent messages and waiting for
//! publisher confirms.

#![warn(clippy::unwrap_used)]
