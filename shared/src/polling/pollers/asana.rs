//! PLACEHOLDER: being written (issue 7). Replace this whole file.

use async_trait::async_trait;

use super::{Api, PollTarget, unexpected};
use crate::{
    outbound::CallError,
    polling::{Page, Poller},
};

#[derive(Debug)]
pub struct AsanaTasks {
    #[allow(dead_code)]
    api: Api,
}

impl AsanaTasks {
    pub fn new(api: Api) -> Self {
        AsanaTasks { api }
    }
}

#[async_trait]
impl Poller for AsanaTasks {
    fn resource(&self) -> &str {
        "task"
    }

    async fn page(
        &self,
        _target: &PollTarget<'_>,
        _cursor: Option<&str>,
    ) -> Result<Page, CallError> {
        Err(unexpected("not written yet"))
    }
}
