//! tracer: an eBPF leak tracer for Python services. This file only parses the command line and
//! calls one function per subcommand (the library, lib.rs, does the rest).

use clap::Parser as _;
use tracer::cli::{Cli, Command};
use tracer::{doctor, record};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // One line, like every other error: clap's first line, without its own prefix.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("").trim();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            // A value not among the choices: say which they are, on the same line.
            use clap::error::{ContextKind, ContextValue};
            let first = match e.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(v)) if !v.is_empty() => {
                    format!("{first}: choose among {}", v.join(", "))
                }
                _ => first.to_string(),
            };
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "tracer: error: {} (see tracer --help)",
                tracer::text::clean(&first)
            );
            std::process::exit(2);
        }
    };
    let result = match cli.command {
        Command::Record(args) => record::run(args),
        Command::Top(mut args) => {
            args.live = true;
            record::run(args)
        }
        Command::Doctor { pid } => doctor::run(pid),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            use std::io::Write as _;
            let text = e.to_string();
            let _ = writeln!(
                std::io::stderr(),
                "tracer: error: {}",
                tracer::text::clean(&text)
            );
            std::process::exit(1);
        }
    }
}
