//! Scenario scripts: parsed, generated and run against a simulator.
