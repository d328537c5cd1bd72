//! `airlockctl`: the operator's CLI over the admin API on the Unix socket. Today: tokens (the
//! lifecycle issue adds models, bundles, approvals, trust and audit).
//! Exit codes: 0 ok, 1 refused by the daemon, 2 usage or connection problem.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "airlockctl",
    version,
    about = "Operate an airlock appliance through airlockd's admin API"
)]
struct Cli {
    /// The admin socket.
    #[arg(
        long,
        env = "AIRLOCK_ADMIN_SOCKET",
        default_value = "/run/airlock/admin.sock"
    )]
    socket: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// API tokens for the inference API and /metrics.
    #[command(subcommand)]
    Token(TokenCmd),
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token; it is printed once and cannot be shown again.
    Create {
        /// A name for people (who or what uses it).
        #[arg(long)]
        name: String,
        /// model:NAME, model:* or metrics; repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token at once.
    Revoke {
        /// The token's id.
        id: String,
    },
}

fn call(
    socket: &PathBuf,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot connect to {} ({e}); is airlockd running, and may you use its socket?",
            socket.display()
        )
    })?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: airlockd\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("incomplete response from airlockd")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("malformed response from airlockd")?;
    let value = serde_json::from_slice(&raw[split + 4..]).unwrap_or(Value::Null);
    Ok((status, value))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (method, path, body) = match &cli.cmd {
        Cmd::Token(TokenCmd::Create { name, scopes }) => (
            "POST",
            "/api/v1/tokens".to_string(),
            Some(json!({ "name": name, "scopes": scopes })),
        ),
        Cmd::Token(TokenCmd::List) => ("GET", "/api/v1/tokens".to_string(), None),
        Cmd::Token(TokenCmd::Revoke { id }) => ("DELETE", format!("/api/v1/tokens/{id}"), None),
    };
    let (status, v) = match call(&cli.socket, method, &path, body.as_ref()) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("airlockctl: {e}");
            return ExitCode::from(2);
        }
    };
    if !(200..300).contains(&status) {
        eprintln!(
            "airlockctl: refused ({status}): {}",
            v["error"].as_str().unwrap_or("no reason given")
        );
        return ExitCode::from(1);
    }
    if cli.json {
        println!("{v}");
        return ExitCode::SUCCESS;
    }
    match &cli.cmd {
        Cmd::Token(TokenCmd::Create { .. }) => {
            println!(
                "token {} ({}) created for {}",
                v["id"].as_str().unwrap_or(""),
                v["name"].as_str().unwrap_or(""),
                v["scopes"]
            );
            println!("{}", v["token"].as_str().unwrap_or(""));
            eprintln!("store it now: it cannot be shown again");
        }
        Cmd::Token(TokenCmd::List) => {
            println!(
                "{:<18} {:<20} {:<30} {:<22} REVOKED",
                "ID", "NAME", "SCOPES", "CREATED"
            );
            for t in v["tokens"].as_array().into_iter().flatten() {
                let scopes: Vec<&str> = t["scopes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                println!(
                    "{:<18} {:<20} {:<30} {:<22} {}",
                    t["id"].as_str().unwrap_or(""),
                    t["name"].as_str().unwrap_or(""),
                    scopes.join(","),
                    t["created_at"].as_str().unwrap_or(""),
                    t["revoked_at"].as_str().unwrap_or("-")
                );
            }
        }
        Cmd::Token(TokenCmd::Revoke { id }) => println!("token {id} revoked"),
    }
    ExitCode::SUCCESS
}
