//! Gives the server its git revision (`REPLPOOL_REVISION`, shown by `replpool_build_info` on
//! `/metrics`): `git rev-parse --short HEAD` of the checkout, or "unknown" wherever that is
//! not to be had (no git, a source tarball, an image built without `.git`). Never a failure.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=REPLPOOL_REVISION");
    // An explicit revision wins: a build from a copy without `.git` can still say which it is.
    let revision = std::env::var("REPLPOOL_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=REPLPOOL_REVISION={revision}");
    // Built again when HEAD moves: HEAD itself (a checkout) and the branch it names (a
    // commit). `--git-path` finds both in a worktree too, where `.git` is a file.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    for path in watched.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// What `git args` prints, trimmed, if it runs and succeeds.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}
