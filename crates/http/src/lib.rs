//! Wharf's management HTTP API: RabbitMQ's `/api`, with its paths, methods, query
//! parameters, JSON fields and status codes, so that rabbitmqadmin, Terraform's provider,
//! KEDA's scaler and the rest work unchanged. Like `wharf ctl` and the AMQP server, it
//! only calls the core's operations; here they are checked against the caller's tags
//! and permissions ([`auth`]) and their refusals become RabbitMQ's statuses ([`error`]).

pub mod auth;
pub mod body;
pub mod error;
pub mod listing;
pub mod metrics;
pub mod rates;
pub mod serving;
pub mod session;
pub mod ui;

mod api;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use wharf_core::Broker;

pub use serving::TlsSource;

/// What every request handler reaches: the broker, the rates sampled from its counters,
/// and the web UI's sessions.
pub struct Api {
    pub broker: Arc<Broker>,
    pub rates: rates::Rates,
    pub sessions: session::Sessions,
}

/// A listening socket and, for HTTPS, its TLS.
pub struct Listening {
    pub listener: TcpListener,
    pub tls: Option<TlsSource>,
}

/// Serves the API and the web UI on every listener (HTTPS where TLS is given) until
/// `shutdown` fires, the UI's sessions signed with `sessions`' key. Rates are sampled
/// while it runs.
pub async fn serve(
    listeners: Vec<Listening>,
    broker: Arc<Broker>,
    sessions: session::Sessions,
    shutdown: watch::Receiver<bool>,
) {
    let api = Arc::new(Api {
        broker,
        rates: rates::Rates::default(),
        sessions,
    });
    // Other cluster members ask this node for its part of the API's lists.
    let answers = api::cluster_lists::ApiAnswers(Arc::downgrade(&api));
    api.broker
        .cluster_slot()
        .add_operator_answers("http:", Arc::new(answers));
    let sampler = tokio::spawn(rates::sample(api.clone(), shutdown.clone()));
    serve_on_each(listeners, api::routes(api), shutdown).await;
    let _ = sampler.await;
}

/// Serves Prometheus metrics (`/metrics`, `/metrics/per-object`) on every listener until
/// `shutdown` fires.
pub async fn serve_prometheus(
    listeners: Vec<Listening>,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
) {
    serve_on_each(listeners, metrics::routes(broker), shutdown).await;
}

/// Serves `router` on every listener until `shutdown` fires and they have all stopped.
async fn serve_on_each(
    listeners: Vec<Listening>,
    router: axum::Router,
    shutdown: watch::Receiver<bool>,
) {
    let mut serving = tokio::task::JoinSet::new();
    for Listening { listener, tls } in listeners {
        serving.spawn(serving::serve(
            listener,
            tls,
            router.clone(),
            shutdown.clone(),
        ));
    }
    while serving.join_next().await.is_some() {}
}
