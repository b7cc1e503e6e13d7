//! The node's name and the ids that carry it.
//!
//! Several nodes may serve one API behind a proxy; a session lives in one node's memory, so
//! every id a client keeps names its node and the proxy can route by it. The form is
//! `<node>.<random>`: the node name is a DNS label (a proxy or Kubernetes can use it as a host
//! name) and cannot contain a `.`, so the node is the part before the first `.`.

/// The longest DNS label.
const MAX_LABEL: usize = 63;

/// Whether `name` is a DNS label as the config takes it: `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`.
pub fn is_valid(name: &str) -> bool {
    let bytes = name.as_bytes();
    let inner_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= MAX_LABEL
                && inner_ok(first)
                && inner_ok(last)
                && bytes.iter().all(|b| inner_ok(b) || *b == b'-')
        }
        _ => false,
    }
}

/// The default name: the host name (in Kubernetes, the pod's), made a DNS label (up to its
/// first `.`, lower-cased, other characters `-`), or `replpool` when none is left. A default
/// is always valid, so that a machine's odd host name never stops a start (nor the Python
/// package, which has no use for a node); a name set in the config is taken as it is or
/// refused.
pub fn default_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    label_from(&host)
}

fn label_from(host: &str) -> String {
    let first = host.split('.').next().unwrap_or_default();
    let mapped: String = first
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(MAX_LABEL)
        .collect();
    let label = mapped.trim_matches('-');
    if label.is_empty() {
        "replpool".to_owned()
    } else {
        label.to_owned()
    }
}

/// A new id of this node: `<node>.<128 random bits, hex>`, unguessable.
pub fn new_id(node: &str) -> String {
    format!("{node}.{:032x}", rand::random::<u128>())
}

/// The node an id names, when it names one: the part before the first `.`, if that is a
/// valid node name. Ids of no node (a garbage id) give `None`.
pub fn of(id: &str) -> Option<&str> {
    let (node, _) = id.split_once('.')?;
    is_valid(node).then_some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for good in ["a", "node-a", "replpool-0", "0", &"x".repeat(63)] {
            assert!(is_valid(good), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Node",
            "a.b",
            "a_b",
            "nöde",
            &"x".repeat(64),
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn a_host_name_becomes_a_label() {
        assert_eq!(label_from("replpool-0"), "replpool-0");
        assert_eq!(label_from("Build_Box.example.com"), "build-box");
        assert_eq!(label_from("_"), "replpool");
        assert_eq!(label_from(""), "replpool");
        assert!(is_valid(&label_from(&format!("{}-x", "a".repeat(62)))));
        assert!(is_valid(&default_name()));
    }

    #[test]
    fn an_id_names_its_node() {
        let id = new_id("node-a");
        assert_eq!(of(&id), Some("node-a"));
        let (_, random) = id.split_once('.').expect("a dot");
        assert_eq!(random.len(), 32);
        assert!(random.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(new_id("node-a"), id);
        assert_eq!(of("0123abcd"), None);
        assert_eq!(of("Bad_Node.0123"), None);
        assert_eq!(of("../etc"), None);
    }
}
