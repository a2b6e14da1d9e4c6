//! A provider on loopback for tests (being written).
