//! `capstan token`: prints the cluster's full token (`K10<ca hash>::server:<secret>`) from
//! the data dir, or rotates it (`capstan token rotate --new-token …`), re-sealing the
//! bootstrap data in the datastore under the new secret.

use crate::config::{self, ServerConfig, ServerFlags};
use crate::server::token::{
    ClusterTokenError, check_ca, current_token, parse, read_token_file, token_path,
    write_token_file,
};
use capstan_cluster::bootstrap;
use capstan_datastore::{DatastoreMetrics, Store};

/// `capstan token`: print the full token, or rotate it.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TokenArgs {
    /// What to do instead of printing the token.
    #[command(subcommand)]
    pub command: Option<TokenCommand>,
    /// The server's settings (only --data-dir and --config matter for printing).
    #[command(flatten)]
    pub server: ServerFlags,
}

/// `capstan token` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Re-encrypt the cluster's bootstrap data with a new token and write it to the data dir.
    /// Every server and agent must then be restarted with the new token.
    Rotate(RotateArgs),
}

/// `capstan token rotate`.
#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The new token (a bare secret, or a full K10… token of this cluster).
    #[arg(long, value_name = "TOKEN")]
    pub new_token: String,
    /// The server's settings: --datastore-endpoint, --data-dir, the current --token…
    #[command(flatten)]
    pub server: ServerFlags,
}

/// Runs `capstan token`; what it prints goes to stdout.
pub async fn command(args: TokenArgs) -> Result<(), ClusterTokenError> {
    match args.command {
        None => {
            let config = config::load(&args.server)?.config;
            let path = token_path(&config.data_dir);
            match read_token_file(&path)? {
                Some(full) => {
                    println!("{full}");
                    Ok(())
                }
                None => Err(ClusterTokenError::File {
                    path,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no token yet (has a server started with this --data-dir?)",
                    ),
                }),
            }
        }
        Some(TokenCommand::Rotate(rotate_args)) => {
            let config = config::load(&rotate_args.server)?.config;
            let full = rotate(&config, &rotate_args.new_token).await?;
            println!("{full}");
            eprintln!(
                "the cluster token was rotated and written to {}; restart every server and agent with the new token",
                token_path(&config.data_dir).display()
            );
            Ok(())
        }
    }
}

/// Re-seals the cluster's bootstrap data under `new_token`'s secret; the new full token.
pub async fn rotate(config: &ServerConfig, new_token: &str) -> Result<String, ClusterTokenError> {
    let (current, _) = current_token(config)?.ok_or(ClusterTokenError::NoCurrentToken)?;
    let new = parse(new_token, "--new-token".to_string())?;
    if new.secret == current.secret {
        return Err(ClusterTokenError::SameToken);
    }
    let store = Store::open(&config.datastore(), &DatastoreMetrics::unscraped()).await?;
    let rotated = async {
        let state = bootstrap::load(&store, &current.secret).await?;
        check_ca(&current, &state)?;
        check_ca(&new, &state)?;
        let state = bootstrap::rotate(&store, &current.secret, &new.secret).await?;
        Ok::<_, ClusterTokenError>(new.full(&state.ca_cert_pem))
    }
    .await;
    store.close().await;
    let full = rotated?;
    write_token_file(&token_path(&config.data_dir), &full)?;
    Ok(full)
}
