use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
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
    let objs = check::parse_documents(objects, &read(objects)?)?;
    let eval = check::evaluate_offline(&compiled, objs, now.unwrap_or_else(jiff::Timestamp::now));
    Ok(match output {
        Output::Table => check::render_table(&compiled, &eval),
        Output::Json => check::render_json(&compiled, &eval) + "\n",
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crds => Ok(retainer::api::crds_yaml()),
        Command::Check {
            policy,
            objects,
            now,
            output,
        } => run_check(&policy, &objects, now, output),
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
