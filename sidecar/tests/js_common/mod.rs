//! Running the npm socket.io clients of `tests/js` against the metadata port of a sidecar binary.

use std::path::PathBuf;
use std::process::Command;

use zenko_memcached_testkit::Sidecar;

/// Run a scenario of `tests/js/scenario.js` against the sidecar; its stdout when it passed.
pub fn scenario(sidecar: &Sidecar, generation: &str, name: &str) -> String {
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules").is_dir(),
        "run `npm ci` in sidecar/tests/js first (scripts/test does)"
    );
    let output = Command::new("node")
        .current_dir(js)
        .args([
            "scenario.js",
            &sidecar.metadata_port.to_string(),
            generation,
            name,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && stdout.contains(&format!("PASS {name}")),
        "scenario {name} with socket.io {generation}.x failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
