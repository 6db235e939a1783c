//! `agentctl console [--confirm] [--json]`: the web console's one-time login
//! link (admin), or a confirmation token for a change made in the console
//! (switching an agent between enforce and audit-only). Both work once and
//! for a short time; both are audited.
use hyper::Method;

use crate::SocketArg;
use agentd::api::client::blocking;
use agentd::console::{Confirmation, LoginLink};

/// Arguments of `agentctl console`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    socket: SocketArg,
    /// Print a confirmation token instead of a login link (paste it into
    /// the console to switch an agent's mode).
    #[arg(long)]
    confirm: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `agentctl console`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let socket = args.socket.path();
    if args.confirm {
        let c: Confirmation = blocking(&socket, |mut c| async move {
            c.call(
                Method::POST,
                "/v1/console/confirmations",
                Some(&serde_json::json!({})),
            )
            .await
        })?;
        if args.json {
            println!("{}", serde_json::to_string(&c)?);
        } else {
            println!("{}", c.token);
            eprintln!(
                "confirmation token: works once, for {} s; paste it into the console's switch",
                c.expires_in_secs
            );
        }
        return Ok(());
    }
    let l: LoginLink = blocking(&socket, |mut c| async move {
        c.call(
            Method::POST,
            "/v1/console/login-links",
            Some(&serde_json::json!({})),
        )
        .await
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&l)?);
    } else {
        println!("{}", l.url);
        eprintln!(
            "open it in a browser on this host: it works once, within {} s",
            l.expires_in_secs
        );
    }
    Ok(())
}
