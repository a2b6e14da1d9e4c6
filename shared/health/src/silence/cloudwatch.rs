//! The CloudWatch adapter of [`ReceiptHistory`], the only module here that knows the
//! CloudWatch SDK: the ingress's `WebhooksReceived` (namespace `Junction`, dimension
//! `Provider`; `junction_telemetry`), summed per hour.
//!
//! `ListMetrics` (free) finds the providers with the metric, then `GetMetricData` reads
//! every provider's hourly sums over the window in one request per 100 providers (each
//! provider's 696 hours, under the request's 100,800 datapoints), at $0.01 per 1,000
//! metrics requested: 96 runs a day with five providers cost about $0.15 a month
//! (docs/cost.md). `ListMetrics` names only metrics with data in the last two weeks, so
//! a provider silent longer than that is asked for by name (`also`). An hour without a
//! datapoint is 0: EMF publishes nothing when nothing arrived.
//!
//! Checked on the emulator in `tests/tests/integration/silence_emulator.rs`.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    Dimension, DimensionFilter, Metric, MetricDataQuery, MetricStat, ScanBy,
};

use super::{HOUR, RECEIPT_METRIC, ReceiptHistory, SilenceError};

/// Providers asked for in one `GetMetricData` request.
const PROVIDERS_PER_REQUEST: usize = 100;

/// CloudWatch, as the history of webhook receipts.
#[derive(Debug, Clone)]
pub struct CloudWatchReceiptHistory {
    client: aws_sdk_cloudwatch::Client,
}

impl CloudWatchReceiptHistory {
    pub fn from_config(aws: &aws_config::SdkConfig) -> Self {
        CloudWatchReceiptHistory {
            client: aws_sdk_cloudwatch::Client::new(aws),
        }
    }

    /// Every provider with a `WebhooksReceived` series of its own.
    async fn providers(&self) -> Result<BTreeSet<String>, SilenceError> {
        let mut providers = BTreeSet::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_metrics()
                .namespace(junction_telemetry::NAMESPACE)
                .metric_name(RECEIPT_METRIC)
                .dimensions(DimensionFilter::builder().name("Provider").build())
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|err| {
                    SilenceError::new(
                        "listing the receipt metrics",
                        aws_sdk_cloudwatch::Error::from(err),
                    )
                })?;
            for metric in page.metrics() {
                // The per-provider series: its only dimension is `Provider`.
                if let [dimension] = metric.dimensions()
                    && dimension.name() == Some("Provider")
                    && let Some(provider) = dimension.value()
                {
                    providers.insert(provider.to_owned());
                }
            }
            match page.next_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => break,
            }
        }
        Ok(providers)
    }
}

/// One query per provider, `p<index>` (ids must start with a lower-case letter): the
/// hourly `Sum` of its `WebhooksReceived`.
pub fn queries(providers: &[String]) -> Vec<MetricDataQuery> {
    providers
        .iter()
        .enumerate()
        .map(|(index, provider)| {
            MetricDataQuery::builder()
                .id(format!("p{index}"))
                .metric_stat(
                    MetricStat::builder()
                        .metric(
                            Metric::builder()
                                .namespace(junction_telemetry::NAMESPACE)
                                .metric_name(RECEIPT_METRIC)
                                .dimensions(
                                    Dimension::builder()
                                        .name("Provider")
                                        .value(provider)
                                        .build(),
                                )
                                .build(),
                        )
                        .period(HOUR as i32)
                        .stat("Sum")
                        .build(),
                )
                .return_data(true)
                .build()
        })
        .collect()
}

/// The hour a datapoint stamped `at` falls in, counted from `start`, if in the window.
pub fn hour_index(start: i64, at: i64, hours: usize) -> Option<usize> {
    let index = usize::try_from((at - start).div_euclid(HOUR)).ok()?;
    (index < hours).then_some(index)
}

#[async_trait]
impl ReceiptHistory for CloudWatchReceiptHistory {
    async fn hourly_receipts(
        &self,
        end: i64,
        hours: usize,
        also: &[String],
    ) -> Result<BTreeMap<String, Vec<f64>>, SilenceError> {
        let mut providers = self.providers().await?;
        providers.extend(also.iter().cloned());
        let providers: Vec<String> = providers.into_iter().collect();
        let start = end - HOUR * i64::try_from(hours).unwrap_or(i64::MAX / HOUR);
        let mut series: BTreeMap<String, Vec<f64>> = providers
            .iter()
            .map(|provider| (provider.clone(), vec![0.0; hours]))
            .collect();
        for chunk in providers.chunks(PROVIDERS_PER_REQUEST) {
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .client
                    .get_metric_data()
                    .set_metric_data_queries(Some(queries(chunk)))
                    .start_time(DateTime::from_secs(start))
                    .end_time(DateTime::from_secs(end))
                    .scan_by(ScanBy::TimestampAscending)
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|err| {
                        SilenceError::new(
                            "reading the receipt metrics",
                            aws_sdk_cloudwatch::Error::from(err),
                        )
                    })?;
                for result in page.metric_data_results() {
                    let Some(provider) = result
                        .id()
                        .and_then(|id| id.strip_prefix('p'))
                        .and_then(|index| index.parse::<usize>().ok())
                        .and_then(|index| chunk.get(index))
                    else {
                        continue;
                    };
                    let Some(hourly) = series.get_mut(provider) else {
                        continue;
                    };
                    for (at, value) in result.timestamps().iter().zip(result.values()) {
                        if let Some(index) = hour_index(start, at.secs(), hours) {
                            hourly[index] += value;
                        }
                    }
                }
                match page.next_token {
                    Some(next) if !next.is_empty() => token = Some(next),
                    _ => break,
                }
            }
        }
        Ok(series)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_provider_is_asked_for_its_hourly_sum() {
        let built = queries(&["stripe".to_owned(), "slack".to_owned()]);
        assert_eq!(built.len(), 2);
        assert_eq!(built[1].id(), Some("p1"));
        let stat = built[1].metric_stat().expect("a metric stat");
        assert_eq!((stat.period(), stat.stat()), (Some(3_600), Some("Sum")));
        let metric = stat.metric().expect("metric");
        assert_eq!(metric.namespace(), Some("Junction"));
        assert_eq!(metric.metric_name(), Some("WebhooksReceived"));
        assert_eq!(metric.dimensions().len(), 1);
        assert_eq!(metric.dimensions()[0].name(), Some("Provider"));
        assert_eq!(metric.dimensions()[0].value(), Some("slack"));
    }

    #[test]
    fn a_datapoint_falls_in_the_hour_it_starts() {
        let start = 1_000_000;
        assert_eq!(hour_index(start, start, 3), Some(0));
        assert_eq!(hour_index(start, start + 3_599, 3), Some(0));
        assert_eq!(hour_index(start, start + 7_200, 3), Some(2));
        assert_eq!(
            hour_index(start, start + 10_800, 3),
            None,
            "after the window"
        );
        assert_eq!(hour_index(start, start - 1, 3), None, "before the window");
    }
}
