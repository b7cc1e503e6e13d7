"""Runs a command as an unprivileged user who can reach the paths it needs: the tests' way to
start a server that is not root, from a root test run (CI is root).

    python launch.py USER PATH... -- COMMAND ARG...

The interpreter and the checkout may sit below a directory closed to USER (a pyenv under a 0700
/root, as on this project's machines). In a mount namespace of this process's own (`unshare
--mount` starts it), each such ancestor is covered with a tmpfs holding only the children on
the way to the needed paths, bound back from the real ones; the machine's mounts are untouched
and the covers end with the process. Then it drops to USER (no supplementary groups) and
executes COMMAND in its own place, so that the command's pid is the one the test started.
Standard library only; needs root.
"""

import ctypes
import os
import pwd
import sys

MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if isinstance(s, str) else s  # noqa: E731
    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")


def searchable(path, user):
    st = os.stat(path)
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & 0o100)
    if st.st_gid == user.pw_gid:
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


def covers(paths, user):
    """Closed directory -> the children of it to keep, for every ancestor of `paths`."""
    closed = {}
    for path in paths:
        path = os.path.realpath(path)
        ancestor = "/"
        for part in [p for p in path.split("/") if p]:
            child = os.path.join(ancestor, part)
            if not searchable(ancestor, user):
                closed.setdefault(ancestor, set()).add(child)
            ancestor = child
    return closed


def main():
    args = sys.argv[1:]
    split = args.index("--")
    user = pwd.getpwnam(args[0])
    needed, command = args[1:split], args[split + 1 :]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Deepest first: a cover's bind mounts are recursive, so they carry the deeper ones.
    for closed, keep in sorted(covers(needed, user).items(), key=lambda kv: -kv[0].count("/")):
        held = [(child, os.open(child, os.O_PATH)) for child in sorted(keep)]
        mount("tmpfs", closed, "tmpfs", 0, "mode=0755,size=1m")
        for child, fd in held:
            os.mkdir(child, 0o755)
            mount(f"/proc/self/fd/{fd}", child, None, MS_BIND | MS_REC)
            os.close(fd)
    os.setgroups([])
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    if libc.prctl(1, 9, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG(SIGKILL): a change of user cleared it
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    os.environ["HOME"] = "/nonexistent"
    os.environ["USER"] = user.pw_name
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
