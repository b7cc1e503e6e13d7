//! How far workers are kept apart from the machine and from each other, decided once at start
//! from what the machine allows (the probe) and what the config asks for.
//!
//! Four mechanisms, each at the strongest level the environment offers:
//! - **users**: a uid per session (root only: `setuid` at attach), else one shared uid;
//! - **network**: a network namespace with only loopback, else the host's;
//! - **filesystem**: a private mount namespace with a minimal root ([`super::view`]) and a
//!   `/tmp` of each worker's own, else the machine's filesystem;
//! - **processes**: a pid namespace per worker with its own `/proc` (where uids are shared:
//!   sessions of one uid could otherwise signal each other and read each other's files through
//!   `/proc/<pid>/root`), or separate uids, else nothing;
//!
//! plus per-session cgroups, which `cgroup.rs` finds on its own. Root gets namespaces directly;
//! a server that is not root gets them through a user namespace of its own (as bubblewrap and
//! nsjail do), where unprivileged user namespaces are allowed. What is in force is logged at
//! start and reported by `/healthz`; `sandbox.require` turns a missing level into a refusal
//! to start that names the missing capability and how to grant it.
//!
//! The namespaces themselves are made by each worker (`worker.py`'s `enter_namespaces`) from
//! the [`Isolation`] it is given in its settings, while it still has one thread.

use serde::Serialize;

use super::probe::Probe;
use super::view::View;
use crate::config::Requirement;

/// What each worker sets up for itself (`settings["isolation"]` in `worker.py`). Forked
/// workers have a network, IPC (and pid) namespace each: the template's intermediate process
/// makes them before it forks the worker; a direct or cold worker makes its own.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Isolation {
    /// The server is not root: namespaces are made inside a user namespace of the worker's own.
    pub user_namespace: bool,
    pub network_none: bool,
    pub mount_namespace: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<View>,
    /// Each forked worker is the first process of a pid namespace of its own.
    pub pid_namespace: bool,
    /// RLIMIT_NPROC of each worker, set in its own user namespace (which counts its processes
    /// alone) where sessions share a uid and no pids cgroup limits them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes: Option<u64>,
}

impl Isolation {
    /// Whether a worker has anything to set up.
    pub fn is_empty(&self) -> bool {
        !self.user_namespace && !self.network_none && !self.mount_namespace
    }
}

/// What is in force, as `/healthz` and the start-up log say it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Levels {
    /// `per-session` (a uid each) or `shared` (one uid for all sessions).
    pub users: &'static str,
    /// `none` (only loopback) or `host`.
    pub network: &'static str,
    /// `private` (a minimal view; other sessions' files out of reach), `per-user` (the
    /// machine's filesystem, other sessions' directories closed by permissions) or `shared`.
    pub filesystem: &'static str,
    /// `private` (a pid namespace each), `per-user` (separate uids: no signals across) or
    /// `shared`.
    pub processes: &'static str,
    /// `v2`, `v1`, `v1+v2` or `none`.
    pub cgroups: &'static str,
    /// `root`, `user-namespace` or `none`: how the namespaces were made.
    pub via: &'static str,
}

/// What the server's situation and config amount to, before the probe says what works.
pub struct Wanted {
    pub root: bool,
    pub per_session_uids: bool,
    pub network_none: bool,
    pub view: Option<View>,
}

/// The decision: what workers set up, and the levels that gives.
pub fn decide(wanted: Wanted, probe: &Probe, cgroups: &'static str) -> (Isolation, Levels) {
    let user_namespace = !wanted.root && probe.user_namespace.is_ok();
    let namespaces = wanted.root || user_namespace;
    let network_none = wanted.network_none && namespaces && probe.network.is_ok();
    let mount_namespace = namespaces && probe.mount.is_ok();
    let view = wanted
        .view
        .filter(|_| mount_namespace && probe.view.as_ref().is_some_and(Result::is_ok));
    let separate_uids = wanted.root && wanted.per_session_uids;
    // Root with separate uids has no need of it (uids keep signals and /proc apart), and a
    // pid namespace changes what code sees of its own pids.
    let pid_namespace = !separate_uids && view.is_some() && probe.pid.is_ok();
    let levels = Levels {
        users: if separate_uids {
            "per-session"
        } else {
            "shared"
        },
        network: if network_none { "none" } else { "host" },
        filesystem: match (view.is_some(), separate_uids || pid_namespace) {
            (true, true) => "private",
            (_, _) if separate_uids => "per-user",
            _ => "shared",
        },
        processes: if pid_namespace {
            "private"
        } else if separate_uids {
            "per-user"
        } else {
            "shared"
        },
        cgroups,
        via: if wanted.root && (network_none || mount_namespace) {
            "root"
        } else if user_namespace {
            "user-namespace"
        } else {
            "none"
        },
    };
    let isolation = Isolation {
        user_namespace,
        network_none,
        mount_namespace,
        view,
        pid_namespace,
        processes: None,
    };
    (isolation, levels)
}

/// The first requirement of `required` that `levels` do not meet, with what is missing and
/// how to grant it, in one line.
pub fn unmet(
    required: &[Requirement],
    levels: &Levels,
    probe: &Probe,
    root: bool,
) -> Option<String> {
    let namespaces_hint = if root {
        "the server is root but lacks CAP_SYS_ADMIN (a container's default): grant it (docker run --cap-add SYS_ADMIN, Kubernetes securityContext.capabilities.add: [SYS_ADMIN]) with a seccomp profile that allows unshare and mount (deploy/docker/seccomp.json)"
    } else {
        "unprivileged user namespaces are not allowed here: allow them (sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone = 1; in a container a seccomp profile that allows unshare and mount, e.g. docker run --security-opt seccomp=deploy/docker/seccomp.json, and apparmor=unconfined where AppArmor confines containers), or run the server as root"
    };
    // The first refusal met: without root, everything else fails as the user namespace did.
    let why = |results: &[Option<&Result<(), String>>]| {
        let first = (!root)
            .then_some(&probe.user_namespace)
            .into_iter()
            .chain(results.iter().flatten().copied())
            .find_map(|r| r.as_ref().err());
        first.map(|e| format!(" ({e})")).unwrap_or_default()
    };
    for requirement in required {
        let missing = match requirement {
            Requirement::Users if levels.users != "per-session" => Some(format!(
                "a uid per session needs the server to run as root with sandbox.user and sandbox.session_uids set{}",
                if root { "" } else { ": it runs as an unprivileged user" }
            )),
            Requirement::Network if levels.network != "none" => Some(format!(
                "no network namespace can be made{}: {namespaces_hint}",
                why(&[Some(&probe.network)])
            )),
            Requirement::Filesystem if levels.filesystem != "private" => Some(format!(
                "no private filesystem view can be made{}: {namespaces_hint}",
                why(&[Some(&probe.mount), probe.view.as_ref(), Some(&probe.pid)])
            )),
            Requirement::Processes if levels.processes == "shared" => Some(format!(
                "sessions share a uid and no pid namespace with a /proc of its own can be made{}: {namespaces_hint}; in a container also unmask /proc (docker run --security-opt systempaths=unconfined, Kubernetes procMount: Unmasked), or run as root",
                why(&[Some(&probe.pid)])
            )),
            Requirement::Cgroups if levels.cgroups == "none" => Some(
                "no writable cgroup hierarchy: run as root on the host, or delegate a cgroup v2 subtree to the server's user (systemd Delegate=yes) or mount /sys/fs/cgroup writable in the container".to_owned(),
            ),
            _ => None,
        };
        if let Some(missing) = missing {
            return Some(format!(
                "sandbox.require has \"{}\", but {missing}; or remove it from sandbox.require",
                requirement.name()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(all: bool) -> Probe {
        let r = |ok: bool| if ok { Ok(()) } else { Err("EPERM".to_owned()) };
        Probe {
            user_namespace: r(all),
            network: r(all),
            mount: r(all),
            view: None,
            pid: r(all),
        }
    }

    fn wanted(root: bool) -> Wanted {
        Wanted {
            root,
            per_session_uids: root,
            network_none: true,
            view: None,
        }
    }

    #[test]
    fn a_default_container_gets_nothing_and_says_so() {
        let (isolation, levels) = decide(wanted(false), &probe(false), "none");
        assert!(isolation.is_empty());
        assert_eq!(
            levels,
            Levels {
                users: "shared",
                network: "host",
                filesystem: "shared",
                processes: "shared",
                cgroups: "none",
                via: "none"
            }
        );
        let refusal = unmet(&[Requirement::Network], &levels, &probe(false), false)
            .expect("network is missing");
        assert!(refusal.contains("user namespaces"), "{refusal}");
        assert!(unmet(&[], &levels, &probe(false), false).is_none());
    }

    #[test]
    fn root_in_a_container_without_cap_sys_admin_still_separates_users() {
        let (isolation, levels) = decide(wanted(true), &probe(false), "none");
        assert!(!isolation.network_none && !isolation.mount_namespace);
        assert_eq!(
            (levels.users, levels.filesystem, levels.processes),
            ("per-session", "per-user", "per-user")
        );
        let refusal = unmet(
            &[Requirement::Users, Requirement::Filesystem],
            &levels,
            &probe(false),
            true,
        )
        .expect("filesystem is missing");
        assert!(refusal.contains("CAP_SYS_ADMIN"), "{refusal}");
    }
}
