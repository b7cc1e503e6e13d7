//! Kernel ids: a session id in the form Jupyter front ends accept.
//!
//! jupyter_server routes kernels by `\w+-\w+-\w+-\w+-\w+` (a UUID's five groups), and a
//! gateway client hands the gateway's kernel ids to its browser as they are, so a session id
//! (`<node>.<32 hex digits>`) cannot be one: its `.` is not a word character, nor is the `-`
//! a node name may hold. A kernel id is the same session id written otherwise — the node name
//! in hex, `_`, then the 128 random bits in a UUID's groups — so that it needs no table: every
//! session is a kernel and every kernel a session, on both APIs, for as long as the session
//! lives, and an id still names its node.

/// The kernel id of a session, if the session id has the form `node::new_id` gives.
pub fn kernel_id(session_id: &str) -> Option<String> {
    let (node, random) = session_id.split_once('.')?;
    if random.len() != 32 || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let node: String = node.bytes().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{node}_{}-{}-{}-{}-{}",
        &random[..8],
        &random[8..12],
        &random[12..16],
        &random[16..20],
        &random[20..]
    ))
}

/// The session id a kernel id stands for, if it is one's.
pub fn session_id(kernel_id: &str) -> Option<String> {
    let (node_hex, uuid) = kernel_id.split_once('_')?;
    let groups: Vec<&str> = uuid.split('-').collect();
    let lengths = [8, 4, 4, 4, 12];
    if groups.len() != lengths.len()
        || groups
            .iter()
            .zip(lengths)
            .any(|(g, n)| g.len() != n || !g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    if node_hex.is_empty() || node_hex.len() % 2 != 0 {
        return None;
    }
    let node = (0..node_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(node_hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let node = String::from_utf8(node).ok()?;
    crate::node::is_valid(&node).then(|| format!("{node}.{}", groups.concat()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_id_is_a_session_id_written_otherwise() {
        let session = crate::node::new_id("node-a");
        let kernel = kernel_id(&session).expect("a kernel id");
        // jupyter_server's pattern for kernel ids: five groups of word characters.
        let groups: Vec<&str> = kernel.split('-').collect();
        assert_eq!(groups.len(), 5, "{kernel}");
        assert!(groups.iter().all(|g| !g.is_empty()
            && g.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')));
        assert!(kernel.starts_with("6e6f64652d61_"), "{kernel}");
        assert_eq!(session_id(&kernel), Some(session));
    }

    #[test]
    fn anything_else_is_no_kernel() {
        for bad in [
            "",
            "abc",
            "6e_0123",
            "6e_01234567-0123-0123-0123-0123456789ab-",
            "6_01234567-0123-0123-0123-0123456789ab",
            "zz_01234567-0123-0123-0123-0123456789ab",
            // "A" is not a node name.
            "41_01234567-0123-0123-0123-0123456789ab",
            "6e_0123456g-0123-0123-0123-0123456789ab",
            "6e_01234567-0123-0123-0123456789ab-0123",
        ] {
            assert_eq!(session_id(bad), None, "{bad}");
        }
        assert_eq!(kernel_id("local.0123"), None);
        assert_eq!(kernel_id("garbage"), None);
    }
}
