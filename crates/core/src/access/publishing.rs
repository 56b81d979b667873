//! What a user may publish, checked as RabbitMQ's channel checks a basic.publish. Every
//! front end that publishes (AMQP, the HTTP API, later MQTT) asks the same questions here:
//! the exchange, then each message's routing key and claimed user.

use std::sync::Arc;

use super::{Access, Grant, ResourceKind};
use crate::error::{Error, Result};
use crate::exchange::{Exchange, ExchangeKind};
use crate::vhost::VHost;

/// An exchange this connection's user may publish to, as checked under the permissions of
/// one generation: a run of publishes to one exchange checks it once.
#[derive(Debug, Clone)]
pub struct PublishTarget {
    pub exchange: Arc<Exchange>,
    /// The permissions' generation it was checked under.
    generation: u64,
    /// A topic exchange the user has topic permissions on: each routing key is checked.
    topics_limited: bool,
}

impl PublishTarget {
    /// Whether this target still stands for publishing to `name`: the same exchange, not
    /// deleted since, and no permission changed since it was checked.
    #[inline]
    pub fn is_current(&self, grant: &Grant, name: &str) -> bool {
        crate::vhost::same_name(&self.exchange.name, name)
            && self.generation == grant.generation()
            && !self.exchange.is_deleted()
    }
}

impl Grant {
    /// The exchange `name` of `vhost` for this user to publish to, checked in RabbitMQ's
    /// order: the write permission first (a user who may not write there cannot learn
    /// whether the exchange exists), then the lookup (404), then an internal exchange
    /// (403).
    pub fn publish_target(&self, vhost: &VHost, name: &str) -> Result<PublishTarget> {
        let generation = self.generation();
        self.check(Access::Write, ResourceKind::Exchange, name)?;
        let exchange = vhost.exchange(name)?;
        if exchange.internal {
            return Err(Error::access_refused(format_args!(
                "cannot publish to internal exchange '{}' in vhost '{}'",
                exchange.name, vhost.name
            )));
        }
        let topics_limited =
            exchange.kind == ExchangeKind::Topic && self.limits_topics(&exchange.name);
        Ok(PublishTarget {
            exchange,
            generation,
            topics_limited,
        })
    }

    /// A message's routing key, on a topic exchange the user has topic permissions on.
    #[inline]
    pub fn check_publish_key(&self, target: &PublishTarget, routing_key: &str) -> Result<()> {
        if !target.topics_limited {
            return Ok(());
        }
        self.check_topic(Access::Write, &target.exchange.name, routing_key)
    }

    /// A message may claim (`user_id`) only the user who published it, unless that user
    /// has the `impersonator` tag.
    pub fn check_user_id(&self, claimed: &str) -> Result<()> {
        if claimed == self.user() || self.user_has_tag("impersonator") {
            return Ok(());
        }
        Err(Error::precondition(format_args!(
            "user_id property set to '{claimed}' but authenticated user was '{}'",
            self.user()
        )))
    }
}
