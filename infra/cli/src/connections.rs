//! Connections as `junction status` shows them: one line per connected account with its
//! state, its token's state, when it last synced successfully ("2 minutes ago"), when a
//! webhook delivery for it last arrived (a connection fed only by webhooks never syncs,
//! so this is where its silence shows) and its last error, read from the stack's
//! connections table. The same facts are in the
//! management API (`GET /v1/tenants/{tenant}/connections/{id}`); this is the operator's
//! one-glance view.

use anyhow::{Context as _, bail};
use junction_oauth::{
    Connection, ConnectionState, ConnectionStore, DynamoConnectionStore, with_last_events,
};

/// At most this many connections are listed.
pub const LIMIT: usize = 1_000;

/// The stack's table of the template's `logical_id` (`ConnectionsTable`,
/// `SyncJobsTable`): the DynamoDB table CloudFormation named `<stack>-<logical id>-…`.
pub async fn stack_table(
    client: &aws_sdk_dynamodb::Client,
    stack: &str,
    logical_id: &str,
) -> anyhow::Result<String> {
    match find_stack_table(client, stack, logical_id).await? {
        Some(table) => Ok(table),
        None => bail!("no table named {stack}-{logical_id}-… (is the stack name right?)"),
    }
}

/// [`stack_table`], or `None` when the stack has no such table (`status` reports it
/// missing and goes on).
pub async fn find_stack_table(
    client: &aws_sdk_dynamodb::Client,
    stack: &str,
    logical_id: &str,
) -> anyhow::Result<Option<String>> {
    let prefix = format!("{stack}-{logical_id}-");
    let mut pages = client.list_tables().into_paginator().send();
    let mut found = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.context("listing DynamoDB tables")?;
        found.extend(
            page.table_names()
                .iter()
                .filter(|name| name.starts_with(&prefix))
                .cloned(),
        );
    }
    match found.as_slice() {
        [table] => Ok(Some(table.clone())),
        [] => Ok(None),
        many => bail!("several tables match {prefix}…: {many:?}"),
    }
}

/// Every connection of the stack, oldest first.
pub async fn connection_statuses(
    aws: &aws_config::SdkConfig,
    stack: &str,
) -> anyhow::Result<Vec<Connection>> {
    let table = stack_table(
        &aws_sdk_dynamodb::Client::new(aws),
        stack,
        "ConnectionsTable",
    )
    .await?;
    connections_in(aws, table).await
}

/// Every connection in the connections table `table`, oldest first.
pub async fn connections_in(
    aws: &aws_config::SdkConfig,
    table: String,
) -> anyhow::Result<Vec<Connection>> {
    let store = DynamoConnectionStore::from_config(aws, table);
    let connections = store.list_all(LIMIT).await.context("reading connections")?;
    with_last_events(&store, connections)
        .await
        .context("reading the connections' last webhook events")
}

/// The connections as a table; `now` in unix seconds.
pub fn connection_table(connections: &[Connection], now: i64) -> String {
    let mut out = format!("connections: {}\n", connections.len());
    if connections.is_empty() {
        return out;
    }
    out.push_str(&format!(
        "{:<28} {:<16} {:<12} {:<13} {:<22} {:<22} {:<22} last error\n",
        "id", "tenant", "provider", "state", "token", "last successful sync", "last event"
    ));
    for connection in connections {
        let state = match connection.state {
            ConnectionState::Active => "active",
            ConnectionState::NeedsReauth => "NEEDS REAUTH",
        };
        let error = match (&connection.last_error, connection.last_error_at) {
            (Some(error), Some(at)) => format!("{error} ({})", ago(now, at)),
            (Some(error), None) => error.clone(),
            (None, _) => "-".to_owned(),
        };
        let when = |at: Option<i64>| at.map_or_else(|| "never".to_owned(), |at| ago(now, at));
        out.push_str(&format!(
            "{:<28} {:<16} {:<12} {:<13} {:<22} {:<22} {:<22} {error}\n",
            connection.id,
            connection.tenant,
            connection.provider,
            state,
            token_state(connection, now),
            when(connection.last_successful_sync),
            when(connection.last_event_at),
        ));
    }
    out
}

/// The token's state: disconnected, expired, or when it expires.
fn token_state(connection: &Connection, now: i64) -> String {
    if connection.tokens.is_none() {
        return "none".to_owned();
    }
    let expires = connection
        .token_issued_at
        .zip(connection.stated_lifetime)
        .map(|(issued, lifetime)| issued + i64::try_from(lifetime).unwrap_or(i64::MAX / 2));
    match expires {
        None => "no expiry".to_owned(),
        Some(at) if at <= now => format!("expired {}", ago(now, at)),
        Some(at) => format!("expires in {}", span(at - now)),
    }
}

/// "2 minutes ago".
pub fn ago(now: i64, at: i64) -> String {
    if at > now {
        return "just now".to_owned();
    }
    format!("{} ago", span(now - at))
}

/// A duration in its largest whole unit: "45 seconds", "1 minute", "3 days".
fn span(seconds: i64) -> String {
    let (count, unit) = match seconds {
        ..60 => (seconds, "second"),
        60..3_600 => (seconds / 60, "minute"),
        3_600..86_400 => (seconds / 3_600, "hour"),
        _ => (seconds / 86_400, "day"),
    };
    format!("{count} {unit}{}", if count == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use junction_oauth::sample_connection;

    #[test]
    fn ages_read_like_a_person_would_say_them() {
        assert_eq!(ago(1_000, 1_000), "0 seconds ago");
        assert_eq!(ago(1_000, 955), "45 seconds ago");
        assert_eq!(ago(1_000, 880), "2 minutes ago");
        assert_eq!(ago(10_000, 6_400), "1 hour ago");
        assert_eq!(ago(1_000_000, 800_000), "2 days ago");
        assert_eq!(ago(1_000, 2_000), "just now");
    }

    #[test]
    fn the_table_shows_sync_age_last_event_token_state_and_errors() {
        let now = 1_800_000_000;
        let mut healthy = sample_connection("conn_ok", "acme", now - 86_400);
        healthy.last_successful_sync = Some(now - 120);
        healthy.last_event_at = Some(now - 3 * 86_400);
        healthy.token_issued_at = Some(now - 600);
        healthy.stated_lifetime = Some(3_600);
        let mut broken = sample_connection("conn_broken", "acme", now - 86_400);
        broken.state = ConnectionState::NeedsReauth;
        broken.last_error = Some("invalid_grant".into());
        broken.last_error_at = Some(now - 7_200);
        broken.token_issued_at = Some(now - 90_000);
        broken.stated_lifetime = Some(3_600);
        let table = connection_table(&[healthy, broken], now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "connections: 2");
        let columns = |line: &str| -> Vec<String> {
            line.split("  ")
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let header = columns(lines[1]);
        let sync = header.iter().position(|c| c == "last successful sync");
        let event = header.iter().position(|c| c == "last event");
        assert_eq!(
            event,
            sync.map(|sync| sync + 1),
            "the last event beside the last sync: {table}"
        );
        let (sync, event) = (sync.unwrap_or_default(), event.unwrap_or_default());
        let healthy_cells = columns(lines[2]);
        assert_eq!(healthy_cells[sync], "2 minutes ago", "{table}");
        assert_eq!(healthy_cells[event], "3 days ago", "{table}");
        let broken_cells = columns(lines[3]);
        assert_eq!(
            (broken_cells[sync].as_str(), broken_cells[event].as_str()),
            ("never", "never"),
            "{table}"
        );
        assert!(lines[2].starts_with("conn_ok"), "{table}");
        assert!(lines[2].contains("2 minutes ago"), "{table}");
        assert!(lines[2].contains("expires in 50 minutes"), "{table}");
        assert!(lines[3].contains("NEEDS REAUTH"), "{table}");
        assert!(lines[3].contains("invalid_grant (2 hours ago)"), "{table}");
        assert!(lines[3].contains("never"), "{table}");
        assert!(lines[3].contains("expired 1 day ago"), "{table}");
    }
}
