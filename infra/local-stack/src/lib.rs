//! The local stack: Junction on one machine, built from `template.yaml`.
//!
//! [`emulator`] starts the AWS emulator (moto server, from the project's venv) on a
//! free loopback port and provisions the template into it through CloudFormation.

pub mod emulator;
