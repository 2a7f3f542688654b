//! The real sidecar binary on free ports, for end-to-end tests.

use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::ports::{free_port, wait_for_listener};
use crate::start;

/// What a sidecar serves (its `--role`), and so which of its listeners a test waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Combined,
    Data,
    Metadata,
}

impl Role {
    fn flag(self) -> &'static str {
        match self {
            Role::Combined => "combined",
            Role::Data => "data",
            Role::Metadata => "metadata",
        }
    }
}

pub struct Sidecar {
    binary: String,
    role: Role,
    args: Vec<String>,
    pub data_port: u16,
    pub metadata_port: u16,
    pub admin_port: u16,
    child: Option<Child>,
}

impl Sidecar {
    /// Start `binary` (the test's `env!("CARGO_BIN_EXE_zenko-memcached-sidecar")`) with its
    /// three listeners on free ports and `args` besides, and wait until it serves.
    ///
    /// A sidecar that exits while starting is started again on new ports (see
    /// [`crate::start`]); one that keeps failing, or runs without listening, fails the test.
    pub fn start(binary: &str, args: &[&str]) -> Sidecar {
        Sidecar::start_role(binary, Role::Combined, args)
    }

    /// [`Sidecar::start`] in `role`: waits for the admin listener and those of the role's APIs.
    pub fn start_role(binary: &str, role: Role, args: &[&str]) -> Sidecar {
        let mut sidecar = Sidecar {
            binary: binary.to_owned(),
            role,
            args: args.iter().map(|arg| arg.to_string()).collect(),
            data_port: 0,
            metadata_port: 0,
            admin_port: 0,
            child: None,
        };
        start::with_retries("the sidecar", || {
            sidecar.data_port = free_port();
            sidecar.metadata_port = free_port();
            sidecar.admin_port = free_port();
            sidecar.spawn();
            let mut addrs = vec![sidecar.admin_addr()];
            addrs.extend(sidecar.api_addrs());
            let Some(child) = sidecar.child.as_mut() else {
                unreachable!("spawn sets the child");
            };
            let serving = start::wait_serving(child, &addrs, Duration::from_secs(25));
            if serving.is_err() {
                sidecar.child = None;
            }
            serving
        });
        sidecar
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--data-addr")
            .arg(self.data_addr().to_string())
            .arg("--metadata-addr")
            .arg(self.metadata_addr().to_string())
            .arg("--admin-addr")
            .arg(self.admin_addr().to_string())
            .arg("--role")
            .arg(self.role.flag())
            .args(&self.args)
            .env(
                "ZMM_LOG_LEVEL",
                std::env::var("ZMM_LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
            );
        command
    }

    fn spawn(&mut self) {
        // ZMM_TEST_LOGS=1 shows the sidecars' logs (which go to standard output).
        let logs = if std::env::var_os("ZMM_TEST_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let child = self
            .command()
            .stdout(logs)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start the sidecar binary");
        self.child = Some(child);
    }

    /// Run the binary with these arguments to completion, for start-up failures:
    /// its exit status and what it printed on stderr.
    pub fn run_to_exit(binary: &str, args: &[&str], timeout: Duration) -> (ExitStatus, String) {
        let mut child = Command::new(binary)
            .args(args)
            .env("ZMM_LOG_LEVEL", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the sidecar binary");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for the sidecar") {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    use std::io::Read;
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return (status, stderr);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the sidecar did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn data_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.data_port))
    }

    pub fn metadata_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.metadata_port))
    }

    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin_port))
    }

    /// `http://127.0.0.1:PORT` of the data API.
    pub fn data_url(&self) -> String {
        format!("http://{}", self.data_addr())
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr())
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Send a signal by name (`TERM`, `KILL`, ...).
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(child.id().to_string())
                .status();
        }
    }

    /// Wait for the process to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The addresses of the APIs its role serves.
    pub fn api_addrs(&self) -> Vec<SocketAddr> {
        match self.role {
            Role::Combined => vec![self.data_addr(), self.metadata_addr()],
            Role::Data => vec![self.data_addr()],
            Role::Metadata => vec![self.metadata_addr()],
        }
    }

    /// SIGKILL, then start again on the same ports with the same arguments.
    pub fn kill_and_restart(&mut self) {
        self.stop();
        self.spawn();
        for addr in self.api_addrs() {
            assert!(
                wait_for_listener(addr, Duration::from_secs(20)),
                "the sidecar did not restart"
            );
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.stop();
    }
}
