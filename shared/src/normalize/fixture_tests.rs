//! Snapshot tests: every fixture in `tests/fixtures/<provider>/` normalized and compared
//! with its `*.expected.json`.
