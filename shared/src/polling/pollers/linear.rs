//! PLACEHOLDER: being written (issue 7). Replace this whole file.

use async_trait::async_trait;

use super::{Api, PollTarget, unexpected};
use crate::{
    outbound::CallError,
    polling::{Page, Poller},
};

#[derive(Debug)]
pub struct LinearIssues {
    #[allow(dead_code)]
    api: Api,
}

impl LinearIssues {
    pub fn new(api: Api) -> Self {
        LinearIssues { api }
    }
}

#[async_trait]
impl Poller for LinearIssues {
    fn resource(&self) -> &str {
        "issue"
    }

    async fn page(
        &self,
        _target: &PollTarget<'_>,
        _cursor: Option<&str>,
    ) -> Result<Page, CallError> {
        Err(unexpected("not written yet"))
    }
}
