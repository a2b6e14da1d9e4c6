//! `junction-bench`: Junction's functions side by side with Node.js and Python
//! references, under the same Lambda Runtime API emulator, in one run: the local stack's
//! ([`local_stack::runtime`]), which measures init, each invocation's CPU time and the
//! peak RSS.
//!
//! Run it through `infra/bench/run` (the README's bench command), which builds the
//! functions with `cargo lambda build --release` and installs the references into
//! `target/bench-reference/` first.
//! Steps: a correctness pass (the release binaries through the local stack and the
//! emulator), then the timing runs against a stub AWS endpoint on loopback, variants
//! interleaved: cold starts round-robin, then warm invocations round-robin.

mod correctness;
mod events;
mod report;
mod stub;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use clap::Parser;
use local_stack::runtime::{FunctionRuntime, FunctionSpec, Init, InvokeError, MeasuredInvocation};
use serde_json::Value;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    report::{Percentiles, Run, VariantFigures, per_event},
    stub::{CallCounts, SentMessage, StubAws, calls_between},
};

/// How long init or one invocation may take before the run gives up on the process.
const LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Parser)]
#[command(
    about = "Cold start, CPU, memory, size and AWS calls per event, against Node.js and Python references"
)]
struct Args {
    /// Cold starts per variant.
    #[arg(long, default_value_t = 20)]
    cold: usize,
    /// Warm invocations per variant.
    #[arg(long, default_value_t = 300)]
    warm: usize,
    /// Where `cargo lambda build` left the functions (`<dir>/<binary>/bootstrap`).
    #[arg(long, default_value = "target/lambda")]
    lambda_dir: PathBuf,
    /// Where the results go (`results.json`, `results.md`).
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// A saved run to compare with; figures more than 20% worse are reported.
    #[arg(long, default_value = "infra/bench/baseline.json")]
    baseline: PathBuf,
    /// Save this run as the baseline.
    #[arg(long)]
    save_baseline: bool,
    /// Where `infra/bench/reference/install` staged the Node.js and Python references
    /// with their packages (outside the source tree, so a run leaves it clean).
    #[arg(long, default_value = "target/bench-reference")]
    references: PathBuf,
    /// Skip the correctness pass against the emulator (the Rust functions' environments
    /// then come from a previous run's `environments.json`).
    #[arg(long)]
    skip_correctness: bool,
    /// Leave out the Node.js and Python references.
    #[arg(long)]
    junction_only: bool,
}

/// One thing measured: a function in one runtime.
#[derive(Debug, Clone)]
struct Variant {
    function: &'static str,
    runtime: &'static str,
    /// How the emulator runs it (the logical id is `<runtime>-<function>`).
    spec: FunctionSpec,
    /// Files of its deployment package (zipped as `sam deploy` would).
    package: Vec<PathBuf>,
}

/// The webhook signing secret every ingress variant verifies with.
const GITHUB_SECRET: &str = "bench-github-signing-secret-0123456789";
const SECRET_ID: &str = "junction/webhooks/github";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = local_stack::emulator::repo_root();
    std::env::set_current_dir(&root)?;
    std::fs::create_dir_all(&args.out)?;

    let executables = built_functions(&args.lambda_dir)?;
    let environments_file = args.out.join("environments.json");
    let environments: BTreeMap<String, BTreeMap<String, String>> = if args.skip_correctness {
        serde_json::from_str(
            &std::fs::read_to_string(&environments_file).with_context(|| {
                format!("--skip-correctness needs {}", environments_file.display())
            })?,
        )?
    } else {
        eprintln!("==> correctness: the release binaries through the local stack and the emulator");
        let checked = correctness::run(root.clone(), executables.clone()).await?;
        let by_binary: BTreeMap<String, BTreeMap<String, String>> = checked
            .binaries
            .iter()
            .filter_map(|(id, binary)| {
                Some((binary.clone(), checked.environments.get(id)?.clone()))
            })
            .collect();
        std::fs::write(
            &environments_file,
            serde_json::to_string_pretty(&by_binary)?,
        )?;
        eprintln!("    one signed delivery → one CloudEvent on the bus: ok");
        by_binary
    };

    let secret_document = serde_json::json!({ "signing_secrets": [GITHUB_SECRET] }).to_string();
    let stub = StubAws::start(BTreeMap::from([(SECRET_ID.to_owned(), secret_document)])).await?;
    let variants = variants(
        &root.join(&args.references),
        &executables,
        &environments,
        &stub.endpoint(),
        args.junction_only,
    )?;

    let mut figures = Vec::new();
    let mut messages: Vec<SentMessage> = Vec::new();
    for function in ["ingress", "consumer"] {
        let group: Vec<&Variant> = variants.iter().filter(|v| v.function == function).collect();
        eprintln!(
            "==> {function}: {} variants, {} cold starts and {} warm invocations each",
            group.len(),
            args.cold,
            args.warm
        );
        figures.extend(measure(&group, &stub, &mut messages, args.cold, args.warm).await?);
    }
    // The other functions: init, memory after init, size.
    let others: Vec<&Variant> = variants
        .iter()
        .filter(|v| v.function != "ingress" && v.function != "consumer")
        .collect();
    if !others.is_empty() {
        eprintln!(
            "==> other functions: {} cold starts each (init only)",
            args.cold
        );
        figures.extend(measure_init_only(&others, args.cold).await?);
    }
    for (variant, figure) in variants.iter().zip(figures.iter_mut()) {
        debug_assert_eq!(variant.function, figure.function);
        let (binary, zip) = package_sizes(&variant.package)?;
        figure.binary_bytes = (variant.runtime == "junction").then_some(binary);
        figure.zip_bytes = Some(zip);
    }

    let run = Run {
        date: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        machine: machine(),
        toolchain: command_line("rustc", &["--version"]),
        command: "infra/bench/run".into(),
        variants: figures,
    };
    let markdown = run.markdown();
    println!("{markdown}");
    std::fs::write(args.out.join("results.md"), &markdown)?;
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&run)?,
    )?;
    match std::fs::read_to_string(&args.baseline) {
        Ok(text) => {
            let baseline: Run = serde_json::from_str(&text)?;
            print_findings(
                &run.regressions(&baseline, 0.2),
                &format!(
                    "More than 20% worse than the baseline of {}:",
                    baseline.date
                ),
                &format!(
                    "No figure is more than 20% worse than the baseline of {}.",
                    baseline.date
                ),
            );
            // The ratios cancel the machine's drift (every variant slower alike).
            print_findings(
                &run.ratio_regressions(&baseline, 0.2),
                "Junction ÷ reference ratios more than 20% worse than the baseline's:",
                "No Junction ÷ reference ratio is more than 20% worse than the baseline's.",
            );
        }
        Err(_) => println!(
            "No baseline at {} to compare with.",
            args.baseline.display()
        ),
    }
    if args.save_baseline {
        std::fs::write(&args.baseline, serde_json::to_string_pretty(&run)?)?;
        println!("Saved as the baseline: {}", args.baseline.display());
    }
    Ok(())
}

/// Prints `findings` as a list under `heading`, or `none` when there are none.
fn print_findings(findings: &[String], heading: &str, none: &str) {
    if findings.is_empty() {
        println!("{none}");
        return;
    }
    println!("{heading}");
    for finding in findings {
        println!("- {finding}");
    }
}

/// Binary name → `bootstrap` under `cargo lambda build`'s output directory.
fn built_functions(dir: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut built = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| {
        format!(
            "{} (build with `cargo lambda build --release` first)",
            dir.display()
        )
    })? {
        let entry = entry?;
        let bootstrap = entry.path().join("bootstrap");
        if bootstrap.is_file() {
            built.insert(entry.file_name().to_string_lossy().into_owned(), bootstrap);
        }
    }
    if built.is_empty() {
        bail!("no function under {}", dir.display());
    }
    Ok(built)
}

fn variants(
    references: &Path,
    executables: &BTreeMap<String, PathBuf>,
    environments: &BTreeMap<String, BTreeMap<String, String>>,
    endpoint: &str,
    junction_only: bool,
) -> anyhow::Result<Vec<Variant>> {
    let mut variants = Vec::new();
    let roles = [
        ("webhook-ingress", "ingress"),
        ("event-consumer", "consumer"),
    ];
    for (binary, function) in roles {
        variants.push(junction_variant(
            binary,
            function,
            executables,
            environments,
            endpoint,
        )?);
        if !junction_only {
            variants.extend(reference_variants(references, function, endpoint)?);
        }
    }
    // The template's other functions (`cargo lambda build` may have left other
    // binaries of the workspace beside them).
    for binary in environments.keys() {
        if roles.iter().all(|(known, _)| known != binary) {
            let function: &'static str = Box::leak(binary.clone().into_boxed_str());
            variants.push(junction_variant(
                binary,
                function,
                executables,
                environments,
                endpoint,
            )?);
        }
    }
    Ok(variants)
}

fn junction_variant(
    binary: &str,
    function: &'static str,
    executables: &BTreeMap<String, PathBuf>,
    environments: &BTreeMap<String, BTreeMap<String, String>>,
    endpoint: &str,
) -> anyhow::Result<Variant> {
    let executable = executables
        .get(binary)
        .with_context(|| format!("{binary} was not built"))?;
    let mut environment = environments
        .get(binary)
        .with_context(|| format!("no environment for {binary}"))?
        .clone();
    // Every AWS client at the stub, nothing else changed.
    environment.retain(|name, _| !name.starts_with("AWS_ENDPOINT_URL"));
    environment.insert("AWS_ENDPOINT_URL".into(), endpoint.into());
    Ok(Variant {
        function,
        runtime: "junction",
        spec: spec(
            "junction",
            function,
            executable.clone(),
            Vec::new(),
            environment,
        ),
        package: vec![executable.clone()],
    })
}

/// How the emulator runs `runtime`'s `function`: the whole environment given, output
/// kept for failure reports but not echoed (stdout carries the report).
fn spec(
    runtime: &str,
    function: &str,
    executable: PathBuf,
    args: Vec<String>,
    environment: BTreeMap<String, String>,
) -> FunctionSpec {
    let name = format!("{runtime}-{function}");
    FunctionSpec {
        logical_id: name.clone(),
        arn: format!(
            "arn:aws:lambda:us-east-1:{}:function:{name}",
            local_stack::ACCOUNT_ID
        ),
        name,
        executable,
        args,
        timeout: LIMIT,
        memory_mb: 128,
        environment,
        echo: false,
    }
}

fn reference_variants(
    references: &Path,
    function: &'static str,
    endpoint: &str,
) -> anyhow::Result<Vec<Variant>> {
    let node = references.join("node");
    let python = references.join("python");
    let python_bin = python.join(".venv/bin/python");
    if !python_bin.is_file() || !node.join("node_modules").is_dir() {
        bail!(
            "the references are not installed in {}: run infra/bench/reference/install",
            references.display()
        );
    }
    let environment = |name: &str| -> BTreeMap<String, String> {
        let mut environment: BTreeMap<String, String> = [
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_REGION", "us-east-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_LAMBDA_FUNCTION_NAME", name),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            (
                "QUEUE_URL",
                "https://sqs.us-east-1.amazonaws.com/123456789012/junction-ingest",
            ),
            ("SECRET_ID", SECRET_ID),
            ("IDEMPOTENCY_TABLE", "junction-idempotency"),
            ("EVENT_BUS_NAME", "junction-events"),
            (
                "ENCRYPTED_DATA_KEY",
                "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQ==",
            ),
            ("POWERTOOLS_SERVICE_NAME", "junction-bench"),
            ("LOG_LEVEL", "INFO"),
            ("LANG", "C.UTF-8"),
            ("TZ", ":UTC"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        if let Ok(path) = std::env::var("PATH") {
            environment.insert("PATH".into(), path);
        }
        environment
    };
    let files = |dir: &Path, names: &[&str]| names.iter().map(|n| dir.join(n)).collect::<Vec<_>>();
    let node_program = which("node").context("node is not on PATH")?;
    Ok(vec![
        Variant {
            function,
            runtime: "node",
            spec: spec(
                "node",
                function,
                node_program,
                vec![
                    node.join("bootstrap.mjs").display().to_string(),
                    function.into(),
                ],
                environment(&format!("node-{function}")),
            ),
            package: files(&node, &["bootstrap.mjs", &format!("{function}.mjs")]),
        },
        Variant {
            function,
            runtime: "python",
            spec: spec(
                "python",
                function,
                python_bin.clone(),
                vec![
                    python.join("bootstrap.py").display().to_string(),
                    function.into(),
                ],
                environment(&format!("python-{function}")),
            ),
            package: files(&python, &["bootstrap.py", &format!("{function}.py")]),
        },
        Variant {
            function,
            runtime: "python-powertools",
            spec: spec(
                "python-powertools",
                function,
                python_bin,
                vec![
                    python.join("bootstrap.py").display().to_string(),
                    format!("powertools_{function}"),
                ],
                environment(&format!("powertools-{function}")),
            ),
            package: files(
                &python,
                &["bootstrap.py", &format!("powertools_{function}.py")],
            ),
        },
    ])
}

/// The event for invocation `sequence` of a variant.
fn event(function: &str, sequence: usize, messages: &[SentMessage]) -> Vec<u8> {
    match function {
        "ingress" => events::github_delivery(GITHUB_SECRET, &format!("bench-delivery-{sequence}")),
        _ => {
            let start = (sequence * events::BATCH_SIZE) % messages.len().max(1);
            let batch: Vec<SentMessage> = messages
                .iter()
                .cycle()
                .skip(start)
                .take(events::BATCH_SIZE)
                .cloned()
                .collect();
            events::sqs_batch(&batch, sequence)
        }
    }
}

/// Events an invocation of `function` carries (SQS records for the consumer).
fn events_per_invocation(function: &str) -> usize {
    if function == "consumer" {
        events::BATCH_SIZE
    } else {
        1
    }
}

/// Whether the answer is what the function answers for a valid event.
fn succeeded(function: &str, answer: &Result<Vec<u8>, InvokeError>) -> bool {
    let Ok(payload) = answer else {
        return false;
    };
    let Ok(payload) = serde_json::from_slice::<Value>(payload) else {
        return false;
    };
    match function {
        "ingress" => payload["statusCode"]
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s)),
        _ => payload["batchItemFailures"]
            .as_array()
            .is_some_and(Vec::is_empty),
    }
}

#[derive(Debug, Default)]
struct Samples {
    init: Vec<Duration>,
    init_cpu: Vec<Duration>,
    first: Vec<Duration>,
    warm: Vec<Duration>,
    warm_cpu: Vec<Duration>,
    peak_rss_kib: u64,
    calls_cold: CallCounts,
    calls_warm: CallCounts,
    failures: usize,
    first_failure: Option<String>,
}

async fn measure(
    group: &[&Variant],
    stub: &StubAws,
    messages: &mut Vec<SentMessage>,
    cold: usize,
    warm: usize,
) -> anyhow::Result<Vec<VariantFigures>> {
    let mut samples: Vec<Samples> = group.iter().map(|_| Samples::default()).collect();
    let mut sequence = 0;
    // Cold starts, round-robin.
    for round in 0..cold {
        for (variant, samples) in group.iter().zip(samples.iter_mut()) {
            let before = stub.calls();
            let (process, init) = Process::start(variant).await?;
            samples.init.push(init.duration);
            samples.init_cpu.push(init.cpu);
            sequence += 1;
            let invocation = process
                .invoke(event(variant.function, sequence, messages))
                .await?;
            record_answer(variant, &invocation, samples, &process);
            samples.first.push(invocation.duration);
            for (operation, count) in calls_between(&before, &stub.calls()) {
                *samples.calls_cold.entry(operation).or_default() += count;
            }
            keep_messages(variant, stub, messages);
            samples.peak_rss_kib = samples.peak_rss_kib.max(process.stop().await);
        }
        if round == 0 {
            eprintln!("    first round of cold starts done");
        }
    }
    // Warm invocations, round-robin over one process per variant.
    let mut processes = Vec::new();
    for variant in group {
        let (process, _) = Process::start(variant).await?;
        sequence += 1;
        process
            .invoke(event(variant.function, sequence, messages))
            .await?;
        keep_messages(variant, stub, messages);
        processes.push(process);
    }
    for _ in 0..warm {
        for ((variant, samples), process) in
            group.iter().zip(samples.iter_mut()).zip(processes.iter())
        {
            sequence += 1;
            let payload = event(variant.function, sequence, messages);
            let before = stub.calls();
            let invocation = process.invoke(payload).await?;
            for (operation, count) in calls_between(&before, &stub.calls()) {
                *samples.calls_warm.entry(operation).or_default() += count;
            }
            record_answer(variant, &invocation, samples, process);
            samples.warm.push(invocation.duration);
            samples.warm_cpu.push(invocation.cpu);
            keep_messages(variant, stub, messages);
        }
    }
    for ((process, samples), variant) in processes.into_iter().zip(samples.iter_mut()).zip(group) {
        samples.peak_rss_kib = samples.peak_rss_kib.max(process.stop().await);
        if let Some(failure) = &samples.first_failure {
            eprintln!(
                "    {}: {} failed invocations; the first: {failure}",
                variant.spec.logical_id, samples.failures
            );
        }
    }
    Ok(group
        .iter()
        .zip(samples)
        .map(|(variant, samples)| {
            let events = events_per_invocation(variant.function);
            VariantFigures {
                function: variant.function.into(),
                runtime: variant.runtime.into(),
                init_ms: Percentiles::of(&samples.init),
                init_cpu_ms: Percentiles::of(&samples.init_cpu),
                first_ms: Percentiles::of(&samples.first),
                warm_ms: Percentiles::of(&samples.warm),
                warm_cpu_ms: Percentiles::of(&samples.warm_cpu),
                peak_rss_kib: samples.peak_rss_kib,
                binary_bytes: None,
                zip_bytes: None,
                calls_per_event: per_event(&samples.calls_warm, samples.warm.len() * events),
                calls_cold: per_event(&samples.calls_cold, samples.init.len()),
                cold_samples: samples.init.len(),
                warm_samples: samples.warm.len(),
                failures: samples.failures,
            }
        })
        .collect())
}

async fn measure_init_only(group: &[&Variant], cold: usize) -> anyhow::Result<Vec<VariantFigures>> {
    let mut samples: Vec<Samples> = group.iter().map(|_| Samples::default()).collect();
    for _ in 0..cold {
        for (variant, samples) in group.iter().zip(samples.iter_mut()) {
            let (process, init) = Process::start(variant).await?;
            samples.init.push(init.duration);
            samples.init_cpu.push(init.cpu);
            samples.peak_rss_kib = samples.peak_rss_kib.max(process.stop().await);
        }
    }
    Ok(group
        .iter()
        .zip(samples)
        .map(|(variant, samples)| VariantFigures {
            function: variant.function.into(),
            runtime: variant.runtime.into(),
            init_ms: Percentiles::of(&samples.init),
            init_cpu_ms: Percentiles::of(&samples.init_cpu),
            peak_rss_kib: samples.peak_rss_kib,
            cold_samples: samples.init.len(),
            ..VariantFigures::default()
        })
        .collect())
}

fn record_answer(
    variant: &Variant,
    invocation: &MeasuredInvocation,
    samples: &mut Samples,
    process: &Process,
) {
    if !succeeded(variant.function, &invocation.answer) {
        samples.failures += 1;
        if samples.first_failure.is_none() {
            let answer = match &invocation.answer {
                Ok(payload) | Err(InvokeError::Function { payload, .. }) => {
                    String::from_utf8_lossy(payload).into_owned()
                }
                Err(err) => err.to_string(),
            };
            samples.first_failure = Some(format!("{answer} (output: {})", process.tail()));
        }
    }
}

/// One process of a variant under the emulator: a function runtime of its own, started
/// for a cold start or a warm run and stopped after it (or when dropped: the runtime
/// stops its process when the shutdown sender goes).
#[derive(Debug)]
struct Process {
    function: FunctionRuntime,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Process {
    /// Starts the variant's process and waits for its first `/next`, the end of init.
    async fn start(variant: &Variant) -> anyhow::Result<(Process, Init)> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (function, task) = FunctionRuntime::start(variant.spec.clone(), shutdown_rx);
        let process = Process {
            function,
            shutdown,
            task,
        };
        match process.function.wait_initialized(LIMIT).await {
            Ok(init) => Ok((process, init)),
            Err(err) => {
                let function = process.stop_runtime().await;
                function.finish_output(Duration::from_secs(5)).await;
                bail!(
                    "{} did not initialize: {err}; its last output: {}",
                    variant.spec.logical_id,
                    tail(&function)
                )
            }
        }
    }

    /// Runs one invocation; it ends when the process asks for the next one.
    async fn invoke(&self, payload: Vec<u8>) -> anyhow::Result<MeasuredInvocation> {
        self.function
            .invoke_measured(payload)
            .await
            .with_context(|| {
                format!(
                    "{} failed its invocation; its last output: {}",
                    self.function.logical_id(),
                    self.tail()
                )
            })
    }

    /// The last lines the process wrote (for failure reports).
    fn tail(&self) -> String {
        tail(&self.function)
    }

    /// Stops the process; its peak RSS in KiB (`VmHWM`, read as it stopped).
    async fn stop(self) -> u64 {
        let function = self.stop_runtime().await;
        function.summary().peak_rss_kib.unwrap_or(0)
    }

    async fn stop_runtime(self) -> FunctionRuntime {
        self.shutdown.send_replace(true);
        let _ = self.task.await;
        self.function
    }
}

/// The last 40 lines `function`'s processes wrote.
fn tail(function: &FunctionRuntime) -> String {
    let logs = function.logs();
    logs[logs.len().saturating_sub(40)..].join("\n")
}

/// Keeps what Junction's ingress enqueued: the consumer runs replay it.
fn keep_messages(variant: &Variant, stub: &StubAws, messages: &mut Vec<SentMessage>) {
    let sent = stub.take_sent();
    if variant.function == "ingress" && variant.runtime == "junction" && messages.len() < 1000 {
        messages.extend(sent);
    }
}

/// The unpacked size of the package and its zip as `sam deploy` uploads it (Python's
/// `zipfile` with deflate, as the SAM CLI packages).
fn package_sizes(files: &[PathBuf]) -> anyhow::Result<(u64, u64)> {
    let unpacked = files
        .iter()
        .map(|file| std::fs::metadata(file).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()?;
    let script = "import io,sys,zipfile\n\
                  buffer=io.BytesIO()\n\
                  with zipfile.ZipFile(buffer,'w',zipfile.ZIP_DEFLATED) as z:\n\
                  \x20   [z.write(f, f.rsplit('/',1)[-1]) for f in sys.argv[1:]]\n\
                  print(len(buffer.getvalue()))";
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(files)
        .output()
        .context("running python3 to zip the package")?;
    if !output.status.success() {
        bail!(
            "zipping failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let zipped = String::from_utf8_lossy(&output.stdout).trim().parse()?;
    Ok((unpacked, zipped))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|name| name.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = command_line("uname", &["-sr"]);
    format!("{cpu}, {cores} cores, {kernel}")
}

fn command_line(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default()
}
