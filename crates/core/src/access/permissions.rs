//! Permissions as RabbitMQ has them: for each user and vhost, three regular expressions
//! over resource names (configure, write, read); and per topic exchange, two over routing
//! keys (write for publishing, read for binding), which may name the user and the vhost.

use regex::Regex;

/// What an operation does to a resource, and so which of a user's patterns it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Create or destroy it, or change how it behaves (declare, delete).
    Configure,
    /// Put messages in (publish to an exchange, bind a queue or exchange as destination).
    Write,
    /// Take messages out (consume, get, purge, bind an exchange as source).
    Read,
}

impl Access {
    pub fn name(self) -> &'static str {
        match self {
            Access::Configure => "configure",
            Access::Write => "write",
            Access::Read => "read",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Exchange,
    Queue,
}

impl ResourceKind {
    pub fn name(self) -> &'static str {
        match self {
            ResourceKind::Exchange => "exchange",
            ResourceKind::Queue => "queue",
        }
    }
}

/// A permission pattern: a regular expression searched for anywhere in the name, as
/// RabbitMQ does (`.*` allows everything). The empty pattern allows nothing, as `^$`.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

impl Pattern {
    pub fn new(source: &str) -> Result<Pattern, String> {
        let effective = if source.is_empty() { "^$" } else { source };
        let regex = Regex::new(effective)
            .map_err(|e| format!("invalid regular expression '{source}': {e}"))?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    /// A pattern that matches no name, not even the empty one: what stands in for one that
    /// does not compile, so that it denies rather than allows.
    pub fn nothing(source: &str) -> Pattern {
        Pattern {
            source: source.to_string(),
            regex: Regex::new(r"[^\s\S]").expect("a class that matches nothing compiles"),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    #[inline]
    pub fn matches(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// A user's permissions in one vhost.
#[derive(Debug, Clone, PartialEq)]
pub struct Permission {
    pub configure: Pattern,
    pub write: Pattern,
    pub read: Pattern,
}

impl Permission {
    pub fn new(configure: &str, write: &str, read: &str) -> Result<Permission, String> {
        Ok(Permission {
            configure: Pattern::new(configure)?,
            write: Pattern::new(write)?,
            read: Pattern::new(read)?,
        })
    }

    pub fn allows(&self, access: Access, name: &str) -> bool {
        match access {
            Access::Configure => self.configure.matches(name),
            Access::Write => self.write.matches(name),
            Access::Read => self.read.matches(name),
        }
    }
}

/// A user's topic permissions on one exchange, as set: the patterns may hold the
/// variables `{username}` and `{vhost}`, replaced when a connection of the user opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPermission {
    pub exchange: String,
    pub write: String,
    pub read: String,
}

impl TopicPermission {
    /// Checks that both patterns compile once their variables are replaced.
    pub fn new(exchange: &str, write: &str, read: &str) -> Result<TopicPermission, String> {
        let permission = TopicPermission {
            exchange: exchange.to_string(),
            write: write.to_string(),
            read: read.to_string(),
        };
        permission.expand("user", "vhost")?;
        Ok(permission)
    }

    /// The patterns for one user in one vhost.
    pub fn expand(&self, user: &str, vhost: &str) -> Result<ExpandedTopicPermission, String> {
        let expand = |pattern: &str| {
            Pattern::new(
                &pattern
                    .replace("{username}", user)
                    .replace("{vhost}", vhost),
            )
        };
        Ok(ExpandedTopicPermission {
            exchange: self.exchange.clone(),
            write: expand(&self.write)?,
            read: expand(&self.read)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ExpandedTopicPermission {
    pub exchange: String,
    pub write: Pattern,
    pub read: Pattern,
}

impl ExpandedTopicPermission {
    pub fn allows(&self, access: Access, routing_key: &str) -> bool {
        match access {
            Access::Write => self.write.matches(routing_key),
            Access::Read => self.read.matches(routing_key),
            // Topic permissions have no configure pattern.
            Access::Configure => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_search_anywhere_and_empty_allows_nothing() {
        let p = Pattern::new("^orders\\.").unwrap();
        assert!(p.matches("orders.new"));
        assert!(!p.matches("my.orders.new"));
        let anywhere = Pattern::new("tmp").unwrap();
        assert!(anywhere.matches("a-tmp-queue"));
        let nothing = Pattern::new("").unwrap();
        assert!(!nothing.matches("x"));
        assert!(nothing.matches(""));
        assert!(Pattern::new("(").is_err());
    }

    #[test]
    fn permission_uses_the_pattern_of_its_access() {
        let p = Permission::new("^c$", "^w$", "^r$").unwrap();
        assert!(p.allows(Access::Configure, "c"));
        assert!(!p.allows(Access::Configure, "w"));
        assert!(p.allows(Access::Write, "w"));
        assert!(p.allows(Access::Read, "r"));
        assert!(!p.allows(Access::Read, "c"));
    }

    #[test]
    fn topic_variables_are_expanded_per_user_and_vhost() {
        let t = TopicPermission::new("amq.topic", "^{username}\\.", "^{vhost}\\.").unwrap();
        let e = t.expand("alice", "prod").unwrap();
        assert!(e.allows(Access::Write, "alice.x"));
        assert!(!e.allows(Access::Write, "bob.x"));
        assert!(e.allows(Access::Read, "prod.x"));
        assert!(TopicPermission::new("amq.topic", "(", ".*").is_err());
    }
}
