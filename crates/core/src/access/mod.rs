//! Who may connect and what they may do: users, their permissions per vhost, and the
//! checks each operation makes, with RabbitMQ's model and refusal texts. The broker's
//! administration (crate::administration) changes these maps; connections read them
//! through a [`Grant`].

mod operations;
pub mod permissions;
mod publishing;
pub mod users;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

pub use self::permissions::{
    Access, ExpandedTopicPermission, Pattern, Permission, ResourceKind, TopicPermission,
};
pub use self::publishing::PublishTarget;
pub use self::users::{HashingAlgorithm, PasswordHash, User};
use crate::error::{Error, Result};

/// Users and permissions, in memory. Every change bumps a generation number, which a
/// [`Grant`] compares against to know when to read its permissions again.
#[derive(Debug, Default)]
pub struct AccessControl {
    users: RwLock<HashMap<String, User>>,
    /// By (vhost, user).
    permissions: RwLock<HashMap<(String, String), Arc<Permission>>>,
    /// By (vhost, user): one entry per exchange.
    topic_permissions: RwLock<HashMap<(String, String), Vec<TopicPermission>>>,
    generation: AtomicU64,
}

fn key(vhost: &str, user: &str) -> (String, String) {
    (vhost.to_string(), user.to_string())
}

impl AccessControl {
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn user(&self, name: &str) -> Option<User> {
        self.users.read().get(name).cloned()
    }

    /// Every user, by name.
    pub fn users(&self) -> Vec<User> {
        let mut users: Vec<User> = self.users.read().values().cloned().collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        users
    }

    pub fn put_user(&self, user: User) {
        self.users.write().insert(user.name.clone(), user);
        self.changed();
    }

    /// Removes a user and all their permissions.
    pub fn remove_user(&self, name: &str) -> Option<User> {
        let removed = self.users.write().remove(name);
        self.permissions.write().retain(|(_, u), _| u != name);
        self.topic_permissions.write().retain(|(_, u), _| u != name);
        self.changed();
        removed
    }

    /// Removes every permission on a vhost.
    pub fn remove_vhost(&self, vhost: &str) {
        self.permissions.write().retain(|(v, _), _| v != vhost);
        self.topic_permissions
            .write()
            .retain(|(v, _), _| v != vhost);
        self.changed();
    }

    /// The user, if the name exists and the password is theirs.
    pub fn authenticate(&self, name: &str, password: &str) -> Option<User> {
        let user = self.user(name)?;
        user.verify(password).then_some(user)
    }

    pub fn permission(&self, vhost: &str, user: &str) -> Option<Arc<Permission>> {
        self.permissions.read().get(&key(vhost, user)).cloned()
    }

    /// Every permission as (vhost, user, permission), by vhost then user.
    pub fn permissions(&self) -> Vec<(String, String, Arc<Permission>)> {
        let mut all: Vec<_> = self
            .permissions
            .read()
            .iter()
            .map(|((v, u), p)| (v.clone(), u.clone(), p.clone()))
            .collect();
        all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        all
    }

    pub fn put_permission(&self, vhost: &str, user: &str, permission: Permission) {
        self.permissions
            .write()
            .insert(key(vhost, user), Arc::new(permission));
        self.changed();
    }

    pub fn remove_permission(&self, vhost: &str, user: &str) -> bool {
        let removed = self.permissions.write().remove(&key(vhost, user)).is_some();
        self.changed();
        removed
    }

    /// Every topic permission as (vhost, user, permission), by vhost, user, exchange.
    pub fn topic_permissions(&self) -> Vec<(String, String, TopicPermission)> {
        let mut all: Vec<_> = self
            .topic_permissions
            .read()
            .iter()
            .flat_map(|((v, u), list)| list.iter().map(|p| (v.clone(), u.clone(), p.clone())))
            .collect();
        all.sort_by(|a, b| (&a.0, &a.1, &a.2.exchange).cmp(&(&b.0, &b.1, &b.2.exchange)));
        all
    }

    pub fn put_topic_permission(&self, vhost: &str, user: &str, permission: TopicPermission) {
        {
            let mut all = self.topic_permissions.write();
            let list = all.entry(key(vhost, user)).or_default();
            list.retain(|p| p.exchange != permission.exchange);
            list.push(permission);
        }
        self.changed();
    }

    /// Removes the user's topic permissions on `exchange` (None: on every exchange);
    /// how many there were.
    pub fn remove_topic_permissions(
        &self,
        vhost: &str,
        user: &str,
        exchange: Option<&str>,
    ) -> usize {
        let removed = {
            let mut all = self.topic_permissions.write();
            let Some(list) = all.get_mut(&key(vhost, user)) else {
                return 0;
            };
            let before = list.len();
            list.retain(|p| exchange.is_some_and(|x| x != p.exchange));
            let removed = before - list.len();
            if list.is_empty() {
                all.remove(&key(vhost, user));
            }
            removed
        };
        self.changed();
        removed
    }

    /// What `user` may do in `vhost`, for one connection to check its operations against.
    pub fn grant(self: &Arc<Self>, user: &str, vhost: &str) -> Grant {
        let grant = Grant {
            access: self.clone(),
            user: user.to_string(),
            vhost: vhost.to_string(),
            snapshot: Mutex::new(Snapshot::default()),
        };
        grant.snapshot.lock().generation = u64::MAX;
        grant
    }

    fn snapshot(&self, user: &str, vhost: &str) -> Snapshot {
        // Read the generation first: a change racing with the reads below bumps it again,
        // and the next check reads the maps anew.
        let generation = self.generation.load(Ordering::Acquire);
        let permission = self.permission(vhost, user);
        let topics = self
            .topic_permissions
            .read()
            .get(&key(vhost, user))
            .map(|list| {
                list.iter()
                    // Checked when set; a pattern that no longer compiles denies all.
                    .map(|p| {
                        p.expand(user, vhost)
                            .unwrap_or_else(|_| ExpandedTopicPermission {
                                exchange: p.exchange.clone(),
                                write: Pattern::nothing(&p.write),
                                read: Pattern::nothing(&p.read),
                            })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Snapshot {
            generation,
            permission,
            topics,
        }
    }
}

#[derive(Debug, Default)]
struct Snapshot {
    generation: u64,
    permission: Option<Arc<Permission>>,
    topics: Vec<ExpandedTopicPermission>,
}

/// One connection's user in its vhost: checks operations against the user's permissions
/// as they are now (a change made while connected applies to the next operation).
#[derive(Debug)]
pub struct Grant {
    access: Arc<AccessControl>,
    user: String,
    vhost: String,
    snapshot: Mutex<Snapshot>,
}

/// RabbitMQ checks the default exchange under this name.
const DEFAULT_EXCHANGE_NAME: &str = "amq.default";

impl Grant {
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether the user has `tag` now.
    pub fn user_has_tag(&self, tag: &str) -> bool {
        self.access.user(&self.user).is_some_and(|u| u.has_tag(tag))
    }

    /// The generation of the permissions: a result cached with it stays valid while
    /// [`Grant::generation`] returns the same number.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.access.generation.load(Ordering::Acquire)
    }

    fn with_current<T>(&self, f: impl FnOnce(&Snapshot) -> T) -> T {
        let mut snapshot = self.snapshot.lock();
        if snapshot.generation != self.generation() {
            *snapshot = self.access.snapshot(&self.user, &self.vhost);
        }
        f(&snapshot)
    }

    /// Whether the user has any permission in the vhost (needed to open a connection).
    pub fn may_enter(&self) -> bool {
        self.with_current(|s| s.permission.is_some())
    }

    /// Refuses with 403 and RabbitMQ's text (which does not say which access was
    /// missing) unless the user's `access` pattern matches.
    pub fn check(&self, access: Access, kind: ResourceKind, name: &str) -> Result<()> {
        let name = match (kind, name) {
            (ResourceKind::Exchange, "") => DEFAULT_EXCHANGE_NAME,
            _ => name,
        };
        if self.with_current(|s| {
            s.permission
                .as_ref()
                .is_some_and(|p| p.allows(access, name))
        }) {
            return Ok(());
        }
        Err(Error::access_refused(format_args!(
            "access to {} '{name}' in vhost '{}' refused for user '{}'",
            kind.name(),
            self.vhost,
            self.user
        )))
    }

    /// Whether the user has topic permissions on `exchange` (without any, every routing
    /// key is allowed and [`Grant::check_topic`] need not be called).
    pub fn limits_topics(&self, exchange: &str) -> bool {
        self.with_current(|s| s.topics.iter().any(|t| t.exchange == exchange))
    }

    /// For a topic exchange: refuses unless the user's topic permission on it, if any,
    /// allows `routing_key` (no topic permission on the exchange allows every key).
    pub fn check_topic(&self, access: Access, exchange: &str, routing_key: &str) -> Result<()> {
        let allowed = self.with_current(|s| {
            s.topics
                .iter()
                .filter(|t| t.exchange == exchange)
                .all(|t| t.allows(access, routing_key))
        });
        if allowed {
            return Ok(());
        }
        Err(Error::access_refused(format_args!(
            "access to topic '{routing_key}' in exchange '{exchange}' in vhost '{}' refused for user '{}'",
            self.vhost,
            self.user
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control() -> Arc<AccessControl> {
        let access = Arc::new(AccessControl::default());
        access.put_user(User::new("alice", Some("pw"), vec![]));
        access
    }

    #[test]
    fn a_grant_follows_permission_changes() {
        let access = control();
        let grant = access.grant("alice", "/");
        assert!(!grant.may_enter());
        let refused = grant
            .check(Access::Read, ResourceKind::Queue, "q")
            .unwrap_err();
        assert_eq!(
            refused.text(),
            "ACCESS_REFUSED - access to queue 'q' in vhost '/' refused for user 'alice'"
        );
        access.put_permission("/", "alice", Permission::new("", ".*", "^q$").unwrap());
        assert!(grant.may_enter());
        grant.check(Access::Read, ResourceKind::Queue, "q").unwrap();
        assert!(grant
            .check(Access::Read, ResourceKind::Queue, "q2")
            .is_err());
        assert!(grant
            .check(Access::Configure, ResourceKind::Queue, "q")
            .is_err());
        access.remove_user("alice");
        assert!(!grant.may_enter(), "permissions went with the user");
    }

    #[test]
    fn the_default_exchange_is_checked_as_amq_default() {
        let access = control();
        access.put_permission(
            "/",
            "alice",
            Permission::new("", "^amq\\.default$", "").unwrap(),
        );
        let grant = access.grant("alice", "/");
        grant
            .check(Access::Write, ResourceKind::Exchange, "")
            .unwrap();
        let refused = grant
            .check(Access::Configure, ResourceKind::Exchange, "")
            .unwrap_err();
        assert!(
            refused.text().contains("exchange 'amq.default'"),
            "{refused}"
        );
    }

    #[test]
    fn topic_permissions_limit_only_their_exchange() {
        let access = control();
        access.put_topic_permission(
            "/",
            "alice",
            TopicPermission::new("amq.topic", "^{username}\\.", "").unwrap(),
        );
        let grant = access.grant("alice", "/");
        grant
            .check_topic(Access::Write, "amq.topic", "alice.x")
            .unwrap();
        let refused = grant
            .check_topic(Access::Write, "amq.topic", "bob.x")
            .unwrap_err();
        assert_eq!(
            refused.text(),
            "ACCESS_REFUSED - access to topic 'bob.x' in exchange 'amq.topic' in vhost '/' refused for user 'alice'"
        );
        grant.check_topic(Access::Write, "other", "bob.x").unwrap();
        assert_eq!(access.remove_topic_permissions("/", "alice", None), 1);
        grant
            .check_topic(Access::Write, "amq.topic", "bob.x")
            .unwrap();
    }

    #[test]
    fn a_topic_pattern_that_does_not_compile_denies_every_key() {
        let access = control();
        // A user name with a regex metacharacter breaks `{username}` patterns.
        access.put_user(User::new("al(ice", Some("pw"), vec![]));
        access.put_topic_permission(
            "/",
            "al(ice",
            TopicPermission::new("amq.topic", "^{username}\\.", "").unwrap(),
        );
        let grant = access.grant("al(ice", "/");
        assert!(grant.limits_topics("amq.topic"));
        for key in ["", "al(ice.x", "x"] {
            assert!(
                grant.check_topic(Access::Write, "amq.topic", key).is_err(),
                "{key:?}"
            );
        }
    }
}
