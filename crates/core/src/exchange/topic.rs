//! Topic routing: binding keys are dot-separated words where `*` matches exactly one word
//! and `#` matches zero or more. Bindings live in a trie keyed by word, so routing a
//! message walks the key's words once per live branch instead of testing every pattern.
//!
//! As in RabbitMQ, an empty key has no words ("#" and "" match it, "*" does not), and
//! "a..b" has an empty middle word.

use std::collections::HashMap;

#[derive(Debug)]
struct Node<D> {
    words: HashMap<Box<str>, Node<D>>,
    star: Option<Box<Node<D>>>,
    hash: Option<Box<Node<D>>>,
    destinations: Vec<D>,
}

impl<D> Default for Node<D> {
    fn default() -> Self {
        Node {
            words: HashMap::new(),
            star: None,
            hash: None,
            destinations: Vec::new(),
        }
    }
}

impl<D> Node<D> {
    fn is_empty(&self) -> bool {
        self.words.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
            && self.destinations.is_empty()
    }
}

/// A trie of topic binding patterns, each leading to its destinations.
#[derive(Debug)]
pub struct TopicTrie<D> {
    root: Node<D>,
}

impl<D> Default for TopicTrie<D> {
    fn default() -> Self {
        TopicTrie {
            root: Node::default(),
        }
    }
}

fn words(key: &str) -> impl Iterator<Item = &str> {
    // An empty key has no words at all; otherwise every separator splits, empty words included.
    let mut split = key.split('.');
    if key.is_empty() {
        split.next();
    }
    split
}

/// Consecutive `#` words match the same set of keys as one; folding them keeps matching
/// polynomial however the pattern is written.
fn pattern_words(pattern: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for word in words(pattern) {
        if word == "#" && out.last() == Some(&"#") {
            continue;
        }
        out.push(word);
    }
    out
}

impl<D: PartialEq> TopicTrie<D> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `destination` under `pattern`; returns false when that binding already existed.
    pub fn bind(&mut self, pattern: &str, destination: D) -> bool {
        let mut node = &mut self.root;
        for word in pattern_words(pattern) {
            node = match word {
                "*" => node.star.get_or_insert_with(Default::default),
                "#" => node.hash.get_or_insert_with(Default::default),
                _ => node.words.entry(word.into()).or_default(),
            };
        }
        if node.destinations.contains(&destination) {
            return false;
        }
        node.destinations.push(destination);
        true
    }

    /// Removes one binding; returns whether it existed. Emptied branches are pruned.
    pub fn unbind(&mut self, pattern: &str, destination: &D) -> bool {
        fn remove<D: PartialEq>(node: &mut Node<D>, path: &[&str], destination: &D) -> bool {
            let Some((first, rest)) = path.split_first() else {
                let before = node.destinations.len();
                node.destinations.retain(|d| d != destination);
                return node.destinations.len() != before;
            };
            match *first {
                "*" | "#" => {
                    let slot = if *first == "*" {
                        &mut node.star
                    } else {
                        &mut node.hash
                    };
                    let Some(child) = slot.as_deref_mut() else {
                        return false;
                    };
                    let removed = remove(child, rest, destination);
                    if child.is_empty() {
                        *slot = None;
                    }
                    removed
                }
                word => {
                    let Some(child) = node.words.get_mut(word) else {
                        return false;
                    };
                    let removed = remove(child, rest, destination);
                    if child.is_empty() {
                        node.words.remove(word);
                    }
                    removed
                }
            }
        }
        let path = pattern_words(pattern);
        remove(&mut self.root, &path, destination)
    }

    /// Removes every binding to destinations matching `dead`, e.g. a deleted queue.
    pub fn remove_destination(&mut self, dead: &impl Fn(&D) -> bool) {
        fn prune<D>(node: &mut Node<D>, dead: &impl Fn(&D) -> bool) {
            node.destinations.retain(|d| !dead(d));
            node.words.retain(|_, child| {
                prune(child, dead);
                !child.is_empty()
            });
            for slot in [&mut node.star, &mut node.hash] {
                if let Some(child) = slot.as_deref_mut() {
                    prune(child, dead);
                    if child.is_empty() {
                        *slot = None;
                    }
                }
            }
        }
        prune(&mut self.root, dead);
    }

    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    /// Calls `found` for each destination whose pattern matches `key`. A destination bound
    /// under several matching patterns is reported once per pattern; callers deduplicate.
    pub fn route(&self, key: &str, found: &mut impl FnMut(&D)) {
        let key_words: Vec<&str> = words(key).collect();
        Self::walk(&self.root, &key_words, found);
    }

    fn walk(node: &Node<D>, key: &[&str], found: &mut impl FnMut(&D)) {
        if let Some(hash) = &node.hash {
            // `#` swallows zero, one, or more of the remaining words.
            for skip in 0..=key.len() {
                Self::walk(hash, &key[skip..], found);
            }
        }
        let Some((first, rest)) = key.split_first() else {
            node.destinations.iter().for_each(&mut *found);
            return;
        };
        if let Some(child) = node.words.get(*first) {
            Self::walk(child, rest, found);
        }
        if let Some(star) = &node.star {
            Self::walk(star, rest, found);
        }
    }
}

/// The reference definition of a topic match, used to check the trie in tests.
pub fn pattern_matches(pattern: &str, key: &str) -> bool {
    fn matches(pattern: &[&str], key: &[&str]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((&"#", rest)) => (0..=key.len()).any(|skip| matches(rest, &key[skip..])),
            Some((&"*", rest)) => !key.is_empty() && matches(rest, &key[1..]),
            Some((word, rest)) => key.first() == Some(word) && matches(rest, &key[1..]),
        }
    }
    let pattern: Vec<&str> = words(pattern).collect();
    let key: Vec<&str> = words(key).collect();
    matches(&pattern, &key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn routed(trie: &TopicTrie<u32>, key: &str) -> Vec<u32> {
        let mut out = Vec::new();
        trie.route(key, &mut |d| out.push(*d));
        out.sort_unstable();
        out.dedup();
        out
    }

    #[test]
    fn star_and_hash() {
        let mut trie = TopicTrie::new();
        trie.bind("a.*.c", 1);
        trie.bind("a.#", 2);
        trie.bind("#", 3);
        trie.bind("*.b.#.d", 4);
        trie.bind("", 5);
        assert_eq!(routed(&trie, "a.b.c"), vec![1, 2, 3]);
        assert_eq!(routed(&trie, "a"), vec![2, 3]);
        assert_eq!(routed(&trie, "x.b.d"), vec![3, 4]);
        assert_eq!(routed(&trie, "x.b.y.z.d"), vec![3, 4]);
        assert_eq!(routed(&trie, ""), vec![3, 5]);
        assert_eq!(
            routed(&trie, "a..c"),
            vec![1, 2, 3],
            "* matches the empty word"
        );
    }

    #[test]
    fn empty_words_and_star() {
        let mut trie = TopicTrie::new();
        trie.bind("*", 1);
        trie.bind("*.*", 2);
        assert_eq!(routed(&trie, ""), Vec::<u32>::new());
        assert_eq!(routed(&trie, "a"), vec![1]);
        assert_eq!(routed(&trie, "."), vec![2]);
    }

    #[test]
    fn bind_twice_and_unbind_prunes() {
        let mut trie = TopicTrie::new();
        assert!(trie.bind("a.#.b", 1));
        assert!(!trie.bind("a.#.#.b", 1), "#.# folds into #");
        assert!(trie.bind("a.*", 2));
        assert!(trie.unbind("a.#.b", &1));
        assert!(!trie.unbind("a.#.b", &1));
        assert!(!trie.unbind("nope", &2));
        assert!(trie.unbind("a.*", &2));
        assert!(trie.is_empty());
    }

    #[test]
    fn remove_destination_everywhere() {
        let mut trie = TopicTrie::new();
        trie.bind("a.#", 1);
        trie.bind("a.b", 1);
        trie.bind("a.b", 2);
        trie.remove_destination(&|d| *d == 1);
        assert_eq!(routed(&trie, "a.b"), vec![2]);
        trie.remove_destination(&|d| *d == 2);
        assert!(trie.is_empty());
    }

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("".to_string())
        ]
    }

    fn pattern_word() -> impl Strategy<Value = String> {
        prop_oneof![word(), Just("*".to_string()), Just("#".to_string())]
    }

    proptest! {
        #[test]
        fn trie_agrees_with_reference(
            patterns in prop::collection::vec(prop::collection::vec(pattern_word(), 0..5), 1..8),
            keys in prop::collection::vec(prop::collection::vec(word(), 0..6), 1..10),
        ) {
            let patterns: Vec<String> = patterns.iter().map(|p| p.join(".")).collect();
            let mut trie = TopicTrie::new();
            for (i, p) in patterns.iter().enumerate() {
                trie.bind(p, i as u32);
            }
            for key in keys.iter().map(|k| k.join(".")) {
                let expected: Vec<u32> = patterns
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| pattern_matches(p, &key))
                    .map(|(i, _)| i as u32)
                    .collect();
                prop_assert_eq!(routed(&trie, &key), expected, "key {:?}", key);
            }
        }
    }
}
