//! Tells the crate which commit it is built from (`RADIO_COMMIT`, shown by
//! `radio --version` and `radio_build_info`): the `RADIO_COMMIT` variable
//! when set (a container build, whose context has no `.git`), else
//! `git rev-parse`, else `unknown`. Reruns when HEAD or the branch moves.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=RADIO_COMMIT");
    let commit = match std::env::var("RADIO_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_owned(),
        _ => {
            // A worktree's HEAD is in its own git dir, its branches in the
            // common one; packed-refs holds refs git has packed.
            if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
                println!("cargo:rerun-if-changed={dir}/HEAD");
            }
            if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
                println!("cargo:rerun-if-changed={common}/packed-refs");
                if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    println!("cargo:rerun-if-changed={common}/{branch}");
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=RADIO_COMMIT={commit}");
}
