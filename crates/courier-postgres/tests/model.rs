//! The model-based property test of `courier-testkit` against the PostgreSQL engine: every
//! generated case runs on a fresh schema.

mod common;

courier_testkit::model_tests!(common::PostgresHarness);
