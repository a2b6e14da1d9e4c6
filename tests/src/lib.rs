//! Cross-function tests live in `tests/tests/`: each starts its own AWS emulator on a
//! free loopback port and stops it when it ends. Run them with the README's test
//! command (`infra/test`), which first installs the emulator into the project venv.

pub mod call_counter;

use local_stack::emulator::{Moto, repo_root};

/// A moto server of the test's own (stopped when dropped) and SDK configuration pointing
/// at it with Junction's call timeouts.
pub async fn emulator() -> (Moto, aws_config::SdkConfig) {
    let moto =
        Moto::start(&repo_root()).expect("the emulator starts (run infra/test to install it)");
    let aws = moto
        .sdk_config()
        .await
        .into_builder()
        .timeout_config(shared::config::aws_timeouts())
        .build();
    (moto, aws)
}
