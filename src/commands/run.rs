//! `hoox run`: ingest and consumer in one process, for a laptop, the dashboard, and the
//! Telegram bot when it is configured.

use anyhow::Context;
use hoox_common::config::{InternalKeyArgs, ServiceArgs};
use hoox_common::runtime_config::check_api_key;
use hoox_consumer::config::ConsumerArgs;
use hoox_ingest::config::IngestArgs;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use crate::dashboard::{self, DashboardArgs, DashboardSettings};

/// Arguments of `hoox run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub ingest: IngestArgs,

    #[command(flatten)]
    pub consumer: ConsumerArgs,

    #[command(flatten)]
    pub service: ServiceArgs,

    #[command(flatten)]
    pub dashboard: DashboardSettings,
}

/// A random 64-hex-digit secret for a local run.
pub fn generate_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Starts both services and prints how to send them a signal.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let token = CancellationToken::new();
    hoox_common::shutdown::cancel_on_signal(token.clone());

    let (api_key, shown_key) = match &args.ingest.webhook_api_key {
        Some(key) => {
            check_api_key(key.expose_secret()).context("HOOX_WEBHOOK_API_KEY is too weak")?;
            (key.clone(), "$HOOX_WEBHOOK_API_KEY".to_owned())
        }
        None => {
            let key = generate_secret();
            (SecretString::from(key.clone()), key)
        }
    };
    // Both halves run in this process, so a generated signing key never has to leave it.
    let internal_key = args
        .service
        .internal_key
        .internal_key
        .clone()
        .unwrap_or_else(|| SecretString::from(generate_secret()));

    let (dashboard_password, shown_password) = match &args.dashboard.dashboard_password {
        Some(password) => (password.clone(), "$HOOX_DASHBOARD_PASSWORD".to_owned()),
        None => {
            let password = generate_secret();
            (SecretString::from(password.clone()), password)
        }
    };
    let dashboard_listener = tokio::net::TcpListener::bind(args.dashboard.dashboard_addr)
        .await
        .with_context(|| {
            format!(
                "dashboard: cannot listen on {}",
                args.dashboard.dashboard_addr
            )
        })?;

    let url = format!("http://{}/webhook", args.ingest.ingest_addr);
    println!("hoox is running: ingest, consumer and dashboard in one process (Ctrl-C stops it)");
    println!("  webhook URL: {url}");
    if args.ingest.webhook_api_key.is_none() {
        println!("  API key:     {shown_key}   (made for this run; set HOOX_WEBHOOK_API_KEY to keep one)");
    }
    println!("  send a paper trade:");
    println!(
        "    curl -sS -X POST {url} -H 'Content-Type: text/plain' \\\n      -d '{{\"apiKey\":\"{shown_key}\",\"action\":\"LONG\",\"symbol\":\"BTCUSDT\",\"quantity\":0.001,\"price\":68000}}'"
    );
    println!("  then follow it: hoox trace <requestId>");
    println!("  dashboard:   http://{}", dashboard_listener.local_addr()?);
    if args.dashboard.dashboard_password.is_none() {
        println!("  password:    {shown_password}   (made for this run; set HOOX_DASHBOARD_PASSWORD to keep one)");
    }

    let mut ingest = {
        let (args, service, token) = (args.ingest.clone(), args.service.clone(), token.clone());
        let internal_key = internal_key.clone();
        tokio::spawn(async move {
            hoox_ingest::run(&args, &service, api_key, internal_key, token).await
        })
    };
    // The bot is no half of the pipeline: if it stops, trading goes on.
    let bot = args.consumer.telegram.bot_api().map(|api| {
        let (service, token) = (args.service.clone(), token.clone());
        println!("  Telegram bot: answering chat {}", api.chat_id());
        tokio::spawn(async move {
            let pool =
                hoox_common::db::connect_with_retry(&service.database.database_url, 3, &token)
                    .await;
            let Some(pool) = pool else { return };
            let served = super::bot::serve(
                api,
                pool,
                service.amqp.amqp_url.clone(),
                service.amqp.topology(),
                token,
            )
            .await;
            if let Err(err) = served {
                tracing::error!(error = %format!("{err:#}"), "Telegram bot stopped");
            }
        })
    });
    // The dashboard is no half of the pipeline either: if it stops, trading goes on.
    let dashboard = {
        let settings = DashboardArgs {
            settings: args.dashboard.clone(),
            amqp: args.service.amqp.clone(),
            database: args.service.database.clone(),
            internal_key: InternalKeyArgs {
                internal_key: Some(internal_key.clone()),
            },
            keys: args.consumer.exchanges.clone(),
        };
        let token = token.clone();
        tokio::spawn(async move {
            let pool =
                hoox_common::db::connect_with_retry(&settings.database.database_url, 4, &token)
                    .await;
            let Some(pool) = pool else { return };
            let served = dashboard::serve(
                dashboard_listener,
                dashboard::Dashboard::new(pool, &settings, &dashboard_password),
                token,
            )
            .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "dashboard stopped");
            }
        })
    };
    let mut consumer = {
        let (args, service, token) = (args.consumer.clone(), args.service.clone(), token.clone());
        tokio::spawn(async move { hoox_consumer::run(&args, &service, internal_key, token).await })
    };
    // Either half failing stops the other: a half-running pipeline would accept
    // signals it never executes, or execute with nothing accepting.
    let (first, other) = tokio::select! {
        result = &mut ingest => (result.context("ingest task")?.context("ingest"), consumer),
        result = &mut consumer => (result.context("consumer task")?.context("consumer"), ingest),
    };
    token.cancel();
    let second = other.await.context("service task")?;
    if let Some(bot) = bot {
        bot.await.context("bot task")?;
    }
    dashboard.await.context("dashboard task")?;
    first.and(second)
}
