//! `wharf ctl`: administration of a running broker through its control socket (in its
//! data directory), with rabbitmqctl's command names.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use wharf_server::control::{self, Request};

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The broker's data directory: its control socket is there [default: ./data]
    #[arg(long, env = "WHARF_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Sets a policy: DEFINITION (JSON) applies to the queues and/or exchanges whose
    /// names match PATTERN (a regular expression), e.g.
    /// `wharf ctl set_policy DLX '^orders\.' '{"dead-letter-exchange":"dlx"}' --apply-to queues`
    #[command(name = "set_policy")]
    SetPolicy {
        name: String,
        pattern: String,
        definition: String,
        #[arg(long, default_value = "/")]
        vhost: String,
        /// Of the policies matching an object, the highest priority applies.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i64,
        /// queues, exchanges or all.
        #[arg(long, default_value = "all")]
        apply_to: String,
    },
    /// Removes a policy.
    #[command(name = "clear_policy")]
    ClearPolicy {
        name: String,
        #[arg(long, default_value = "/")]
        vhost: String,
    },
    /// Lists a vhost's policies: vhost, name, pattern, apply-to, definition, priority.
    #[command(name = "list_policies")]
    ListPolicies {
        #[arg(long, default_value = "/")]
        vhost: String,
    },
}

pub fn run(args: CtlArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(|| PathBuf::from("./data"));
    let socket = data_dir.join(control::SOCKET_FILE);
    let request = match args.command {
        CtlCommand::SetPolicy {
            name,
            pattern,
            definition,
            vhost,
            priority,
            apply_to,
        } => Request::SetPolicy {
            vhost,
            name,
            pattern,
            definition,
            priority,
            apply_to,
        },
        CtlCommand::ClearPolicy { name, vhost } => Request::ClearPolicy { vhost, name },
        CtlCommand::ListPolicies { vhost } => Request::ListPolicies { vhost },
    };
    let listing = matches!(request, Request::ListPolicies { .. });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let response = runtime
        .block_on(control::request(&socket, &request))
        .with_context(|| {
            format!(
                "cannot reach the broker at {} (is it running with --data-dir {}?)",
                socket.display(),
                data_dir.display()
            )
        })?;
    if !response.ok {
        anyhow::bail!("{}", response.error.unwrap_or_default());
    }
    if listing {
        println!("vhost\tname\tpattern\tapply-to\tdefinition\tpriority");
        for p in response.policies {
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                p.vhost, p.name, p.pattern, p.apply_to, p.definition, p.priority
            );
        }
    }
    Ok(())
}
