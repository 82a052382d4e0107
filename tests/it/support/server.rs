//! A `radio` server for a test: in this process by default, or a real
//! `radio serve` process when what the test checks only a process shows.
//!
//! In process, a thread owns a two-worker tokio runtime that runs
//! [`radio::run`] on a listener bound to 127.0.0.1:0 beforehand, so
//! the address is known at once; the server's log is captured per server.
//! Dropping the server cancels its shutdown token and joins the thread,
//! bounded. As a process, `radio serve --listen 127.0.0.1:0` is started and
//! its address read from its log; it is killed on drop. Either way, a test
//! that fails prints the server's log.

use std::cell::RefCell;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use radio::{LoudnessCache, ServerConfig};
use tokio_util::sync::CancellationToken;
use tracing::dispatcher::{self, DefaultGuard, Dispatch};

use super::http::{Resp, request};
use super::poll::eventually;
use super::process::{exit_within, kill, radio_bin, signal};

/// A running server; stopped on drop.
pub(crate) struct Server {
    pub addr: SocketAddr,
    log: Log,
    run: Run,
}

enum Run {
    InProcess {
        shutdown: CancellationToken,
        /// Disconnected when the server's thread ends.
        ended: mpsc::Receiver<()>,
        thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
        /// How long the server's own shutdown may take.
        shutdown_timeout: Duration,
    },
    Process(Child),
}

impl Server {
    /// `radio serve` with no flags, in this process.
    pub(crate) fn start() -> Server {
        Self::in_process(ServerConfig::default())
    }

    /// The defaults changed by `edit`, in this process:
    /// `Server::with(|c| c.conn.rate_limit = 5)`.
    pub(crate) fn with(edit: impl FnOnce(&mut ServerConfig)) -> Server {
        let mut config = ServerConfig::default();
        edit(&mut config);
        Self::in_process(config)
    }

    /// As [`Server::with`], with the log also taking the lines `directives`
    /// enable (`"radio::server::outlet=debug"`), for a test that must see
    /// what the server logs only when asked.
    pub(crate) fn with_log(directives: &str, edit: impl FnOnce(&mut ServerConfig)) -> Server {
        let mut config = ServerConfig::default();
        edit(&mut config);
        Self::logging(config, directives)
    }

    /// Runs `config` on 127.0.0.1:0 in this process. Measured loudness is
    /// kept in memory unless the test names a cache file: tests do not
    /// write into the user's cache folder.
    pub(crate) fn in_process(config: ServerConfig) -> Server {
        Self::logging(config, "")
    }

    /// Runs `config` in this process, its log taking info and up, and what
    /// `directives` enable.
    fn logging(mut config: ServerConfig, directives: &str) -> Server {
        if config.media.loudness_cache == LoudnessCache::Auto {
            config.media.loudness_cache = LoudnessCache::Off;
        }
        let log = Log::default();
        let dispatch = log.dispatch(directives);
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let shutdown_timeout = config.shutdown_timeout;
        let (addr_tx, addr_rx) = mpsc::channel();
        let (ended_tx, ended) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("radio-server".into())
            .spawn(move || {
                let _ended = ended_tx;
                let _log = dispatcher::set_default(&dispatch);
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .on_thread_start(move || log_to(&dispatch))
                    .on_thread_stop(stop_logging)
                    .build()
                    .expect("build the server's runtime");
                let listener = {
                    let _in_runtime = runtime.enter();
                    radio::bind(([127, 0, 0, 1], 0).into(), false).expect("bind 127.0.0.1:0")
                };
                addr_tx
                    .send(listener.local_addr().expect("bound address"))
                    .expect("report the address");
                let result = runtime.block_on(radio::run(listener, config, token));
                runtime.shutdown_timeout(Duration::from_secs(1));
                result
            })
            .expect("start the server thread");
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the in-process server binds");
        Server {
            addr,
            log,
            run: Run::InProcess {
                shutdown,
                ended,
                thread: Some(thread),
                shutdown_timeout,
            },
        }
    }

    /// Starts `radio serve --listen 127.0.0.1:0 ARGS...` (or with the
    /// `--listen` in `args`) and waits until it logs its bound address.
    pub(crate) fn spawn_process(args: &[&str]) -> Server {
        Self::spawn_process_env(args, &[])
    }

    /// As [`Server::spawn_process`], with the variables `env` set.
    pub(crate) fn spawn_process_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(radio_bin());
        cmd.envs(env.iter().copied());
        Self::spawn_command(cmd, args)
    }

    /// As [`Server::spawn_process`], in a process that may open at most
    /// `files` files (soft and hard limit, set by the shell's `ulimit`).
    pub(crate) fn spawn_process_limited(files: u32, args: &[&str]) -> Server {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            &format!("ulimit -n {files} && exec \"$0\" \"$@\""),
            radio_bin(),
        ]);
        Self::spawn_command(cmd, args)
    }

    /// Runs `cmd serve ARGS...` (`--listen 127.0.0.1:0` unless `args` has
    /// one) and waits until it logs its bound address.
    fn spawn_command(mut cmd: Command, args: &[&str]) -> Server {
        cmd.arg("serve");
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(args)
            .env("RUST_LOG", "info")
            // Not the user's cache folder (a test's own flag still wins).
            .env("RADIO_LOUDNESS_CACHE", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start radio serve");
        let stderr = child.stderr.take().expect("radio serve's stderr");
        let log = Log::default();
        let (addr_tx, addr_rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            const BOUND: &str = "listening on ";
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Logged before the address is told, so a test that reads
                // the log once it has the address finds this line in it.
                lines.push(&line);
                lines.push("\n");
                if let Some(i) = line.find(BOUND) {
                    let url = line[i + BOUND.len()..].trim();
                    let addr = url.split_once("://").map_or(url, |(_, a)| a);
                    // Only the first matters; later sends find no receiver.
                    let _ = addr_tx.send(addr.to_owned());
                }
            }
        });
        let Ok(addr) = addr_rx.recv_timeout(Duration::from_secs(20)) else {
            kill(&mut child);
            panic!("radio serve did not start; log:\n{}", log.text());
        };
        Server {
            addr: addr.parse().expect("a socket address in the log"),
            log,
            run: Run::Process(child),
        }
    }

    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub(crate) fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Everything the server logged so far (info and up, and what
    /// [`Server::with_log`] asked for).
    pub(crate) fn log(&self) -> String {
        self.log.text()
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> Resp {
        request(self.addr, "GET", path, &[], None).await
    }

    /// A metric's value from `/metrics` (the first sample line that starts with `name`).
    pub(crate) async fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").await.text();
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }

    /// Waits until a metric reaches `value` (counters and gauges move a
    /// moment after what a client can see).
    pub(crate) async fn wait_metric(&self, name: &str, value: f64) {
        eventually(&format!("{name} reaches {value}"), async || {
            let now = self.metric(name).await;
            if now == value { Ok(()) } else { Err(now) }
        })
        .await;
    }

    /// Begins stopping an in-process server, as SIGTERM begins stopping
    /// `radio serve` (its shutdown token); [`Server::shutdown`] waits.
    pub(crate) fn cancel(&self) {
        match &self.run {
            Run::InProcess { shutdown, .. } => shutdown.cancel(),
            Run::Process(_) => panic!("cancel() is for in-process servers; signal a process"),
        }
    }

    /// Stops an in-process server as SIGTERM stops `radio serve` (its
    /// shutdown token), and returns what [`radio::run`] returned.
    pub(crate) fn shutdown(&mut self) -> anyhow::Result<()> {
        assert!(
            matches!(self.run, Run::InProcess { .. }),
            "shutdown() is for in-process servers; signal a process"
        );
        self.stop_in_process()
            .expect("the in-process server stops within its shutdown timeout")
    }

    /// Cancels an in-process server and joins its thread, bounded by its
    /// shutdown timeout and 5 s more; `None` if it did not stop in time (the
    /// thread is left behind) or was stopped already.
    fn stop_in_process(&mut self) -> Option<anyhow::Result<()>> {
        let Run::InProcess {
            shutdown,
            ended,
            thread,
            shutdown_timeout,
        } = &mut self.run
        else {
            return None;
        };
        shutdown.cancel();
        let thread = thread.take()?;
        let limit = *shutdown_timeout + Duration::from_secs(5);
        if let Err(mpsc::RecvTimeoutError::Timeout) = ended.recv_timeout(limit) {
            eprintln!(
                "the in-process server on {} did not stop within {limit:?}",
                self.addr
            );
            return None;
        }
        Some(
            thread
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the server thread panicked"))),
        )
    }

    fn child(&mut self) -> &mut Child {
        match &mut self.run {
            Run::Process(child) => child,
            Run::InProcess { .. } => {
                panic!(
                    "only a server process (Server::spawn_process) has a pid, signals and an exit"
                )
            }
        }
    }

    /// The server process's id.
    pub(crate) fn pid(&mut self) -> u32 {
        self.child().id()
    }

    /// Sends `SIG<name>` to the server process.
    pub(crate) fn signal(&mut self, name: &str) {
        let pid = self.pid();
        signal(pid, name);
    }

    /// Waits up to `limit` for the server process to exit and returns how
    /// (fails the test if it does not).
    pub(crate) fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        exit_within(self.child(), limit, "radio serve")
    }

    /// Kills the server process at once (SIGKILL), as a crashed node.
    pub(crate) fn kill(&mut self) {
        kill(self.child());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- log of the server on {} ---\n{}", self.addr, self.log());
        }
        if let Run::Process(child) = &mut self.run {
            kill(child);
        } else if let Some(Err(e)) = self.stop_in_process() {
            eprintln!("the in-process server on {} failed: {e:#}", self.addr);
        }
    }
}

/// A server's log, as text.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<String>>);

impl Log {
    fn push(&self, s: &str) {
        self.0.lock().expect("log lock").push_str(s);
    }

    fn text(&self) -> String {
        self.0.lock().expect("log lock").clone()
    }

    /// A tracing dispatcher that writes info and up, and what `directives`
    /// enable, into this log.
    fn dispatch(&self, directives: &str) -> Dispatch {
        let log = self.clone();
        let filter = tracing_subscriber::EnvFilter::new(format!("info,{directives}"));
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || log.clone())
            .finish();
        Dispatch::new(subscriber)
    }
}

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.push(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

thread_local! {
    /// Routes a server runtime thread's tracing to its server's log.
    static LOGGING: RefCell<Option<DefaultGuard>> = const { RefCell::new(None) };
}

fn log_to(dispatch: &Dispatch) {
    LOGGING.with(|g| *g.borrow_mut() = Some(dispatcher::set_default(dispatch)));
}

fn stop_logging() {
    LOGGING.with(|g| g.borrow_mut().take());
}
