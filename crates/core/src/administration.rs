//! Administration of the broker: users, vhosts and permissions, created, changed and
//! deleted at run time. Each change is checked, then committed (crate::replicated): written
//! to the definitions store (when the broker has one) and only then made, so a change the
//! store refused is not half made; or, on a cluster node, committed by the cluster and
//! made on every node. Refusals carry rabbitmqctl's wording.

use std::sync::Arc;

use wharf_store::{Change, PermissionDef, TopicPermissionDef, UserDef, VhostDef};

use crate::access::{HashingAlgorithm, PasswordHash, Permission, TopicPermission, User};
use crate::broker::{user_from_def, Broker};
use crate::limits::{self, Limits};
use crate::vhost::VHost;

/// Why an administrative change was refused, in terms a front end renders its own way
/// (`wharf ctl` prints the message; the HTTP API picks its status code by the kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminErrorKind {
    /// A user, vhost or other object named is not there.
    NotFound,
    /// The object to create is there already.
    AlreadyExists,
    /// The request itself is wrong: an empty name, a pattern or limit that does not parse,
    /// definitions that do not import.
    Invalid,
    /// The change could not be made (the definitions store refused it).
    Failed,
    /// The cluster has no majority this node reaches: the change was not made.
    Unavailable,
}

/// A refused administrative change: its kind, and rabbitmqctl's wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    pub kind: AdminErrorKind,
    pub message: String,
}

impl AdminError {
    pub fn new(kind: AdminErrorKind, message: impl Into<String>) -> Self {
        AdminError {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(AdminErrorKind::Invalid, message)
    }
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AdminError {}

impl From<crate::Error> for AdminError {
    fn from(error: crate::Error) -> Self {
        use crate::ErrorKind;
        let kind = match error.kind {
            ErrorKind::NotFound => AdminErrorKind::NotFound,
            ErrorKind::ResourceError | ErrorKind::InternalError => AdminErrorKind::Failed,
            ErrorKind::Unavailable | ErrorKind::NotLeader => AdminErrorKind::Unavailable,
            _ => AdminErrorKind::Invalid,
        };
        AdminError::new(kind, error.text())
    }
}

pub type AdminResult<T = ()> = Result<T, AdminError>;

fn invalid(text: impl Into<String>) -> AdminError {
    AdminError::invalid(text)
}

fn no_user(name: &str) -> AdminError {
    AdminError::new(
        AdminErrorKind::NotFound,
        format!("User \"{name}\" does not exist"),
    )
}

fn no_vhost(name: &str) -> AdminError {
    AdminError::new(
        AdminErrorKind::NotFound,
        format!("Virtual host '{name}' does not exist"),
    )
}

/// A vhost as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostInfo {
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub limits: Limits,
}

fn user_def(user: &User) -> UserDef {
    UserDef {
        name: user.name.clone(),
        password_hash: user
            .password
            .as_ref()
            .map(PasswordHash::to_base64)
            .unwrap_or_default(),
        hashing_algorithm: user
            .password
            .as_ref()
            .map_or(HashingAlgorithm::Sha256, |p| p.algorithm)
            .name()
            .to_string(),
        tags: user.tags.clone(),
        limits: user.limits.to_map(),
    }
}

/// Vhost and user names: any text but empty; RabbitMQ refuses no other.
fn check_name(what: &str, name: &str) -> AdminResult {
    if name.is_empty() {
        return Err(invalid(format!("{what} name must not be empty")));
    }
    Ok(())
}

impl Broker {
    /// Takes the administration lock, so that two changes from here do not interleave;
    /// on a cluster node, first catches up with every change committed anywhere, so that
    /// the checks that follow see them.
    fn administering(&self) -> AdminResult<parking_lot::MutexGuard<'_, ()>> {
        if let Some(cluster) = self.cluster.get() {
            cluster.sync()?;
        }
        Ok(self.administration.lock())
    }

    fn put_user(&self, user: User) -> AdminResult {
        self.commit(Change::PutUser(user_def(&user)))
    }

    /// Adds a user (without password: certificate login only).
    pub fn add_user(&self, name: &str, password: Option<&str>, tags: Vec<String>) -> AdminResult {
        let _administering = self.administering()?;
        check_name("user", name)?;
        if self.access.user(name).is_some() {
            return Err(AdminError::new(
                AdminErrorKind::AlreadyExists,
                format!("User \"{name}\" already exists"),
            ));
        }
        self.put_user(User::new(name, password, tags))
    }

    /// Adds or replaces a user given as stored: `password_hash` in RabbitMQ's format
    /// (base64 of salt ++ digest), as definitions exported from RabbitMQ carry it.
    pub fn import_user(
        &self,
        name: &str,
        password_hash: &str,
        hashing_algorithm: &str,
        tags: Vec<String>,
    ) -> AdminResult {
        let _administering = self.administering()?;
        check_name("user", name)?;
        let user = user_from_def(&UserDef {
            name: name.to_string(),
            password_hash: password_hash.to_string(),
            hashing_algorithm: hashing_algorithm.to_string(),
            tags,
            limits: Default::default(),
        })
        .map_err(|reason| invalid(format!("user '{name}': {reason}")))?;
        self.put_user(user)
    }

    /// Deletes a user, their permissions, and closes their connections.
    pub fn delete_user(&self, name: &str) -> AdminResult {
        let _administering = self.administering()?;
        if self.access.user(name).is_none() {
            return Err(no_user(name));
        }
        self.commit(Change::DeleteUser {
            name: name.to_string(),
        })
    }

    /// Sets a new password (None: no password, certificate login only).
    pub fn change_password(&self, name: &str, password: Option<&str>) -> AdminResult {
        let _administering = self.administering()?;
        let mut user = self.access.user(name).ok_or_else(|| no_user(name))?;
        user.password = password.map(PasswordHash::new);
        self.put_user(user)
    }

    pub fn set_user_tags(&self, name: &str, tags: Vec<String>) -> AdminResult {
        let _administering = self.administering()?;
        let mut user = self.access.user(name).ok_or_else(|| no_user(name))?;
        user.tags = tags;
        self.put_user(user)
    }

    /// Adds a vhost (with its standard exchanges); no user may use it until given
    /// permissions on it. Adding one that exists changes nothing and succeeds, as in
    /// RabbitMQ.
    pub fn add_vhost(&self, name: &str, description: &str, tags: Vec<String>) -> AdminResult {
        let _administering = self.administering()?;
        check_name("vhost", name)?;
        if self.vhost(name).is_some() {
            return Ok(());
        }
        self.commit(Change::PutVhost(VhostDef {
            name: name.to_string(),
            description: description.to_string(),
            tags,
            limits: Default::default(),
        }))
    }

    /// Changes a vhost's description and tags.
    pub fn set_vhost_metadata(
        &self,
        name: &str,
        description: &str,
        tags: Vec<String>,
    ) -> AdminResult {
        let _administering = self.administering()?;
        let vhost = self.vhost(name).ok_or_else(|| no_vhost(name))?;
        let limits = vhost.limits.read().to_map();
        self.commit(Change::PutVhost(VhostDef {
            name: name.to_string(),
            description: description.to_string(),
            tags,
            limits,
        }))
    }

    /// Deletes a vhost: closes its connections, deletes its queues (their messages go
    /// from disk) and exchanges, and every permission on it.
    pub fn delete_vhost(&self, name: &str) -> AdminResult {
        let _administering = self.administering()?;
        if self.vhost(name).is_none() {
            return Err(no_vhost(name));
        }
        self.commit(Change::DeleteVhost {
            name: name.to_string(),
        })
    }

    pub fn vhost_infos(&self) -> Vec<VhostInfo> {
        self.vhosts()
            .iter()
            .map(|v| {
                let (description, tags) = v.metadata.read().clone();
                VhostInfo {
                    name: v.name.to_string(),
                    description,
                    tags,
                    limits: v.limits.read().clone(),
                }
            })
            .collect()
    }

    /// The user and vhost a permission names, which must exist (refused with
    /// rabbitmqctl's texts, which quote neither name here).
    /// Sets a vhost's limits (replacing those set before): a JSON object of
    /// max-connections and max-queues; negative values mean no limit.
    /// RabbitMQ's `set_cluster_name`: the name clients (the `cluster_name` server
    /// property), the management API and Prometheus show; on a cluster, every node's.
    pub fn set_cluster_name(&self, name: &str) -> AdminResult {
        let _administering = self.administering()?;
        if name.is_empty() {
            return Err(invalid("the cluster name must not be empty"));
        }
        self.commit(Change::SetClusterName {
            name: name.to_string(),
        })
    }

    pub fn set_vhost_limits(&self, name: &str, json: &str) -> AdminResult {
        let _administering = self.administering()?;
        let vhost = self.vhost(name).ok_or_else(|| no_vhost(name))?;
        let limits = Limits::parse(json, limits::VHOST_LIMITS).map_err(invalid)?;
        self.put_vhost_limits(&vhost, limits)
    }

    pub fn clear_vhost_limits(&self, name: &str) -> AdminResult {
        let _administering = self.administering()?;
        let vhost = self.vhost(name).ok_or_else(|| no_vhost(name))?;
        self.put_vhost_limits(&vhost, Limits::default())
    }

    fn put_vhost_limits(&self, vhost: &VHost, limits: Limits) -> AdminResult {
        let (description, tags) = vhost.metadata.read().clone();
        self.commit(Change::PutVhost(VhostDef {
            name: vhost.name.to_string(),
            description,
            tags,
            limits: limits.to_map(),
        }))
    }

    /// Sets a user's limits (replacing those set before): a JSON object of
    /// max-connections and max-channels; negative values mean no limit.
    pub fn set_user_limits(&self, name: &str, json: &str) -> AdminResult {
        let _administering = self.administering()?;
        let mut user = self.access.user(name).ok_or_else(|| no_user(name))?;
        user.limits = Limits::parse(json, limits::USER_LIMITS).map_err(invalid)?;
        self.put_user(user)
    }

    pub fn clear_user_limits(&self, name: &str) -> AdminResult {
        let _administering = self.administering()?;
        let mut user = self.access.user(name).ok_or_else(|| no_user(name))?;
        user.limits = Limits::default();
        self.put_user(user)
    }

    fn existing(&self, user: &str, vhost: &str) -> AdminResult<Arc<VHost>> {
        if self.access.user(user).is_none() {
            return Err(AdminError::new(
                AdminErrorKind::NotFound,
                format!("User {user} does not exist"),
            ));
        }
        self.vhost(vhost).ok_or_else(|| {
            AdminError::new(
                AdminErrorKind::NotFound,
                format!("Virtual host {vhost} does not exist"),
            )
        })
    }

    pub fn set_permissions(
        &self,
        user: &str,
        vhost: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> AdminResult {
        let _administering = self.administering()?;
        self.existing(user, vhost)?;
        Permission::new(configure, write, read).map_err(invalid)?;
        self.commit(Change::PutPermission(PermissionDef {
            user: user.to_string(),
            vhost: vhost.to_string(),
            configure: configure.to_string(),
            write: write.to_string(),
            read: read.to_string(),
        }))
    }

    pub fn clear_permissions(&self, user: &str, vhost: &str) -> AdminResult {
        let _administering = self.administering()?;
        self.existing(user, vhost)?;
        if self.access.permission(vhost, user).is_none() {
            return Ok(());
        }
        self.commit(Change::DeletePermission {
            user: user.to_string(),
            vhost: vhost.to_string(),
        })
    }

    pub fn set_topic_permissions(
        &self,
        user: &str,
        vhost: &str,
        exchange: &str,
        write: &str,
        read: &str,
    ) -> AdminResult {
        let _administering = self.administering()?;
        self.existing(user, vhost)?;
        TopicPermission::new(exchange, write, read).map_err(invalid)?;
        self.commit(Change::PutTopicPermission(TopicPermissionDef {
            user: user.to_string(),
            vhost: vhost.to_string(),
            exchange: exchange.to_string(),
            write: write.to_string(),
            read: read.to_string(),
        }))
    }

    /// Clears the user's topic permissions on `exchange`, or on every exchange.
    pub fn clear_topic_permissions(
        &self,
        user: &str,
        vhost: &str,
        exchange: Option<&str>,
    ) -> AdminResult {
        let _administering = self.administering()?;
        self.existing(user, vhost)?;
        self.commit(Change::DeleteTopicPermission {
            user: user.to_string(),
            vhost: vhost.to_string(),
            exchange: exchange.map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::AdminErrorKind;
    use crate::broker::{Broker, BrokerConfig};

    /// Each refusal says what kind it is, so that the HTTP API can answer 404, 400 or 500
    /// as RabbitMQ's does, while `wharf ctl` prints rabbitmqctl's words.
    #[test]
    fn refusals_say_their_kind() {
        let broker = Broker::new(BrokerConfig::default());
        let kind = |result: super::AdminResult| result.unwrap_err().kind;
        assert_eq!(kind(broker.delete_user("nobody")), AdminErrorKind::NotFound);
        assert_eq!(
            kind(broker.delete_vhost("nowhere")),
            AdminErrorKind::NotFound
        );
        assert_eq!(
            kind(broker.set_permissions("guest", "nowhere", ".*", ".*", ".*")),
            AdminErrorKind::NotFound
        );
        assert_eq!(
            kind(broker.add_user("guest", Some("x"), vec![])),
            AdminErrorKind::AlreadyExists
        );
        assert_eq!(
            kind(broker.add_user("", None, vec![])),
            AdminErrorKind::Invalid
        );
        assert_eq!(
            kind(broker.set_vhost_limits("/", "{not json")),
            AdminErrorKind::Invalid
        );
        assert_eq!(
            kind(broker.set_permissions("guest", "/", "(", ".*", ".*")),
            AdminErrorKind::Invalid
        );
        let missing = broker.delete_user("nobody").unwrap_err();
        assert_eq!(missing.message, "User \"nobody\" does not exist");
    }

    #[test]
    fn changes_made_at_once_do_not_interleave() {
        // A permission set while its user is deleted must not outlive the user.
        let broker = Broker::new(BrokerConfig::default());
        for round in 0..200 {
            let user = format!("u{round}");
            broker.add_user(&user, Some("pw"), vec![]).unwrap();
            std::thread::scope(|s| {
                s.spawn(|| broker.delete_user(&user));
                s.spawn(|| broker.set_permissions(&user, "/", ".*", ".*", ".*"));
            });
            assert!(broker.access.user(&user).is_none());
            assert!(
                broker.access.permission("/", &user).is_none(),
                "round {round}: a permission outlived its user"
            );
        }
    }
}
