//! PLACEHOLDER: being written (issue 7). Replace this whole file.

use async_trait::async_trait;

use super::{Api, PollTarget, unexpected};
use crate::{
    outbound::CallError,
    polling::{Page, Poller},
};

#[derive(Debug)]
pub struct HubspotDeals {
    #[allow(dead_code)]
    api: Api,
}

impl HubspotDeals {
    pub fn new(api: Api) -> Self {
        HubspotDeals { api }
    }
}

#[async_trait]
impl Poller for HubspotDeals {
    fn resource(&self) -> &str {
        "deal"
    }

    async fn page(
        &self,
        _target: &PollTarget<'_>,
        _cursor: Option<&str>,
    ) -> Result<Page, CallError> {
        Err(unexpected("not written yet"))
    }
}
