//! Cross-function tests live in `tests/tests/`: each starts its own AWS emulator on a
//! free loopback port and stops it when it ends. Run them with the README's test
//! command (`infra/test`), which first installs the emulator into the project venv.
