//! The memcached liveness check that the StatefulSet and the Swarm stack both run, run for real
//! the way memcached's alpine image runs it (busybox's `sh`, `nc`, `timeout` and `grep`) against
//! a real memcached: it passes while memcached answers and fails once memcached is frozen, which
//! a TCP check does not see.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use zenko_memcached_operator::build::{MEMCACHED_PORT, memcached_answers_command};
use zenko_memcached_testkit::Memcached;

/// A folder whose only commands are busybox's, as in memcached's alpine image.
fn busybox_path(dir: &Path) -> String {
    let busybox = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .expect("busybox is installed (scripts/test installs it)");
    for applet in ["sh", "nc", "timeout", "grep", "printf"] {
        std::os::unix::fs::symlink(busybox, dir.join(applet)).unwrap();
    }
    dir.display().to_string()
}

/// The check, with memcached's port pointed at `server`.
fn check(path: &str, server: &Memcached) -> (Output, Duration) {
    let command = memcached_answers_command().replace(
        &format!("127.0.0.1 {MEMCACHED_PORT}"),
        &format!("127.0.0.1 {}", server.addr().port()),
    );
    assert!(command.contains(&server.addr().port().to_string()));
    let started = Instant::now();
    let output = Command::new(Path::new(path).join("sh"))
        .args(["-c", &command])
        .env_clear()
        .env("PATH", path)
        .output()
        .unwrap();
    (output, started.elapsed())
}

#[test]
fn the_check_passes_while_memcached_answers_and_fails_once_it_is_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let path = busybox_path(dir.path());
    let server = Memcached::start(&[]);

    let (answered, took) = check(&path, &server);
    assert!(answered.status.success(), "{answered:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");

    server.freeze();
    let (frozen, took) = check(&path, &server);
    server.thaw();
    assert!(
        !frozen.status.success(),
        "a frozen memcached passed the check"
    );
    // Within the probe's timeout (5 s).
    assert!(took < Duration::from_secs(4), "{took:?}");

    let (again, _) = check(&path, &server);
    assert!(again.status.success(), "{again:?}");
}

#[test]
fn the_check_passes_on_an_image_without_nc() {
    let dir = tempfile::tempdir().unwrap();
    let path = busybox_path(dir.path());
    std::fs::remove_file(dir.path().join("nc")).unwrap();
    let server = Memcached::start(&[]);
    let (output, _) = check(&path, &server);
    assert!(output.status.success(), "{output:?}");
}
