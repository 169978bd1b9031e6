//! Everything NATS: a JetStream [`courier_core::Publisher`] that sets `Nats-Msg-Id` to the outbox
//! id (JetStream's dedup window drops a re-publish) and waits for each publish ack.

#![warn(clippy::unwrap_used)]
