//! `chaperone approvals`: list, show and decide approval requests through a
//! gateway's approvals API (`chaperone_approvals::client`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Args)]
pub struct ApprovalsArgs {
    /// The gateway's API (`[api] listen`), e.g. https://gateway:8443.
    #[arg(
        long,
        global = true,
        env = "CHAPERONE_API_URL",
        default_value = "http://127.0.0.1:8443"
    )]
    api: String,
    /// An approver's token (`[approvals.approvers.NAME]`).
    #[arg(
        long,
        global = true,
        env = "CHAPERONE_APPROVER_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// A PEM CA file for a gateway certificate the system does not trust.
    #[arg(long, global = true, env = "CHAPERONE_API_CA")]
    ca_file: Option<PathBuf>,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ApprovalsCommand,
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// Requests, newest first (default: pending ones).
    List {
        /// pending, approved, denied, expired, used, revoked, or all.
        #[arg(long, default_value = "pending")]
        state: String,
    },
    /// One request in full: identity, target, SQL, rule, approvals.
    Show { id: String },
    /// Approve a request (it runs once enough approvers agree).
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny a request: the held statement fails with your reason.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Withdraw an approval not used yet, or end an access window.
    Revoke {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

pub fn run(args: ApprovalsArgs) -> anyhow::Result<()> {
    use chaperone_approvals::client::{render_list, render_one, ApprovalsClient};
    let client = ApprovalsClient::new(
        &args.api,
        args.token.as_deref().unwrap_or_default(),
        args.ca_file.as_deref(),
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let out = match args.command {
            ApprovalsCommand::List { state } => {
                let views = client.list(Some(&state)).await?;
                if args.json {
                    serde_json::to_string_pretty(&views)?
                } else {
                    render_list(&views)
                }
            }
            ApprovalsCommand::Show { id } => {
                let v = client.show(&id).await?;
                if args.json {
                    serde_json::to_string_pretty(&v)?
                } else {
                    render_one(&v)
                }
            }
            ApprovalsCommand::Approve { id, comment } => {
                let v = client.act(&id, "approve", comment.as_deref()).await?;
                if args.json {
                    serde_json::to_string_pretty(&v)?
                } else {
                    format!(
                        "{id}: {} ({}/{} approvals)\n",
                        v.state.as_str(),
                        v.approvals.len(),
                        v.request.required_approvals
                    )
                }
            }
            ApprovalsCommand::Deny { id, reason } => {
                let v = client.act(&id, "deny", reason.as_deref()).await?;
                if args.json {
                    serde_json::to_string_pretty(&v)?
                } else {
                    format!("{id}: {}\n", v.state.as_str())
                }
            }
            ApprovalsCommand::Revoke { id, reason } => {
                let v = client.act(&id, "revoke", reason.as_deref()).await?;
                if args.json {
                    serde_json::to_string_pretty(&v)?
                } else {
                    format!("{id}: {}\n", v.state.as_str())
                }
            }
        };
        print!("{out}");
        if !out.ends_with('\n') {
            println!();
        }
        Ok(())
    })
}
