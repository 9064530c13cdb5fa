use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use retainer::check;
use retainer::engine::CompiledPolicy;

#[derive(Parser)]
#[command(
    name = "retainer",
    version,
    about = "Keeps what your CEL says to keep; sweeps the rest."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (kubeconfig, or in-cluster config).
    Run(Box<RunArgs>),
    /// Show what a policy decides against the live cluster, read-only.
    Plan {
        /// A policy in the cluster: a RetentionPolicy with -n, else a ClusterRetentionPolicy.
        name: Option<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// A policy from a file instead.
        #[arg(short = 'f', long = "filename", conflicts_with = "name")]
        policy: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Explain one object's verdict with the values that decided it.
    ///
    /// Prints the verdict and reason as plan gives them, with the object's group, rank,
    /// groupSize, age, referrers, the keep term that held and the guard that applied. Reads the
    /// cluster like plan, or a file with --objects like check.
    ExplainVerdict(ExplainArgs),
    /// Print both CustomResourceDefinitions as YAML.
    Crds,
    /// Evaluate a policy offline over objects from a file.
    Check {
        /// The RetentionPolicy or ClusterRetentionPolicy.
        #[arg(short = 'f', long = "filename")]
        policy: String,
        /// Objects: multi-document YAML or a List, as `kubectl get -o yaml` prints; may hold
        /// referrers (Pods, ServiceAccounts, ...) and documents of kind OCIArtifact.
        #[arg(long)]
        objects: String,
        /// The evaluation time (RFC 3339); default now.
        #[arg(long)]
        now: Option<jiff::Timestamp>,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// A policy in the cluster: a RetentionPolicy with -n, else a ClusterRetentionPolicy.
    name: Option<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// A policy from a file instead.
    #[arg(short = 'f', long = "filename", conflicts_with = "name")]
    policy: Option<String>,
    /// Offline: read the objects from this file (as `check --objects`) instead of the cluster.
    #[arg(long, requires = "policy")]
    objects: Option<String>,
    /// With --objects: the evaluation time (RFC 3339); default now.
    #[arg(long, requires = "objects")]
    now: Option<jiff::Timestamp>,
    /// The Job or Secret: KIND/NAME (`job/build-7`) or NAME.
    #[arg(long, conflicts_with_all = ["digest", "tag"])]
    object: Option<String>,
    /// The object's namespace, for a ClusterRetentionPolicy (default: any, if the name is unique).
    #[arg(long)]
    object_namespace: Option<String>,
    /// The OCI artifact's manifest digest (sha256:...).
    #[arg(long)]
    digest: Option<String>,
    /// An OCI artifact by one of its tags.
    #[arg(long)]
    tag: Option<String>,
    /// The OCI artifact's repository, when a digest or tag is in several.
    #[arg(long)]
    repository: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Output,
}

impl ExplainArgs {
    fn wanted(&self) -> Result<retainer::explain::Wanted, String> {
        use retainer::explain::Wanted;
        match (&self.object, &self.digest, &self.tag) {
            (Some(o), _, _) => {
                let (kind, name) = match o.split_once('/') {
                    Some((k, n)) => (Some(k.to_string()), n.to_string()),
                    None => (None, o.clone()),
                };
                Ok(Wanted::Object {
                    kind,
                    namespace: self.object_namespace.clone(),
                    name,
                })
            }
            (None, None, None) => {
                Err("name the object: --object KIND/NAME, or --digest / --tag for OCI".into())
            }
            (None, digest, tag) => Ok(Wanted::Artifact {
                repository: self.repository.clone(),
                digest: digest.clone(),
                tag: tag.clone(),
            }),
        }
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// Elect a leader through a Lease; only the leader sweeps and writes status.
    #[arg(long, env = "RETAINER_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the Lease (default: the pod's namespace, else default).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    #[arg(long, default_value = "retainer-leader")]
    lease_name: String,
    /// This replica's identity in the Lease (default: the pod name, else the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long a Lease holds without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: std::time::Duration,
    // A test aid, hidden from --help: shifts every wall-clock time this process writes into
    // the Lease (e.g. -10m, +2m), so that a test can run replicas whose clocks disagree and
    // show that the election does not depend on them.
    #[arg(long, hide = true, default_value = "0s", allow_hyphen_values = true, value_parser = parse_signed_duration)]
    clock_offset: jiff::SignedDuration,
    /// Deletes in flight at once during a sweep.
    #[arg(long, default_value_t = 10)]
    delete_concurrency: usize,
    /// Client-side limit on sweep requests per second (reads and deletes); 0 = unlimited.
    #[arg(long, default_value_t = 50.0)]
    delete_qps: f64,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
    /// How long to let changes settle before evaluating again.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    debounce: std::time::Duration,
    /// Page size of the initial lists.
    #[arg(long, default_value_t = 500)]
    page_size: u32,
    /// Timeout of each registry request (connecting, and the whole request).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    registry_timeout: std::time::Duration,
    /// How long one whole read of a policy's registry may take; the policy keeps its last
    /// verdicts meanwhile.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    registry_deadline: std::time::Duration,
    /// Timeout of connecting to the API server.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    api_connect_timeout: std::time::Duration,
    /// How long the API server may take to answer a request (watches excepted).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    api_read_timeout: std::time::Duration,
    /// Evaluations running at once across all policies; 0 = one per CPU.
    #[arg(long, default_value_t = 0)]
    evaluation_concurrency: usize,
    /// Registry requests in flight at once.
    #[arg(long, default_value_t = 8)]
    registry_concurrency: usize,
    /// How often a registry's artifacts are read again between sweeps.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    registry_refresh: std::time::Duration,
    /// How long evaluating one policy may take; a policy whose expressions need longer is
    /// reported (Ready=False, InvalidExpression) and not swept.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    eval_budget: std::time::Duration,
    /// Keep each Job and Secret policy's evaluation between changes and evaluate only what
    /// changed (docs/incremental.md). `false` evaluates every selected object on every change:
    /// more CPU per change, but no per-policy copy of the objects it governs in memory.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    incremental_evaluation: bool,
    /// Handle only the policies matching this label selector (e.g. `shard=a`), so that
    /// several controllers can split the policies of one cluster between them.
    #[arg(long)]
    policy_selector: Option<String>,
    /// Serve the validating admission webhook with the certificate in this directory
    /// (`tls.crt` and `tls.key`, as a mounted kubernetes.io/tls Secret holds them; read again
    /// when they change). Off when unset.
    #[arg(long)]
    webhook_cert_dir: Option<std::path::PathBuf>,
    /// Where the admission webhook listens (HTTPS, path /validate).
    #[arg(long, default_value = "0.0.0.0:9443", requires = "webhook_cert_dir")]
    webhook_addr: std::net::SocketAddr,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    retainer::engine::parse_go_duration(s)
}

/// A Go duration with an optional sign: `-90s`, `+2m`, `1h`.
fn parse_signed_duration(s: &str) -> Result<jiff::SignedDuration, String> {
    let t = s.trim();
    let (negative, rest) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let d = jiff::SignedDuration::try_from(parse_duration(rest)?)
        .map_err(|e| format!("invalid duration '{s}': {e}"))?;
    Ok(if negative { -d } else { d })
}

async fn run_controller(args: RunArgs) -> Result<String, String> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| format!("connecting to the cluster: {e}"))?;
    let identity = args.identity.unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| format!("retainer-{}", std::process::id()))
    });
    let opts = retainer::controller::Options {
        leader_elect: args.leader_elect,
        lease_namespace: args.lease_namespace,
        lease_name: args.lease_name,
        identity,
        lease_duration: args.lease_duration,
        clock_offset: args.clock_offset,
        delete_concurrency: args.delete_concurrency,
        delete_qps: args.delete_qps,
        metrics_addr: args.metrics_addr,
        debounce: args.debounce,
        page_size: args.page_size,
        registry: retainer::controller::RegistryOptions {
            timeout: args.registry_timeout,
            concurrency: args.registry_concurrency,
            refresh: args.registry_refresh,
            deadline: args.registry_deadline,
        },
        eval_budget: args.eval_budget,
        incremental_evaluation: args.incremental_evaluation,
        policy_selector: args.policy_selector,
        api_connect_timeout: args.api_connect_timeout,
        api_read_timeout: args.api_read_timeout,
        evaluation_concurrency: args.evaluation_concurrency,
        webhook: args
            .webhook_cert_dir
            .map(|cert_dir| retainer::admission::WebhookOptions {
                addr: args.webhook_addr,
                cert_dir,
            }),
    };
    retainer::controller::run(config, opts)
        .await
        .map(|_| String::new())
        .map_err(|e| e.to_string())
}

async fn run_plan(
    name: Option<String>,
    namespace: Option<String>,
    policy: Option<String>,
    output: Output,
) -> Result<String, String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("connecting to the cluster: {e}"))?;
    let view = read_policy(Some(&client), name, namespace.as_deref(), policy).await?;
    let (compiled, eval) = retainer::controller::plan::plan(&client, view)
        .await
        .map_err(|e| e.to_string())?;
    Ok(match output {
        Output::Table => check::render_table(&compiled, &eval),
        Output::Json => check::render_json(&compiled, &eval) + "\n",
    })
}

async fn read_policy(
    client: Option<&kube::Client>,
    name: Option<String>,
    namespace: Option<&str>,
    policy: Option<String>,
) -> Result<retainer::api::PolicyView, String> {
    match (policy, name, client) {
        (Some(path), _, _) => {
            let docs = check::parse_documents(&path, &read(&path).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            let doc = docs
                .first()
                .ok_or_else(|| format!("{path}: no policy in the file"))?;
            check::policy_from_document(&path, doc).map_err(|e| e.to_string())
        }
        (None, Some(name), Some(client)) => {
            retainer::controller::plan::fetch_policy(client, &name, namespace)
                .await
                .map_err(|e| e.to_string())
        }
        _ => Err("name a policy, or give one with -f".into()),
    }
}

async fn run_explain(args: ExplainArgs) -> Result<String, String> {
    let wanted = args.wanted()?;
    let (policy, inputs, now) = match &args.objects {
        Some(objects) => {
            let view = read_policy(None, None, None, args.policy.clone()).await?;
            let policy = CompiledPolicy::compile(view).map_err(|e| e.to_string())?;
            let text = read(objects).map_err(|e| e.to_string())?;
            let inputs = check::read_objects(&policy, objects, &text).map_err(|e| e.to_string())?;
            (
                policy,
                inputs,
                args.now.unwrap_or_else(jiff::Timestamp::now),
            )
        }
        None => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| format!("connecting to the cluster: {e}"))?;
            let view = read_policy(
                Some(&client),
                args.name.clone(),
                args.namespace.as_deref(),
                args.policy.clone(),
            )
            .await?;
            let (policy, objects) = retainer::controller::plan::gather(&client, view)
                .await
                .map_err(|e| e.to_string())?;
            let mut inputs = check::Inputs::default();
            for o in objects {
                inputs.add(&policy, o);
            }
            (policy, inputs, jiff::Timestamp::now())
        }
    };
    let e =
        retainer::explain::explain(&policy, &inputs, now, &wanted).map_err(|e| e.to_string())?;
    Ok(match args.output {
        Output::Table => retainer::explain::render_text(&e),
        Output::Json => retainer::explain::render_json(&e),
    })
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_writer(std::io::stderr)
        .init();
}

fn read(path: &str) -> Result<String, check::CheckError> {
    std::fs::read_to_string(path).map_err(|source| check::CheckError::Read {
        path: path.to_string(),
        source,
    })
}

fn run_check(
    policy: &str,
    objects: &str,
    now: Option<jiff::Timestamp>,
    output: Output,
) -> Result<String, check::CheckError> {
    let docs = check::parse_documents(policy, &read(policy)?)?;
    let doc = docs.first().ok_or_else(|| check::CheckError::NotAPolicy {
        path: policy.to_string(),
        got: "an empty file".into(),
    })?;
    let view = check::policy_from_document(policy, doc)?;
    let compiled = CompiledPolicy::compile(view)?;
    // The file's text is dropped as soon as it is parsed (one unmapping): holding it would add
    // its size to the peak.
    let inputs = check::read_objects(&compiled, objects, &read(objects)?)?;
    let eval = inputs.evaluate(&compiled, now.unwrap_or_else(jiff::Timestamp::now));
    let rendered = match output {
        Output::Table => check::render_table(&compiled, &eval),
        Output::Json => check::render_json(&compiled, &eval) + "\n",
    };
    // The process exits once this is printed: freeing every object and verdict one allocation
    // at a time would only delay the exit; the system takes the memory back whole.
    std::mem::forget((inputs, eval));
    Ok(rendered)
}

fn main() -> ExitCode {
    // Only the long-running controller: `check` parses on every core at once, and one arena
    // would make its threads queue for the allocator's lock.
    if std::env::args_os().nth(1).is_some_and(|a| a == "run") {
        limit_malloc_arenas();
    }
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => {
            let code = runtime.block_on(run());
            // Not waiting for what is still running (an evaluation on the blocking pool, a
            // request without an answer): the controller stopped its work and reported what it
            // could; the process must be gone within its termination grace period.
            runtime.shutdown_timeout(std::time::Duration::from_millis(500));
            code
        }
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

/// glibc gives each thread that allocates its own heap arena (up to 8 per core) and hands
/// little of what is freed in one back to the system or to the others. The controller frees a
/// lot on one thread (list pages, evaluations) while it keeps its caches on another, and with
/// 20,000 Jobs and 20,000 Secrets cached its resident memory was 1.7x its peak heap; with one
/// arena it was 1.3x (bench/memory.sh). Threads still allocate small objects from their own
/// caches, so one arena costs little contention here. Other C libraries have no arenas.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator parameter, and runs before any other thread
    // exists; a value it refuses leaves the default in place, which is harmless.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc"))))]
fn limit_malloc_arenas() {}

/// The command line, named after how the binary was invoked: installed as `kubectl-retainer`,
/// kubectl runs it as a plugin (`kubectl retainer plan ...`), and help and errors should show
/// the command the user typed.
fn parse_cli() -> Cli {
    let invoked_as = std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let mut cmd = Cli::command();
    if invoked_as == "kubectl-retainer" {
        cmd = cmd.name("kubectl-retainer").bin_name("kubectl retainer");
    }
    Cli::from_arg_matches(&cmd.get_matches()).unwrap_or_else(|e| e.exit())
}

async fn run() -> ExitCode {
    let cli = parse_cli();
    let result = match cli.command {
        Command::Crds => Ok(retainer::api::crds_yaml()),
        Command::Check {
            policy,
            objects,
            now,
            output,
        } => run_check(&policy, &objects, now, output).map_err(|e| e.to_string()),
        Command::Run(args) => {
            init_logging();
            run_controller(*args).await
        }
        Command::Plan {
            name,
            namespace,
            policy,
            output,
        } => run_plan(name, namespace, policy, output).await,
        Command::ExplainVerdict(args) => run_explain(args).await,
    };
    match result {
        Ok(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
