//! `keel [server.properties] [--override key=value]...`

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use keel::broker::Broker;
use keel::config::{Config, Layer};

/// See `keel::alloc`: a hostile array length must not abort the broker.
#[global_allocator]
static ALLOCATOR: keel::alloc::LazyHugeAllocator = keel::alloc::LazyHugeAllocator;

#[derive(Parser, Debug)]
#[command(name = "keel", version, about = "A Kafka-protocol-compatible broker")]
struct Cli {
    /// A Kafka server.properties file.
    properties: Option<PathBuf>,
    /// A setting as key=value, overriding the file and KAFKA_* environment variables.
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Print the configuration reference (docs/configuration.md) and exit.
    #[arg(long, hide = true)]
    print_config_reference: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if cli.print_config_reference {
        print!("{}", keel::config::docs::markdown());
        return std::process::ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let config = match Config::load(cli.properties.as_deref(), std::env::vars(), &cli.overrides) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!("configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    for (def, value, layer) in config.describe() {
        if layer != Layer::Default || !def.inert {
            tracing::info!(target: "keel::config", "{} = {} ({:?})", def.name, value.as_deref().unwrap_or("null"), layer);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("keel")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: Arc<Config>) -> Result<(), String> {
    let shutdown = CancellationToken::new();
    let broker = Broker::open(config.clone(), shutdown.clone()).map_err(|e| e.to_string())?;
    let listeners = keel::server::bind(&config.listeners, &config.advertised_listeners)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(addr) = config.value("metrics.listener").filter(|a| !a.trim().is_empty()) {
        let handle = keel::metrics::install()?;
        let socket = tokio::net::TcpListener::bind(addr.trim())
            .await
            .map_err(|e| format!("cannot bind metrics.listener {addr}: {e}"))?;
        let bound = socket.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(%bound, "metrics listener bound");
        tokio::spawn(
            keel::server::metrics_endpoint::serve(socket, handle, broker.clone(), shutdown.clone())
                .instrument(tracing::info_span!("metrics_endpoint")),
        );
    }
    tracing::info!(node_id = broker.node_id, cluster_id = %broker.cluster_id, "keel started");
    tokio::spawn(stop_on_signal(shutdown.clone()));
    keel::server::run(listeners, broker.clone(), shutdown).await;
    // A final flush that fails means acknowledged data may be lost: exit non-zero so a
    // supervisor sees it.
    broker
        .shutdown()
        .await
        .map_err(|e| format!("shutdown flush failed: {e}"))?;
    tracing::info!("keel stopped");
    Ok(())
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}
