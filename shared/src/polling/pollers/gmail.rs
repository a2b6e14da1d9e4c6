//! PLACEHOLDER: being written (issue 7). Replace this whole file.

use async_trait::async_trait;

use super::{Api, PollTarget, unexpected};
use crate::{
    outbound::CallError,
    polling::{Page, Poller},
};

#[derive(Debug)]
pub struct GmailHistory {
    #[allow(dead_code)]
    api: Api,
}

impl GmailHistory {
    pub fn new(api: Api) -> Self {
        GmailHistory { api }
    }
}

#[async_trait]
impl Poller for GmailHistory {
    fn resource(&self) -> &str {
        "thread"
    }

    async fn page(&self, _target: &PollTarget<'_>, _cursor: Option<&str>) -> Result<Page, CallError> {
        Err(unexpected("not written yet"))
    }
}
