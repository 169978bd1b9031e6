//! The shared conformance suite of `courier-testkit`, run against the PostgreSQL engine: each
//! test gets its own schema on the test server (see `common`).

mod common;

courier_testkit::conformance_tests!(common::PostgresHarness);
