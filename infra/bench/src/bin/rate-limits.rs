//! `rate-limits`: the requirement's scenario against a provider on loopback that
//! enforces it. 1,200 records are fetched, one request each, by concurrent workers
//! sharing one connection through Junction's outbound client (its shared rate limit,
//! retry policy and 429 handling, exactly as the pollers and the proxy use them).
//!
//! The fake provider on 127.0.0.1 enforces two limits:
//!
//! - an undocumented one: 2 requests/s (a token bucket with bursts of 2), the excess
//!   answered with a bare 429 (no headers, no `Retry-After`);
//! - a daily budget (10,000 by default) that the catalog entry declares as a window and
//!   that the provider reports on every success (`X-RateLimit-Limit/-Remaining/-Reset`).
//!   Other apps may have spent most of it already (`--day-used`), and the provider's
//!   day may end during the run (`--reset-in`): only the headers say so.
//!
//! The catalog says 10 requests/s (`--documented`): the 2/s is only learned from 429s.
//! Everything runs in real time (no simulated clock): the limiter's constants (its
//! one-minute climb, its hourly trust) are wall-clock, and scaling the scenario would
//! change what is measured. A full run therefore takes ten minutes or more.
//!
//! It prints the requests made, the 429s received (undocumented and daily), the jobs
//! requeued, the elapsed time, and the minimum the limits allow: `records ÷ 2` seconds,
//! or, when the day's remaining budget runs out first, the wait for the reset plus the
//! rest at 2/s.
//!
//! `cargo run --release -p junction-bench --bin rate-limits -- [--records 1200]
//! [--day-used 9500 --reset-in 400]`

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{
    Router,
    extract::State,
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use clap::Parser;
use fake_provider::AuthServerConfig;
use junction_aws::clock::SystemClock;
use junction_oauth::testing::harness_with;
use junction_outbound::{Call, CallError, InMemorySharedState, OutboundClient};

#[derive(Debug, Parser)]
#[command(about = "1,200 records against an undocumented 2 requests/s limit and a daily budget")]
struct Args {
    /// Records to fetch, one request each.
    #[arg(long, default_value_t = 1_200)]
    records: usize,
    /// Concurrent workers sharing the connection.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// The provider's real (undocumented) limit, requests per second.
    #[arg(long, default_value_t = 2.0)]
    limit: f64,
    /// The rate the catalog entry states.
    #[arg(long, default_value_t = 10.0)]
    documented: f64,
    /// The daily budget (declared in the catalog, enforced and reported by the provider).
    #[arg(long, default_value_t = 10_000)]
    day_budget: u64,
    /// Requests other apps already spent from today's budget.
    #[arg(long, default_value_t = 0)]
    day_used: u64,
    /// Seconds until the provider's day ends.
    #[arg(long, default_value_t = 86_400)]
    reset_in: u64,
    /// How long an invocation may run before a waiting call is requeued (seconds).
    #[arg(long, default_value_t = 900)]
    invocation: u64,
}

/// What the fake provider counts.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    requests: usize,
    served: usize,
    undocumented_429s: usize,
    daily_429s: usize,
}

/// The provider's state: the hidden token bucket, today's budget, the counts.
#[derive(Debug)]
struct Provider {
    rate: f64,
    tokens: f64,
    refilled: Instant,
    budget: u64,
    used: u64,
    day_ends: Instant,
    counts: Counts,
}

impl Provider {
    fn answer(&mut self) -> Response {
        let now = Instant::now();
        self.counts.requests += 1;
        if now >= self.day_ends {
            self.used = 0;
            self.day_ends += Duration::from_secs(86_400);
        }
        let reset = self
            .day_ends
            .saturating_duration_since(now)
            .as_secs()
            .max(1);
        let day_headers = |response: &mut Response, remaining: u64| {
            let headers = response.headers_mut();
            for (name, value) in [
                ("x-ratelimit-limit", self.budget),
                ("x-ratelimit-remaining", remaining),
                ("x-ratelimit-reset", reset),
            ] {
                headers.insert(name, HeaderValue::from(value));
            }
        };
        if self.used >= self.budget {
            self.counts.daily_429s += 1;
            let mut response = StatusCode::TOO_MANY_REQUESTS.into_response();
            day_headers(&mut response, 0);
            return response;
        }
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
        self.refilled = now;
        if self.tokens < 1.0 {
            self.counts.undocumented_429s += 1;
            return StatusCode::TOO_MANY_REQUESTS.into_response();
        }
        self.tokens -= 1.0;
        self.used += 1;
        self.counts.served += 1;
        let mut response = (StatusCode::OK, r#"{"id":"record"}"#).into_response();
        day_headers(&mut response, self.budget - self.used);
        response
    }
}

type Shared = Arc<Mutex<Provider>>;

fn lock(provider: &Shared) -> std::sync::MutexGuard<'_, Provider> {
    provider
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn record(State(provider): State<Shared>) -> Response {
    lock(&provider).answer()
}

/// The least time the limits allow: the day's remaining budget at the hidden rate, the
/// wait for the reset if it runs out first, the rest at the hidden rate.
fn minimum(args: &Args) -> f64 {
    let records = args.records as f64;
    let remaining = args.day_budget.saturating_sub(args.day_used) as f64;
    if remaining >= records {
        return records / args.limit;
    }
    (remaining / args.limit).max(args.reset_in as f64) + (records - remaining) / args.limit
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let provider: Shared = Arc::new(Mutex::new(Provider {
        rate: args.limit,
        tokens: args.limit.max(1.0),
        refilled: Instant::now(),
        budget: args.day_budget,
        used: args.day_used,
        day_ends: Instant::now() + Duration::from_secs(args.reset_in),
        counts: Counts::default(),
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the fake provider")?;
    let address: SocketAddr = listener.local_addr()?;
    let app = Router::new()
        .route("/records/{id}", axum::routing::get(record))
        .with_state(provider.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let api = format!(
        "[api]\nrate_limit = {{ requests_per_second = {:?}, burst = 10, scope = \"connection\", windows = [{{ requests = {}, per = \"day\" }}] }}\n",
        args.documented, args.day_budget
    );
    let harness = harness_with(AuthServerConfig::default(), &api).await;
    let connection = harness.connect().await;
    let client = OutboundClient::new(
        harness.vault.catalog(),
        harness.vault.clone(),
        Arc::new(InMemorySharedState::default()),
        Arc::new(SystemClock),
    );

    let next = Arc::new(AtomicUsize::new(0));
    let requeues = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.workers {
        let (client, next, requeues, failed, connection) = (
            client.clone(),
            next.clone(),
            requeues.clone(),
            failed.clone(),
            connection.clone(),
        );
        let (records, invocation) = (args.records, Duration::from_secs(args.invocation));
        workers.push(tokio::spawn(async move {
            loop {
                let id = next.fetch_add(1, Ordering::SeqCst);
                if id >= records {
                    break;
                }
                let url = format!("http://{address}/records/{id}");
                // A requeued job comes back after its delay, as SQS redelivers it.
                loop {
                    let call = Call {
                        provider: "fakeauth",
                        connection: &connection,
                        operation: "record.get",
                        deadline: Instant::now() + invocation,
                        accept: &[],
                    };
                    match client
                        .send(call, |http, token| {
                            http.get(&url).bearer_auth(token.value.expose())
                        })
                        .await
                    {
                        Ok(_) => break,
                        Err(CallError::Requeue { after, .. }) => {
                            requeues.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(after).await;
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await.context("a worker panicked")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    server.abort();
    let counts = lock(&provider).counts;
    let minimum = minimum(&args);
    println!(
        "rate limits: {} records, {} workers, one connection",
        args.records, args.workers
    );
    println!(
        "  catalog (documented) rate     {:>9.1} requests/s, {} a day",
        args.documented, args.day_budget
    );
    println!(
        "  provider's hidden limit       {:>9.1} requests/s (bursts of {:.0}), bare 429",
        args.limit,
        args.limit.max(1.0)
    );
    println!(
        "  day budget left at the start  {:>9} (resets after {} s)",
        args.day_budget.saturating_sub(args.day_used),
        args.reset_in
    );
    println!("  requests made                 {:>9}", counts.requests);
    println!("  records served                {:>9}", counts.served);
    println!(
        "  429s, undocumented limit      {:>9}",
        counts.undocumented_429s
    );
    println!("  429s, daily budget            {:>9}", counts.daily_429s);
    println!(
        "  jobs requeued                 {:>9}",
        requeues.load(Ordering::SeqCst)
    );
    println!(
        "  records not fetched           {:>9}",
        failed.load(Ordering::SeqCst)
    );
    println!("  elapsed                       {elapsed:>9.1} s");
    println!("  minimum the limits allow      {minimum:>9.1} s");
    println!(
        "  elapsed ÷ minimum             {:>9.3}",
        elapsed / minimum.max(f64::EPSILON)
    );
    anyhow::ensure!(
        failed.load(Ordering::SeqCst) == 0,
        "every record must be fetched"
    );
    Ok(())
}
