//! Who a session's code runs as: a uid of its own from the configured range, or the one
//! configured user for every session.
//!
//! Uids are handed out next-fit (the one after the last given, wrapping), so a uid that was
//! just given back is the last to be given again: whatever of a dead session might still be
//! dying never shares a uid with a new one.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;

/// The identity a worker takes when it is bound to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
}

pub struct UidPool {
    gid: u32,
    kind: Kind,
}

enum Kind {
    /// Every session is the same user.
    Shared(u32),
    Range(Arc<Mutex<Range>>),
}

struct Range {
    first: u32,
    last: u32,
    next: u32,
    used: HashSet<u32>,
}

/// A session's uid; given back when dropped.
pub struct UidLease {
    credentials: Credentials,
    range: Option<Arc<Mutex<Range>>>,
}

impl UidPool {
    pub fn shared(credentials: Credentials) -> UidPool {
        UidPool {
            gid: credentials.gid,
            kind: Kind::Shared(credentials.uid),
        }
    }

    pub fn range(first: u32, last: u32, gid: u32) -> UidPool {
        UidPool {
            gid,
            kind: Kind::Range(Arc::new(Mutex::new(Range {
                first,
                last,
                next: first,
                used: HashSet::new(),
            }))),
        }
    }

    /// A uid no live session has, or `None` when the range is used up.
    pub fn lease(&self) -> Option<UidLease> {
        match &self.kind {
            Kind::Shared(uid) => Some(UidLease {
                credentials: Credentials {
                    uid: *uid,
                    gid: self.gid,
                },
                range: None,
            }),
            Kind::Range(range) => {
                let uid = {
                    let mut r = range.lock();
                    let size = u64::from(r.last - r.first) + 1;
                    let mut found = None;
                    for _ in 0..size {
                        let candidate = r.next;
                        r.next = if candidate == r.last {
                            r.first
                        } else {
                            candidate + 1
                        };
                        if r.used.insert(candidate) {
                            found = Some(candidate);
                            break;
                        }
                    }
                    found?
                };
                Some(UidLease {
                    credentials: Credentials { uid, gid: self.gid },
                    range: Some(Arc::clone(range)),
                })
            }
        }
    }
}

impl UidLease {
    pub fn credentials(&self) -> Credentials {
        self.credentials
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        if let Some(range) = &self.range {
            range.lock().used.remove(&self.credentials.uid);
        }
    }
}

/// A user given as a name or a number: its uid and primary group.
pub fn lookup_user(user: &str) -> Result<Credentials, String> {
    let found = match user.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
        Err(_) => nix::unistd::User::from_name(user),
    };
    match found {
        Ok(Some(u)) => Ok(Credentials {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }),
        // A bare number needs no entry in the user database.
        Ok(None) => match user.parse::<u32>() {
            Ok(uid) => Ok(Credentials { uid, gid: uid }),
            Err(_) => Err(format!("there is no user {user:?}")),
        },
        Err(e) => Err(format!("cannot look up user {user:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_leases_are_unique_and_given_back() {
        let pool = UidPool::range(10, 12, 7);
        let a = pool.lease().expect("a");
        let b = pool.lease().expect("b");
        let c = pool.lease().expect("c");
        assert!(pool.lease().is_none(), "the range is used up");
        let uids = [
            a.credentials().uid,
            b.credentials().uid,
            c.credentials().uid,
        ];
        assert_eq!(uids, [10, 11, 12]);
        assert_eq!(a.credentials().gid, 7);
        drop(b);
        assert_eq!(pool.lease().expect("again").credentials().uid, 11);
    }

    #[test]
    fn next_fit_does_not_reuse_at_once() {
        let pool = UidPool::range(1, 3, 0);
        let a = pool.lease().expect("a");
        drop(a);
        assert_eq!(pool.lease().expect("b").credentials().uid, 2);
    }
}
