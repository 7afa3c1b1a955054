//! `chaperone-benchmarks`: reproducible benchmarks of Chaperone against real
//! servers and real clients. One subcommand per benchmark; results go to
//! `benchmarks/README.md` by hand, together with the command that produced them.
//!
//! - `gateway`: sysbench directly, through a zero-logic relay and through the
//!   gateway; memory per idle connection.
//! - `statement-facts`: what the SQL analysis and the result hash cost per statement.
//! - `archive`: recorder throughput and archive size per statement.
//! - `archive-query`: the read side over a generated 10-million-statement archive.
//! - `audit-service`: the audit service's search, session and SQL answers over it.
//! - `identity`: token validation per login and login throughput (token vs password).
//! - `masking`: rows masked per second on one core.
//! - `policy`: guardrail policy evaluation per statement.
//!
//! Shared pieces: [`sysbench`] (running it, reading its report), [`server`]
//! (the systems under test, each in a child process of this binary), [`mysql`]
//! (a minimal client for the benchmarks' own statements), [`table`] (output).

mod archive;
mod archive_query;
mod audit_service;
mod gateway;
mod identity;
mod masking;
mod mysql;
mod policy;
mod relay;
mod server;
mod statement_facts;
mod sysbench;
mod table;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "chaperone-benchmarks",
    about = "Reproducible benchmarks of Chaperone against real servers and clients"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Gateway overhead: sysbench oltp_point_select / oltp_read_only directly, through a
    /// zero-logic relay and through Chaperone; RSS per idle authenticated connection.
    Gateway(gateway::Options),
    /// Statement facts: SQL analysis (digest, class, tables) and result hash cost per
    /// statement, cold and cached.
    StatementFacts(statement_facts::Options),
    /// Workload identity: token validation cost per login (JWKS cached) and login
    /// throughput, token against password.
    Identity(identity::Options),
    /// Masking: rows masked per second on one core (text and binary rows, rules
    /// and content detectors).
    Masking(masking::Options),
    /// Archive write path: recorder throughput (frames/s per core, tap to sealed
    /// Parquet) and archive bytes per recorded sysbench statement.
    Archive(archive::Options),
    /// Archive read side: "which identities wrote to table X in the last 30 days" over
    /// a generated archive (`archive-query generate`, then `archive-query run`).
    ArchiveQuery(archive_query::Options),
    /// Audit service: session search by table and agent, opening a long session,
    /// statements per agent per day, over HTTP against a generated archive.
    AuditService(audit_service::Options),
    /// Guardrails: policy evaluation cost per statement (cached and cold analysis).
    Policy(policy::Options),
    /// Internal: runs one system under test (gateway or relay) in this process,
    /// prints its address, and stops when its standard input closes.
    #[command(hide = true)]
    Serve(server::ServeArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Gateway(options) => gateway::run(options),
        Command::StatementFacts(options) => statement_facts::run(options),
        Command::Identity(options) => identity::run(options),
        Command::Masking(options) => masking::run(options),
        Command::Archive(options) => archive::run(options),
        Command::ArchiveQuery(options) => archive_query::run(options),
        Command::AuditService(options) => audit_service::run(options),
        Command::Policy(options) => policy::run(options),
        Command::Serve(args) => server::serve(args),
    }
}
