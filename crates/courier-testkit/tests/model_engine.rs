//! Runs the whole conformance suite and the model test against the testkit's own
//! `ModelEngine`, so a wrong test or a broken macro shows up here, before any real engine.

use courier_testkit::ModelHarness;

courier_testkit::conformance_tests!(ModelHarness);
courier_testkit::model_tests!(ModelHarness);
